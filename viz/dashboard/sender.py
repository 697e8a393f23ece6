"""The live sink: events go to events.jsonl at once and to Visdom from a background thread.

Training only appends to a list under a lock. A sender thread wakes at least once a
second (and at every ``save``), merges what is queued into one request per window,
and posts it. If the server is unreachable, training carries on; the queue is
bounded, and when the server answers again the run's environment is rebuilt in full
from events.jsonl, so nothing is missing even after a server restart lost it all.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

import requests

from viz.dashboard.client import LoginRefused, connect
from viz.dashboard.controls import Listener
from viz.dashboard.render import Renderer
from viz.dashboard.sink import POINT_KINDS, Sink, read_events
from viz.paths import append_whole

FLUSH_SECONDS = 1.0  # longest a point waits before it is sent
MAX_PENDING = 20_000  # events held in memory while the server is away; older ones are dropped


def rebuild(vis, renderer: Renderer, events: list[dict]) -> None:
    """Replace the run's environment on the server with one drawn from ``events``, then save it."""
    vis.delete_env(renderer.env)
    renderer.reset()
    renderer.render([e for e in events if e["kind"] != "save"] + [{"kind": "save"}])


class VisdomSink(Sink):
    """Streams a run to a Visdom server without ever blocking training on the network.

    Args:
        server, port: where Visdom listens.
        env: the run's environment name.
        events_file: events.jsonl; every event is appended to it before it is queued.
        connect_with: how to get a client (tests pass a mock).
        rebuild_first: redraw the environment from events_file before sending anything
            (a resumed run continues an environment this process did not draw).

    Example:
        >>> sink = VisdomSink("http://localhost", 8097, "demo", Path("events.jsonl"))  # doctest: +SKIP
        >>> sink.scalars("train_loss", x=1, values={"loss": 2.3})
        >>> sink.close()
    """

    active = True

    def __init__(self, server: str, port: int, env: str, events_file: Path,
                 connect_with=connect, flush_seconds: float = FLUSH_SECONDS, max_pending: int = MAX_PENDING,
                 rebuild_first: bool = False):
        self.server, self.port, self.env = server, port, env
        self.events_path = Path(events_file)
        # Unbuffered, a line per write: a killed process still leaves every event it reported on
        # disk, and a full disk leaves no half line (the write that failed is cut off again).
        self._file = open(self.events_path, "ab", buffering=0)
        self._connect = connect_with
        self._flush_seconds, self._max_pending = flush_seconds, max_pending
        self._wake = threading.Condition()
        self._pending: list[dict] = []
        self._closing = False
        # Set when something queued may not have reached the server: rebuild before sending more.
        self._stale = rebuild_first
        self._reported = False  # an unexpected sending error was already shown
        self._pane_seconds = 0.0
        self._refused = False  # the server refused the login: this process's credentials will not change
        try:
            self.vis = connect_with(server, port, env)
        except LoginRefused as err:
            self.vis, self._refused = None, True
            print(f"warning: {err}; training goes on, and `trainviz replay {self.events_path.parent}` draws "
                  "it once the login is right", file=sys.stderr)
        self.renderer = Renderer(self.vis, env) if self.vis else None
        if self.vis is None and not self._refused:
            self._stale = True
            print(f"warning: no visdom server answers at {server}:{port}; training goes on and the "
                  f"dashboard fills in once one starts (trainviz server start --port {port}), or later with "
                  f"`trainviz replay {self.events_path.parent}`", file=sys.stderr)
        self._thread = threading.Thread(target=self._run, name="visdom-sender", daemon=True)
        self._thread.start()

    def emit(self, event: dict) -> None:
        line = (json.dumps(event) + "\n").encode()
        with self._wake:
            append_whole(self.events_path, line, self._file)
            self._pending.append(event)
            if len(self._pending) > self._max_pending:
                del self._pending[: len(self._pending) - self._max_pending]
                self._stale = True  # dropped events come back from the file
            if event["kind"] == "save":
                self._wake.notify()

    def listen(self, state, deliver) -> Listener | None:
        """Listen to the control pane on this sink's server, with its login cookie when it asks for one."""
        if self._refused:
            return None
        session = getattr(self.vis, "session", None)
        cookie = session.cookies.get("user_password") if session is not None else None
        return Listener(self.server, self.port, self.env, state, deliver, cookie=cookie,
                        base_url=getattr(self.vis, "base_url", ""))

    def close(self, timeout: float = 30.0) -> None:
        """Send what is queued (waiting up to ``timeout`` seconds) and stop the sender."""
        with self._wake:
            self._closing = True
            self._wake.notify()
        self._thread.join(timeout)
        self._file.close()
        if (self._stale or self._thread.is_alive()) and self.vis is not None:  # else the first warning said it
            print(f"warning: the visdom server did not receive all of this run; "
                  f"`trainviz replay {self.events_path.parent}` rebuilds its dashboard", file=sys.stderr)

    def _run(self) -> None:
        while True:
            with self._wake:
                if not self._closing:
                    self._wake.wait(self._flush_seconds)
                batch, self._pending = self._pending, []
                closing = self._closing
            started = time.perf_counter()
            self._deliver(batch)
            if any(event["kind"] not in POINT_KINDS for event in batch):
                self._pane_seconds += time.perf_counter() - started
            if closing:
                return

    def background_seconds(self) -> float:
        """Seconds the sender spent drawing and sending batches that held panes (not just points)."""
        return self._pane_seconds

    def _deliver(self, batch: list[dict]) -> None:
        """Send a batch; on any failure mark the run stale so the next delivery rebuilds it."""
        if self._refused:
            return
        try:
            if self.vis is None:
                self.vis = self._connect(self.server, self.port, self.env)
                if self.vis is None:
                    return
                self.renderer = Renderer(self.vis, self.env)
            if self._stale:
                with self._wake:
                    events, _ = read_events(self.events_path)
                    self._pending.clear()  # all of it is in the file
                    self._stale = False  # set again by emit if the queue overflows meanwhile
                rebuild(self.vis, self.renderer, events)
            elif batch:
                self.renderer.render(batch)
        except (ConnectionError, requests.RequestException):
            self._stale = True
        except Exception as err:  # a bug must not kill the sender; say it once and retry by rebuilding
            self._stale = True
            if not self._reported:
                self._reported = True
                print(f"warning: sending to visdom failed: {type(err).__name__}: {err}", file=sys.stderr)
