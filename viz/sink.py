"""The interface training reports through, and the sinks that need no server.

Training code calls these methods with window keys from ``viz.windows`` and plain
numbers; it never sees Visdom. Every call becomes one event, a JSON-ready dict, so a
run can be recorded, written to disk and replayed.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np


KINDS = {"scalars", "series", "images", "templates", "text", "heatmap", "confusion", "bars", "histogram", "config",
         "outcome", "save"}
POINT_KINDS = {"scalars", "series"}  # events that add points to line windows


class Sink:
    """Where training reports to. This base class drops everything: it is the ``--no-viz`` sink.

    Example:
        >>> sink = RecordingSink()
        >>> sink.scalars("loss", x=1, values={"train": 0.5, "test": 0.6})
        >>> sink.events[0]["kind"]
        'scalars'
    """

    active = False  # False: callers may skip computing what they would report

    def emit(self, event: dict) -> None:
        """Take one event."""

    def scalars(self, win: str, x: float, values: dict[str, float], env: str | None = None) -> None:
        """One point per named trace at ``x`` (``env`` None: the run's own environment)."""
        self.emit({"kind": "scalars", "win": win, "env": env, "x": x, "values": values})

    def series(self, win: str, x: list[float], values: dict[str, list[float]]) -> None:
        """Many points per named trace at once (the per-step loss): one event instead of one per step."""
        self.emit({"kind": "series", "win": win, "x": x, "values": values})

    def images(self, win: str, images: np.ndarray, captions: list[str], marked: list[bool]) -> None:
        """A grid of uint8 grayscale images (N, H, W), a caption each, ``marked`` ones flagged."""
        images = np.ascontiguousarray(images, dtype=np.uint8)
        self.emit({"kind": "images", "win": win, "shape": list(images.shape),
                   "pixels": base64.b64encode(images.tobytes()).decode(), "captions": captions,
                   "marked": [bool(m) for m in marked]})

    def templates(self, win: str, weights: np.ndarray, captions: list[str], columns: int = 8) -> None:
        """Weight images (N, H, W) of either sign, drawn on a diverging colour map, ``columns`` a row."""
        weights = np.ascontiguousarray(weights, dtype=np.float16)  # half the bytes; colours need no more
        self.emit({"kind": "templates", "win": win, "shape": list(weights.shape), "dtype": "float16",
                   "values": base64.b64encode(weights.tobytes()).decode(), "captions": captions,
                   "columns": columns})

    def confusion(self, win: str, counts: list[list[int]], classes: list[str]) -> None:
        """A confusion matrix of counts, rows the true classes, columns the predicted ones."""
        self.emit({"kind": "confusion", "win": win, "counts": counts, "classes": classes})

    def text(self, win: str, html: str) -> None:
        """An HTML pane."""
        self.emit({"kind": "text", "win": win, "html": html})

    def heatmap(self, win: str, matrix: list[list[float]], rows: list[str], columns: list[str]) -> None:
        """A labelled matrix (runs before the confusion pane drew their matrix with this)."""
        self.emit({"kind": "heatmap", "win": win, "matrix": matrix, "rows": rows, "columns": columns})

    def bars(self, win: str, values: list[float], names: list[str]) -> None:
        """One bar per name."""
        self.emit({"kind": "bars", "win": win, "values": values, "names": names})

    def histogram(self, win: str, series: dict[str, tuple[list[float], list[float]]]) -> None:
        """Distributions as (bin centres, densities), one curve per name."""
        self.emit({"kind": "histogram", "win": win,
                   "series": {name: {"centers": c, "density": d} for name, (c, d) in series.items()}})

    def config(self, settings: dict) -> None:
        """The run's settings."""
        self.emit({"kind": "config", "win": "config", "settings": settings})

    def outcome(self, status: str, metrics: dict[str, float]) -> None:
        """How the run ended (its status.json status) and its last epoch's numbers."""
        self.emit({"kind": "outcome", "status": status, "metrics": metrics})

    def save(self) -> None:
        """A checkpoint of the dashboard: deliver what is queued and save the environment."""
        self.emit({"kind": "save"})

    def close(self) -> None:
        """Deliver everything still queued and release resources."""

    def background_seconds(self) -> float:
        """Seconds spent so far outside the caller's thread drawing and sending panes (for the budget)."""
        return 0.0


class HeldSink(Sink):
    """Keeps events back until ``release``: windows that need not be redrawn every epoch.

    Each window the server holds costs a request per update; the per-layer norms, the
    throughput and the learning rate are drawn when the costly panes are, with every
    point they collected meanwhile. Released in page order (``viz.windows``), so the
    windows they create land after the panes.
    """

    def __init__(self):
        self.held: list[dict] = []

    def emit(self, event: dict) -> None:
        self.held.append(event)

    def release(self, sink: Sink) -> None:
        """Pass every held event to ``sink``, window by window in page order, each window's in time order."""
        from viz.windows import WINDOWS

        order = {win: i for i, win in enumerate(WINDOWS)}
        for event in sorted(self.held, key=lambda e: order.get(e.get("win"), len(order))):  # a stable sort
            sink.emit(event)
        self.held.clear()


class RecordingSink(Sink):
    """Keeps every event in ``events``; for tests."""

    active = True

    def __init__(self):
        self.events: list[dict] = []

    def emit(self, event: dict) -> None:
        self.events.append(event)


def decode_images(event: dict) -> np.ndarray:
    """The uint8 (N, H, W) array of an ``images`` event."""
    return np.frombuffer(base64.b64decode(event["pixels"]), dtype=np.uint8).reshape(event["shape"])


def decode_array(event: dict) -> np.ndarray:
    """The float32 array of a ``templates`` event."""
    raw = np.frombuffer(base64.b64decode(event["values"]), dtype=event["dtype"])
    return raw.reshape(event["shape"]).astype(np.float32)


def read_events(path: Path) -> tuple[list[dict], int]:
    """The events of an events.jsonl file, and how many lines were damaged and skipped."""
    events, damaged = [], 0
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if not line.strip():
                continue
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                damaged += 1
                continue
            if isinstance(event, dict) and event.get("kind") in KINDS:
                events.append(event)
            else:
                damaged += 1
    return events, damaged
