"""Every dashboard window in one place: its key, title, axis labels and size.

Window names on the server are these keys, fixed, so a rerun into the same
environment replaces its windows instead of adding new ones.
"""

from __future__ import annotations

from dataclasses import dataclass

COMPARE_ENV = "compare"  # the shared environment where every run adds its curves


@dataclass(frozen=True)
class Window:
    """How one window looks."""

    title: str
    xlabel: str = ""
    ylabel: str = ""
    width: int = 480
    height: int = 320
    whole: bool = False  # redraw the whole window each time instead of appending points


WINDOWS = {
    "config": Window("Run config", width=480, height=600),
    "train_loss": Window("Training loss per step (dots: epoch means)", "step", "cross-entropy"),
    "loss": Window("Loss per epoch", "epoch", "cross-entropy"),
    "accuracy": Window("Accuracy per epoch", "epoch", "accuracy"),
    "samples": Window("Test samples: true / predicted (red: wrong)", width=760, height=560),
    "predictions": Window("Predictions for the samples", width=480, height=520),
    "mistakes": Window("Most confident mistakes", width=760, height=240),
    "confusion": Window("Confusion matrix (rows: true, columns: predicted)", "predicted", "true",
                        width=560, height=460),
    "class_acc": Window("Test accuracy per class", width=560, height=320),
    "weights": Window("Weight distribution per layer", "weight", "density", whole=True),
    "weight_norm": Window("Weight norm per layer", "epoch", "L2 norm"),
    "grad_norm": Window("Gradient norm per layer (last step)", "epoch", "L2 norm"),
    "throughput": Window("Throughput", "epoch", "samples/s"),
    "lr": Window("Learning rate", "epoch", "lr"),
    "compare_acc": Window("Test accuracy of every run", "epoch", "accuracy", width=900, height=400, whole=True),
    "compare_loss": Window("Test loss of every run", "epoch", "cross-entropy", width=900, height=400, whole=True),
}


def opts(win: str, **extra) -> dict:
    """Visdom options for window ``win``."""
    spec = WINDOWS[win]
    options = {"title": spec.title, "width": spec.width, "height": spec.height}
    if spec.xlabel:
        options["xlabel"] = spec.xlabel
    if spec.ylabel:
        options["ylabel"] = spec.ylabel
    return {**options, **extra}
