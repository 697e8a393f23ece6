"""What the dashboard shows after each epoch, computed from the model and its test results."""

from __future__ import annotations

import html

import torch

from trainers.data import Data
from trainers.loop import Evaluation, Parts
from viz.sink import Sink
from viz.windows import COMPARE_ENV

MISTAKES = 8  # images in the most-confident-mistakes grid
BINS = 40  # histogram bins per layer


def sample_indices(n_test: int, count: int, seed: int) -> torch.Tensor:
    """The same test images every epoch, so the grid shows predictions changing."""
    return torch.randperm(n_test, generator=torch.Generator().manual_seed(seed))[:count]


def pixels(data: Data, index: torch.Tensor):
    """Test images at ``index`` as uint8 (N, 28, 28) on the CPU."""
    return data.test.pixels.index_select(0, index.to(data.test.pixels.device)).squeeze(1).cpu().numpy()


def caption(classes: tuple[str, ...], true: int, predicted: int, confidence: float) -> str:
    """Two short lines: the true class, and the prediction with its probability."""
    return f"{classes[true][:13]}\n-> {classes[predicted][:10]} {confidence:.0%}"


def report_epoch(sink: Sink, record: dict, test: Evaluation, parts: Parts, data: Data,
                 samples: torch.Tensor, trace: str, lr: float) -> None:
    """Send one epoch's plots, grids, tables and histograms to ``sink``."""
    epoch, classes = record["epoch"], data.classes
    labels = data.test.labels.cpu()
    predicted, confidence = test.predictions.cpu(), test.confidence.cpu()

    # curves
    sink.scalars("train_loss", x=record["step"], values={"epoch mean": record["train_loss"]})
    sink.scalars("loss", x=epoch, values={"train": record["train_loss"], "test": record["test_loss"]})
    sink.scalars("accuracy", x=epoch, values={"train": record["train_acc"], "test": record["test_acc"]})
    sink.scalars("throughput", x=epoch, values={"samples/s": len(data.train) / record["seconds"]})
    sink.scalars("lr", x=epoch, values={"lr": lr})
    sink.scalars("compare_acc", x=epoch, values={trace: record["test_acc"]}, env=COMPARE_ENV)
    sink.scalars("compare_loss", x=epoch, values={trace: record["test_loss"]}, env=COMPARE_ENV)

    # the sample grid and its table
    rows = [(int(labels[i]), int(predicted[i]), float(confidence[i])) for i in samples]
    sink.images("samples", pixels(data, samples), [caption(classes, *row) for row in rows],
                [t != p for t, p, _ in rows])
    sink.text("predictions", predictions_table(classes, rows, epoch))

    # the most confident mistakes over the whole test set
    wrong = (predicted != labels).nonzero().squeeze(1)
    worst = wrong[confidence[wrong].argsort(descending=True)[:MISTAKES]]
    if len(worst):
        sink.images("mistakes", pixels(data, worst),
                    [caption(classes, int(labels[i]), int(predicted[i]), float(confidence[i])) for i in worst],
                    [True] * len(worst))
    else:
        sink.text("mistakes", f"<p>No mistakes on the test set at epoch {epoch}.</p>")

    # confusion matrix and per-class accuracy
    k = len(classes)
    confusion = torch.bincount(labels * k + predicted, minlength=k * k).reshape(k, k)
    sink.heatmap("confusion", confusion.tolist(), list(classes), list(classes))
    per_class = (confusion.diag() / confusion.sum(dim=1).clamp(min=1)).tolist()
    sink.bars("class_acc", per_class, list(classes))

    # weights and gradients, layer by layer
    histograms, weight_norms, grad_norms = {}, {}, {}
    for name, tensor in parts.model.named_parameters():
        if tensor.dim() < 2:
            continue  # biases: few values, little to see
        values = tensor.detach().float().cpu().flatten()
        low, high = values.min().item(), values.max().item()
        counts = torch.histc(values, BINS, low, high)
        width = (high - low) / BINS or 1.0
        centers = torch.linspace(low + width / 2, high - width / 2, BINS)
        histograms[name] = (centers.tolist(), (counts / (counts.sum() * width)).tolist())
        weight_norms[name] = values.norm().item()
        if tensor.grad is not None:
            grad_norms[name] = tensor.grad.norm().item()
    sink.histogram("weights", histograms)
    sink.scalars("weight_norm", x=epoch, values=weight_norms)
    if grad_norms:
        sink.scalars("grad_norm", x=epoch, values=grad_norms)
    sink.save()


def predictions_table(classes: tuple[str, ...], rows: list[tuple[int, int, float]], epoch: int) -> str:
    """An HTML table of true vs predicted classes with confidence; mistakes in red."""
    body = "".join(
        f"<tr style='color:{'#c62828;font-weight:bold' if t != p else '#222'}'>"
        f"<td>{i}</td><td>{html.escape(classes[t])}</td><td>{html.escape(classes[p])}</td>"
        f"<td style='text-align:right'>{c:.1%}</td></tr>"
        for i, (t, p, c) in enumerate(rows, 1)
    )
    wrong = sum(t != p for t, p, _ in rows)
    return (
        f"<div style='font-family:sans-serif;font-size:12px'><b>Epoch {epoch}</b>: "
        f"{len(rows) - wrong} of {len(rows)} right"
        "<table style='border-collapse:collapse;width:100%'>"
        "<tr><th>#</th><th align=left>true</th><th align=left>predicted</th><th>confidence</th></tr>"
        f"{body}</table></div>"
    )
