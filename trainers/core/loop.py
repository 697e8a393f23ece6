"""The one training loop every trainer shares.

A trainer supplies ``Parts``: a model mapping images to logits (with ``train()`` and
``eval()`` modes), a loss of (logits, labels) averaged over the batch, and an optimizer
with ``zero_grad()``, ``step()`` and torch.optim's ``param_groups`` (where the loop sets
each step's learning rate). The loop never asks which kind of model or optimizer it was
given.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from tqdm import tqdm

from trainers.core.data import Data, Split

# Step losses stay on the device and are read back this many at a time: reading one
# number forces the device to finish its queued work, so doing it every step would
# stall a GPU (and costs a Python round trip on the CPU).
SYNC_EVERY = 50

EVAL_BATCH = 2048  # test-set batch size: large for speed, bounded for memory


@dataclass
class Parts:
    """What a trainer hands the loop."""

    model: Any  # callable: images (N, 1, 28, 28) -> logits (N, classes); train(), eval(), state_dict()
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # mean loss of a batch
    optimizer: Any  # zero_grad(), step(), param_groups; state_dict() for checkpoints


@dataclass
class Evaluation:
    """A model's results on a whole split."""

    loss: float
    accuracy: float
    predictions: torch.Tensor  # (N,) predicted class
    confidence: torch.Tensor  # (N,) softmax probability of the predicted class


class Diverged(Exception):
    """The training loss stopped being a finite number."""

    def __init__(self, step: int, loss: float):
        super().__init__(f"training diverged at step {step}: loss is {loss}")
        self.step, self.loss = step, loss


@torch.no_grad()
def evaluate(parts: Parts, split: Split) -> Evaluation:
    """Loss, accuracy and per-sample predictions of ``parts.model`` on ``split`` (in eval mode)."""
    parts.model.eval()
    loss_sum = torch.zeros((), device=split.labels.device)
    predictions, confidence = [], []
    for images, labels in split.batches(EVAL_BATCH):
        logits = parts.model(images)
        loss_sum += parts.loss(logits, labels) * len(labels)
        top = logits.softmax(dim=1).max(dim=1)
        predictions.append(top.indices)
        confidence.append(top.values)
    predictions = torch.cat(predictions)
    accuracy = (predictions == split.labels).float().mean().item()
    return Evaluation(loss_sum.item() / len(split), accuracy, predictions, torch.cat(confidence))


@dataclass
class Progress:
    """Where a run stands; the loop updates it, checkpoints save it, a resume restores it."""

    epoch: int = 0  # epochs completed
    step: int = 0  # optimizer steps taken
    batch: int = 0  # batches done in the unfinished epoch (0: at an epoch boundary)
    loss_sum: float = 0.0  # the unfinished epoch's summed training loss ...
    correct: int = 0  # ... and correct predictions so far
    seconds: float = 0.0  # time already spent in the unfinished epoch
    order_state: torch.Tensor | None = None  # shuffling generator state when that epoch began


class Interrupted(Exception):
    """Training stopped after a step because a stop was requested; ``progress`` says where."""


class ModelError(Exception):
    """The model, its loss or its optimizer raised in a step or an evaluation: ``__cause__`` is what it raised.

    ``where`` says when: "at epoch 2, step 310", "evaluating after epoch 2".
    """

    def __init__(self, where: str):
        super().__init__(where)
        self.where = where


def fit(
    parts: Parts,
    data: Data,
    *,
    epochs: int,
    batch_size: int,
    generator: torch.Generator,
    progress: Progress,
    schedule: Callable[[int], float] | None = None,
    log_every: int = 1,
    on_steps: Callable[[int, list[tuple[int, float]]], None] = lambda epoch, points: None,
    on_epoch: Callable[[dict, dict[str, Evaluation]], None] = lambda record, evaluations: None,
    should_stop: Callable[[], bool] = lambda: False,
    paused: Callable[[], float] = lambda: 0.0,
) -> dict:
    """Train ``parts`` from ``progress`` up to ``epochs`` and return the last epoch's record.

    Args:
        parts: model, loss and optimizer.
        data: the splits, already on the device; validation and test are evaluated
            after every epoch when present.
        epochs: the epoch to stop after (1-based, counting epochs done before a resume).
        batch_size: samples per optimizer step.
        generator: draws each epoch's shuffling order.
        progress: where to start (``Progress()`` for a new run), advanced in place.
        schedule: the learning rate of each step, given the steps already taken;
            None keeps the optimizer's own.
        log_every: report the training loss of every Nth step to ``on_steps``.
        on_steps: called with (epoch, [(step, loss), ...]) a few times per epoch.
        on_epoch: called after each epoch with its record and the evaluations by split
            name ("val", "test").
        should_stop: checked after every step (it may block: a paused run); True ends
            training with ``Interrupted``.
        paused: the seconds training has been paused so far, left out of the epochs' seconds.

    Raises:
        Diverged: a step's loss was NaN or infinite.
        Interrupted: ``should_stop`` said so; ``progress`` holds the exact position, and
            fitting again from it gives the same result as never stopping.
        ModelError: the model, its loss or its optimizer raised (its error is the cause).

    Example:
        >>> record = fit(parts, data, epochs=1, batch_size=256,  # doctest: +SKIP
        ...              generator=torch.Generator().manual_seed(0), progress=Progress())
        >>> record["test_acc"]
        0.78...
    """
    record: dict = {}
    n_batches = math.ceil(len(data.train) / batch_size)
    device = data.train.labels.device
    while progress.epoch < epochs:
        epoch = progress.epoch + 1
        started = time.perf_counter() - progress.seconds - paused()  # the pauses after this are taken off
        # A resumed epoch replays its shuffling order and skips the batches already done.
        if progress.batch:
            generator.set_state(progress.order_state)
        else:
            progress.order_state = generator.get_state()
        loss_sum = torch.tensor(progress.loss_sum, device=device)
        correct = torch.tensor(progress.correct, device=device)
        pending: list[tuple[int, torch.Tensor]] = []
        batches = data.train.batches(batch_size, generator, skip=progress.batch)
        parts.model.train()
        with tqdm(total=n_batches, initial=progress.batch, desc=f"epoch {epoch}/{epochs}", unit="step",
                  leave=False) as bar:
            for i, (images, labels) in enumerate(batches, progress.batch + 1):
                # forward, backward, update
                if schedule is not None:  # a group with an "lr_scale" keeps its rate relative to the schedule's
                    rate = schedule(progress.step)
                    for group in parts.optimizer.param_groups:
                        group["lr"] = rate * group["lr_scale"] if "lr_scale" in group else rate
                try:
                    logits = parts.model(images)
                    loss = parts.loss(logits, labels)
                    parts.optimizer.zero_grad()
                    loss.backward()
                    parts.optimizer.step()
                    hits = (logits.argmax(dim=1) == labels).sum()
                except Exception as err:
                    raise ModelError(f"at epoch {epoch}, step {progress.step + 1}") from err

                # bookkeeping on the device, read back only every SYNC_EVERY steps
                progress.step += 1
                loss = loss.detach()
                loss_sum.add_(loss, alpha=len(labels))
                correct.add_(hits)
                if progress.step % log_every == 0:
                    pending.append((progress.step, loss))
                stop = i < n_batches and should_stop()
                if pending and (len(pending) >= SYNC_EVERY or i == n_batches or stop):
                    points = _read_back(pending)
                    pending = []
                    on_steps(epoch, points)
                    bar.set_postfix(loss=f"{points[-1][1]:.4f}", refresh=False)
                    bar.update(i - bar.n)
                if stop:
                    progress.batch, progress.loss_sum, progress.correct = i, loss_sum.item(), int(correct.item())
                    progress.seconds = time.perf_counter() - started - paused()
                    raise Interrupted()
        train_loss = loss_sum.item() / len(data.train)
        if not math.isfinite(train_loss):
            raise Diverged(progress.step, train_loss)

        # evaluate on the held-out splits
        try:
            evaluations = {name: evaluate(parts, split) for name, split in (("val", data.val), ("test", data.test))
                           if split is not None}
        except Exception as err:
            raise ModelError(f"evaluating after epoch {epoch}") from err
        progress.epoch, progress.batch, progress.loss_sum, progress.correct = epoch, 0, 0.0, 0
        record = {
            "kind": "epoch", "epoch": epoch, "step": progress.step,
            "train_loss": train_loss, "train_acc": correct.item() / len(data.train),
        }
        for name, result in evaluations.items():
            record[f"{name}_loss"], record[f"{name}_acc"] = result.loss, result.accuracy
        record["lr"] = parts.optimizer.param_groups[0]["lr"]
        record["seconds"] = time.perf_counter() - started - paused()
        progress.seconds = 0.0
        on_epoch(record, evaluations)
        if should_stop() and progress.epoch < epochs:
            raise Interrupted()
    return record


def _read_back(pending: list[tuple[int, torch.Tensor]]) -> list[tuple[int, float]]:
    """Turn queued (step, loss tensor) pairs into numbers with one device sync."""
    values = torch.stack([loss for _, loss in pending]).tolist()
    for (step, _), value in zip(pending, values):
        if not math.isfinite(value):
            raise Diverged(step, value)
    return [(step, value) for (step, _), value in zip(pending, values)]
