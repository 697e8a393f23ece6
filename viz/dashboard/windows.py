"""Every dashboard window in one place: its key, title, axis labels and size.

Window names on the server are these keys, fixed, so a rerun into the same
environment replaces its windows instead of adding new ones. A window that a user's
own loop names (``run.log({"train/loss": ...})``) is ``LOGGED`` followed by its name,
created on first use and looked up with ``spec``.
"""

from __future__ import annotations

import html
from dataclasses import dataclass

COMPARE_ENV = "compare"  # where ``trainviz compare`` draws the runs it is given, by default
SMOOTHING = 0.6  # weight of the past in the smoothed training loss (TensorBoard's default)
EPOCH_MEAN = "epoch mean"  # the training-loss trace of epoch means, which the renderer draws as dots
STEERED = "steered"  # the trace marking where the control pane changed the learning rate, drawn as dots


@dataclass(frozen=True)
class Window:
    """How one window looks."""

    title: str  # "{split}" / "{Split}": the held-out split a pane shows (test, or validation)
    xlabel: str = ""
    ylabel: str = ""
    width: int = 480
    height: int = 320
    shared: bool = False  # several commands draw into it: each redraws only its own traces


# In the order a run first draws them: visdom packs windows in creation order, so on a
# 1600-px-wide page they read as curves, samples and their table, mistakes, confusion and
# per-class accuracy, then weights and what the model learned, then the rest.
WINDOWS = {
    "controls": Window("Steer this run (changes apply at the next step)", width=420, height=330),
    "train_loss": Window(f"Training loss per step: raw, smoothed (EMA {SMOOTHING}), epoch means", "step",
                         "cross-entropy", width=500),
    "loss": Window("Loss per epoch", "epoch", "cross-entropy", width=500),
    "accuracy": Window("Accuracy per epoch", "epoch", "accuracy", width=500),
    "samples": Window("{Split} samples: true / predicted (red: wrong)", width=760, height=560),
    "predictions": Window("Predictions for the samples", width=760, height=560),
    "mistakes": Window("Most confident mistakes on the {split} set", width=760, height=240),
    "confusion": Window("Confusion matrix ({split} set): share of each true class", width=760, height=490),
    "class_acc": Window("{Split} accuracy per class", width=760, height=240),
    "templates": Window("What the model learned: first-layer weights (red +, blue -)", width=760, height=540),
    "weights": Window("Weight distribution per layer", "weight", "density", width=760, height=270),
    "weight_norm": Window("Weight norm per layer", "epoch", "L2 norm", width=375, height=260),
    "grad_norm": Window("Gradient norm per layer (last step)", "epoch", "L2 norm", width=375, height=260),
    "throughput": Window("Throughput", "epoch", "samples/s", width=500, height=330),
    "lr": Window("Learning rate", "step", "lr", width=500, height=330),
    "config": Window("Run config", width=1030, height=330),
    # trainviz compare: one trace per run and held-out split
    "compare_acc": Window("Held-out accuracy of the chosen runs", "epoch", "accuracy", width=900, height=400,
                          shared=True),
    "compare_loss": Window("Held-out loss of the chosen runs", "epoch", "cross-entropy", width=900, height=400,
                           shared=True),
    "compare_train": Window("Training loss of the chosen runs (epoch means)", "epoch", "cross-entropy",
                            width=900, height=400, shared=True),
    # trainviz sweep: the study's own environment
    "sweep_val_acc": Window("Validation accuracy of every trial", "epoch", "accuracy", width=780, height=450),
    "sweep_parcoords": Window("Settings -> validation accuracy", width=780, height=450),
    "sweep_trials": Window("Trials, best first", width=1570, height=600),  # the most: sized to its rows
}


LOGGED = "log:"  # the prefix of windows named by ``viz.Run.log`` and kin
LOGGED_NAME = 100  # the longest name a logged window may have, in characters


def logged(name: str) -> str:
    """The window key of a name a user logs under."""
    return f"{LOGGED}{name}"


def is_logged(win) -> bool:
    """Whether ``win`` is a window a user's loop named (a non-empty name, not too long)."""
    return isinstance(win, str) and win.startswith(LOGGED) and 0 < len(win) - len(LOGGED) <= LOGGED_NAME


def known(win) -> bool:
    """Whether ``win`` is a window the renderer can draw: one of ``WINDOWS`` or a logged one."""
    return (isinstance(win, str) and win in WINDOWS) or is_logged(win)


def spec(win: str) -> Window:
    """How window ``win`` looks: its entry in ``WINDOWS``, or for a logged window, its name as the title."""
    if win in WINDOWS:
        return WINDOWS[win]
    name = win[len(LOGGED):]
    return Window(name, "step", name.rpartition("/")[2], width=500, height=320)


# The held-out splits a pane can show, as titles name them; anything else reads as the test set.
SPLITS = {"test": "test", "val": "validation"}


def title(win: str, split: str = "test") -> str:
    """Window ``win``'s title for panes of the held-out ``split`` ("test" or "val")."""
    name = SPLITS.get(split, "test") if isinstance(split, str) else "test"
    if is_logged(win):
        return spec(win).title  # a user's name, drawn as typed: never a format string
    return WINDOWS[win].title.format(split=name, Split=name.capitalize())


def opts(win: str, split: str = "test", **extra) -> dict:
    """Visdom options for window ``win`` (showing the held-out ``split``)."""
    window = spec(win)

    def shown(text: str) -> str:  # a user's name reads as typed, never as markup
        return html.escape(text, quote=False) if is_logged(win) else text

    options = {"title": shown(title(win, split)), "width": window.width, "height": window.height}
    if window.xlabel:
        options["xlabel"] = shown(window.xlabel)
    if window.ylabel:
        options["ylabel"] = shown(window.ylabel)
    return {**options, **extra}
