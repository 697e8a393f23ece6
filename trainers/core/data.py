"""Fashion-MNIST and MNIST, read by torchvision once, then held on the device as whole tensors.

The seeds feed every sample through PIL and ``ToTensor`` in a ``DataLoader``; at this
size that costs ten times more than the model itself. Here torchvision reads and checks
the IDX files once, the decoded uint8 images and labels are cached as one ``.pt`` file
per split (later runs load them without importing torchvision), the images become one
float tensor on the training device, and an epoch is a ``randperm`` sliced into index
batches.

Several trainers (or sweep workers) may start at once on an empty cache: everything
that writes into the cache happens under one lock, each file is written under a name
of its own and renamed into place, so no process ever reads a half-written file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import hashlib
import io
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from trainers.catalog import DATASETS, Dataset
from viz.paths import atomic_path, cache_dir, locked

RAW_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
SPLIT_FILES = {True: RAW_FILES[:2], False: RAW_FILES[2:]}  # train: images, labels; test: the same


class DataError(Exception):
    """The data could not be found or read; the message says what to do."""


@dataclass
class Split:
    """One split on the device: uint8 images (N, 1, 28, 28) and labels (N,).

    Pixels stay bytes (a quarter of the memory of floats, and no conversion of the whole
    set at start-up); each batch becomes floats as it is drawn: (pixel / 255 - mean) / std,
    in [0, 1] with the defaults.
    """

    pixels: torch.Tensor
    labels: torch.Tensor
    mean: float = 0.0
    std: float = 1.0

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: torch.Tensor) -> Split:
        """The samples at ``index``, copied."""
        return dataclasses.replace(self, pixels=self.pixels.index_select(0, index),
                                   labels=self.labels.index_select(0, index))

    def batches(self, batch_size: int, generator: torch.Generator | None = None, skip: int = 0) -> Iterator[tuple]:
        """Yield (images, labels) batches, images as floats; shuffled when a generator is given.

        The last batch is smaller when the size does not divide the split. ``skip`` leaves
        out the first batches of the order (a resumed epoch has done them already).
        """
        n = len(self)
        if generator is None:
            for start in range(skip * batch_size, n, batch_size):
                yield self.floats(self.pixels[start:start + batch_size]), self.labels[start:start + batch_size]
            return
        # One permutation per epoch, drawn on the CPU so a seed means the same order everywhere.
        order = torch.randperm(n, generator=generator).to(self.labels.device)
        for start in range(skip * batch_size, n, batch_size):
            index = order[start:start + batch_size]
            # index_select copies whole rows; pixels[index] takes the general, 3x slower path.
            yield self.floats(self.pixels.index_select(0, index)), self.labels.index_select(0, index)

    def statistics(self) -> tuple[float, float]:
        """The mean and standard deviation of the split's pixels, in [0, 1], from their histogram."""
        counts = torch.bincount(self.pixels.flatten(), minlength=256).cpu().double()
        values = torch.arange(256, dtype=torch.float64) / 255
        n = counts.sum()
        mean = (counts * values).sum() / n
        return mean.item(), ((counts * (values - mean) ** 2).sum() / (n - 1)).sqrt().item()

    def floats(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 pixels -> float32 (pixel / 255 - mean) / std: one conversion, then in place."""
        images = pixels.float()
        if self.mean:
            images.sub_(self.mean * 255)
        return images.div_(self.std * 255)


# Seeds the validation split: the same held-out images whatever --seed a run trains with,
# so every trial of a sweep is judged on the same set.
VALIDATION_SEED = 2024


@dataclass
class Data:
    """A dataset's splits, with its class names and where it was read from.

    ``val`` exists when training images are held out for validation; ``test`` is None
    when a run must not look at the test set (a sweep trial).
    """

    train: Split
    test: Split | None
    classes: tuple[str, ...]
    source: Path
    val: Split | None = None

    def standardized(self) -> Data:
        """These data with every split's batches drawn as (pixel / 255 - mean) / std.

        The mean and standard deviation are the training split's (Fashion-MNIST's 60,000:
        0.286 and 0.353), so nothing of the validation or test images is learned from.
        """
        mean, std = self.train.statistics()
        return dataclasses.replace(self, **{name: dataclasses.replace(split, mean=mean, std=std)
                                            for name in ("train", "val", "test")
                                            if (split := getattr(self, name)) is not None})

    def held_out(self, val_size: int, test: bool = True) -> Data:
        """These data with ``val_size`` training images moved to a validation split.

        The images are a fixed random choice (``VALIDATION_SEED``), the rest of the
        training set keeps its order. Without ``test`` the test split is left out.

        Raises:
            ValueError: ``val_size`` leaves no training images.
        """
        n = len(self.train)
        if val_size >= n:
            raise ValueError(f"--val-size {val_size} leaves no training images (there are {n})")
        if not val_size:
            return dataclasses.replace(self, test=self.test if test else None)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(VALIDATION_SEED))
        val, train = order[:val_size].sort().values, order[val_size:].sort().values
        device = self.train.labels.device
        return dataclasses.replace(self, train=self.train.subset(train.to(device)), val=self.train.subset(val.to(device)),
                                   test=self.test if test else None)


def load(dataset: str, data_dir: Path | None, device: torch.device) -> Data:
    """Find, read and check a dataset, and move it to ``device``.

    Args:
        dataset: a key of ``trainers.catalog.DATASETS``.
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
        >>> data.train.pixels.shape
        torch.Size([60000, 1, 28, 28])
    """
    spec = DATASETS[dataset]
    with _cache_lock():
        root = _find_root(spec, data_dir)
        train, test = (_decoded(spec, root, train) for train in (True, False))
    _check_identity(spec, train[1], data_dir or root)
    return Data(_on_device(*train, device), _on_device(*test, device), spec.classes, root)


def _check_identity(spec: Dataset, labels: torch.Tensor, folder: Path) -> None:
    """Refuse another data set's files: their training labels count exactly as that set's do.

    Fashion-MNIST has 6,000 training images of each class; MNIST's counts are its own.
    Files that match neither (a subset, synthetic data) pass.
    """
    counts = tuple(torch.bincount(labels, minlength=len(spec.classes)).tolist())
    for key, other in DATASETS.items():
        if other is not spec and counts == other.train_counts != spec.train_counts:
            raise DataError(f"the files under {folder} hold {other.title}, not {spec.title} (their training labels "
                            f"count as {other.title}'s do); use --dataset {key}, or a --data-dir with the "
                            f"{spec.title} files")


def _data_cache() -> Path:
    """The folder holding staged raw files, downloads and decoded splits."""
    return cache_dir() / "data"


@contextlib.contextmanager
def _cache_lock():
    """One process at a time finds, unpacks and caches data; the others wait, then reuse it."""
    folder = _data_cache()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DataError(f"cannot use the data cache {folder}: {err.strerror}; "
                        "set TRAINVIZ_CACHE to a folder you can write to") from None
    with locked(folder / ".lock"):
        yield


def _find_root(spec: Dataset, data_dir: Path | None) -> Path:
    """A folder torchvision's class can read the dataset from, downloading as a last resort."""
    if data_dir is not None:
        if not data_dir.exists():
            raise DataError(f"--data-dir {data_dir} does not exist; create it to let torchvision download into it")
        if not data_dir.is_dir():
            raise DataError(f"--data-dir {data_dir} is a file, not a folder")
        return _usable_root(spec, data_dir) or _download(spec, data_dir)
    cache = _data_cache()
    for folder in (cache, spec.system_dir):
        if folder is not None and (root := _usable_root(spec, folder, stage_into=cache)):
            return root
    return _download(spec, cache)


def _usable_root(spec: Dataset, folder: Path, stage_into: Path | None = None) -> Path | None:
    """A torchvision root for the raw files in ``folder``, or None when it holds none of them.

    Files in torchvision's own layout are used where they are; loose or gzipped files are
    unpacked into a copy in torchvision's layout (under ``stage_into``, or the cache).
    """
    if all(_raw_dir(spec, folder).joinpath(name).is_file() for name in RAW_FILES):
        return folder
    for place in (_raw_dir(spec, folder), folder):
        found = {name: _raw_file(place, name) for name in RAW_FILES}
        present = [path for path in found.values() if path]
        if not present:
            continue
        if len(present) < len(RAW_FILES):
            missing = ", ".join(name for name, path in found.items() if path is None)
            raise DataError(f"{place} holds only some of the {spec.title} files; missing: {missing}")
        target = stage_into or _data_cache() / "staged" / _digest(place.resolve())
        _stage(found, _raw_dir(spec, target))
        return target
    return None


def _raw_dir(spec: Dataset, root: Path) -> Path:
    """Where torchvision keeps the raw files under ``root``."""
    return root / spec.torchvision_name / "raw"


def _raw_file(folder: Path, name: str) -> Path | None:
    """The plain or gzipped IDX file ``name`` in ``folder``, if there."""
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _digest(*parts) -> str:
    """A short stable name for what ``parts`` describe."""
    return hashlib.sha1(repr(parts).encode()).hexdigest()[:12]


def _stage(files: dict[str, Path], raw: Path) -> None:
    """Copy (gunzipping) the raw files into ``raw``; skip ones already newer than their source."""
    raw.mkdir(parents=True, exist_ok=True)
    for name, source in files.items():
        target = raw / name
        if target.is_file() and target.stat().st_mtime >= source.stat().st_mtime:
            continue
        try:
            opener = gzip.open if source.suffix == ".gz" else open
            with atomic_path(target) as partial, opener(source, "rb") as src, open(partial, "wb") as dst:
                shutil.copyfileobj(src, dst)
        except (OSError, EOFError) as err:
            raise DataError(f"could not unpack {source}: {err}") from None


def _torchvision_class(spec: Dataset) -> type:
    """The torchvision dataset class that reads, checks and downloads ``spec``."""
    from torchvision import datasets  # 1 s of imports: only when the raw files must be read

    return getattr(datasets, spec.torchvision_name)


def _download(spec: Dataset, root: Path) -> Path:
    """Let torchvision download (and checksum) the dataset into ``root``; a failed download leaves nothing there."""
    raw = _raw_dir(spec, root)
    made = [folder for folder in (raw.parent, raw) if not folder.exists()]
    before = set(raw.iterdir()) if raw.is_dir() else set()
    log = io.StringIO()
    try:
        # torchvision prints each failed mirror; keep that for the one-line error instead.
        with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            _torchvision_class(spec)(root, train=True, download=True)
    except Exception as err:  # network, disk and checksum failures all end the same way
        # What this download made goes again (files torchvision began, the folders it created);
        # whatever was there before stays.
        for path in (set(raw.iterdir()) - before if raw.is_dir() else ()):
            with contextlib.suppress(OSError):
                path.unlink()
        for folder in reversed(made):
            with contextlib.suppress(OSError):
                folder.rmdir()
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


def _decoded(spec: Dataset, root: Path, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """One split's uint8 images (N, 28, 28) and labels, from the decoded cache when it is current.

    The cache file records the size and modification time of the raw files it was
    decoded from; a changed source is read again.
    """
    raw = [(_raw_dir(spec, root) / name).resolve() for name in SPLIT_FILES[train]]
    source = [[str(path), *_signature(path)] for path in raw]
    cached = _data_cache() / "decoded" / f"{spec.torchvision_name}-{'train' if train else 'test'}-{_digest(*raw)}.pt"
    if cached.is_file():
        try:
            saved = torch.load(cached, weights_only=True)
            if saved["source"] == source:
                return saved["images"], saved["labels"]
        except Exception:  # a damaged cache file is read again from the source
            pass
    images, labels = _read(spec, root, train)
    cached.parent.mkdir(exist_ok=True)
    with atomic_path(cached) as partial:
        torch.save({"images": images, "labels": labels, "source": source}, partial)
    return images, labels


def _signature(path: Path) -> list[int]:
    """[size, mtime in ns] of a file, or [-1, -1] when it is missing."""
    try:
        stat = path.stat()
    except OSError:
        return [-1, -1]
    return [stat.st_size, stat.st_mtime_ns]


def _read(spec: Dataset, root: Path, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Read one split through torchvision and check its shapes and labels."""
    split = "training" if train else "test"
    try:
        ds = _torchvision_class(spec)(root, train=train, download=False)
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
    return images.to(torch.uint8), labels.to(torch.long)


def _on_device(images: torch.Tensor, labels: torch.Tensor, device: torch.device) -> Split:
    """A split as training uses it: with a channel axis, on ``device``."""
    return Split(images.unsqueeze(1).to(device), labels.to(device))
