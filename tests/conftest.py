"""Shared fixtures: tiny IDX datasets written by the tests, an isolated cache, free ports."""

from __future__ import annotations

import gzip
import os
import socket
import struct
from pathlib import Path

import numpy as np
import pytest

RAW = {
    "train-images-idx3-ubyte": ("images", True),
    "train-labels-idx1-ubyte": ("labels", True),
    "t10k-images-idx3-ubyte": ("images", False),
    "t10k-labels-idx1-ubyte": ("labels", False),
}


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode a uint8 array in the IDX format (magic 0x08 = unsigned byte, then big-endian dims)."""
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def synthetic_split(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A learnable 10-class task: each class lights its own 28x28 band, plus noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, size=n).astype(np.uint8)
    images = rng.integers(0, 60, size=(n, 28, 28)).astype(np.uint8)
    for i, label in enumerate(labels):
        images[i, 2 * label + 4: 2 * label + 7, 3:25] = 230
    return images, labels


def write_idx_dir(folder: Path, n_train: int = 600, n_test: int = 200, gz: bool = True) -> Path:
    """Write the four raw files of a synthetic dataset into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    splits = {True: synthetic_split(n_train, 1), False: synthetic_split(n_test, 2)}
    for name, (part, train) in RAW.items():
        images, labels = splits[train]
        data = idx_bytes(images if part == "images" else labels)
        if gz:
            with gzip.open(folder / f"{name}.gz", "wb") as f:
                f.write(data)
        else:
            (folder / name).write_bytes(data)
    return folder


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    """Every test gets its own cache folder, so none sees the user's data or server state."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("TRAINVIZ_CACHE", str(cache))
    return cache


@pytest.fixture
def idx_dir(tmp_path) -> Path:
    """A folder holding the four gzipped IDX files of the synthetic task."""
    return write_idx_dir(tmp_path / "idx")


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


def missing(reason: str) -> None:
    """Skip for a missing tool, or fail where the full suite is required (TRAINVIZ_REQUIRE_FULL, CI)."""
    if os.environ.get("TRAINVIZ_REQUIRE_FULL"):
        pytest.fail(f"{reason} (TRAINVIZ_REQUIRE_FULL is set)")
    pytest.skip(reason)
