"""A model of one's own as a trainer: ``trainviz run PATH.py``, ``module:function``, an installed name.

The README's LeNet file trains through the same function and loop as the four built-in
trainers; its runs resume exactly, are listed by ``trainviz runs`` under the file's name,
are refused when the file changed, and sweep over the file's own settings. Every way a
file can be wrong is one line, exit 2, and no run folder.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_bad_input import assert_one_line_error
from test_readme import model_files

from trainers.cli import cli
from trainers.runs.table import find_runs, summary

ROOT = Path(__file__).resolve().parent.parent
FAST = ["--batch-size", "32", "--no-viz"]


@pytest.fixture
def lenet(tmp_path) -> Path:
    """The README's LeNet, saved as the README says."""
    path = tmp_path / "lenet.py"
    path.write_text(model_files()["lenet.py"])
    return path


def train(*args: str) -> object:
    return CliRunner().invoke(cli, list(args))


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_the_readme_lenet_trains_and_is_listed_under_its_file_name(lenet, idx_dir, tmp_path):
    out = tmp_path / "runs"
    result = train("run", str(lenet), "--data-dir", str(idx_dir), "--out", str(out), "--epochs", "2", *FAST,
                   "--filters", "4")
    assert result.exit_code == 0, result.output
    (run,) = find_runs(out)
    assert run.name.startswith("lenet-")
    config = run.read_config()
    assert config["trainer"] == str(lenet) and config["trainer_file"] == str(lenet) and config["filters"] == 4
    assert config["lr"] == 0.05 and config["momentum"] == 0.9  # the file's own defaults
    import hashlib

    assert config["trainer_sha256"] == hashlib.sha256(lenet.read_bytes()).hexdigest()
    row = summary(run, out)
    assert (row["trainer"], row["status"], row["epochs"]) == ("lenet.py", "finished", 2)
    assert row["settings"] == "lr=0.05 bs=32 mom=0.9 filters=4"  # the file's own setting beside the shared ones
    assert row["test_acc"] > 0.5  # chance is 0.1 on the synthetic task


def test_the_files_own_settings_are_options_checked_by_type(lenet):
    result = train("run", str(lenet), "--help")
    assert result.exit_code == 0, result.output
    assert "--filters INTEGER" in result.output and "filters of the first convolution" in result.output
    assert "default: 0.05;" in " ".join(result.output.split())  # --lr takes the file's default
    result = train("run", str(lenet), "--filters", "many")
    assert result.exit_code == 2 and "'many' is not a valid integer" in result.output


def test_a_resumed_run_ends_as_the_uninterrupted_one_and_a_changed_file_needs_force(lenet, idx_dir, tmp_path):
    common = ["run", str(lenet), "--data-dir", str(idx_dir), *FAST]
    assert train(*common, "--out", str(tmp_path / "whole"), "--epochs", "3").exit_code == 0
    assert train(*common, "--out", str(tmp_path / "parts"), "--epochs", "2").exit_code == 0
    (whole,), (parts,) = find_runs(tmp_path / "whole"), find_runs(tmp_path / "parts")
    resumed = train("run", str(lenet), "--resume", str(parts.path), "--epochs", "3", "--no-viz")
    assert resumed.exit_code == 0, resumed.output

    def numbers(run):
        return [{k: v for k, v in r.items() if k != "seconds"} for r in metrics(run.path)]

    assert numbers(parts) == numbers(whole)  # on the CPU, the same seed: exactly the same run

    lenet.write_text(lenet.read_text() + "\n# a comment changes the file\n")
    refused = train("run", str(lenet), "--resume", str(parts.path), "--epochs", "4", "--no-viz")
    assert_one_line_error(refused, "changed since")
    assert "--force" in refused.output
    assert len([r for r in metrics(parts.path) if r["kind"] == "epoch"]) == 3  # nothing was touched
    forced = train("run", str(lenet), "--resume", str(parts.path), "--epochs", "4", "--no-viz", "--force")
    assert forced.exit_code == 0, forced.output
    lenet.write_text(lenet.read_text().replace("nn.Linear(84, 10)", "nn.Linear(84, 42), nn.Linear(42, 10)"))
    reshaped = train("run", str(lenet), "--resume", str(parts.path), "--epochs", "5", "--no-viz", "--force")
    assert_one_line_error(reshaped, "does not fit the checkpoint", "its layers changed")


BAD_FILES = [
    ("missing.py", None, "no such file"),
    ("broken.py", "import torch\nraise ValueError('no data here')\n", "fails to import: ValueError: no data here"),
    ("syntax.py", "def build(config, device)\n    pass\n", "fails to import: SyntaxError"),
    ("nobuild.py", "x = 1\n", "defines no function build(config, device)"),
    ("number.py", "def build(config, device):\n    return 42\n", "returned int, not a model"),
    ("crash.py", "def build(config, device):\n    return undefined\n", "failed: NameError: name 'undefined'"),
    ("seven.py", "from torch import nn\ndef build(config, device):\n    return nn.Sequential(nn.Flatten(), "
                 "nn.Linear(784, 7))\n", "is (2, 7), not (2, 10)"),
    ("flat.py", "from torch import nn\ndef build(config, device):\n    return nn.Linear(784, 10)\n",
     "fails on a batch of training images of shape (2, 1, 28, 28)"),
    ("badconfig.py", "from dataclasses import dataclass\nfrom trainers.core.config import TrainConfig\n"
                     "@dataclass(frozen=True)\nclass Config(TrainConfig):\n    sizes: list = None\n"
                     "def build(config, device):\n    pass\n", "Config.sizes is list"),
    ("exits.py", "import sys\nsys.exit(0)\n", "fails to import: SystemExit: 0"),  # never trainviz's own exit
    ("buildexits.py", "import sys\ndef build(config, device):\n    sys.exit(3)\n", "failed: SystemExit: 3"),
    ("frozen.py", "import torch\nfrom torch import nn\ndef build(config, device):\n    model = nn.Sequential("
                  "nn.Flatten(), nn.Linear(784, 10))\n    model.requires_grad_(False)\n    return model\n",
     "cannot learn from a batch of training images: RuntimeError: element 0 of tensors does not require grad"),
    ("clash.py", "from dataclasses import dataclass\nfrom torch import nn\nfrom trainers.core.config import TrainConfig\n"
                 "@dataclass(frozen=True)\nclass Config(TrainConfig):\n    help: int = 3\n"
                 "def build(config, device):\n    return nn.Sequential(nn.Flatten(), nn.Linear(784, 10))\n",
     "Config.help takes the name of an option trainviz has already (--help)"),
    ("sweepclash.py", "from dataclasses import dataclass\nfrom torch import nn\n"
                      "from trainers.core.config import TrainConfig\n@dataclass(frozen=True)\n"
                      "class Config(TrainConfig):\n    trials: int = 3\n"
                      "def build(config, device):\n    return nn.Sequential(nn.Flatten(), nn.Linear(784, 10))\n",
     "Config.trials takes the name of an option trainviz has already (--trials)"),  # the sweep's: said in a run too
]


@pytest.mark.parametrize("name, source, words", BAD_FILES, ids=[name for name, _, _ in BAD_FILES])
def test_a_model_file_that_cannot_be_used_is_one_line_and_no_run_folder(name, source, words, idx_dir, tmp_path):
    path = tmp_path / name
    if source is not None:
        path.write_text(source)
    out = tmp_path / "runs"
    result = train("run", str(path), "--data-dir", str(idx_dir), "--out", str(out), "--epochs", "1", *FAST)
    assert_one_line_error(result, words)
    assert not out.exists() or not any(out.iterdir())


TWO_HEADS = """
from torch import nn


class TwoHeads(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))

    def forward(self, images):
        logits = self.body(images)
        return (logits, logits) if self.training else logits  # an auxiliary head in training, as Inception's


def build(config, device):
    return TwoHeads().to(device)
"""


def test_a_model_that_fails_only_in_training_mode_is_one_line_and_a_failed_run(idx_dir, tmp_path):
    """The checks before the first step run in evaluation mode; what fails after them is still the model's line."""
    path = tmp_path / "twoheads.py"
    path.write_text(TWO_HEADS)
    out = tmp_path / "runs"
    result = train("run", str(path), "--data-dir", str(idx_dir), "--out", str(out), "--epochs", "1", *FAST)
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    (run,) = find_runs(out)
    line = result.stderr.strip().splitlines()[-1]  # after the epoch's progress bar, which a terminal erases
    assert line.startswith(f"Error: {path}: the model, its loss or its optimizer failed at epoch 1, step 1: "
                           "TypeError: "), line
    assert "not tuple" in line and line.endswith(f"the metrics so far are in {run.path}")
    assert run.read_status()["status"] == "failed"
    assert summary(run, out)["status"] == "failed"


def test_module_function_and_an_installed_entry_point_name_run_the_same_trainer(idx_dir, tmp_path):
    """A package's trainer: ``module:function``, and by name through the entry-point group, listed without torch."""
    package = tmp_path / "site"
    (package / "tinynets").mkdir(parents=True)
    (package / "tinynets" / "__init__.py").write_text(textwrap.dedent("""
        from torch import nn

        def softmax(config, device):
            return nn.Sequential(nn.Flatten(), nn.Linear(784, 10)).to(device)
    """))
    info = package / "tinynets-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tinynets\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[trainviz.trainers]\ntiny-softmax = tinynets:softmax\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(package), str(ROOT)]), "TQDM_DISABLE": "1"}
    listed = subprocess.run([sys.executable, "-c", "import sys\nfrom trainers.cli import cli\n"
                             "try:\n    cli(['--help'])\nexcept SystemExit:\n    pass\n"
                             "print('torch imported' if 'torch' in sys.modules else 'no torch')"],
                            env=env, capture_output=True, text=True, timeout=60)
    assert "tiny-softmax" in listed.stdout and "tinynets:softmax" in listed.stdout, listed.stdout
    assert listed.stdout.strip().endswith("no torch")
    for spec in ("tinynets:softmax", "tiny-softmax"):
        out = tmp_path / spec.replace(":", "_")
        done = subprocess.run([sys.executable, "-m", "trainers", "run", spec, "--data-dir", str(idx_dir), "--out",
                               str(out), "--epochs", "1", *FAST], env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        (run,) = find_runs(out)
        assert run.read_config()["trainer"] == "tinynets:softmax"


def test_a_first_convolution_is_shown_as_its_filters(lenet, idx_dir, tmp_path, monkeypatch):
    from trainers.core import training
    from viz.dashboard.sink import RecordingSink

    recorded = RecordingSink()
    monkeypatch.setattr(training, "make_sink", lambda config, run, resumed=False: recorded)
    result = train("run", str(lenet), "--data-dir", str(idx_dir), "--out", str(tmp_path / "runs"), "--epochs", "1",
                   "--batch-size", "32")
    assert result.exit_code == 0, result.output
    (templates,) = [e for e in recorded.events if e["kind"] == "templates"]
    assert templates["shape"] == [6, 5, 5] and all(c.startswith("filter ") for c in templates["captions"])
    kinds = {e["kind"] for e in recorded.events}
    assert {"series", "scalars", "images", "table", "confusion", "bars", "histogram", "config"} <= kinds


@pytest.mark.slow
def test_a_sweep_over_the_files_own_setting(lenet, idx_dir, tmp_path):
    out = tmp_path / "runs"
    result = train("sweep", str(lenet), "--data-dir", str(idx_dir), "--out", str(out), "--epochs", "1",
                   "--batch-size", "32", "--val-size", "100", "--no-viz", "--param", "filters=2|4", "--jobs", "2")
    assert result.exit_code == 0, result.output
    trials = [run.read_config() for run in find_runs(out)]
    assert sorted(t["filters"] for t in trials) == [2, 4]
    assert all(t["trainer"] == str(lenet) for t in trials)
    assert "reproduce trial" in result.output and f"trainviz run {lenet}" in result.output


def test_an_optimizer_of_ones_own_keeps_its_rate_relative_to_lr(idx_dir, tmp_path):
    """build returns (model, loss, Adam at 1e-3): --lr 0.1 and the schedule scale it, not replace it."""
    path = tmp_path / "adam.py"
    path.write_text(textwrap.dedent("""
        import torch
        from torch import nn

        def build(config, device):
            model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10)).to(device)
            return model, nn.CrossEntropyLoss(), torch.optim.Adam(model.parameters(), lr=1e-3)
    """))
    out = tmp_path / "runs"
    result = train("run", str(path), "--data-dir", str(idx_dir), "--out", str(out), "--epochs", "1", *FAST)
    assert result.exit_code == 0, result.output
    (run,) = find_runs(out)
    (epoch,) = [r for r in metrics(run.path) if r["kind"] == "epoch"]
    assert epoch["lr"] == pytest.approx(1e-3)
    swapped = tmp_path / "swapped.py"
    swapped.write_text(path.read_text().replace(
        "return model, nn.CrossEntropyLoss(), torch.optim.Adam(model.parameters(), lr=1e-3)",
        "return model, torch.optim.Adam(model.parameters(), lr=1e-3), nn.CrossEntropyLoss()"))
    result = train("run", str(swapped), "--data-dir", str(idx_dir), "--out", str(tmp_path / "r2"), "--epochs", "1", *FAST)
    assert_one_line_error(result, "not (model, loss, optimizer)")
