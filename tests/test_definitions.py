"""What the loop and the runs table report, checked against the definition of each value.

A loss that goes down or a table that prints says little: each test here computes the
value the way its definition says (the mean over samples, the process's liveness) and
asks for the same number.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from tests.conftest import synthetic_split
from trainers.cli import cli
from trainers.core import loop
from trainers.core.data import Data, Split
from trainers.core.loop import Parts, Progress, evaluate, fit
from trainers.core.run import RunDir
from trainers.models.mlp import MLP
from trainers.runs.table import sort_rows, summary

N, BATCH = 50, 16  # batches of 16, 16, 16 and 2: the last one much smaller
SIZES = [16, 16, 16, 2]


def tiny_split(n: int = N, seed: int = 1) -> Split:
    """The synthetic task of conftest as a split in memory."""
    images, labels = synthetic_split(n, seed)
    return Split(torch.from_numpy(images).unsqueeze(1), torch.from_numpy(labels).long())


def frozen_parts(dropout: float = 0.0) -> Parts:
    """A small MLP, large enough initial weights that every sample's loss differs, and SGD at rate 0.

    With a rate of 0 no step changes the model, so what training reports can be compared
    with an evaluation of the same model.
    """
    torch.manual_seed(0)
    model = MLP((784, 32, 10), dropout=dropout)
    return Parts(model, torch.nn.CrossEntropyLoss(), torch.optim.SGD(model.parameters(), lr=0.0))


# --- the training loop -------------------------------------------------------------------------


def fit_one_epoch(parts: Parts, split: Split, seed: int = 3) -> tuple[dict, list[tuple[int, float]]]:
    """One epoch of ``fit`` on ``split`` in batches of BATCH: its record and every step's reported loss."""
    points = []
    record = fit(parts, Data(split, None, tuple("0123456789"), None, val=split), epochs=1, batch_size=BATCH,
                 generator=torch.Generator().manual_seed(seed), progress=Progress(),
                 on_steps=lambda epoch, batch: points.extend(batch))
    return record, points


def test_train_loss_and_accuracy_are_means_over_samples_not_over_batches():
    split, parts = tiny_split(), frozen_parts()
    record, points = fit_one_epoch(parts, split)
    whole = evaluate(parts, split)  # the unchanged model on the same samples, in one batch

    assert record["step"] == 4 and [step for step, _ in points] == [1, 2, 3, 4]
    assert record["train_loss"] == pytest.approx(whole.loss, rel=1e-6)
    assert record["train_acc"] == (whole.predictions == split.labels).sum().item() / N
    assert record["val_loss"] == whole.loss and record["val_acc"] == whole.accuracy
    # The same mean from the steps' own losses, each weighted by its batch's size.
    weighted = sum(size * loss for size, (_, loss) in zip(SIZES, points)) / N
    assert record["train_loss"] == pytest.approx(weighted, rel=1e-6)
    # What a mean of the batch means would give: far enough off for the checks above to see it.
    assert abs(sum(loss for _, loss in points) / 4 - whole.loss) > 100 * 1e-6 * whole.loss


def test_each_step_reports_the_loss_of_its_own_batch():
    split, parts = tiny_split(), frozen_parts()
    _, points = fit_one_epoch(parts, split, seed=3)
    parts.model.eval()
    expected = [F.cross_entropy(parts.model(images), labels).item()
                for images, labels in split.batches(BATCH, torch.Generator().manual_seed(3))]
    assert [loss for _, loss in points] == pytest.approx(expected, rel=1e-6)


def test_step_losses_are_queued_detached_from_the_autograd_graph(monkeypatch):
    """A queued loss still attached would keep every step's graph (activations included) alive until read back."""
    queued = []
    read_back = loop._read_back

    def recording(pending):
        queued.extend(loss for _, loss in pending)
        return read_back(pending)

    monkeypatch.setattr(loop, "_read_back", recording)
    fit_one_epoch(frozen_parts(), tiny_split())
    assert len(queued) == 4
    assert [(loss.requires_grad, loss.grad_fn) for loss in queued] == [(False, None)] * 4


def test_evaluate_weights_a_smaller_last_batch_by_its_size(monkeypatch):
    monkeypatch.setattr(loop, "EVAL_BATCH", BATCH)  # four evaluation batches, the last of 2 samples
    split, parts = tiny_split(), frozen_parts(dropout=0.5)
    parts.model.train()  # evaluate must switch dropout off itself
    result = evaluate(parts, split)

    parts.model.eval()
    with torch.no_grad():
        logits = parts.model(split.floats(split.pixels))
    assert result.loss == pytest.approx(F.cross_entropy(logits, split.labels).item(), rel=1e-6)
    assert torch.equal(result.predictions, logits.argmax(dim=1))
    assert result.accuracy == pytest.approx((logits.argmax(dim=1) == split.labels).sum().item() / N, abs=1e-7)
    torch.testing.assert_close(result.confidence, logits.softmax(dim=1).max(dim=1).values)


# --- the runs table ------------------------------------------------------------------------------


def dead_pid() -> int:
    """The pid of a process that has just ended (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def make_run(root, name: str, status: dict, val_accs: tuple[float, ...] = ()) -> RunDir:
    """A run folder written by hand: its config, its status.json and one epoch record per accuracy."""
    run = RunDir(root / name)
    run.path.mkdir(parents=True)
    run.write_config({"trainer": "mlp", "epochs": 3, "lr": 0.1, "batch_size": 32})
    run.status_file.write_text(json.dumps(status) + "\n")
    run.append_metrics([{"kind": "epoch", "epoch": i, "step": 10 * i, "train_loss": 1.0, "train_acc": 0.5,
                         "val_loss": 1.0, "val_acc": acc, "seconds": 1.0} for i, acc in enumerate(val_accs, 1)])
    return run


def test_runs_lists_a_running_run_whose_process_is_gone_as_failed(tmp_path):
    here = socket.gethostname()
    make_run(tmp_path, "alive", {"status": "running", "pid": os.getpid(), "host": here})
    make_run(tmp_path, "killed", {"status": "running", "pid": dead_pid(), "host": here})
    make_run(tmp_path, "elsewhere", {"status": "running", "pid": dead_pid(), "host": f"not-{here}"})
    make_run(tmp_path, "done", {"status": "finished"})

    result = CliRunner().invoke(cli, ["runs", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    statuses = {row["run"]: row["status"] for row in json.loads(result.output)}
    # This host can tell a killed run from one in progress; another host's pid says nothing here.
    assert statuses == {"alive": "running", "killed": "failed", "elsewhere": "running", "done": "finished"}


def test_the_best_validation_accuracy_is_the_highest_of_any_epoch(tmp_path):
    run = make_run(tmp_path, "run", {"status": "finished"}, val_accs=(0.5, 0.7, 0.6))
    row = summary(run, tmp_path)
    assert (row["val_acc"], row["epochs"], row["epochs_planned"], row["seconds"]) == (0.7, 3, 3, 3.0)


def test_runs_sort_accuracies_largest_first_and_empty_cells_last():
    rows = [{"run": name, "val_acc": acc} for name, acc in (("a", 0.5), ("b", None), ("c", 0.9), ("d", 0.7))]
    assert [r["run"] for r in sort_rows(rows, "val_acc")] == ["c", "d", "a", "b"]
    assert [r["run"] for r in sort_rows(rows[::-1], "run")] == ["a", "b", "c", "d"]


def test_compare_names_runs_whose_curves_coincide(tmp_path):
    """Three runs of one seed draw on top of each other in compare: it says so instead of showing one."""
    import json as _json

    from trainers.core.run import RunDir
    from trainers.runs.table import identical_curves

    def run(name: str, accuracy: float, seconds: float) -> RunDir:
        folder = tmp_path / name
        folder.mkdir()
        records = [{"kind": "step", "epoch": 1, "step": 5, "train_loss": 1.0},
                   {"kind": "epoch", "epoch": 1, "step": 10, "train_loss": 0.9, "test_acc": accuracy, "seconds": seconds}]
        (folder / "metrics.jsonl").write_text("".join(_json.dumps(r) + "\n" for r in records))
        return RunDir(folder)

    runs = [run("a", 0.5, 1.0), run("b", 0.6, 1.0), run("c", 0.5, 2.5), run("d", 0.5, 3.0)]
    assert identical_curves(runs) == [["a", "c", "d"]]
    assert identical_curves(runs[:2]) == []


def test_compare_tells_apart_runs_of_two_folders_that_share_a_name(tmp_path):
    """Folders are named to the second: two --out folders may hold a run of one name, each its own trace."""
    import json as _json

    from trainers.core.run import RunDir
    from trainers.runs.table import comparison_events, identical_curves

    runs = []
    for out in ("lab/runs", "home/runs"):  # the same settings and seed: the same curves
        folder = tmp_path / out / "mlp-20261203-090000"
        folder.mkdir(parents=True)
        (folder / "config.json").write_text(_json.dumps({"lr": 0.1, "batch_size": 256}))
        record = {"kind": "epoch", "epoch": 1, "step": 10, "train_loss": 0.9, "test_acc": 0.5, "seconds": 1}
        (folder / "metrics.jsonl").write_text(_json.dumps(record) + "\n")
        runs.append(RunDir(folder))
    traces = [name for event in comparison_events(runs, "compare") if event["win"] == "compare_acc"
              for name in event["values"]]
    assert traces == ["lab/runs/mlp-20261203-090000 (lr=0.1 bs=256) test",
                      "home/runs/mlp-20261203-090000 (lr=0.1 bs=256) test"]
    assert identical_curves(runs) == [["lab/runs/mlp-20261203-090000", "home/runs/mlp-20261203-090000"]]
