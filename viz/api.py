"""A live dashboard for any PyTorch training loop, in three calls.

    import viz

    run = viz.init(name="lenet", config={"lr": 0.1, "epochs": 10})
    for step, (X, y) in enumerate(batches):
        ...
        run.log({"train/loss": loss}, step=step)   # a tensor or a number
    run.log({"test/acc": acc, "test/loss": test_loss}, step=step)
    run.finish()                                    # or: with viz.init(...) as run:

Each name gets a line window, created on first use in first-use order. A name with a
slash is ``TRACE/WINDOW``: ``train/loss`` and ``test/loss`` are the traces ``train`` and
``test`` of one window ``loss``; a name without one is a window of a single trace.

Scalars may be tensors, on any device: ``log`` keeps them as they are and reads them
back in one batch at the first call a second (``READ_EVERY``) after the last read-back,
so logging every step costs the loop no host sync. A run is a run folder like the
trainers' (config.json, status.json, metrics.jsonl, events.jsonl) that ``trainviz
runs``, ``compare`` and ``replay`` read; its events reach visdom from a background
thread, and a server that is missing or dies costs one warning line: the run goes on and
its dashboard is rebuilt when one answers.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import html
import json
import math
import numbers
import os
import queue
import re
import sys
import time
from pathlib import Path

from viz.dashboard.controls import MAX_RATE, PaneState, Request
from viz.dashboard.sink import MAX_IMAGES, MAX_PIXELS, SCALES, RecordingSink, Sink, drawable
from viz.dashboard.windows import LOGGED_NAME, logged
from viz.defaults import PORT, SERVER, server_problem

READ_EVERY = 1.0  # seconds between read-backs of the logged values (and writes of metrics.jsonl)
clock = time.monotonic  # what times the read-backs
READ_AT_MOST = 4096  # logged values held before a read-back regardless of the time
SOURCE = "viz.init"  # what config.json's "source" says of a run made by this API
RESERVED = {"kind", "step"}  # the fields of a metrics.jsonl record, which no logged name may take
RESERVED_PLOT = RESERVED | {"window", "x"}  # and those of a plot's record
ENDINGS = ("finished", "failed", "stopped")  # how ``finish`` may say a run ended
CONFIG_BYTES = 1 << 20  # the most a config may hold, as JSON: settings, not data
STRIDED = "strided"  # the layout of a dense tensor, as str(tensor.layout) ends


class Run:
    """One run of a user's loop: its folder, its dashboard, and how it ended. Made by ``init``.

    The folder's lock is held from ``init`` to ``finish``, so two processes never write
    one run. A run that is not finished when the interpreter exits is finished then
    (failed, after an uncaught exception); one that is killed stays "running" with a pid
    that is gone, which ``trainviz runs`` lists as failed.
    """

    def __init__(self, run_dir, sink: Sink, settings: dict, url: str, lock: contextlib.ExitStack):
        self.dir = run_dir
        self.path: Path = run_dir.path
        self.env: str = settings["env"]
        self.url = url  # the run's environment in the browser
        self.settings = settings
        self._sink = sink
        self._held: list[tuple[int, dict]] = []  # (step, {name: number or tensor}) not read back yet
        self._count = 0  # values held
        self._read_at = clock() + READ_EVERY
        self._step = -1  # the last step logged
        self._windows: dict[str, str] = {}  # logged name -> its window key
        self._traces: dict[tuple[str, str], str] = {}  # (window key, trace) -> the call drawing it, as said
        self._kinds: dict[str, str] = {}  # window key -> what it shows: "line", "images", "text", "histogram"
        self._last: dict[str, float] = {}  # each name's latest value, for the dashboard's final word
        self._config_shown = False
        self._finished = False
        self._lock = lock  # the run folder's, let go at finish
        self._pane: PaneState | None = None  # the control pane, once ``controls`` showed it
        self._pane_at = 0.0  # when a rate the loop changed itself may be shown next
        self._inbox: queue.SimpleQueue[Request] | None = None
        self._listener = None

    # ------------------------------------------------------------ logging

    def log(self, values: dict, step: int | None = None) -> None:
        """Add one point per name at ``step`` (default: the largest step logged so far + 1).

        Values are real numbers or one-element tensors of real numbers; nothing is read back
        from a tensor here (it is copied on its device, so a change to it after the call does
        not change the point). A step is a whole number within 64 bits.
        """
        self._check_open()
        if not values:
            return
        step = self._step + 1 if step is None else checked_step(step)
        kept = {}
        for name, value in values.items():
            if name not in self._windows:
                if name in RESERVED:
                    raise ValueError(f"{name!r} names a field of the run's records; log it under another name")
                self._claim_trace(name)
            if hasattr(value, "detach"):
                if value.numel() != 1:
                    raise ValueError(f"{name}: a logged tensor holds one number, not a tensor of shape "
                                     f"{tuple(value.shape)}")
                if value.is_complex() or value.is_meta or not str(value.layout).endswith(STRIDED):
                    raise TypeError(f"{name}: a logged tensor holds a real number in memory, not a "
                                    f"{'complex' if value.is_complex() else 'meta' if value.is_meta else 'sparse'} one")
                value = value.detach().clone()
            elif isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise TypeError(f"{name}: a logged value is a number or a one-element tensor, not {value!r:.40}")
            else:
                try:
                    float(value)
                except OverflowError:
                    raise ValueError(f"{name}: a whole number too large for a float") from None
            kept[name] = value
        self._step = max(self._step, step)
        self._held.append((step, kept))
        self._count += len(values)
        if self._count >= READ_AT_MOST or clock() >= self._read_at:
            self._read_back()

    def _claim_trace(self, name: str) -> None:
        """Give a newly logged name its window and trace, refusing one another name, plot or pane has taken."""
        key, trace = window_of(name), trace_of(name)
        self._take_trace(key, trace, repr(name), f"{name!r} would draw")
        self._windows[name] = key

    def _take_trace(self, key: str, trace: str, owner: str, who: str) -> None:
        """Trace ``trace`` of line window ``key`` for ``owner`` (a logged name, a plot), unless another has it."""
        other = self._traces.setdefault((key, trace), owner)
        if other != owner:
            raise ValueError(f"{who} trace {trace!r} of window {key.partition(':')[2]!r}, as {other} does; "
                             "name it otherwise")
        self._claim(key, "line")

    def _claim(self, key: str, kind: str) -> str:
        """The window ``key`` for a pane of ``kind``, or a ValueError when it shows another kind already."""
        shown = self._kinds.setdefault(key, kind)
        if shown != kind:
            raise ValueError(f"window {key.partition(':')[2]!r} shows {'lines' if shown == 'line' else shown} "
                             f"already; give the {kind} another name")
        return key

    def _read_back(self) -> None:
        """Turn the held values into numbers (one host sync per device), then record and draw them."""
        held, self._held, self._count = self._held, [], 0
        self._read_at = clock() + READ_EVERY
        if not held:
            return
        read = as_numbers([value for _, values in held for value in values.values()])
        records, points = [], {}  # points: each name's (steps, values)
        for step, values in held:
            record = {"kind": "log", "step": step}
            for name in values:
                value = next(read)
                record[name] = value if math.isfinite(value) else None  # metrics.jsonl is strict JSON
                steps, ys = points.setdefault(name, ([], []))
                steps.append(step)
                ys.append(value)
            records.append(record)
        self.dir.append_metrics(records)
        self._last.update((name, ys[-1]) for name, (_, ys) in points.items())
        if not self._sink.active:
            return
        for name, (steps, ys) in points.items():
            self._sink.series(self._windows[name], steps, {trace_of(name): ys})

    def plot(self, name: str, x: float, values: dict) -> None:
        """Points at ``x`` (any number, not a step) on the line window ``name``, one per named trace, drawn at once.

        For curves by epoch or by any other measure, such as Dive into Deep Learning's
        ``Animator`` (``viz.Animator``) draws.
        """
        self._check_open()
        self._read_back()  # what is held first: windows keep their first-use order
        if isinstance(x, bool) or not isinstance(x, numbers.Real):
            raise TypeError(f"x must be a finite number, not {x!r:.40}")
        try:
            x = int(x) if isinstance(x, numbers.Integral) else float(x)  # numpy's numbers too, as JSON writes them
            if not math.isfinite(x):
                raise TypeError(f"x must be a finite number, not {x!r:.40}")
        except OverflowError:
            raise ValueError("x: a whole number too large for a float") from None
        win = self._claim(window_name(name), "line")
        traces = [str(trace) for trace in values]
        if RESERVED_PLOT & set(traces):
            raise ValueError(f"{sorted(RESERVED_PLOT & set(traces))[0]!r} names a field of the run's "
                             "records; name the trace otherwise")
        for trace in traces:
            self._take_trace(win, trace, f"run.plot({name!r})", f"run.plot({name!r}) would draw")
        points = dict(zip(traces, as_numbers(list(values.values()))))
        self.dir.append_metrics([{"kind": "plot", "step": max(self._step, 0), "window": name, "x": x,
                                  **{k: v if math.isfinite(v) else None for k, v in points.items()}}])
        self._last.update((f"{trace}/{name}", value) for trace, value in points.items())  # as ``log`` names them
        self._sink.scalars(win, x=x, values=points)

    # ------------------------------------------------------------ panes

    def axes(self, name: str, xlabel: str = "step", ylabel: str = "", xlim=None, ylim=None,
             xscale: str = "linear", yscale: str = "linear") -> None:
        """How the line window of ``name`` (a window name: ``loss`` for ``train/loss``) draws its axes."""
        self._check_open()
        self._read_back()  # what is held first: windows keep their first-use order
        for scale in (xscale, yscale):
            if scale not in SCALES:
                raise ValueError(f"an axis scale is one of {', '.join(SCALES)}, not {scale!r:.40}")
        checked = RecordingSink()
        checked.axes(window_name(name), xlabel, ylabel, xlim, ylim, xscale, yscale)
        if not drawable(checked.events[0]):
            raise ValueError("axes: labels are strings, each limit two finite numbers (above 0 on a log scale) or None")
        self._sink.emit(checked.events[0])

    def images(self, name: str, images, captions: list[str] | None = None, marked: list[bool] | None = None) -> None:
        """A grid of images: a tensor or array (N, H, W), (N, 1, H, W) or (N, 3, H, W), floats in [0, 1] or 0..255.

        Each image gets its caption below it and a green frame, red where ``marked``.
        """
        from viz.panes import as_pixels

        self._before_pane()
        pixels = as_pixels(images)
        if len(pixels) > MAX_IMAGES or pixels.shape[1] * pixels.shape[2] > MAX_PIXELS:
            raise ValueError(f"a grid holds at most {MAX_IMAGES} images of at most {MAX_PIXELS:,} pixels each, "
                             f"not {len(pixels)} of {pixels.shape[1]}x{pixels.shape[2]}")
        captions = list(captions) if captions is not None else [""] * len(pixels)
        marked = list(marked) if marked is not None else [False] * len(pixels)
        if not len(captions) == len(marked) == len(pixels):
            raise ValueError(f"{len(pixels)} images need as many captions and marks, not {len(captions)} and "
                             f"{len(marked)}")
        self._sink.images(self._claim(window_name(name), "images"), pixels, [str(c) for c in captions], marked)

    def classification(self, logits, labels, images, classes: list[str] | tuple[str, ...] | None = None,
                       step: int | None = None, split: str = "test", samples: int = 32) -> None:
        """The panes trainviz is known for, from a held-out set's logits (N, K), labels (N,) and images (N, ...).

        Shows a grid of ``samples`` images with true and predicted class and confidence
        (the same images every time), a table of them, the most confident mistakes, the
        confusion matrix and the accuracy per class. ``split`` ("test" or "val") names the
        set in the windows' titles.
        """
        import torch

        from viz import panes

        self._before_pane()
        logits, labels = torch.as_tensor(logits).detach().float().cpu(), torch.as_tensor(labels).cpu().long()
        if logits.dim() != 2 or labels.shape != logits.shape[:1]:
            raise ValueError(f"logits must be (N, K) and labels (N,), not {tuple(logits.shape)} and "
                             f"{tuple(labels.shape)}")
        classes = tuple(str(c) for c in classes) if classes is not None else tuple(map(str, range(logits.shape[1])))
        if len(classes) != logits.shape[1]:
            raise ValueError(f"{logits.shape[1]} logits per image need as many class names, not {len(classes)}")
        pixels = panes.as_pixels(images)
        if len(pixels) != len(labels) or (len(labels) and not 0 <= int(labels.min()) <= int(labels.max()) < len(classes)):
            raise ValueError(f"classification needs one image per label ({len(pixels)} images, {len(labels)} labels) "
                             f"and labels from 0 to {len(classes) - 1}")
        confidence, predicted = logits.softmax(dim=1).max(dim=1)
        if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
            raise ValueError(f"samples is how many images the grid shows, a whole number from 1, not {samples!r:.40}")
        shown = panes.sample_indices(len(labels), samples, seed=0)
        panes.classification(self._sink, labels, predicted, confidence, lambda index: pixels[index.numpy()],
                             classes, shown, f"Step {max(self._step, 0) if step is None else step}", split)

    def templates(self, weight, classes: list[str] | tuple[str, ...] | None = None) -> None:
        """What a first layer learned: a linear layer's weight (out, H*W) or a convolution's (out, C, h, w), as images.

        With ``classes`` and one unit per class (a linear classifier), each image is
        captioned with its class; otherwise the units with the largest weights are shown.
        """
        from viz import panes

        self._before_pane()
        names = tuple(map(str, classes)) if classes is not None else ()
        images, captions, columns = panes.templates(weight, names, only=bool(names))
        self._sink.templates("templates", images, captions, columns)

    def histogram(self, name: str, tensors) -> None:
        """The distribution of a tensor's values, or of each tensor of a dict (one curve per name).

        NaN and infinities are left out; a tensor with no finite values gets no curve.
        """
        from viz import panes

        self._before_pane()
        tensors = tensors if isinstance(tensors, dict) else {name: tensors}
        self._sink.histogram(self._claim(window_name(name), "histogram"),
                             panes.histograms({str(k): v for k, v in tensors.items()}))

    def text(self, name: str, text: str) -> None:
        """A pane of plain text (never markup)."""
        self._before_pane()
        self._sink.text(self._claim(window_name(name), "text"), str(text))

    # ------------------------------------------------------------ steering

    def controls(self, lr: float) -> list[Request]:
        """What the run's control pane asked for since the last call: call it between two steps.

        The first call shows the pane in the run's environment: the learning rate ``lr``
        (set a value, x0.5, x2), pause / continue and stop. Returned, for the loop to act
        on: ``Request("lr", value)`` (set every group's rate to ``value``) and
        ``Request("stop")`` (end the loop). A pause is handled here: the call returns
        once the pane says continue (or stop). A bad value is answered in the pane.
        Each request is recorded in metrics.jsonl as a control record at the last step logged.

            for request in run.controls(optimizer.param_groups[0]["lr"]):
                if request.action == "lr":
                    for group in optimizer.param_groups:
                        group["lr"] = request.value
                elif request.action == "stop":
                    stop = True

        ``lr`` is the rate the loop uses now; a rate the loop changes itself (a scheduler)
        is shown at most once every ``READ_EVERY`` seconds.
        """
        self._check_open()
        if hasattr(lr, "detach") and lr.numel() == 1:  # a rate kept as a tensor (capturable optimizers)
            lr = lr.item()
        if isinstance(lr, bool) or not isinstance(lr, numbers.Real) or not 0 <= lr <= MAX_RATE:
            raise ValueError(f"lr must be the learning rate the loop uses, a number from 0 to {MAX_RATE:g}, "
                             f"not {lr!r:.40}")
        lr = float(lr)
        if self._pane is None:
            self._pane = PaneState(lr=lr, refresh=False, fork=False)
            self._inbox = queue.SimpleQueue()
            self._show_pane()
            self._listener = self._sink.listen(lambda: self._pane, self._inbox.put)
        elif lr != self._pane.lr and clock() >= self._pane_at:
            self._show_pane(lr=lr)
        asked = []
        while not self._inbox.empty() or self._pane.paused:
            try:
                request = self._inbox.get(timeout=0.2)
            except queue.Empty:
                continue
            if request.action == "invalid":
                self._show_pane(note=f"refused: {request.text}")
                continue
            if request.action in ("pause", "continue") and self._pane.paused == (request.action == "pause"):
                continue
            self.dir.append_metrics([{"kind": "control", "step": self._step, "action": request.action,
                                      "value": request.value}])
            if request.action == "lr":
                self._show_pane(lr=request.value, note=f"step {self._step}: learning rate set to {request.value:.6g}")
            elif request.action in ("pause", "continue"):
                self._show_pane(paused=request.action == "pause", note=f"step {self._step}: {request.action}")
                continue
            elif request.action == "stop":
                self._show_pane(paused=False, note=f"step {self._step}: stopping")
            asked.append(request)
        return asked

    def _show_pane(self, **changes) -> None:
        self._pane = dataclasses.replace(self._pane, **changes)
        self._pane_at = clock() + READ_EVERY
        self._sink.controls(self._pane)
        self._sink.save()

    # ------------------------------------------------------------ the end

    def finish(self, status: str = "finished") -> None:
        """Deliver what is held and queued, record how the run ended, and let go of the folder.

        ``status``: "finished", or "failed" / "stopped" for a run that did not complete.
        Calling it again does nothing. A value that cannot be read back fails the run.
        """
        if self._finished:
            return
        if status not in ENDINGS:
            raise ValueError(f"a run finishes as one of {', '.join(ENDINGS)}, not {status!r:.40}")
        self._finished = True
        if self._listener is not None:
            self._listener.close()
        try:
            try:
                self._read_back()
                self._show_config()
            except Exception:
                status = "failed"
                raise
            finally:  # a value that cannot be read back still leaves the run's status true
                self.dir.write_status(status, step=self._step)
            self._sink.outcome(status, {k: v for k, v in self._last.items() if math.isfinite(v)})
            self._sink.save()
        finally:
            self._sink.close()
            self._lock.close()
            _open_runs.pop(self, None)

    def __enter__(self) -> Run:
        return self

    def __exit__(self, kind, error, traceback) -> None:
        if kind is None or (issubclass(kind, SystemExit) and error.code in (0, None)):
            self.finish()
        elif issubclass(kind, KeyboardInterrupt):
            self.finish("stopped")
        else:
            self.finish("failed")

    def _repr_html_(self) -> str:
        """In Jupyter: a link to the run's environment and the environment itself, live, below it."""
        url = html.escape(self.url)
        return (f"<a href='{url}' target='_blank'>{html.escape(self.env)}</a> "
                f"<span style='color:#666'>({html.escape(str(self.path))})</span><br>"
                f"<iframe src='{url}' width='100%' height='600' style='border:1px solid #ddd'></iframe>")

    def __repr__(self) -> str:
        return f"<viz.Run {self.env} in {self.path}>"

    def shown_settings(self) -> dict:
        """What the config pane shows: the user's settings, then where the run is."""
        return {**self.settings["config"], "run_dir": self.settings["run_dir"], "script": self.settings["script"]}

    def _check_open(self) -> None:
        if self._finished:
            raise RuntimeError(f"run {self.env} is finished: start another with viz.init()")

    def _before_pane(self) -> None:
        """Before a pane: the run is open, what is held is drawn first (windows keep their first-use order),
        and the config pane is shown, below the curves, if it is not yet."""
        self._check_open()
        self._read_back()
        self._show_config()

    def _show_config(self) -> None:
        if not self._config_shown:
            self._sink.config(self.shown_settings())
            self._config_shown = True


STEP_RANGE = (-2**63, 2**63)  # what a step may be: an int64, as every tracker and torch's counters keep it


def checked_step(step) -> int:
    """A step given to ``log``, as an int: a whole number (numpy's too) within 64 bits."""
    if isinstance(step, bool) or not isinstance(step, numbers.Integral):
        raise TypeError(f"step must be a whole number within 64 bits, not {step!r:.40}")
    if not STEP_RANGE[0] <= step < STEP_RANGE[1]:  # not shown: a huge int may have more digits than str() writes
        raise TypeError(f"step must be a whole number within 64 bits, not one of {int(step).bit_length()} bits")
    return int(step)


def window_of(name) -> str:
    """The window key of a logged name: ``train/loss`` -> the window of ``loss``."""
    if not isinstance(name, str) or not name or name.endswith("/") or name.startswith("/"):
        raise ValueError(f"a logged name is a non-empty string like 'train/loss', not {name!r:.40}")
    return window_name(name.partition("/")[2] or name)


def trace_of(name: str) -> str:
    """The trace a logged name draws: ``train/loss`` -> ``train``; ``loss`` -> ``loss``."""
    return name.partition("/")[0]


def window_name(name) -> str:
    """The key of the window named ``name``, checked."""
    if not isinstance(name, str) or not 0 < len(name) <= LOGGED_NAME:
        raise ValueError(f"a window name is a string of 1 to {LOGGED_NAME} characters, not {name!r:.40}")
    return logged(name)


def as_numbers(values: list):
    """Numbers and tensors -> an iterator of floats, the tensors read back together: one transfer per device.

    Tensors of one device, shape and dtype are stacked as they are (no per-tensor copy or
    reshape, and no autograd graph), so the cost per logged tensor stays about a microsecond.
    """
    tensors = [v for v in values if hasattr(v, "detach")]
    read: dict[int, float] = {}
    if tensors:
        import torch

        groups: dict = {}
        for v in tensors:
            if v.numel() != 1:
                raise ValueError(f"a logged tensor holds one number, not a tensor of shape {tuple(v.shape)}")
            groups.setdefault((v.device, v.shape, v.dtype), []).append(v)
        with torch.no_grad():
            for group in groups.values():
                got = torch.stack(group).flatten().tolist()  # on the host: some devices have no float64
                read.update({id(v): float(n) for v, n in zip(group, got)})
    for value in values:
        if hasattr(value, "detach"):
            yield read[id(value)]
        elif isinstance(value, numbers.Real) and not isinstance(value, bool):
            yield float(value)
        else:
            raise TypeError(f"a logged value is a number or a one-element tensor, not {value!r:.40}")


_open_runs: dict[Run, None] = {}  # started and not finished, in order: finished when the interpreter exits


def current() -> Run | None:
    """The run started last and not finished yet, if any."""
    return next(reversed(_open_runs), None)
_ended = "finished"  # how open runs end at exit: "failed" after an uncaught exception, "stopped" after Ctrl-C
_hook = None  # the exception hook ``_note_failure`` took over, which it still calls


def _note_failure(kind, error, traceback) -> None:
    global _ended
    _ended = "stopped" if issubclass(kind, KeyboardInterrupt) else "failed"
    (_hook or sys.__excepthook__)(kind, error, traceback)


def _finish_open_runs() -> None:
    for run in list(_open_runs):
        with contextlib.suppress(Exception):
            run.finish(_ended)


def init(name: str | None = None, config: dict | None = None, out: str | os.PathLike = "runs", *,
         server: str | None = None, port: int | None = None, dashboard: bool = True) -> Run:
    """Start a run: a folder under ``out`` and, unless ``dashboard`` is False, a live visdom environment.

    Args:
        name: what the run is (the runs table's trainer column, the start of its folder's
            name); by default the script's name.
        config: its settings, shown on the dashboard and kept in config.json (JSON-ready
            values; anything else, nan and infinities included, is kept as its text).
        out: the folder of run folders, as the trainers' ``--out``.
        server, port: the visdom server; by default $VISDOM_SERVER_URL and $VISDOM_PORT,
            else http://localhost:8097.
        dashboard: False writes the run folder only.
    """
    from trainers.core.run import RunDir  # the run folder the trainers write, so `trainviz runs` reads both

    global _hook

    name = name or (Path(sys.argv[0]).stem if sys.argv and sys.argv[0] not in ("", "-c") else "run")
    stem = re.sub(r"[^A-Za-z0-9_.-]", "-", str(name)).strip(".-")[:60] or "run"  # an environment's letters
    server = (server or os.environ.get("VISDOM_SERVER_URL") or SERVER).rstrip("/")
    problem = server_problem(server)
    if problem:
        raise ValueError(f"the server {server!r:.60} {problem}: give a URL like {SERVER}, with no port or path "
                         "(port= or $VISDOM_PORT gives the port)")
    port = int(port or os.environ.get("VISDOM_PORT") or PORT)
    try:
        given = json.dumps(dict(config or {}), default=str)  # what is not JSON is kept as its text
    except (TypeError, ValueError) as err:
        raise ValueError(f"config must be a dict with string keys: {err}") from None
    if len(given) > CONFIG_BYTES:
        raise ValueError(f"config holds {len(given):,} bytes as JSON, more than {CONFIG_BYTES:,}: it is for settings; "
                         "keep data in files of your own")
    user = json.loads(given, parse_constant=str)  # strict JSON: nan and inf as "NaN" and "Infinity"
    run_dir = RunDir.create(Path(out), stem, f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}")
    script = os.path.abspath(sys.argv[0]) if sys.argv and sys.argv[0] not in ("", "-c") else ""
    settings = {"source": SOURCE, "trainer": str(name), "config": user, "env": run_dir.name,
                "run_dir": str(run_dir.path), "script": script}
    lock = contextlib.ExitStack()
    lock.enter_context(run_dir.writing())
    try:
        run_dir.write_config(settings)
        run_dir.write_status("running")
    except BaseException:
        lock.close()
        raise
    if dashboard:
        from viz.dashboard.sender import VisdomSink  # visdom's client and requests: only when drawing

        sink = VisdomSink(server, port, run_dir.name, run_dir.events_file)
    else:
        sink = Sink()
    run = Run(run_dir, sink, settings, f"{server}:{port}/env/{run_dir.name}", lock)
    if _hook is None:  # once, in front of the hook there is then (a traceback prettifier's)
        _hook, sys.excepthook = sys.excepthook, _note_failure
    _open_runs[run] = None
    return run


atexit.register(_finish_open_runs)
