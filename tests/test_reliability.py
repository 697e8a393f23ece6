"""Interrupt and resume, divergence, and every remaining kind of bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.conftest import free_port, write_idx_dir
from tests.test_bad_input import assert_one_line_error
from trainers.cli import cli

ROOT = Path(__file__).resolve().parent.parent


def records(run_dir: Path) -> list[dict]:
    """metrics.jsonl without the wall-clock field."""
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in lines]


def as_in_a_terminal() -> None:
    """In the trainer's process: Ctrl-C as a terminal delivers it, even when the suite runs as a
    background job (which inherits SIGINT ignored, and a trainer leaves an ignored signal alone)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def wait_for_epoch(out: Path, epoch: int, proc: subprocess.Popen, timeout: float = 300, kind: str = "epoch") -> Path:
    """Poll until the run in ``out`` has written its ``epoch`` record; return the run folder.

    With ``kind="step"``: until it has written a step record of that epoch, so it is inside it.
    The timeout only ends a hung trainer's test: on a loaded machine an epoch of 2,000 steps
    can take minutes.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        for metrics in out.glob("*/metrics.jsonl"):
            # The trainer may be appending right now: only lines that end in a newline are whole.
            whole_lines = metrics.read_text().split("\n")[:-1]
            if any(json.loads(line).get("epoch") == epoch and json.loads(line)["kind"] == kind
                   for line in whole_lines if line.strip()):
                return metrics.parent
        time.sleep(0.01)
    raise AssertionError(f"no {kind} record of epoch {epoch}")


# Every knob that keeps state or draws random numbers: momentum buffers, the schedule's
# position, dropout masks, the validation split, the standardizing statistics. lr 0.003: in batches
# of 4 with momentum 0.9 the MLPs diverge from lr 0.01 up on the standardized synthetic images
# (their bright band lies 3 standard deviations out).
KNOBS = ["--standardize", "--lr", "0.003", "--momentum", "0.9", "--weight-decay", "0.001", "--schedule", "cosine",
         "--val-size", "300"]


@pytest.mark.slow
@pytest.mark.parametrize("trainer, signum, status", [
    ("mlp", signal.SIGINT, 130), ("mlp-lowlevel", signal.SIGTERM, 143), ("scratch-softmax", signal.SIGINT, 130)])
def test_stopped_then_resumed_run_ends_like_an_uninterrupted_one(trainer, signum, status, tmp_path):
    # 2,000 steps an epoch: once a step record of epoch 2 is on disk, the signal lands
    # long before that epoch can end, however fast the trainer.
    data = write_idx_dir(tmp_path / "idx", n_train=8300)
    dropout = ["--dropout", "0.3"] if trainer.startswith("mlp") else []
    args = [trainer, "--data-dir", str(data), "--epochs", "2", "--batch-size", "4", "--seed", "5", "--no-viz",
            *KNOBS, *dropout]

    whole = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "whole")])
    assert whole.exit_code == 0, whole.output
    (whole_dir,) = (tmp_path / "whole").iterdir()

    out = tmp_path / "stopped"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "trainers", *args, "--out", str(out)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=as_in_a_terminal)
    try:
        run_dir = wait_for_epoch(out, 2, proc, kind="step")
        proc.send_signal(signum)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == status, stderr
    assert "Traceback" not in stderr
    assert f"--resume {run_dir}" in stderr.strip().splitlines()[-1]
    stopped = records(run_dir)
    assert stopped[-1]["kind"] == "step" and stopped[-1]["epoch"] == 2, "expected a stop inside epoch 2"
    assert json.loads((run_dir / "status.json").read_text())["status"] == "stopped"

    resumed = CliRunner().invoke(cli, [trainer, "--resume", str(run_dir), "--no-viz"])
    assert resumed.exit_code == 0, resumed.output
    assert records(run_dir) == records(whole_dir)
    assert json.loads((run_dir / "status.json").read_text())["status"] == "finished"



def loss_steps(run_dir: Path) -> list[int]:
    """The steps of the training-loss points in a run's events.jsonl, in the order a rebuild draws them."""
    return [x for line in (run_dir / "events.jsonl").read_text().splitlines()
            for event in [json.loads(line)] if event.get("win") == "train_loss" and event["kind"] == "series"
            for x in event["x"]]


@pytest.mark.slow
def test_a_killed_runs_resume_draws_each_step_once(tmp_path):
    """The events a killed run wrote after its checkpoint go: its resume trains and draws those steps again."""
    data = write_idx_dir(tmp_path / "idx", n_train=4000)
    port = free_port()  # no server: the events go to events.jsonl alone
    args = ["mlp", "--data-dir", str(data), "--epochs", "2", "--batch-size", "4", "--log-every", "5",
            "--port", str(port)]
    whole = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "whole")])
    assert whole.exit_code == 0, whole.output
    (whole_dir,) = (tmp_path / "whole").iterdir()

    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "trainers", *args, "--out", str(out)],
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        run_dir = wait_for_epoch(out, 2, proc, kind="step")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert max(loss_steps(run_dir)) > 1000, "expected points of epoch 2 past the checkpoint"
    resumed = CliRunner().invoke(cli, ["mlp", "--resume", str(run_dir), "--port", str(port)])
    assert resumed.exit_code == 0, resumed.output
    assert loss_steps(run_dir) == loss_steps(whole_dir) == list(range(5, 2001, 5))

def test_resume_of_a_finished_run_with_more_epochs_continues_it(idx_dir, tmp_path):
    out = tmp_path / "runs"
    first = CliRunner().invoke(cli, ["nn-softmax", "--data-dir", str(idx_dir), "--epochs", "1", "--no-viz",
                                     "--out", str(out)])
    assert first.exit_code == 0, first.output
    (run_dir,) = out.iterdir()
    more = CliRunner().invoke(cli, ["nn-softmax", "--resume", str(run_dir), "--epochs", "2", "--no-viz"])
    assert more.exit_code == 0, more.output
    assert [r["epoch"] for r in records(run_dir) if r["kind"] == "epoch"] == [1, 2]



@pytest.mark.parametrize("options, words", [
    (["--lr", "0.5"], ["--lr cannot change in a resume", "--epochs, --data-dir", "fork it: --fork", "--lr ..."]),
    (["--batch-size", "32"], ["--batch-size cannot change in a resume"]),
    (["--keep-checkpoints"], ["--keep-checkpoints cannot change in a resume"]),
    (["--fork", "elsewhere"], ["and --fork elsewhere: give one"]),
    (["--from-epoch", "1"], ["--from-epoch 1 goes with --fork RUN_DIR"]),
])
def test_a_resume_refuses_the_settings_it_cannot_change_and_leaves_the_run_as_it_was(idx_dir, tmp_path, options,
                                                                                       words):
    out = tmp_path / "runs"
    first = CliRunner().invoke(cli, ["mlp", "--data-dir", str(idx_dir), "--epochs", "1", "--no-viz",
                                     "--out", str(out)])
    assert first.exit_code == 0, first.output
    (run_dir,) = out.iterdir()
    before = records(run_dir)
    result = CliRunner().invoke(cli, ["mlp", "--resume", str(run_dir), "--epochs", "2", "--no-viz", *options])
    assert_one_line_error(result, *words)
    assert records(run_dir) == before
    # the run's own value given again is no change
    same = CliRunner().invoke(cli, ["mlp", "--resume", str(run_dir), "--epochs", "2", "--no-viz", "--lr",
                                    str(json.loads((run_dir / "config.json").read_text())["lr"])])
    assert same.exit_code == 0, same.output

def test_divergence_stops_with_status_3_and_keeps_finite_metrics(idx_dir, tmp_path):
    out = tmp_path / "runs"
    result = CliRunner().invoke(cli, ["mlp", "--data-dir", str(idx_dir), "--lr", "1e6",
                                      "--no-viz", "--out", str(out)])
    assert result.exit_code == 3, result.output
    line = result.stderr.strip().splitlines()[-1]
    assert "diverged at step" in line and "smaller --lr" in line and "Traceback" not in result.output
    (run_dir,) = out.iterdir()
    text = (run_dir / "metrics.jsonl").read_text() if (run_dir / "metrics.jsonl").exists() else ""
    assert "NaN" not in text and "Infinity" not in text
    assert not (run_dir / "checkpoint.pt").exists()  # no epoch finished: nothing looks like a finished run
    # the message names only what is there
    if (run_dir / "metrics.jsonl").exists():
        assert f"before its first checkpoint; the steps' metrics are in {run_dir / 'metrics.jsonl'}" in line
    else:
        assert "it diverged before its first checkpoint or metrics" in line


def test_divergence_after_a_good_epoch_keeps_that_epoch(tmp_path, monkeypatch):
    """A loss that turns NaN in epoch 2 leaves epoch 1's checkpoint and records intact."""
    import torch

    from trainers.models import nn_softmax

    data = write_idx_dir(tmp_path / "idx")
    original = nn_softmax.build

    def poisoned(config, device):
        parts = original(config, device)
        loss, calls = parts.loss, {"n": 0}

        def loss_fn(logits, labels):
            calls["n"] += 1
            value = loss(logits, labels)
            return value * torch.nan if calls["n"] > 25 else value  # 19 steps an epoch at batch 32

        parts.loss = loss_fn
        return parts

    monkeypatch.setattr(nn_softmax, "build", poisoned)
    out = tmp_path / "runs"
    result = CliRunner().invoke(cli, ["nn-softmax", "--data-dir", str(data), "--batch-size", "32",
                                      "--no-viz", "--out", str(out)])
    assert result.exit_code == 3, result.output
    (run_dir,) = out.iterdir()
    assert f"the last good epoch's checkpoint and metrics are in {run_dir}" in result.stderr
    epochs = [r for r in records(run_dir) if r["kind"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [1]
    state = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert state["progress"]["epoch"] == 1


def bad(tmp_path: Path) -> dict[str, list[str]]:
    """Each bad invocation, by name."""
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    empty = tmp_path / "empty"
    empty.mkdir()
    not_a_run = tmp_path / "not-a-run"
    not_a_run.mkdir()
    # Run folders damaged by hand, a killed process or a copy cut short (none of them under runs/).
    folders = {"no-checkpoint": {"config.json": '{"trainer": "nn-softmax"}', ".checkpoint.pt.a1b2.partial": "x"},
               "bad-config": {"config.json": "{", "checkpoint.pt": "", "events.jsonl": "{}\n"},
               "empty-checkpoint": {"config.json": "{}", "checkpoint.pt": ""},
               "bad-metrics": {"config.json": "{}", "metrics.jsonl": "x\n{}\n"}}
    for name, files in folders.items():
        (tmp_path / name).mkdir()
        for file, text in files.items():
            (tmp_path / name / file).write_text(text)
    return {
        "epochs non-numeric": ["mlp", "--epochs", "ten"],
        "negative batch": ["mlp", "--batch-size", "-3"],
        "negative images": ["mlp", "--images", "0"],
        "log-every zero": ["mlp", "--log-every", "0"],
        "save-every zero": ["mlp", "--save-every", "0"],
        "port out of range": ["mlp", "--port", "70000"],
        "negative slope": ["mlp", "--negative-slope", "-1"],
        "unknown device": ["nn-softmax", "--device", "gpu"],
        "data dir missing": ["nn-softmax", "--data-dir", str(tmp_path / "nowhere")],
        "data dir is a file": ["nn-softmax", "--data-dir", str(a_file)],
        "out not writable": ["nn-softmax", "--out", str(a_file / "runs")],
        "resume not a run": ["nn-softmax", "--resume", str(not_a_run)],
        "malformed server": ["nn-softmax", "--server", "localhost:8097/x"],
        "server not http": ["nn-softmax", "--server", "ftp://localhost"],
        "env with a path": ["nn-softmax", "--env", "../../tmp/x"],
        "env with a space": ["nn-softmax", "--env", "my run"],
        "env starting with a dot": ["nn-softmax", "--env", ".hidden"],
        "replay env with a path": ["replay", str(not_a_run), "--env", "a/b"],
        "replay not a run": ["replay", str(not_a_run)],
        "evaluate not a run": ["evaluate", str(not_a_run)],
        "empty data dir, download fails": ["nn-softmax", "--data-dir", str(empty)],
        "lr not a number": ["mlp", "--lr", "nan"],
        "lr past float32": ["mlp", "--lr", "1e39"],
        "weight decay infinite": ["nn-softmax", "--weight-decay", "inf"],
        "hidden absurd": ["mlp", "--hidden", "100000000"],
        "model larger than memory": ["mlp", "--hidden", "900000,900000,900000"],
        "resume before the first checkpoint": ["nn-softmax", "--resume", str(tmp_path / "no-checkpoint")],
        "resume damaged config": ["nn-softmax", "--resume", str(tmp_path / "bad-config")],
        "replay damaged config": ["replay", str(tmp_path / "bad-config")],
        "evaluate empty checkpoint": ["evaluate", str(tmp_path / "empty-checkpoint")],
        "compare damaged metrics": ["compare", str(tmp_path / "bad-metrics"), "--port", "1"],
    }


@pytest.mark.parametrize("case", [
    "epochs non-numeric", "negative batch", "negative images", "log-every zero", "save-every zero",
    "port out of range", "negative slope", "unknown device", "data dir missing", "data dir is a file",
    "out not writable", "resume not a run", "malformed server", "server not http", "env with a path",
    "env with a space", "env starting with a dot", "replay env with a path", "replay not a run",
    "evaluate not a run", "empty data dir, download fails", "lr not a number", "lr past float32",
    "weight decay infinite", "hidden absurd", "model larger than memory", "resume before the first checkpoint",
    "resume damaged config", "replay damaged config", "evaluate empty checkpoint", "compare damaged metrics",
])
def test_every_bad_input_is_one_line_and_status_2(case, idx_dir, tmp_path, monkeypatch):
    from torchvision import datasets

    # The failed download must fail here, on a dead loopback port, never on the internet.
    monkeypatch.setattr(datasets.FashionMNIST, "mirrors", [f"http://127.0.0.1:{free_port()}/"])
    args = bad(tmp_path)[case]
    if args[0] in ("mlp", "nn-softmax") and "--data-dir" not in args:
        args = [*args, "--data-dir", str(idx_dir)]
    if args[0] in ("mlp", "nn-softmax") and "--out" not in args:
        args = [*args, "--out", str(tmp_path / "runs")]
    result = CliRunner().invoke(cli, [*args, "--no-viz"] if args[0] in ("mlp", "nn-softmax") else args)
    assert_one_line_error(result)
    runs = tmp_path / "runs"
    assert not runs.exists() or not any(runs.iterdir()), "a failed start must not leave a run folder"


def test_resume_with_the_wrong_trainer_names_the_right_one(idx_dir, tmp_path):
    out = tmp_path / "runs"
    CliRunner().invoke(cli, ["nn-softmax", "--data-dir", str(idx_dir), "--epochs", "1", "--no-viz", "--out", str(out)])
    (run_dir,) = out.iterdir()
    result = CliRunner().invoke(cli, ["mlp", "--resume", str(run_dir), "--no-viz"])
    assert_one_line_error(result, "nn-softmax --resume")


@pytest.mark.slow
def test_a_second_ctrl_c_quits_at_once_and_leaves_a_readable_checkpoint(tmp_path):
    import torch

    data = write_idx_dir(tmp_path / "idx", n_train=2000)
    out = tmp_path / "runs"
    proc = subprocess.Popen(
        [sys.executable, "-m", "trainers", "mlp", "--data-dir", str(data), "--epochs", "20", "--batch-size", "4",
         "--no-viz", "--out", str(out)],
        env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=as_in_a_terminal)
    try:
        run_dir = wait_for_epoch(out, 1, proc)
        proc.send_signal(signal.SIGINT)
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130
    state = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert state["progress"]["epoch"] >= 1
    assert all(json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines())


class StopAfter:
    """An optimizer whose process gets a real SIGTERM right after its ``steps``-th step.

    SIGTERM, not SIGINT: a job started in the background inherits SIGINT ignored, and a
    trainer leaves an ignored signal ignored.
    """

    def __init__(self, optimizer, steps: int):
        self.optimizer, self.steps, self.taken = optimizer, steps, 0

    def __getattr__(self, name):
        return getattr(self.optimizer, name)

    def step(self) -> None:
        self.optimizer.step()
        self.taken += 1
        if self.taken == self.steps:
            signal.raise_signal(signal.SIGTERM)


STEPS = 10  # per epoch: the 300 training images KNOBS leaves, in batches of 32 (the last of 12)


@pytest.mark.parametrize("trainer, stop_after", [
    ("mlp", STEPS + 4), ("mlp", STEPS), ("mlp-lowlevel", STEPS + 4), ("scratch-softmax", STEPS + 4)],
    ids=["mlp-inside-epoch-2", "mlp-at-the-end-of-epoch-1", "mlp-lowlevel-inside-epoch-2",
         "scratch-softmax-inside-epoch-2"])
def test_a_run_stopped_and_resumed_in_process_matches_an_uninterrupted_one_bit_for_bit(
        trainer, stop_after, idx_dir, tmp_path, monkeypatch):
    """Every piece of state a resume needs (shuffling order and position, momentum, dropout's RNG) is kept."""
    import torch

    from trainers.catalog import TRAINERS

    dropout = ["--dropout", "0.3"] if trainer.startswith("mlp") else []
    args = [trainer, "--data-dir", str(idx_dir), "--epochs", "3", "--batch-size", "32", "--seed", "5",
            "--no-viz", *KNOBS, *dropout]
    whole = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "whole")])
    assert whole.exit_code == 0, whole.output
    (whole_dir,) = (tmp_path / "whole").iterdir()

    build = TRAINERS[trainer].build()
    with monkeypatch.context() as patch:
        def stopping(config, device):
            parts = build(config, device)
            parts.optimizer = StopAfter(parts.optimizer, stop_after)
            return parts

        patch.setattr(sys.modules[TRAINERS[trainer].module], "build", stopping)
        stopped = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "stopped")])
    assert stopped.exit_code == 143, stopped.output
    (run_dir,) = (tmp_path / "stopped").iterdir()
    state = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    progress = state["progress"]
    assert (progress["epoch"], progress["batch"], progress["step"]) == divmod(stop_after, STEPS) + (stop_after,)

    resumed = CliRunner().invoke(cli, [trainer, "--resume", str(run_dir), "--no-viz"])
    assert resumed.exit_code == 0, resumed.output
    assert records(run_dir) == records(whole_dir)
    ours, theirs = (torch.load(d / "checkpoint.pt", weights_only=True) for d in (run_dir, whole_dir))
    assert ours["model"].keys() == theirs["model"].keys()
    assert all(torch.equal(ours["model"][k], theirs["model"][k]) for k in theirs["model"])
    assert torch.equal(ours["rng"], theirs["rng"]) and torch.equal(ours["generator"], theirs["generator"])
