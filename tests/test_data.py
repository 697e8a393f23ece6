"""Finding and reading the data: layouts, sources in order, and torchvision's real download."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import http.server
import shutil
import threading
from pathlib import Path

import pytest
import torch
from torchvision import datasets

from tests.conftest import RAW, free_port, write_idx_dir
from trainers.core import data as data_module
from trainers.core.data import DataError, load

CPU = torch.device("cpu")


@pytest.mark.parametrize("gz", [True, False])
def test_loose_raw_files_load_gzipped_or_not(gz, tmp_path):
    folder = write_idx_dir(tmp_path / "idx", gz=gz)
    data = load("mnist", folder, CPU)
    assert data.train.pixels.shape == (600, 1, 28, 28) and data.test.pixels.shape == (200, 1, 28, 28)
    assert data.train.pixels.dtype == torch.uint8
    images, labels = next(data.train.batches(600))
    assert images.dtype == torch.float32 and 0 <= images.min() < images.max() <= 1
    assert torch.equal(images, data.train.pixels.float() / 255) and torch.equal(labels, data.train.labels)
    assert data.classes == tuple("0123456789")


def test_torchvision_layout_is_used_in_place(tmp_path):
    root = tmp_path / "root"
    write_idx_dir(root / "FashionMNIST" / "raw", gz=False)
    data = load("fashion-mnist", root, CPU)
    assert data.source == root and data.classes[0] == "T-shirt/top" and data.classes[-1] == "Ankle boot"


def test_cache_comes_before_the_system_folder(tmp_path, isolated_cache, monkeypatch):
    write_idx_dir(isolated_cache / "data" / "FashionMNIST" / "raw", n_train=100, gz=False)
    system = write_idx_dir(tmp_path / "system", n_train=300)
    monkeypatch.setitem(data_module.DATASETS, "fashion-mnist",
                        dataclasses.replace(data_module.DATASETS["fashion-mnist"], system_dir=system))
    assert len(load("fashion-mnist", None, CPU).train) == 100
    shutil.rmtree(isolated_cache / "data")
    # Without a cache, the system folder is found and staged into the cache for next time.
    data = load("fashion-mnist", None, CPU)
    assert len(data.train) == 300 and data.source == isolated_cache / "data"
    assert (isolated_cache / "data" / "FashionMNIST" / "raw" / "train-images-idx3-ubyte").is_file()


def test_batches_cover_the_split_once_in_a_seeded_order(tmp_path):
    data = load("mnist", write_idx_dir(tmp_path / "idx"), CPU)
    first = [labels for _, labels in data.train.batches(64, torch.Generator().manual_seed(3))]
    again = [labels for _, labels in data.train.batches(64, torch.Generator().manual_seed(3))]
    assert [len(b) for b in first] == [64] * 9 + [24]
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert torch.equal(torch.cat(first).sort().values, data.train.labels.sort().values)


def test_standardized_batches_use_the_training_splits_mean_and_std_in_every_split(tmp_path):
    data = load("mnist", write_idx_dir(tmp_path / "idx"), CPU)
    plain = data.held_out(100)
    standard = plain.standardized()
    unit = plain.train.pixels.double() / 255
    mean, std = unit.mean().item(), unit.std().item()  # the training images', not the validation's
    assert (standard.train.mean, standard.train.std) == pytest.approx((mean, std), rel=1e-9)
    for split in ("train", "val", "test"):
        (images, _), (scaled, _) = (next(getattr(d, split).batches(50)) for d in (plain, standard))
        assert images.min() >= 0 and images.max() <= 1
        torch.testing.assert_close(scaled, (images - mean) / std)
    whole = data.standardized()  # a split held out afterwards keeps its statistics
    assert (whole.held_out(100).val.mean, whole.held_out(100).val.std) == (whole.train.mean, whole.train.std)


@pytest.fixture
def mirror(tmp_path):
    """A loopback HTTP server serving a synthetic dataset's gzipped files."""
    folder = write_idx_dir(tmp_path / "mirror")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def test_download_goes_through_torchvision_with_its_checksums(mirror, tmp_path, monkeypatch):
    """torchvision's real download and md5 checks run, against a mirror on this machine."""
    folder, url = mirror
    resources = [(f"{name}.gz", hashlib.md5((folder / f"{name}.gz").read_bytes()).hexdigest()) for name in RAW]
    monkeypatch.setattr(datasets.MNIST, "mirrors", [url])
    monkeypatch.setattr(datasets.MNIST, "resources", resources)
    target = tmp_path / "empty"
    target.mkdir()
    data = load("mnist", target, CPU)
    assert len(data.train) == 600 and (target / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").is_file()


def test_download_with_a_wrong_checksum_is_refused(mirror, tmp_path, monkeypatch):
    _, url = mirror
    monkeypatch.setattr(datasets.MNIST, "mirrors", [url])
    monkeypatch.setattr(datasets.MNIST, "resources", [(f"{name}.gz", "0" * 32) for name in RAW])
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="download"):
        load("mnist", tmp_path / "empty", CPU)


def test_failed_download_names_every_way_to_get_the_data(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets.FashionMNIST, "mirrors", [f"http://127.0.0.1:{free_port()}/"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError) as err:
        load("fashion-mnist", tmp_path / "empty", CPU)
    message = str(err.value)
    assert "\n" not in message
    for hint in ("--data-dir", "dataset-fashion-mnist", "internet", "train-images-idx3-ubyte"):
        assert hint in message


DECODED_ONLY = """
import sys, torch
from pathlib import Path
from trainers.core.data import load
data = load("mnist", Path(sys.argv[1]), torch.device("cpu"))
print(len(data.train), "torchvision" in sys.modules)
"""


def test_a_second_load_reads_the_decoded_cache_without_torchvision(tmp_path, isolated_cache):
    import os
    import subprocess
    import sys

    folder = write_idx_dir(tmp_path / "idx")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    runs = [subprocess.run([sys.executable, "-c", DECODED_ONLY, str(folder)], capture_output=True, text=True,
                           env=env, check=True).stdout.split() for _ in range(2)]
    assert runs == [["600", "True"], ["600", "False"]]


def test_a_changed_source_is_read_again(tmp_path):
    folder = write_idx_dir(tmp_path / "idx", gz=False)
    first = load("mnist", folder, CPU)
    write_idx_dir(folder, n_train=300, gz=False)  # new files of another size under the same names
    second = load("mnist", folder, CPU)
    assert (len(first.train), len(second.train)) == (600, 300)


def test_a_damaged_decoded_cache_is_read_again(tmp_path, isolated_cache):
    folder = write_idx_dir(tmp_path / "idx")
    expected = load("mnist", folder, CPU)
    for cached in (isolated_cache / "data" / "decoded").glob("*.pt"):
        cached.write_bytes(b"not a torch file")
    again = load("mnist", folder, CPU)
    assert torch.equal(again.train.pixels, expected.train.pixels)
