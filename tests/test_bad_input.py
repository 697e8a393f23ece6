"""Bad input: exit status 2, one line on stderr, no traceback, no run folder."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from tests.conftest import write_idx_dir
from trainers.cli import cli


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
    # rates and sizes the options took and the run could not use
    (["--lr", "nan"], ["--lr", "not a finite number"]),
    (["--lr", "inf"], ["--lr", "not a finite number"]),
    (["--lr", "1e39"], ["--lr", "1e+39", "range"]),
    (["--weight-decay", "nan"], ["--weight-decay", "not a finite number"]),
    (["--weight-decay", "1e39"], ["--weight-decay", "range"]),
    (["--momentum", "nan"], ["--momentum", "not a finite number"]),
    (["--seed", str(2**64)], ["--seed", "64 bits"]),
    (["--server", "http://[::1"], ["--server", "not a server URL"]),
    (["--server", "http://localhost:8097"], ["--server", "names a port", "--port"]),
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
    (["--hidden", "100000000"], ["--hidden", "wider than 1,000,000"]),
    (["--dropout", "nan"], ["--dropout", "not a finite number"]),
    (["--negative-slope", "inf"], ["--negative-slope", "not a finite number"]),
    # 1.6 trillion weights: more memory than any machine has, said before anything is allocated
    (["--hidden", "900000,900000,900000"], ["the model needs about", "GB of memory", "--hidden"]),
])
def test_bad_mlp_options(args, words, idx_dir, tmp_path):
    out = tmp_path / "runs"
    result = CliRunner().invoke(cli, ["mlp", "--data-dir", str(idx_dir), "--out", str(out), "--no-viz", *args])
    assert_one_line_error(result, *words)
    assert not out.exists() or not any(out.iterdir()), "a refused run must not leave a run folder"


def test_a_model_that_cannot_be_allocated_says_so_in_one_line(idx_dir, tmp_path, monkeypatch):
    """Past the estimate (memory the machine reports free), the allocator's own refusal is one line too."""
    import trainers.core.training
    from trainers.models import mlp

    monkeypatch.setattr(trainers.core.training, "available_memory", lambda: None)  # no estimate: build it

    def refuse(config, device):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: "
                           "you tried to allocate 3136000000000 bytes. Error code 12 (Cannot allocate memory)")

    monkeypatch.setattr(mlp, "build", refuse)
    out = tmp_path / "runs"
    result = CliRunner().invoke(cli, ["mlp", "--data-dir", str(idx_dir), "--out", str(out), "--no-viz"])
    assert_one_line_error(result, "cannot be allocated on cpu", "can't allocate memory", "--hidden")
    assert not out.exists() or not any(out.iterdir())


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
