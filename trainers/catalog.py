"""What trainviz offers, by name: trainers, datasets, activations.

Known without importing torch or torchvision, so ``trainviz --help`` and every option
error answer at once; the modules that do the work are imported when a run starts.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from trainers.core.config import MLPConfig, TrainConfig
from trainers.core.errors import UserError


@dataclass(frozen=True)
class Trainer:
    """One trainer command."""

    name: str  # the command's name (a model file of one's own: its absolute path)
    module: str  # the module defining ``build(config, device) -> Parts``
    config: type[TrainConfig]  # its settings
    summary: str  # the command's help line
    activation: bool = False  # offers --activation / --negative-slope
    function: str = "build"  # the function of ``module`` that builds the parts
    source: str | None = None  # a model file of one's own: its path, whose contents' hash a run records

    def build(self) -> Callable:
        """The trainer's ``build`` function (imports torch)."""
        return getattr(importlib.import_module(self.module), self.function)


TRAINERS = {trainer.name: trainer for trainer in (
    Trainer("scratch-softmax", "trainers.models.scratch_softmax", TrainConfig,
            "Softmax regression from scratch: hand-written softmax, cross-entropy and SGD."),
    Trainer("nn-softmax", "trainers.models.nn_softmax", TrainConfig,
            "Softmax regression with torch.nn.Linear, nn.CrossEntropyLoss and optim.SGD."),
    Trainer("mlp-lowlevel", "trainers.models.mlp_lowlevel", MLPConfig,
            "MLP (784-200-200-10 by default) from raw tensors, F.relu and F.cross_entropy."),
    Trainer("mlp", "trainers.models.mlp", MLPConfig,
            "MLP as an nn.Module with ReLU or LeakyReLU hidden layers.", activation=True),
)}


def command_words(trainer: str) -> list[str]:
    """The command that runs ``trainer``, as words: ``trainviz mlp``, ``trainviz run PATH.py`` for a model of one's own."""
    return ["trainviz", trainer] if trainer in TRAINERS else ["trainviz", "run", trainer]


def trainer_of(name: str) -> Trainer:
    """A built-in trainer by name, or a model of one's own (a file, ``module:function``, an installed name).

    Raises:
        UserError: no such trainer, or the model's file or module cannot be used.
    """
    if name in TRAINERS:
        return TRAINERS[name]
    from trainers.models import own  # imports the user's file, and torch with it

    if not own.is_own(name):
        raise UserError(f"no trainer {name!r}: pick one of {', '.join(TRAINERS)}, give a model file PATH.py, "
                        "or module:function")
    return own.load(name)


@dataclass(frozen=True)
class Dataset:
    """What trainviz knows about one dataset."""

    title: str  # how messages name it
    torchvision_name: str  # its class in torchvision.datasets: reader, checks and download
    classes: tuple[str, ...]  # class names, in label order
    system_dir: Path | None  # where a system package installs the raw files
    train_counts: tuple[int, ...]  # training images per class: tells its files from another data set's


DATASETS = {
    "fashion-mnist": Dataset(
        "Fashion-MNIST", "FashionMNIST",
        ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
        Path("/usr/share/datasets/fashion-mnist"),
        (6000,) * 10,
    ),
    "mnist": Dataset("MNIST", "MNIST", tuple("0123456789"), None,
                     (5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949)),
}

# The class-based MLP's --activation choices; trainers.models.mlp maps each to its nn.Module.
ACTIVATIONS = ("relu", "leaky-relu")
