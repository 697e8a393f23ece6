"""Fashion-MNIST and MNIST, read by torchvision, then held on the device as whole tensors.

The seeds feed every sample through PIL and ``ToTensor`` in a ``DataLoader``; at this
size that costs ten times more than the model itself. Here torchvision reads and checks
the IDX files once, the images become one float tensor on the training device, and an
epoch is a ``randperm`` sliced into index batches.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torchvision import datasets

from viz.paths import cache_dir

RAW_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


@dataclass(frozen=True)
class DatasetSpec:
    """What trainviz knows about one dataset."""

    title: str  # how messages name it
    torchvision_class: type  # reader, integrity checks and download
    classes: tuple[str, ...]  # class names, in label order
    system_dir: Path | None  # where a system package installs the raw files


DATASETS = {
    "fashion-mnist": DatasetSpec(
        "Fashion-MNIST",
        datasets.FashionMNIST,
        ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
        Path("/usr/share/datasets/fashion-mnist"),
    ),
    "mnist": DatasetSpec("MNIST", datasets.MNIST, tuple("0123456789"), None),
}


class DataError(Exception):
    """The data could not be found or read; the message says what to do."""


@dataclass
class Split:
    """One split as tensors on the device: images (N, 1, 28, 28) in [0, 1], labels (N,)."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def batches(self, batch_size: int, generator: torch.Generator | None = None, skip: int = 0) -> Iterator[tuple]:
        """Yield (images, labels) batches; shuffled when a generator is given, in order otherwise.

        The last batch is smaller when the size does not divide the split. ``skip`` leaves
        out the first batches of the order (a resumed epoch has done them already).
        """
        n = len(self)
        if generator is None:
            for start in range(skip * batch_size, n, batch_size):
                yield self.images[start:start + batch_size], self.labels[start:start + batch_size]
            return
        # One permutation per epoch, drawn on the CPU so a seed means the same order everywhere.
        order = torch.randperm(n, generator=generator).to(self.labels.device)
        for start in range(skip * batch_size, n, batch_size):
            index = order[start:start + batch_size]
            # index_select copies whole rows; images[index] takes the general, 3x slower path.
            yield self.images.index_select(0, index), self.labels.index_select(0, index)


@dataclass
class Data:
    """Both splits of a dataset, with its class names and where it was read from."""

    train: Split
    test: Split
    classes: tuple[str, ...]
    source: Path


def load(dataset: str, data_dir: Path | None, device: torch.device) -> Data:
    """Find, read and check a dataset, and move it to ``device``.

    Args:
        dataset: a key of ``DATASETS``.
        data_dir: a folder in torchvision's layout or holding the four raw IDX files
            (gzipped or not). When given it is the only place looked at, and torchvision
            may download into it when it holds none of the files. When None: the user's
            cache, then the system package's folder, then torchvision's download into
            the cache.
        device: where the tensors live during training.

    Raises:
        DataError: nothing usable was found, or a file is damaged.

    Example:
        >>> data = load("fashion-mnist", None, torch.device("cpu"))  # doctest: +SKIP
        >>> data.train.images.shape
        torch.Size([60000, 1, 28, 28])
    """
    spec = DATASETS[dataset]
    root = _find_root(spec, data_dir)
    train, test = (_read(spec, root, train, device) for train in (True, False))
    return Data(train, test, spec.classes, root)


def _find_root(spec: DatasetSpec, data_dir: Path | None) -> Path:
    """A folder torchvision's class can read the dataset from, downloading as a last resort."""
    if data_dir is not None:
        if not data_dir.exists():
            raise DataError(f"--data-dir {data_dir} does not exist; create it to let torchvision download into it")
        if not data_dir.is_dir():
            raise DataError(f"--data-dir {data_dir} is a file, not a folder")
        return _usable_root(spec, data_dir) or _download(spec, data_dir)
    cache = cache_dir() / "data"
    for folder in (cache, spec.system_dir):
        if folder is not None and (root := _usable_root(spec, folder, stage_into=cache)):
            return root
    return _download(spec, cache)


def _usable_root(spec: DatasetSpec, folder: Path, stage_into: Path | None = None) -> Path | None:
    """A torchvision root for the raw files in ``folder``, or None when it holds none of them.

    Files in torchvision's own layout are used where they are; loose or gzipped files are
    unpacked into a copy in torchvision's layout (under ``stage_into``, or the cache).
    """
    raw = folder / spec.torchvision_class.__name__ / "raw"
    if all((raw / name).is_file() for name in RAW_FILES):
        return folder
    for place in (raw, folder):
        found = {name: _raw_file(place, name) for name in RAW_FILES}
        present = [path for path in found.values() if path]
        if not present:
            continue
        if len(present) < len(RAW_FILES):
            missing = ", ".join(name for name, path in found.items() if path is None)
            raise DataError(f"{place} holds only some of the {spec.title} files; missing: {missing}")
        target = stage_into or cache_dir() / "data" / "staged" / _digest(place)
        _stage(found, target / spec.torchvision_class.__name__ / "raw")
        return target
    return None


def _raw_file(folder: Path, name: str) -> Path | None:
    """The plain or gzipped IDX file ``name`` in ``folder``, if there."""
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _digest(folder: Path) -> str:
    """A short stable name for a source folder's staged copy."""
    return hashlib.sha1(str(folder.resolve()).encode()).hexdigest()[:12]


def _stage(files: dict[str, Path], raw: Path) -> None:
    """Copy (gunzipping) the raw files into ``raw``; skip ones already newer than their source."""
    raw.mkdir(parents=True, exist_ok=True)
    for name, source in files.items():
        target = raw / name
        if target.is_file() and target.stat().st_mtime >= source.stat().st_mtime:
            continue
        partial = target.with_suffix(".partial")
        try:
            opener = gzip.open if source.suffix == ".gz" else open
            with opener(source, "rb") as src, open(partial, "wb") as dst:
                shutil.copyfileobj(src, dst)
        except (OSError, EOFError) as err:
            partial.unlink(missing_ok=True)
            raise DataError(f"could not unpack {source}: {err}") from None
        partial.replace(target)


def _download(spec: DatasetSpec, root: Path) -> Path:
    """Let torchvision download (and checksum) the dataset into ``root``."""
    log = io.StringIO()
    try:
        # torchvision prints each failed mirror; keep that for the one-line error instead.
        with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            spec.torchvision_class(root, train=True, download=True)
    except Exception as err:  # network, disk and checksum failures all end the same way
        lines = [line.strip() for line in f"{log.getvalue()}\n{err}".splitlines() if line.strip()]
        reason = lines[-1] if lines else type(err).__name__
        raise DataError(
            f"no {spec.title} data found and the download into {root} failed ({reason}). "
            f"Put the four IDX files ({', '.join(RAW_FILES)}, gzipped or not) in a folder and "
            f"pass --data-dir FOLDER"
            + (", or install Debian's dataset-fashion-mnist package" if spec.system_dir else "")
            + ", or connect to the internet and run again"
        ) from None
    return root


def _read(spec: DatasetSpec, root: Path, train: bool, device: torch.device) -> Split:
    """Read one split through torchvision and check its shapes and labels."""
    split = "training" if train else "test"
    try:
        ds = spec.torchvision_class(root, train=train, download=False)
        images, labels = ds.data, ds.targets
    except Exception as err:  # torchvision signals a damaged file by asserts and shape errors
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DataError(
            f"could not read the {spec.title} {split} files under {root}: {reason}. "
            "The files may be truncated or not IDX files; replace them or delete them to download again"
        ) from None
    ok = (
        images.dim() == 3 and images.shape[1:] == (28, 28) and len(images) == len(labels) > 0
        and int(labels.min()) >= 0 and int(labels.max()) < len(spec.classes)
    )
    if not ok:
        raise DataError(
            f"the {spec.title} {split} files under {root} do not hold matching 28x28 images "
            f"and labels 0-{len(spec.classes) - 1}"
        )
    images = images.to(device=device, dtype=torch.float32).div_(255).unsqueeze(1)
    return Split(images, labels.to(device=device, dtype=torch.long))
