"""The knobs: momentum and weight decay, learning-rate schedules, dropout, the validation split."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from trainers.catalog import TRAINERS
from trainers.cli import cli
from trainers.core.config import MLPConfig
from trainers.core.data import Data, Split
from trainers.core.schedule import Schedule
from trainers.core.training import held_out_data
from trainers.models.mlp import MLP
from trainers.models.mlp_lowlevel import LowLevelMLP, dropout
from trainers.models.scratch_softmax import SGD


@pytest.mark.parametrize("momentum, weight_decay", [(0.0, 0.0), (0.9, 0.0), (0.0, 0.01), (0.9, 0.01)])
def test_hand_written_sgd_takes_the_steps_torch_optim_takes(momentum, weight_decay):
    torch.manual_seed(0)
    start = [torch.randn(5, 3), torch.randn(3)]
    ours = [p.clone().requires_grad_() for p in start]
    theirs = [p.clone().requires_grad_() for p in start]
    sgd = SGD(ours, lr=0.1, momentum=momentum, weight_decay=weight_decay)
    reference = torch.optim.SGD(theirs, lr=0.1, momentum=momentum, weight_decay=weight_decay)
    for step in range(6):
        x = torch.randn(4, 5)
        for params, optimizer in ((ours, sgd), (theirs, reference)):
            optimizer.param_groups[0]["lr"] = 0.1 / (step + 1)  # as the loop's schedule sets it
            optimizer.zero_grad()
            ((x @ params[0] + params[1]) ** 2).mean().backward()
            optimizer.step()
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b)


def test_hand_written_sgd_state_round_trips():
    params = [torch.ones(3, requires_grad=True)]
    sgd = SGD(params, lr=0.5, momentum=0.9)
    params[0].grad = torch.ones(3)
    sgd.step()
    again = SGD([torch.ones(3, requires_grad=True)], lr=0.1)
    again.load_state_dict(sgd.state_dict())
    assert again.param_groups[0] == {"lr": 0.5, "momentum": 0.9, "weight_decay": 0.0}
    torch.testing.assert_close(again.velocity[0], torch.ones(3))


def test_cosine_falls_to_zero_over_the_run_and_step_decays_at_half_and_three_quarters():
    cosine = Schedule("cosine", lr=0.2, epochs=4, steps_per_epoch=25)
    rates = [cosine(step) for step in range(100)]
    assert rates[0] == 0.2 and rates[50] == pytest.approx(0.1) and 0 < rates[-1] < 1e-3
    assert all(a > b for a, b in zip(rates, rates[1:]))
    step = Schedule("step", lr=1.0, epochs=8, steps_per_epoch=10)
    assert [step(10 * epoch) for epoch in range(8)] == pytest.approx([1, 1, 1, 1, 0.1, 0.1, 0.01, 0.01])
    assert Schedule("step", 1.0, 1, 10)(9) == 1.0  # a one-epoch run never decays
    assert Schedule("constant", 0.3, 5, 7)(34) == 0.3


def test_inverted_dropout_keeps_the_expected_value_and_is_off_in_evaluation():
    torch.manual_seed(0)
    x = torch.ones(200, 500)
    dropped = dropout(x, 0.3, training=True)
    kept = dropped != 0
    assert 0.68 < kept.float().mean() < 0.72
    torch.testing.assert_close(dropped[kept], torch.full_like(dropped[kept], 1 / 0.7))
    assert dropped.mean().item() == pytest.approx(1.0, abs=0.01)
    assert dropout(x, 0.3, training=False) is x


@pytest.mark.parametrize("model", [LowLevelMLP((784, 32, 32, 10), dropout=0.5),
                                   MLP((784, 32, 32, 10), dropout=0.5)])
def test_mlps_drop_units_in_training_only(model):
    images = torch.rand(8, 1, 28, 28)
    model.train()
    assert not torch.equal(model(images), model(images))  # a fresh mask each call
    model.eval()
    assert torch.equal(model(images), model(images))


def test_the_validation_split_is_fixed_disjoint_and_leaves_test_alone():
    labels = torch.arange(100)
    data = Data(train=Split(labels.view(-1, 1, 1, 1).to(torch.uint8).expand(-1, 1, 28, 28), labels),
                test=Split(torch.zeros(10, 1, 28, 28, dtype=torch.uint8), torch.zeros(10, dtype=torch.long)),
                classes=tuple("0123456789"), source=None)
    torch.manual_seed(123)  # the split must not depend on the global seed ...
    first = data.held_out(20)
    torch.manual_seed(456)
    second = data.held_out(20, test=False)
    assert torch.equal(first.val.labels, second.val.labels)  # ... nor on anything else
    assert len(first.val) == 20 and len(first.train) == 80
    assert set(first.val.labels.tolist()).isdisjoint(first.train.labels.tolist())
    assert first.train.labels.tolist() == sorted(first.train.labels.tolist())  # training order kept
    assert first.test is data.test and second.test is None
    assert data.held_out(0).val is None


def test_no_trainer_standardizes_by_default_and_a_run_saved_before_the_setting_did_not():
    assert not any(trainer.config().standardize for trainer in TRAINERS.values())
    saved = MLPConfig(standardize=True).to_dict()
    assert MLPConfig.from_dict(saved).standardize is True
    del saved["standardize"]
    assert MLPConfig.from_dict(saved).standardize is False


@pytest.mark.parametrize("standardize", [True, False])
def test_a_run_that_standardizes_draws_its_batches_standardized_with_its_training_images_statistics(standardize):
    pixels = torch.arange(256, dtype=torch.uint8).repeat(4)[:1000].view(-1, 1, 1, 1).expand(-1, 1, 28, 28)
    data = Data(train=Split(pixels, torch.zeros(1000, dtype=torch.long)), test=None, classes=tuple("0123456789"),
                source=None)
    config = MLPConfig(trainer="mlp", standardize=standardize, val_size=100, test=False)
    held = held_out_data(config, data, torch.device("cpu"), from_checkpoint=False)
    trained_on = held.train.pixels.double() / 255
    mean, std = trained_on.mean().item(), trained_on.std().item()
    for split in (held.train, held.val):
        images, _ = next(split.batches(50))
        unit = split.pixels[:50].float() / 255
        torch.testing.assert_close(images, ((unit - mean) / std).float() if standardize else unit)


def test_a_run_with_a_validation_split_and_no_test_records_only_validation(idx_dir, tmp_path):
    out = tmp_path / "runs"
    result = CliRunner().invoke(cli, ["mlp", "--data-dir", str(idx_dir), "--out", str(out), "--no-viz",
                                      "--epochs", "2", "--batch-size", "32", "--val-size", "100", "--no-test",
                                      "--schedule", "step", "--momentum", "0.5", "--dropout", "0.2"])
    assert result.exit_code == 0, result.output
    (run_dir,) = out.iterdir()
    assert json.loads((run_dir / "config.json").read_text())["standardize"] is False
    epochs = [r for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
              if r["kind"] == "epoch"]
    assert [set(r) for r in epochs] == [
        {"kind", "epoch", "step", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds"}] * 2
    assert [r["step"] for r in epochs] == [16, 32]  # 500 training images left, 32 a batch
    assert [r["lr"] for r in epochs] == pytest.approx([0.1, 0.01])  # step: x0.1 from the second of 2 epochs
    assert epochs[-1]["val_acc"] > 0.5
    assert f"validation accuracy {epochs[-1]['val_acc']:.4f}" in result.stdout
    assert json.loads((run_dir / "status.json").read_text())["status"] == "finished"
