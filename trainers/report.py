"""What the dashboard shows after each epoch, computed from the model and its test results.

Three parts, in the order the windows should appear on the page: the curves (every
epoch), the costly panes (grids, tables, confusion matrix, what the model learned,
weight histograms: when the time budget allows, and at the last epoch), and the
per-layer norms and throughput (every epoch).
"""

from __future__ import annotations

import numpy as np
import torch

from trainers.data import Split
from trainers.loop import Evaluation, Parts
from viz.sink import LabelledSink, Sink

MISTAKES = 8  # images in the most-confident-mistakes grid
BINS = 40  # histogram bins per layer
UNITS = 32  # hidden units shown in "what the model learned": the ones with the largest weights
PIXELS = 28 * 28  # inputs of every model here


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


def sample_indices(n: int, count: int, seed: int) -> torch.Tensor:
    """The same held-out images every epoch, so the grid shows predictions changing."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:count]


def pixels(split: Split, index: torch.Tensor):
    """The split's images at ``index`` as uint8 (N, 28, 28) on the CPU."""
    return split.pixels.index_select(0, index.to(split.pixels.device)).squeeze(1).cpu().numpy()


def caption(classes: tuple[str, ...], true: int, predicted: int, confidence: float) -> str:
    """Two lines: the true class, and the prediction with its probability (the renderer wraps what is too wide)."""
    return f"{classes[true]}\n-> {classes[predicted]} {confidence:.0%}"


SPLITS = ("train", "val", "test")  # the curves' traces, in this order, for the splits a run has


def report_curves(sink: Sink, record: dict) -> None:
    """The epoch's points on the loss and accuracy curves: training, and validation and test when evaluated."""
    epoch = record["epoch"]
    sink.scalars("train_loss", x=record["step"], values={"epoch mean": record["train_loss"]})
    for metric, win in (("loss", "loss"), ("acc", "accuracy")):
        sink.scalars(win, x=epoch, values={split: record[f"{split}_{metric}"] for split in SPLITS
                                           if f"{split}_{metric}" in record})


def report_panes(sink: Sink, record: dict, result: Evaluation, split: Split, name: str,
                 classes: tuple[str, ...], parts: Parts, samples: torch.Tensor) -> None:
    """The costly panes: sample grid and table, mistakes, confusion, per-class accuracy, learned weights.

    ``result`` is the evaluation of the held-out ``split`` called ``name`` ("test", or
    "val" for a run that does not look at the test set).
    """
    sink = LabelledSink(sink, split=name)  # the windows' titles name the split
    epoch = record["epoch"]
    labels = split.labels.cpu()
    predicted, confidence = result.predictions.cpu(), result.confidence.cpu()

    # the sample grid and its table
    rows = [(int(labels[i]), int(predicted[i]), float(confidence[i])) for i in samples]
    sink.images("samples", pixels(split, samples), [caption(classes, *row) for row in rows],
                [t != p for t, p, _ in rows])
    sink.table("predictions", *predictions_table(classes, rows, epoch))

    # the most confident mistakes over the whole test set
    wrong = (predicted != labels).nonzero().squeeze(1)
    worst = wrong[confidence[wrong].argsort(descending=True)[:MISTAKES]]
    if len(worst):
        sink.images("mistakes", pixels(split, worst),
                    [caption(classes, int(labels[i]), int(predicted[i]), float(confidence[i])) for i in worst],
                    [True] * len(worst))
    else:
        sink.text("mistakes", f"No mistakes on the {name} set at epoch {epoch}.")

    # confusion matrix and per-class accuracy
    k = len(classes)
    confusion = torch.bincount(labels * k + predicted, minlength=k * k).reshape(k, k)
    sink.confusion("confusion", confusion.tolist(), list(classes))
    per_class = (confusion.diag() / confusion.sum(dim=1).clamp(min=1)).tolist()
    sink.bars("class_acc", per_class, list(classes))

    # what the first layer learned, and the weight distributions
    weights, captions, columns = learned_weights(parts.model, classes)
    sink.templates("templates", weights, captions, columns)
    histograms = {}
    for name, tensor in weight_matrices(parts.model):
        values = tensor.detach().float().cpu().flatten()
        low, high = values.min().item(), values.max().item()
        counts = torch.histc(values, BINS, low, high)
        width = (high - low) / BINS or 1.0
        centers = torch.linspace(low + width / 2, high - width / 2, BINS)
        histograms[name] = (centers.tolist(), (counts / (counts.sum() * width)).tolist())
    sink.histogram("weights", histograms)


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
    """The first layer's weights as 28x28 images, their captions, and images per row.

    A linear classifier's only layer has one unit per class: its weights are the
    "template" each class matches the image against. A deeper model's first layer has
    many units; the ``UNITS`` with the largest weight norm are shown, largest first.
    """
    matrices = weight_matrices(model)
    _, first = matrices[0]
    # nn.Linear stores (out, in); the hand-written models store (in, out).
    weights = first.detach().float().cpu()
    weights = weights if weights.shape[1] == PIXELS else weights.T
    if len(matrices) == 1 and len(weights) == len(classes):
        return weights.reshape(-1, 28, 28).numpy(), list(classes), 5
    order = weights.norm(dim=1).argsort(descending=True)[:UNITS]
    return weights[order].reshape(-1, 28, 28).numpy(), [f"unit {int(i)}" for i in order], 8


def predictions_table(classes: tuple[str, ...], rows: list[tuple[int, int, float]],
                      epoch: int) -> tuple[str, list[str], list[list], list[bool]]:
    """True vs predicted classes with confidence, as a table's caption, headings, rows and which are mistakes."""
    wrong = [t != p for t, p, _ in rows]
    return (f"Epoch {epoch}: {len(rows) - sum(wrong)} of {len(rows)} right", ["#", "true", "predicted", "confidence"],
            [[i, classes[t], classes[p], f"{c:.1%}"] for i, (t, p, c) in enumerate(rows, 1)], wrong)
