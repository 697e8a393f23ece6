"""The interface training reports through, and the sinks that need no server.

Training code calls these methods with window keys from ``viz.dashboard.windows`` and plain
numbers; it never sees Visdom. Every call becomes one event, a JSON-ready dict, so a
run can be recorded, written to disk and replayed.

Events hold data, never markup: a pane of text or a table is its strings, and the
renderer escapes every one where it draws it. A run folder may come from anyone, so
``read_events`` also checks each event's shape before it is drawn.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import errno
import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np

from viz.dashboard.controls import CONTROLS, MAX_RATE, PaneState, Request
from viz.dashboard.windows import WINDOWS, is_logged, known
from viz.values import is_number, is_whole

KINDS = {"scalars", "series", "images", "templates", "text", "table", "heatmap", "confusion", "bars", "histogram",
         "axes", "trials", "controls", "config", "outcome", "save"}
POINT_KINDS = {"scalars", "series"}  # events that add points to line windows
SCALES = ("linear", "log")  # how an axis of a logged line window may be drawn
TRIAL_FIELDS = ("number", "params", "state", "value", "epochs", "curve", "seconds", "env")  # what a board draws


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

    def text(self, win: str, text: str) -> None:
        """A pane of plain text (the renderer escapes it: it is never markup)."""
        self.emit({"kind": "text", "win": win, "text": text})

    def table(self, win: str, caption: str, headings: list[str], rows: list[list], marked: list[bool]) -> None:
        """A table: a caption, its headings, rows of strings or numbers, ``marked`` rows in red."""
        self.emit({"kind": "table", "win": win, "caption": caption, "headings": headings, "rows": rows,
                   "marked": [bool(m) for m in marked]})

    def heatmap(self, win: str, matrix: list[list[float]], rows: list[str], columns: list[str]) -> None:
        """A labelled matrix (runs before the confusion pane drew their matrix with this)."""
        self.emit({"kind": "heatmap", "win": win, "matrix": matrix, "rows": rows, "columns": columns})

    def bars(self, win: str, values: list[float], names: list[str]) -> None:
        """One bar per name."""
        self.emit({"kind": "bars", "win": win, "values": values, "names": names})

    def histogram(self, win: str, series: dict[str, tuple[list[float], list[float]]]) -> None:
        """Distributions as (bin centres, densities), one curve per name; none (no finite values): nothing drawn."""
        if not series:
            return
        self.emit({"kind": "histogram", "win": win,
                   "series": {name: {"centers": c, "density": d} for name, (c, d) in series.items()}})

    def axes(self, win: str, xlabel: str = "step", ylabel: str = "", xlim: tuple[float, float] | None = None,
             ylim: tuple[float, float] | None = None, xscale: str = "linear", yscale: str = "linear") -> None:
        """How a logged line window's axes look: labels, ranges (None: fit the data), "linear" or "log"."""
        self.emit({"kind": "axes", "win": win, "xlabel": xlabel, "ylabel": ylabel,
                   "xlim": None if xlim is None else [float(v) for v in xlim],
                   "ylim": None if ylim is None else [float(v) for v in ylim], "xscale": xscale, "yscale": yscale})

    def trials(self, rows: list[dict], fields: list[str]) -> None:
        """A sweep's trials, best first (``trainers.sweeps.study.trial_rows``), for the three windows of its board.

        ``fields`` are the searched settings, in order: the parallel coordinates' axes and
        the table's columns.
        """
        self.emit({"kind": "trials", "win": "sweep_trials", "fields": list(fields),
                   "rows": [{key: row.get(key) for key in TRIAL_FIELDS} for row in rows]})

    def controls(self, state: PaneState) -> None:
        """The run's control pane as it should look now (``viz.dashboard.controls``)."""
        self.emit({"kind": "controls", "win": CONTROLS, **dataclasses.asdict(state)})

    def config(self, settings: dict) -> None:
        """The run's settings."""
        self.emit({"kind": "config", "win": "config", "settings": settings})

    def outcome(self, status: str, metrics: dict[str, float]) -> None:
        """How the run ended (its status.json status) and its last epoch's numbers."""
        self.emit({"kind": "outcome", "status": status, "metrics": metrics})

    def save(self) -> None:
        """A checkpoint of the dashboard: deliver what is queued and save the environment."""
        self.emit({"kind": "save"})

    def listen(self, state: Callable[[], PaneState], deliver: Callable[[Request], None]):
        """Start listening to the run's control pane (a ``Listener``, whose ``close`` ends it); None: no dashboard."""
        return None

    def close(self) -> None:
        """Deliver everything still queued and release resources."""

    def background_seconds(self) -> float:
        """Seconds spent so far outside the caller's thread drawing and sending panes (for the budget)."""
        return 0.0


class HeldSink(Sink):
    """Keeps events back until ``release``: windows that need not be redrawn every epoch.

    Each window the server holds costs a request per update; the per-layer norms, the
    throughput and the learning rate are drawn when the costly panes are, with every
    point they collected meanwhile. Released in page order (``viz.dashboard.windows``), so the
    windows they create land after the panes.
    """

    def __init__(self):
        self.held: list[dict] = []

    def emit(self, event: dict) -> None:
        self.held.append(event)

    def release(self, sink: Sink) -> None:
        """Pass every held event to ``sink``, window by window in page order, each window's in time order."""
        order = {win: i for i, win in enumerate(WINDOWS)}
        for event in sorted(self.held, key=lambda e: order.get(e.get("win"), len(order))):  # a stable sort
            sink.emit(event)
        self.held.clear()


class LabelledSink(Sink):
    """Passes every event on to ``sink`` with ``fields`` added: the held-out split a set of panes shows.

    Example:
        >>> recorded = RecordingSink()
        >>> LabelledSink(recorded, split="val").bars("class_acc", [0.5], ["a"])
        >>> recorded.events[0]["split"]
        'val'
    """

    def __init__(self, sink: Sink, **fields):
        self.sink, self.fields = sink, fields
        self.active = sink.active

    def emit(self, event: dict) -> None:
        self.sink.emit({**event, **self.fields})


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
    """The events of an events.jsonl file, and how many lines were damaged (or not events) and skipped.

    Raises:
        OSError: it cannot be read, or is no regular file (a FIFO would block the reader).
    """
    if path.exists() and not path.is_file():
        raise OSError(errno.EINVAL, "not a regular file", str(path))
    events, damaged = [], 0
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if not line.strip():
                continue
            try:
                event = json.loads(line)
            except (ValueError, RecursionError):  # RecursionError: nested too deep
                damaged += 1
                continue
            if drawable(event):
                events.append(event)
            else:
                damaged += 1
    return events, damaged


def _numbers(value) -> bool:
    return isinstance(value, list) and all(is_number(v) or v is None for v in value)


def _reals(value) -> bool:
    """A non-empty list of numbers, no gaps: what a bar chart draws."""
    return isinstance(value, list) and bool(value) and all(map(is_number, value))


def _counts(value) -> bool:
    """A non-empty square of counts: what a confusion matrix draws."""
    return isinstance(value, list) and bool(value) and all(
        isinstance(row, list) and len(row) == len(value) and all(is_whole(n) and n >= 0 for n in row) for row in value)


def _strings(value) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _flag(value) -> bool:
    return isinstance(value, bool)


def _flags(value) -> bool:
    return isinstance(value, list) and all(isinstance(v, bool) for v in value)


def _range(value) -> bool:
    return value is None or (isinstance(value, list) and len(value) == 2 and all(
        is_number(v) and math.isfinite(v) for v in value))


def _optional_number(value) -> bool:
    return value is None or is_number(value)


def _trial_row(row) -> bool:
    """Whether a ``trials`` event's row holds what the board draws, each of its type."""
    return isinstance(row, dict) and set(row) == set(TRIAL_FIELDS) \
        and isinstance(row["number"], int) and not isinstance(row["number"], bool) \
        and isinstance(row["params"], dict) and all(
            isinstance(v, (str, int, float, bool)) or v is None for v in row["params"].values()) \
        and isinstance(row["state"], str) and _optional_number(row["value"]) and _optional_number(row["seconds"]) \
        and isinstance(row["epochs"], int) and (row["env"] is None or isinstance(row["env"], str)) \
        and isinstance(row["curve"], list) and all(isinstance(p, list) and len(p) == 2 and all(map(is_number, p))
                                                  for p in row["curve"])


def _matrix(value) -> bool:
    return isinstance(value, list) and bool(value) and all(_numbers(row) and row for row in value)


def _decodes(event: dict, key: str, dtype: str) -> bool:
    """Whether an event's base64 array holds exactly what its shape says."""
    shape = event.get("shape")
    if not (isinstance(shape, list) and len(shape) in (3, 4) and all(isinstance(n, int) and n > 0 for n in shape)):
        return False
    if shape[0] > MAX_IMAGES or shape[1] * shape[2] > MAX_PIXELS:  # a grid a small file asks gigabytes for
        return False
    if len(shape) == 4 and (shape[3] != 3 or event["kind"] == "templates"):  # grey, or RGB images: no other
        return False
    try:
        size = len(base64.b64decode(event[key], validate=True))
    except (binascii.Error, TypeError, ValueError):
        return False
    return size == math.prod(shape) * np.dtype(dtype).itemsize


MAX_IMAGES = 1024  # images in one grid: each is drawn as a tile with its caption
MAX_PIXELS = 4096 * 4096  # in one image


# What each kind of event needs, field by field: the renderer draws only events that pass.
_FIELDS = {
    "scalars": {"x": is_number, "values": lambda v: isinstance(v, dict) and all(map(is_number, v.values()))},
    "series": {"x": _numbers, "values": lambda v: isinstance(v, dict) and all(map(_numbers, v.values()))},
    "images": {"captions": _strings, "marked": _flags},
    "templates": {"captions": _strings, "dtype": lambda v: v in ("float16", "float32"),
                  "columns": lambda v: isinstance(v, int) and v > 0},
    "text": {},
    "table": {"caption": lambda v: isinstance(v, str), "headings": _strings, "marked": _flags,
              "rows": lambda v: isinstance(v, list) and all(isinstance(r, list) and all(
                  isinstance(c, str) or is_number(c) for c in r) for r in v)},
    "heatmap": {"matrix": _matrix, "rows": _strings, "columns": _strings},
    "confusion": {"counts": _counts, "classes": _strings},
    "bars": {"values": _reals, "names": _strings},
    "histogram": {"series": lambda v: isinstance(v, dict) and all(
        isinstance(s, dict) and _numbers(s.get("centers")) and _numbers(s.get("density")) for s in v.values())},
    "axes": {"xlabel": lambda v: isinstance(v, str), "ylabel": lambda v: isinstance(v, str), "xlim": _range,
             "ylim": _range, "xscale": lambda v: v in SCALES, "yscale": lambda v: v in SCALES},
    "trials": {"fields": _strings, "rows": lambda v: isinstance(v, list) and all(map(_trial_row, v))},
    "controls": {"lr": lambda v: is_number(v) and 0 <= v <= MAX_RATE, "paused": _flag, "note": lambda v: isinstance(v, str),
                 "refresh": _flag, "fork": _flag, "prune": _flag},
    "config": {"settings": lambda v: isinstance(v, dict)},
    "outcome": {"status": lambda v: isinstance(v, str), "metrics": lambda v: isinstance(v, dict)},
    "save": {},
}
_OPTIONAL = {"columns"}  # fields an event may leave out


def drawable(event) -> bool:
    """Whether ``event`` is one the renderer can draw: a known kind and window, each field of its type."""
    if not isinstance(event, dict) or not isinstance(event.get("kind"), str) or event["kind"] not in KINDS:
        return False
    kind = event["kind"]
    if kind not in ("config", "outcome", "save") and not known(event.get("win")):
        return False
    if kind == "axes" and not is_logged(event["win"]):  # the trainers' windows look as viz.dashboard.windows says
        return False
    if kind == "axes" and any(event.get(f"{axis}scale") == "log" and _range(event.get(f"{axis}lim"))
                              and min(event[f"{axis}lim"] or [1]) <= 0 for axis in "xy"):
        return False  # a log axis starts above 0
    if event.get("env") is not None:  # a file draws into its own run's environment, never into another
        return False
    for field, check in _FIELDS.get(kind, {}).items():
        if field not in event:
            if field in _OPTIONAL:
                continue
            return False
        if not check(event[field]):
            return False
    if kind == "text":  # "html": what runs before plain-text panes wrote, drawn as text now
        return isinstance(event["text"] if "text" in event else event.get("html"), str)
    if kind in ("images", "templates"):
        key, dtype = ("pixels", "uint8") if kind == "images" else ("values", event["dtype"])
        return _decodes(event, key, dtype) and len(event["captions"]) == event["shape"][0] \
            and (kind == "templates" or len(event["marked"]) == event["shape"][0])
    return _sizes_agree(event)


def _sizes_agree(event: dict) -> bool:
    """Whether an event's lists are as long as each other, as the renderer takes them to be."""
    kind = event["kind"]
    if kind == "series":
        return all(len(values) == len(event["x"]) for values in event["values"].values())
    if kind == "table":
        return len(event["rows"]) == len(event["marked"])
    if kind == "confusion":
        return len(event["counts"]) == len(event["classes"]) and all(
            len(row) == len(event["classes"]) for row in event["counts"])
    if kind == "heatmap":
        return len(event["matrix"]) == len(event["rows"]) and all(
            len(row) == len(event["columns"]) for row in event["matrix"])
    if kind == "bars":
        return len(event["values"]) == len(event["names"]) > 0
    if kind == "histogram":
        return bool(event["series"]) and all(
            len(s["centers"]) == len(s["density"]) > 0 for s in event["series"].values())
    return True
