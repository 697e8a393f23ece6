"""Steering a live run from its dashboard: the requests of its control pane, applied between two steps.

A click on the pane (``viz.dashboard.controls``) becomes a ``Request`` in ``Steering.inbox``
from the listener's thread; the training loop's thread applies it after its next step
and no other thread touches the optimizer. Each request the run acts on is recorded in
metrics.jsonl as ``{"kind": "control", "step": N, "action": ..., "value": ...}``.

A learning-rate change scales the schedule from that step on: setting 0.05 where the
schedule gives 0.1 halves every later step's rate, so a cosine keeps its shape, at half
the height. The changes live in the checkpoint, so a resumed or forked run follows the
same rates as the run that was steered.
"""

from __future__ import annotations

import bisect
import queue
import time
from collections.abc import Callable

from trainers.core.schedule import Schedule
from viz.dashboard.controls import PaneState, Request

PAUSED_POLL = 0.2  # seconds between looks at a stop signal while paused


class Steering:
    """The rate of each step (the schedule times the changes made so far) and the pane's inbox.

    Example:
        >>> steering = Steering(Schedule("constant", 0.1, 2, 10))
        >>> steering.set_rate(step=5, rate=0.05)
        0.5
        >>> steering(4), steering(5)
        (0.1, 0.05)
    """

    def __init__(self, schedule: Schedule, changes: list[list] = ()):
        self.schedule = schedule
        self.changes = [[int(step), float(factor)] for step, factor in changes]  # [step, factor], steps ascending
        self.inbox: queue.SimpleQueue[Request] = queue.SimpleQueue()  # filled by the pane's listener

    def __call__(self, step: int) -> float:
        """The rate of the step that follows ``step`` steps already taken."""
        i = bisect.bisect_right([s for s, _ in self.changes], step) - 1
        return self.schedule(step) * (self.changes[i][1] if i >= 0 else 1.0)

    def set_rate(self, step: int, rate: float) -> float:
        """From ``step`` on, scale the schedule so that this step's rate is ``rate``; the factor that takes.

        Raises:
            ValueError: the schedule's rate is 0 at ``step`` (a cosine's end): there is nothing to scale.
        """
        planned = self.schedule(step)
        if planned <= 0:
            raise ValueError(f"the {self.schedule.kind} schedule's rate is 0 at step {step}: nothing to scale")
        factor = rate / planned
        self.changes = [change for change in self.changes if change[0] < step] + [[step, factor]]
        return factor

    @property
    def steered(self) -> bool:
        """Whether any change was made (here, or in the run this one continues)."""
        return bool(self.changes)


class Pilot:
    """Applies a run's requests between two of its steps: called by the loop after every step.

    Args:
        steering: the rates and the inbox.
        record: told of each request acted on (its control record), for metrics.jsonl and the dashboard.
        show: told of the pane's new state (the pane is redrawn from it).
        refresh: draws the costly panes now.
        fork: starts a fork of the run at its last finished epoch; returns what to say in the pane.
        stop_signal: whether Ctrl-C or SIGTERM asked to stop (checked while paused too).
        prune: a sweep trial's pane offers "prune": raise this to prune the trial.
    """

    def __init__(self, steering: Steering, *, record: Callable[[dict], None], show: Callable[[PaneState], None],
                 refresh: Callable[[int], None], fork: Callable[[], str], stop_signal: Callable[[], bool],
                 prune: type[Exception] | None = None):
        self.steering = steering
        self.record, self.show, self.refresh, self.fork = record, show, refresh, fork
        self.stop_signal, self.prune = stop_signal, prune
        self.state = PaneState(lr=steering(0), prune=prune is not None)
        self.stopping = False  # the pane asked to stop
        self.paused_seconds = 0.0  # time spent paused, left out of the epochs' seconds

    def start(self, step: int) -> None:
        """Draw the pane for a run at ``step``."""
        self._show(lr=self.steering(step))

    def __call__(self, step: int) -> bool:
        """Apply what arrived; True when training should stop after this step."""
        if not self.steering.inbox.empty():
            self._handle(step)
        return self.stopping or self.stop_signal()

    def _handle(self, step: int) -> None:
        while True:
            try:
                request = self.steering.inbox.get_nowait()
            except queue.Empty:
                return
            self._apply(request, step)
            if self.state.paused and not self.stopping:
                self._wait(step)

    def _apply(self, request: Request, step: int) -> None:
        action = request.action
        if action == "invalid":
            self._answer(f"refused: {request.text}", step, log=True)
        elif action == "lr":
            try:
                factor = self.steering.set_rate(step, request.value)
            except ValueError as err:
                self._answer(f"refused: {err}", step, log=True)
                return
            self.record({"kind": "control", "step": step, "action": "lr", "value": request.value, "factor": factor})
            self._show(lr=request.value, note=f"step {step}: learning rate set to {request.value:.6g}")
        elif action in ("pause", "continue"):
            if self.state.paused == (action == "pause"):
                return  # already so
            self.record({"kind": "control", "step": step, "action": action, "value": None})
            self._show(paused=action == "pause", note=f"step {step}: {'paused' if action == 'pause' else 'going on'}")
        elif action == "stop":
            self.record({"kind": "control", "step": step, "action": "stop", "value": None})
            self.stopping = True
            self._show(paused=False, note=f"step {step}: stopping (checkpoint, then resumable)")
        elif action == "refresh":
            self.refresh(step)
            self._answer(f"step {step}: panes refreshed", step)
        elif action == "fork":
            self._answer(self.fork(), step)
        elif action == "prune" and self.prune is not None:
            self.record({"kind": "control", "step": step, "action": "prune", "value": None})
            self._show(note=f"step {step}: pruned")
            raise self.prune(f"pruned from the dashboard at step {step}")

    def _wait(self, step: int) -> None:
        """Block between two steps until a request continues or stops the run (or a signal stops it)."""
        started = time.perf_counter()
        try:
            while self.state.paused and not self.stopping and not self.stop_signal():
                try:
                    request = self.steering.inbox.get(timeout=PAUSED_POLL)
                except queue.Empty:
                    continue
                self._apply(request, step)
        finally:
            self.paused_seconds += time.perf_counter() - started

    def _answer(self, note: str, step: int, log: bool = False) -> None:
        if log:
            from tqdm import tqdm

            tqdm.write(f"dashboard request at step {step} {note}")
        self._show(note=note)

    def _show(self, **changes) -> None:
        fields = {"lr": self.state.lr, "paused": self.state.paused, "note": self.state.note, **changes}
        self.state = PaneState(fields["lr"], fields["paused"], fields["note"], prune=self.state.prune)
        self.show(self.state)
