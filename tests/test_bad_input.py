"""Bad input: exit status 2, one line on stderr, no traceback, no run folder."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from trainers.cli import cli
from tests.conftest import write_idx_dir


def assert_one_line_error(result, *words: str):
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ")
    assert "Traceback" not in result.output
    for word in words:
        assert word in lines[0]


@pytest.mark.parametrize("args, words", [
    (["--lr", "0"], ["--lr", "0"]),
    (["--lr", "-1"], ["--lr"]),
    (["--lr", "abc"], ["--lr", "abc"]),
    (["--epochs", "0"], ["--epochs"]),
    (["--batch-size", "0"], ["--batch-size"]),
    (["--batch-size", "100000"], ["--batch-size", "larger"]),
    (["--dataset", "cifar"], ["--dataset", "cifar"]),
    (["--device", "tpu"], ["--device"]),
    (["--momentum", "1"], ["--momentum"]),
    (["--weight-decay", "-0.1"], ["--weight-decay"]),
    (["--schedule", "linear"], ["--schedule", "linear"]),
    (["--val-size", "-5"], ["--val-size"]),
    (["--val-size", "600"], ["--val-size 600", "no training images"]),
    (["--no-test"], ["--no-test", "--val-size"]),
])
def test_bad_options(args, words, idx_dir, tmp_path):
    out = tmp_path / "runs"
    result = CliRunner().invoke(cli, ["scratch-softmax", "--data-dir", str(idx_dir), "--out", str(out), "--no-viz", *args])
    assert_one_line_error(result, *words)
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize("args, words", [
    (["--activation", "tanh"], ["--activation", "tanh"]),
    (["--hidden", "200,x"], ["--hidden", "200,x"]),
    (["--hidden", "200,0"], ["--hidden"]),
    (["--hidden", ""], ["--hidden"]),
])
def test_bad_mlp_options(args, words, idx_dir, tmp_path):
    result = CliRunner().invoke(cli, ["mlp", "--data-dir", str(idx_dir), "--out", str(tmp_path), "--no-viz", *args])
    assert_one_line_error(result, *words)


def test_missing_files_are_named(tmp_path):
    data = write_idx_dir(tmp_path / "idx")
    (data / "t10k-labels-idx1-ubyte.gz").unlink()
    result = CliRunner().invoke(cli, ["nn-softmax", "--data-dir", str(data), "--out", str(tmp_path / "r"), "--no-viz"])
    assert_one_line_error(result, "t10k-labels-idx1-ubyte", "missing")


@pytest.mark.parametrize("damage", ["truncate", "magic"])
def test_damaged_files_are_reported(damage, tmp_path):
    data = write_idx_dir(tmp_path / "idx", gz=False)
    images = data / "train-images-idx3-ubyte"
    raw = images.read_bytes()
    images.write_bytes(raw[: len(raw) // 2] if damage == "truncate" else b"\x00\x00\x99\x07" + raw[4:])
    result = CliRunner().invoke(cli, ["nn-softmax", "--data-dir", str(data), "--out", str(tmp_path / "r"), "--no-viz"])
    assert_one_line_error(result, "could not read", "training")
    assert not (tmp_path / "r").exists()


def test_cuda_without_gpu_is_a_clear_error(idx_dir, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    result = CliRunner().invoke(cli, ["mlp", "--device", "cuda", "--data-dir", str(idx_dir), "--out", str(tmp_path)])
    assert_one_line_error(result, "--device cuda", "--device cpu")


def test_evaluate_of_a_folder_that_is_not_a_run(tmp_path):
    result = CliRunner().invoke(cli, ["evaluate", str(tmp_path)])
    assert_one_line_error(result, "checkpoint.pt")
