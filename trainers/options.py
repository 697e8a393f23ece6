"""The trainer commands' options and the errors commands exit with.

Nothing here imports torch: Click parses and checks every option before a run imports
the heavy modules, so a mistake is reported at once.
"""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path

import click

from trainers.catalog import ACTIVATIONS, DATASETS
from trainers.core.config import KEEP_EPOCHS, MLPConfig, TrainConfig, annotation
from trainers.core.schedule import SCHEDULES
from trainers.models.own import comments, own_fields
from viz.defaults import server_problem

# The largest learning rate and weight decay taken: far past any that trains (a rate of 1e6
# already diverges at once), and far below float32's limit (3.4e38), past which the SGD step
# itself fails.
MAX_RATE = 1e6
MAX_WIDTH = 1_000_000  # a hidden layer's widest; what memory allows is checked when the run starts


class Finite(click.FloatRange):
    """A float range that also refuses nan and inf (``FloatRange`` lets nan through every bound)."""

    name = "float"

    def convert(self, value, param, ctx):
        number = click.FLOAT.convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return super().convert(number, param, ctx)


class HiddenSizes(click.ParamType):
    """``200,200`` -> (200, 200)."""

    name = "SIZES"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        try:
            sizes = tuple(int(part) for part in str(value).split(","))
        except ValueError:
            sizes = ()
        if not sizes or min(sizes) < 1:
            self.fail(f"{value!r} is not a comma-separated list of positive layer widths, like 200,200", param, ctx)
        if max(sizes) > MAX_WIDTH:
            self.fail(f"{value!r} has a layer wider than {MAX_WIDTH:,} units", param, ctx)
        return sizes


def server_url(ctx, param, value: str) -> str:
    """Check that --server is an http(s) URL with a host and no port (--port gives it)."""
    problem = server_problem(value)
    if problem:
        then = ": give the URL without it, and the port with --port" if problem == "names a port" else ""
        raise click.BadParameter(f"{value!r} {problem}{then}", ctx, param)
    return value.rstrip("/")


def seed_range(ctx, param, value: int) -> int:
    """Check that --seed is one torch's generators take (64 bits, signed or not)."""
    if not -2**63 <= value < 2**64:
        raise click.BadParameter(f"{value} does not fit in 64 bits", ctx, param)
    return value


# What visdom can store as a file name in its env folder and show in its menu.
ENV_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,99}")


def env_name(ctx, param, value: str | None) -> str | None:
    """Check that --env is a name visdom stores safely."""
    if value is not None and not ENV_NAME.fullmatch(value):
        raise click.BadParameter(
            f"{value!r} is not a usable environment name: use up to 100 letters, digits, '_', '-' "
            "and '.', not starting with '.'", ctx, param)
    return value


def server_options(command):
    """--server, --port and --env: where a run's dashboard goes."""
    for option in reversed([
        click.option("--server", envvar="VISDOM_SERVER_URL", default=TrainConfig.server, show_default=True,
                     callback=server_url, help="Visdom server URL (env VISDOM_SERVER_URL)."),
        click.option("--port", envvar="VISDOM_PORT", type=click.IntRange(1, 65535), default=TrainConfig.port,
                     show_default=True, help="Visdom server port (env VISDOM_PORT)."),
    ]):
        command = option(command)
    return command


def train_options(config: type[TrainConfig], activation: bool = False, **defaults):
    """Click options for every field of ``config``, with the dataclass defaults (or ``defaults``).

    An ``MLPConfig`` adds --hidden and --dropout; ``activation`` adds --activation and --negative-slope.
    """
    d = {f.name: f.default for f in dataclasses.fields(config)} | defaults
    positive = click.IntRange(min=1)
    options = [
        click.option("--dataset", type=click.Choice(sorted(DATASETS)), default=d["dataset"], show_default=True,
                     help="Which dataset to train on."),
        click.option("--data-dir", type=click.Path(path_type=Path), default=None,
                     help="Folder with the dataset (torchvision layout or the 4 IDX files); "
                          "default: the cache, then the system package, then a download."),
        click.option("--epochs", type=positive, default=d["epochs"], show_default=True, help="Passes over the training set."),
        click.option("--batch-size", type=positive, default=d["batch_size"], show_default=True, help="Samples per SGD step."),
        click.option("--lr", type=Finite(min=0, max=MAX_RATE, min_open=True), default=d["lr"], show_default=True,
                     help="SGD learning rate."),
        click.option("--momentum", type=Finite(0, 1, max_open=True), default=d["momentum"],
                     show_default=True, help="SGD momentum (0: plain SGD)."),
        click.option("--weight-decay", type=Finite(min=0, max=MAX_RATE), default=d["weight_decay"], show_default=True,
                     help="L2 weight decay added to every gradient."),
        click.option("--schedule", type=click.Choice(SCHEDULES), default=d["schedule"], show_default=True,
                     help="Learning rate over the run: constant; cosine to 0 step by step; "
                          "step: x0.1 at half the epochs and again at three quarters."),
        click.option("--standardize/--no-standardize", default=d["standardize"], show_default=True,
                     help="Feed the model (pixel - mean) / std over the training images, not pixels in [0, 1]."),
        click.option("--val-size", type=click.IntRange(min=0), default=d["val_size"], show_default=True,
                     help="Training images held out as a validation set (a fixed split; 0: none)."),
        click.option("--test/--no-test", default=d["test"], show_default=True,
                     help="Evaluate the test set every epoch (--no-test needs --val-size)."),
        click.option("--seed", type=int, default=d["seed"], show_default=True, callback=seed_range,
                     help="Seed for weights, shuffling and samples."),
        click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default=d["device"], show_default=True,
                     help="auto: cuda when available, else cpu."),
        click.option("--out", type=click.Path(path_type=Path, file_okay=False), default=d["out"], show_default=True,
                     help="Folder that receives the run folder."),
        click.option("--viz/--no-viz", default=d["viz"], show_default=True, help="Stream to the visdom dashboard."),
        server_options,
        click.option("--env", default=None, callback=env_name,
                     help="Visdom environment (letters, digits, _ - .); default: the run folder's name."),
        click.option("--log-every", type=positive, default=d["log_every"], show_default=True,
                     help="Steps between training-loss points."),
        click.option("--images", type=click.IntRange(1, 256), default=d["images"], show_default=True,
                     help="Test images in the prediction grid."),
        click.option("--save-every", type=positive, default=d["save_every"], show_default=True,
                     help="Epochs between checkpoints (the last epoch and a stop always save)."),
        click.option("--keep-checkpoints", is_flag=True, default=d["keep_checkpoints"],
                     help=f"Keep every saved epoch's checkpoint, to fork from any (default: the last {KEEP_EPOCHS})."),
        click.option("--resume", type=click.Path(path_type=Path, file_okay=False), default=None,
                     help="Continue the run in this folder where it stopped."),
        click.option("--fork", type=click.Path(path_type=Path, file_okay=False), default=None, metavar="RUN_DIR",
                     help="Start a new run from RUN_DIR's state at the end of --from-epoch, with the options "
                          "given here changed (lr, momentum, weight decay, schedule, dropout, epochs)."),
        click.option("--from-epoch", type=click.IntRange(min=1), default=None, metavar="N",
                     help="With --fork: the epoch to start from (one whose checkpoint the run kept)."),
    ]
    if issubclass(config, MLPConfig):
        options += [
            click.option("--hidden", type=HiddenSizes(), default=",".join(map(str, d["hidden"])),
                         show_default=True, help="Hidden layer widths, comma-separated."),
            click.option("--dropout", type=Finite(0, 1, max_open=True), default=d["dropout"],
                         show_default=True, help="Probability of dropping a hidden unit in training."),
        ]
    if activation:
        options += [
            click.option("--activation", type=click.Choice(ACTIVATIONS), default=d["activation"],
                         show_default=True, help="Activation between the hidden layers."),
            click.option("--negative-slope", type=Finite(min=0, max=1), default=d["negative_slope"],
                         show_default=True, help="LeakyReLU slope for negative inputs."),
        ]

    notes = comments(config)
    options += [own_option(field, d[field.name], notes.get(field.name)) for field in own_fields(config)]

    def decorate(command):
        for option in reversed(options):
            command = option(command)
        return command

    return decorate


OWN_TYPES = {"int": int, "float": Finite(), "str": str}  # a model file's Config fields, as options


def own_option(field: dataclasses.Field, default, note: str | None = None):
    """The option of a setting a model file's ``Config`` adds: ``--name`` of its type, its default shown.

    Its help is the field's ``metadata["help"]``, else its comment in the file.
    """
    name = field.name.replace("_", "-")
    help_text = field.metadata.get("help") or note or "A setting of the model file's Config."
    if annotation(field) == "bool":
        return click.option(f"--{name}/--no-{name}", field.name, default=default, show_default=True, help=help_text)
    return click.option(f"--{name}", field.name, type=OWN_TYPES[annotation(field)], default=default,
                        show_default=True, help=help_text)
