"""Every trainer command end to end through Click, on a synthetic dataset the tests write."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from trainers.catalog import TRAINERS
from trainers.cli import cli

ROOT = Path(__file__).resolve().parent.parent
EPOCH_KEYS = {"kind", "epoch", "step", "train_loss", "train_acc", "test_loss", "test_acc", "lr", "seconds"}


def run_cli(*args: str):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def train(trainer: str, idx_dir, out, *extra: str):
    result = run_cli(trainer, "--data-dir", idx_dir, "--out", out, "--no-viz", "--epochs", 2,
                     "--batch-size", 32, *extra)
    assert result.exit_code == 0, result.output
    (run_dir,) = out.iterdir()
    return result, run_dir


@pytest.mark.parametrize("trainer", sorted(TRAINERS))
def test_each_trainer_learns_and_leaves_a_complete_run_dir(trainer, idx_dir, tmp_path):
    result, run_dir = train(trainer, idx_dir, tmp_path / "runs", "--log-every", 5)

    assert run_dir.name.startswith(f"{trainer}-")
    config = json.loads((run_dir / "config.json").read_text())
    assert config["trainer"] == trainer and config["epochs"] == 2 and config["batch_size"] == 32
    assert config["torch"] and config["device_name"] == "cpu" and config["dataset"] == "fashion-mnist"

    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if r["kind"] == "step"]
    epochs = [r for r in records if r["kind"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [1, 2]
    assert all(set(r) == EPOCH_KEYS for r in epochs)
    # 600 samples / 32 = 19 steps an epoch; every 5th step is logged
    assert [r["step"] for r in steps] == [5, 10, 15, 20, 25, 30, 35]
    assert epochs[-1]["step"] == 38
    assert epochs[-1]["test_acc"] > 0.5  # chance is 0.1
    assert epochs[-1]["train_loss"] < epochs[0]["train_loss"]
    assert (run_dir / "checkpoint.pt").is_file()
    assert f"{run_dir}: test accuracy {epochs[-1]['test_acc']:.4f} after 2 epochs" in result.stdout


def test_mlp_takes_leaky_relu_and_custom_hidden_sizes(idx_dir, tmp_path):
    _, run_dir = train("mlp", idx_dir, tmp_path / "runs", "--activation", "leaky-relu",
                       "--negative-slope", "0.1", "--hidden", "64,32,16")
    config = json.loads((run_dir / "config.json").read_text())
    assert config["activation"] == "leaky-relu" and config["hidden"] == [64, 32, 16]
    import torch

    state = torch.load(run_dir / "checkpoint.pt", weights_only=True)["model"]
    assert [tuple(v.shape) for k, v in state.items() if k.endswith("weight")] == [(64, 784), (32, 64), (16, 32), (10, 16)]


@pytest.mark.parametrize("trainer", ["scratch-softmax", "mlp"])
def test_same_seed_gives_identical_metrics(trainer, idx_dir, tmp_path):
    def metrics(out):
        _, run_dir = train(trainer, idx_dir, out, "--seed", "7")
        records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        return [{k: v for k, v in r.items() if k != "seconds"} for r in records]

    assert metrics(tmp_path / "a") == metrics(tmp_path / "b")


def test_evaluate_matches_the_last_epoch(idx_dir, tmp_path):
    _, run_dir = train("mlp-lowlevel", idx_dir, tmp_path / "runs")
    last = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])
    result = run_cli("evaluate", run_dir)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"{run_dir}: test loss {last['test_loss']:.4f}, test accuracy {last['test_acc']:.4f}"


def test_two_runs_in_the_same_second_get_their_own_folders(idx_dir, tmp_path):
    out = tmp_path / "runs"
    for _ in range(2):
        assert run_cli("nn-softmax", "--data-dir", idx_dir, "--out", out, "--no-viz", "--epochs", 1).exit_code == 0
    assert len(list(out.iterdir())) == 2


def test_help_shows_every_default():
    help_text = " ".join(run_cli("mlp", "--help").output.split())
    for text in ("--dataset [fashion-mnist|mnist]", "--epochs", "default: 10", "--lr", "--hidden",
                 "default: 200,200", "--activation", "leaky-relu", "--no-viz", "--out", "default: runs"):
        assert text in help_text


def test_python_dash_m_trainers_is_the_same_command():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "trainers", "--help"], capture_output=True, text=True, check=True)
    assert all(name in out.stdout for name in TRAINERS)


# What each command imported, run in a fresh interpreter: torch and torchvision must not be there,
# nor what visdom 0.3.0 would import for embeddings (openTSNE, with scikit-learn and scipy).
HEAVY = ("torch", "torchvision", "openTSNE", "sklearn", "scipy")
IMPORTS_SCRIPT = """
import sys
from trainers.cli import cli
status = cli.main(sys.argv[1:], prog_name="trainviz", standalone_mode=False)
print("HEAVY", [name for name in HEAVY if name in sys.modules], file=sys.stderr)
""".replace("HEAVY if", f"{HEAVY} if")


@pytest.mark.parametrize("args", [
    ["--help"], ["--version"], ["mlp", "--help"], ["mlp", "--lr", "abc"], ["mlp", "--env", "../../tmp/x"],
    ["nn-softmax", "--server", "ftp://x"], ["server", "status", "--port", "1"], ["replay", "nowhere"],
    ["evaluate", "nowhere"], ["runs", "."], ["compare", "nowhere"], ["sweep", "mlp", "--param", "lr=0|1"],
    ["sweep", "mlp", "--param", "lr=0.01..0.1"],
], ids=" ".join)
def test_commands_that_do_not_train_never_import_torch(args, tmp_path):
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", IMPORTS_SCRIPT, *args], capture_output=True, text=True,
                            cwd=tmp_path, env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    assert "HEAVY []" in result.stderr, result.stderr


def test_replay_of_a_real_run_imports_no_torch(idx_dir, tmp_path):
    """replay reads events.jsonl and draws through visdom's client, which would import torch itself."""
    import os
    import subprocess
    import sys

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text('{"env": "r"}')
    (run / "events.jsonl").write_text('{"kind": "text", "win": "predictions", "html": "x"}\n')
    port = __import__("tests.conftest", fromlist=["free_port"]).free_port()
    result = subprocess.run([sys.executable, "-c", IMPORTS_SCRIPT, "replay", str(run), "--port", str(port)],
                            capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert "no visdom server answers" in result.stderr and "HEAVY []" in result.stderr, result.stderr


def test_version():
    from trainers import __version__

    result = run_cli("--version")
    assert result.exit_code == 0 and result.output.strip() == f"trainviz, version {__version__}"


def test_every_activation_choice_has_a_layer():
    from trainers.catalog import ACTIVATIONS
    from trainers.models.mlp import ACTIVATION_LAYERS

    assert set(ACTIVATIONS) == set(ACTIVATION_LAYERS)


def test_visdom_is_imported_without_torch_and_leaves_sys_modules_alone():
    """The import finder hides torch from visdom only while visdom is imported: nothing is left in its place."""
    import subprocess
    import sys

    script = ("import sys; from viz.dashboard.client import visdom; "
              "print('torch' in sys.modules, 'openTSNE' in sys.modules, sys.meta_path[0].__class__.__name__); "
              "import torch; print(type(sys.modules['torch']).__name__)")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                            env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr
    first, second = result.stdout.splitlines()
    assert first.split()[:2] == ["False", "False"] and first.split()[2] != "_Hidden"
    assert second == "module"
