"""One epoch of each trainer on the real Fashion-MNIST, read from Debian's package.

Skipped where the package is not installed, except in CI (TRAINVIZ_REQUIRE_FULL=1),
which installs it and so must run these.
"""

from __future__ import annotations

import json
import os

import pytest
import torch
from click.testing import CliRunner

from tests.conftest import FASHION_DIR
from trainers.catalog import TRAINERS
from trainers.cli import cli
from trainers.core.data import load

pytestmark = pytest.mark.slow

if not FASHION_DIR.is_dir() and not os.environ.get("TRAINVIZ_REQUIRE_FULL"):
    pytest.skip(f"Fashion-MNIST is not installed in {FASHION_DIR} (apt-get install dataset-fashion-mnist)",
                allow_module_level=True)


@pytest.mark.parametrize("trainer", sorted(TRAINERS))
def test_one_epoch_on_fashion_mnist(trainer, tmp_path, monkeypatch):
    # No --data-dir: the default search must find Debian's folder and stage it into the cache.
    result = CliRunner().invoke(cli, [trainer, "--epochs", "1", "--no-viz", "--out", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    (run_dir,) = (tmp_path / "runs").iterdir()
    config = json.loads((run_dir / "config.json").read_text())
    assert config["data_source"].startswith(os.environ["TRAINVIZ_CACHE"])
    last = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["kind"] == "epoch" and last["step"] == 375  # 60000 / 160
    assert last["test_acc"] > 0.75, last


def test_standardized_fashion_mnist_pixels_have_mean_0_and_std_1():
    data = load("fashion-mnist", FASHION_DIR, torch.device("cpu")).standardized()
    assert (data.train.mean, data.train.std) == pytest.approx((0.2860, 0.3530), abs=1e-4)  # as torchvision users know
    images = torch.cat([images for images, _ in data.train.batches(10_000)])
    assert abs(images.mean().item()) < 1e-3 and abs(images.std().item() - 1) < 1e-3
