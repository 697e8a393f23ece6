"""Typed run settings: one frozen dataclass per trainer family, one field per CLI option."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

from viz.defaults import PORT, SERVER
from viz.values import is_number

# Epoch checkpoints a run keeps for forks (RUN_DIR/checkpoints/epoch-NNNN.pt) besides checkpoint.pt:
# the last few saved; --keep-checkpoints keeps every one. The newest is a hard link to checkpoint.pt.
KEEP_EPOCHS = 3


@dataclass(frozen=True)
class TrainConfig:
    """Settings every trainer shares; each field is one command-line option."""

    trainer: str = ""  # which trainer runs (set by the command, not an option)
    dataset: str = "fashion-mnist"  # fashion-mnist or mnist
    data_dir: Path | None = None  # where the IDX files are; None searches the usual places
    epochs: int = 10  # passes over the training set
    batch_size: int = 160  # samples per SGD step (the seeds' 256 stops short of 83% in 10 epochs)
    lr: float = 0.1  # SGD learning rate (the peak rate when a schedule lowers it)
    momentum: float = 0.0  # SGD momentum: v <- momentum * v + g, p <- p - lr * v
    weight_decay: float = 0.0  # L2 penalty: weight_decay * p is added to every gradient
    schedule: str = "constant"  # learning rate over the run: constant, cosine or step
    # Pixels (x - mean) / std over the run's training images, not in [0, 1]; a run or study
    # saved before the option existed reads as off.
    standardize: bool = False
    val_size: int = 0  # training images held out as a validation set (a fixed split)
    test: bool = True  # evaluate the test set every epoch (sweeps choose on validation, so turn it off)
    seed: int = 0  # seeds weights, shuffling and the sample grid
    device: str = "auto"  # auto picks cuda when available, else cpu
    out: Path = Path("runs")  # parent folder of every RUN_DIR
    viz: bool = True  # stream to the visdom dashboard (--no-viz turns it off)
    server: str = SERVER  # visdom server URL
    port: int = PORT  # visdom server port
    env: str | None = None  # visdom environment; None names it after the RUN_DIR
    log_every: int = 1  # steps between training-loss points (metrics.jsonl and dashboard)
    images: int = 32  # test images shown in the prediction grid
    save_every: int = 1  # epochs between checkpoints
    keep_checkpoints: bool = False  # keep every saved epoch's checkpoint for forks (default: the last few)
    resume: Path | None = None  # run folder to continue instead of starting a new one
    fork: Path | None = None  # run folder to branch from, at the end of epoch ``from_epoch``, as a new run
    from_epoch: int | None = None  # the epoch of ``fork`` to start from

    def to_dict(self) -> dict:
        """Every setting as JSON-ready values."""
        return {k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        """Rebuild a config saved by `to_dict`, ignoring keys this class does not know."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in values.items() if k in fields}
        for key in ("data_dir", "out", "resume", "fork"):
            if kwargs.get(key) is not None:
                kwargs[key] = Path(kwargs[key])
        if "hidden" in kwargs:
            kwargs["hidden"] = tuple(kwargs["hidden"])
        return cls(**kwargs)


@dataclass(frozen=True)
class MLPConfig(TrainConfig):
    """Settings of the two MLP trainers."""

    hidden: tuple[int, ...] = (200, 200)  # width of each hidden layer
    activation: str = "relu"  # relu or leaky-relu (the class-based MLP only)
    negative_slope: float = 0.01  # LeakyReLU slope for negative inputs
    dropout: float = 0.0  # probability of zeroing a hidden unit in training


def json_kind(value) -> str:
    """What a JSON value is, for a message: ``a JSON array``, ``null``."""
    kinds = {list: "a JSON array", str: "a JSON string", bool: "a JSON boolean", int: "a JSON number",
             float: "a JSON number", dict: "a JSON object", type(None): "null"}
    return kinds.get(type(value), type(value).__name__)


def _number(value) -> bool:
    return is_number(value) and math.isfinite(value)


# Each field's annotation (a string: annotations are postponed) -> what a saved value must be, and its name.
_KINDS = {
    "int": (lambda v: isinstance(v, int) and not isinstance(v, bool), "a whole number"),
    "int | None": (lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool)), "a whole number or null"),
    "float": (_number, "a finite number"),
    "bool": (lambda v: isinstance(v, bool), "true or false"),
    "str": (lambda v: isinstance(v, str), "a string"),
    "str | None": (lambda v: v is None or isinstance(v, str), "a string or null"),
    "Path": (lambda v: isinstance(v, str), "a path"),
    "Path | None": (lambda v: v is None or isinstance(v, str), "a path or null"),
    "tuple[int, ...]": (lambda v: isinstance(v, (list, tuple)) and bool(v)
                        and all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in v),
                        "a list of positive whole numbers"),
}


def annotation(field: dataclasses.Field) -> str:
    """A field's annotation as written: ``int`` (a string under postponed annotations, else a type)."""
    return field.type if isinstance(field.type, str) else getattr(field.type, "__name__", str(field.type))


def settings_problem(values, config: type[TrainConfig]) -> str | None:
    """Why saved settings (a config.json, a checkpoint's config) cannot rebuild ``config``; None when they can.

    Example:
        >>> settings_problem({"lr": "fast"}, TrainConfig)
        "lr is 'fast', not a finite number"
    """
    if not isinstance(values, dict):
        return f"it holds {json_kind(values)}, not an object of settings"
    for field in dataclasses.fields(config):
        if field.name in values:
            check, kind = _KINDS[annotation(field)]
            if not check(values[field.name]):
                shown = repr(values[field.name])
                return f"{field.name} is {shown if len(shown) <= 40 else shown[:37] + '...'}, not {kind}"
    return None
