"""What the dashboard shows after each epoch, computed from the model and its test results.

Three parts, in the order the windows should appear on the page: the curves (every
epoch), the costly panes (grids, tables, confusion matrix, what the model learned,
weight histograms: when the time budget allows, and at the last epoch), and the
per-layer norms and throughput (every epoch).
"""

from __future__ import annotations

import numpy as np
import torch

from trainers.core.data import Split
from trainers.core.loop import Evaluation, Parts
from viz import panes
from viz.dashboard.sink import Sink
from viz.dashboard.windows import EPOCH_MEAN


class Smoothed:
    """An exponential moving average of a series, debiased at the start (as TensorBoard smooths).

    Example:
        >>> smooth = Smoothed(0.6)
        >>> smooth(1.0), round(smooth(0.0), 4)
        (1.0, 0.375)
    """

    def __init__(self, weight: float):
        self.weight, self.average, self.total_weight = weight, 0.0, 0.0

    def __call__(self, value: float) -> float:
        """Add ``value`` and return the smoothed value so far."""
        self.average = self.weight * self.average + (1 - self.weight) * value
        self.total_weight = self.weight * self.total_weight + (1 - self.weight)
        return self.average / self.total_weight


def pixels(split: Split, index: torch.Tensor):
    """The split's images at ``index`` as uint8 (N, 28, 28) on the CPU."""
    return split.pixels.index_select(0, index.to(split.pixels.device)).squeeze(1).cpu().numpy()


SPLITS = ("train", "val", "test")  # the curves' traces, in this order, for the splits a run has


def report_curves(sink: Sink, record: dict) -> None:
    """The epoch's points on the loss and accuracy curves: training, and validation and test when evaluated."""
    epoch = record["epoch"]
    sink.scalars("train_loss", x=record["step"], values={EPOCH_MEAN: record["train_loss"]})
    for metric, win in (("loss", "loss"), ("acc", "accuracy")):
        sink.scalars(win, x=epoch, values={split: record[f"{split}_{metric}"] for split in SPLITS
                                           if f"{split}_{metric}" in record})


def report_panes(sink: Sink, when: str, result: Evaluation, split: Split, name: str,
                 classes: tuple[str, ...], parts: Parts, samples: torch.Tensor) -> None:
    """The costly panes: sample grid and table, mistakes, confusion, per-class accuracy, learned weights.

    ``result`` is the evaluation of the held-out ``split`` called ``name`` ("test", or
    "val" for a run that does not look at the test set) at ``when`` ("Epoch 3", "Step 1200").
    """
    panes.classification(sink, split.labels, result.predictions, result.confidence,
                         lambda index: pixels(split, index), classes, samples, when, name)
    weights, captions, columns = learned_weights(parts.model, classes)
    sink.templates("templates", weights, captions, columns)
    sink.histogram("weights", panes.histograms(dict(weight_matrices(parts.model))))


def report_layers(sink: Sink, record: dict, parts: Parts, samples_seen: int) -> None:
    """Weight and last-step gradient norms per layer, and throughput: cheap, every epoch."""
    weight_norms, grad_norms = {}, {}
    for name, tensor in weight_matrices(parts.model):
        weight_norms[name] = tensor.detach().norm().item()
        if tensor.grad is not None:
            grad_norms[name] = tensor.grad.norm().item()
    sink.scalars("weight_norm", x=record["epoch"], values=weight_norms)
    if grad_norms:
        sink.scalars("grad_norm", x=record["epoch"], values=grad_norms)
    sink.scalars("throughput", x=record["epoch"], values={"samples/s": samples_seen / record["seconds"]})


def weight_matrices(model) -> list[tuple[str, torch.Tensor]]:
    """The model's weight matrices by name; biases (few values, little to see) are left out."""
    return [(name, tensor) for name, tensor in model.named_parameters() if tensor.dim() >= 2]


def learned_weights(model, classes: tuple[str, ...]) -> tuple[np.ndarray, list[str], int]:
    """The first layer's weights as 28x28 images, their captions, and images per row (``viz.panes.templates``)."""
    matrices = weight_matrices(model)
    return panes.templates(matrices[0][1], classes, only=len(matrices) == 1, side=28)
