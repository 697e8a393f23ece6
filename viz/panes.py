"""The panes trainviz is known for, computed from plain tensors: what a classifier gets right and wrong.

The trainers and a user's own loop (``viz.Run.classification`` and kin) report through
these, so both dashboards show the same things the same way: a sample grid with its
table, the most confident mistakes, the confusion matrix, per-class accuracy, what the
first layer learned, and weight histograms.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from viz.dashboard.sink import LabelledSink, Sink

MISTAKES = 8  # images in the most-confident-mistakes grid
BINS = 40  # histogram bins per layer
UNITS = 32  # hidden units shown in "what the model learned": the ones with the largest weights


def sample_indices(n: int, count: int, seed: int) -> torch.Tensor:
    """The same held-out images every epoch, so the grid shows predictions changing."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:count]


def caption(classes: tuple[str, ...], true: int, predicted: int, confidence: float) -> str:
    """Two lines: the true class, and the prediction with its probability (the renderer wraps what is too wide)."""
    return f"{classes[true]}\n-> {classes[predicted]} {confidence:.0%}"


def as_pixels(images) -> np.ndarray:
    """Images (N, H, W), (N, 1, H, W) or (N, 3, H, W), floats in [0, 1] or whole numbers in 0..255, as uint8
    (N, H, W[, 3])."""
    if isinstance(images, torch.Tensor):
        images = images.detach().cpu()
        array = (images.float() if images.dtype in (torch.bfloat16, torch.float16) else images).numpy()
    else:
        array = np.asarray(images)
    if array.ndim == 4 and array.shape[1] in (1, 3):  # channels first, as torch keeps them
        array = array[:, 0] if array.shape[1] == 1 else array.transpose(0, 2, 3, 1)
    elif array.ndim == 4 and array.shape[3] == 1:
        array = array[..., 0]
    if not (array.ndim == 3 or (array.ndim == 4 and array.shape[3] == 3)) or not all(array.shape):
        raise ValueError(f"images must be (N, H, W), (N, 1, H, W) or (N, 3, H, W), not {tuple(array.shape)}")
    if array.dtype == np.bool_:
        array = array.astype(np.uint8) * 255
    elif array.dtype.kind in "iu" and array.dtype != np.uint8:  # whole numbers: levels 0 to 255, as uint8's
        array = np.clip(array, 0, 255).astype(np.uint8)
    elif array.dtype != np.uint8:
        array = (np.clip(array.astype(np.float32), 0, 1) * 255).round().astype(np.uint8)
    return array


def classification(sink: Sink, labels: torch.Tensor, predicted: torch.Tensor, confidence: torch.Tensor,
                   images_at: Callable[[torch.Tensor], np.ndarray], classes: tuple[str, ...],
                   samples: torch.Tensor, when: str, split: str = "test") -> None:
    """The sample grid and its table, the most confident mistakes, the confusion matrix, per-class accuracy.

    ``labels``, ``predicted`` and ``confidence`` cover every image of the held-out
    ``split`` ("test" or "val", which the windows' titles name); ``images_at(index)``
    gives the images at those positions as uint8 (N, H, W); ``samples`` are the positions
    shown in the grid (the same ones every time, so the grid shows predictions change);
    ``when`` says when in the run this is ("Epoch 3", "Step 1200").
    """
    sink = LabelledSink(sink, split=split)
    labels, predicted, confidence = labels.cpu(), predicted.cpu(), confidence.cpu()

    rows = [(int(labels[i]), int(predicted[i]), float(confidence[i])) for i in samples]
    sink.images("samples", images_at(samples), [caption(classes, *row) for row in rows],
                [t != p for t, p, _ in rows])
    sink.table("predictions", *predictions_table(classes, rows, when))

    wrong = (predicted != labels).nonzero().squeeze(1)
    worst = wrong[confidence[wrong].argsort(descending=True)[:MISTAKES]]
    if len(worst):
        sink.images("mistakes", images_at(worst),
                    [caption(classes, int(labels[i]), int(predicted[i]), float(confidence[i])) for i in worst],
                    [True] * len(worst))
    else:
        sink.text("mistakes", f"No mistakes on the {'validation' if split == 'val' else 'test'} set at {when[0].lower()}{when[1:]}.")

    k = len(classes)
    confusion = torch.bincount(labels * k + predicted, minlength=k * k).reshape(k, k)
    sink.confusion("confusion", confusion.tolist(), list(classes))
    per_class = (confusion.diag() / confusion.sum(dim=1).clamp(min=1)).tolist()
    sink.bars("class_acc", per_class, list(classes))


def predictions_table(classes: tuple[str, ...], rows: list[tuple[int, int, float]],
                      when: str) -> tuple[str, list[str], list[list], list[bool]]:
    """True vs predicted classes with confidence, as a table's caption, headings, rows and which are mistakes."""
    wrong = [t != p for t, p, _ in rows]
    return (f"{when}: {len(rows) - sum(wrong)} of {len(rows)} right", ["#", "true", "predicted", "confidence"],
            [[i, classes[t], classes[p], f"{c:.1%}"] for i, (t, p, c) in enumerate(rows, 1)], wrong)


def templates(first: torch.Tensor, classes: tuple[str, ...], only: bool = False,
              side: int | None = None) -> tuple[np.ndarray, list[str], int]:
    """A first layer's weights as images, their captions, and images per row.

    ``first`` is a linear layer's weight, (out, in) as ``nn.Linear`` stores it (a
    hand-written (in, out) matrix is turned when ``in`` is ``side``²), or a convolution's
    (out, channels, h, w), whose filters are shown averaged over their input channels.
    A linear classifier's ``only`` layer has one unit per class: its weights are the
    "template" each class matches the image against, captioned with the class. Otherwise
    the ``UNITS`` units with the largest weight norm are shown, largest first.
    """
    weights = first.detach().float().cpu()
    if weights.dim() == 4:
        images = weights.mean(dim=1)
    else:
        if weights.dim() != 2:
            raise ValueError(f"a first layer's weight is (out, in) or (out, channels, h, w), not {tuple(weights.shape)}")
        side = side or next((n for n in (math.isqrt(d) for d in reversed(weights.shape)) if n * n in weights.shape), 0)
        if weights.shape[1] != side * side:
            if weights.shape[0] != side * side:
                raise ValueError(f"a weight of shape {tuple(weights.shape)} does not take square images")
            weights = weights.T
        images = weights.reshape(len(weights), side, side)
    if only and len(images) == len(classes) and weights.dim() == 2:
        return images.numpy(), list(classes), 5
    order = images.flatten(1).norm(dim=1).argsort(descending=True)[:UNITS]
    return images[order].numpy(), [f"{'filter' if weights.dim() == 4 else 'unit'} {int(i)}" for i in order], 8


def histograms(tensors: dict[str, torch.Tensor]) -> dict[str, tuple[list[float], list[float]]]:
    """Each tensor's values as a density over ``BINS`` bins: (bin centres, densities) by name."""
    series = {}
    for name, tensor in tensors.items():
        values = tensor.detach().float().cpu().flatten()
        values = values[values.isfinite()]  # a diverged layer's nan and inf are not a distribution
        if not len(values):
            continue
        low, high = values.min().item(), values.max().item()
        if low == high:  # one value: a spike at it, in a unit-wide range centred on it
            low, high = low - 0.5, high + 0.5
        counts = torch.histc(values, BINS, low, high)
        width = (high - low) / BINS
        centers = torch.linspace(low + width / 2, high - width / 2, BINS)
        series[name] = (centers.tolist(), (counts / (counts.sum() * width)).tolist())
    return series
