"""The control pane: a live run's environment steering its training.

Visdom's properties pane sends every edit and button click back to the Python clients
listening on the server's ``/vis_socket`` websocket: the page sends ``forward_to_vis``,
the server passes the packet to every such client (visdom 0.2.4 and 0.3.0 alike, whatever
environment it came from). A ``Listener`` keeps one socket open in a daemon thread, and
of what arrives passes on only what this run's pane asked for: an event of its own
environment and window, for one of its rows, with a value that reads as a learning
rate. Everything else is dropped, and a bad value is answered as a ``Request("invalid")``
that says why. The listener acts on nothing itself: its requests go to a callback (a
queue the training loop reads between two steps).

Who may click: the server's gate lets only the dashboard's own page open a socket (its
host and origin rules; with ``--public``, visdom's login), so an event comes from a page
the user opened or from a process of the user's own.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass

CONTROLS = "controls"  # the pane's window key
RECONNECT_SECONDS = 2.0  # how long the listener waits before calling a server that did not answer again
MAX_RATE = 1e6  # the largest learning rate a pane may set: --lr's bound


@dataclass(frozen=True)
class Request:
    """What a click asked for.

    ``action`` is one of: ``lr`` (``value`` the rate to set), ``pause``, ``continue``,
    ``stop``, ``refresh``, ``fork``, ``prune``, or ``invalid`` (``text`` says why).
    """

    action: str
    value: float | None = None
    text: str = ""


@dataclass(frozen=True)
class PaneState:
    """What the pane shows: the rate now, whether training is paused, the answer to the last request."""

    lr: float
    paused: bool = False
    note: str = ""
    refresh: bool = True  # rows a trainer's run offers: refresh the costly panes, fork here
    fork: bool = True
    prune: bool = False  # a sweep trial's pane: prune it


def rows(state: PaneState) -> list[tuple[str, dict]]:
    """The pane's rows in order: (what a click on it asks for, visdom's property)."""
    found = [
        ("lr", {"type": "number", "name": "learning rate (type, then Enter)", "value": f"{state.lr:.6g}"}),
        ("halve", {"type": "button", "name": "learning rate", "value": "x0.5"}),
        ("double", {"type": "button", "name": "learning rate", "value": "x2"}),
        ("continue" if state.paused else "pause",
         {"type": "button", "name": "training", "value": "continue" if state.paused else "pause"}),
        ("stop", {"type": "button", "name": "training", "value": "stop (resumable)"}),
    ]
    if state.refresh:
        found.append(("refresh", {"type": "button", "name": "costly panes", "value": "refresh now"}))
    if state.fork:
        found.append(("fork", {"type": "button", "name": "new run", "value": "fork from the last epoch"}))
    if state.prune:
        found.append(("prune", {"type": "button", "name": "sweep trial", "value": "prune"}))
    found.append(("note", {"type": "text", "name": "last request", "value": state.note or "-"}))
    return found


def properties(state: PaneState) -> list[dict]:
    """The pane as visdom's ``properties`` takes it."""
    return [prop for _, prop in rows(state)]


def parse_rate(value) -> float | str:
    """A rate typed into the pane as a number, or why it is not one that may be set."""
    try:
        rate = float(str(value).strip())
    except ValueError:
        return f"{str(value)[:40]!r} is not a number"
    if not math.isfinite(rate) or rate <= 0:
        return f"{str(value)[:40]!r} is not a learning rate above 0"
    if rate > MAX_RATE:
        return f"{rate:g} is above the largest learning rate, {MAX_RATE:g}"
    return rate


def request_of(event, env: str, state: PaneState) -> Request | None:
    """The request an event from the server makes of this run's pane, or None when it is not for it.

    ``state`` is what the pane shows now: the rows a property number stands for, and the
    rate the x0.5 and x2 buttons start from.
    """
    if not isinstance(event, dict) or event.get("eid") != env or event.get("target") != CONTROLS \
            or event.get("event_type") != "PropertyUpdate":
        return None
    shown = rows(state)
    index = event.get("propertyId")
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(shown):
        return None
    action = shown[index][0]
    if action == "note":
        return None
    if action == "lr":
        rate = parse_rate(event.get("value"))
        return Request("lr", rate) if isinstance(rate, float) else Request("invalid", text=rate)
    if action in ("halve", "double"):
        if state.lr == 0:  # a warm-up's first step, the end of a schedule to 0
            return Request("invalid", text="a rate of 0 halved or doubled is 0: type the rate to set")
        rate = state.lr * (0.5 if action == "halve" else 2.0)
        return Request("lr", rate) if rate <= MAX_RATE else Request("invalid", text=f"{rate:g} is above {MAX_RATE:g}")
    if action in ("pause", "continue"):
        # The label the page showed when it was clicked: two clicks before the pane is redrawn do not undo each other.
        shown_label = _label(event, index)
        return Request(shown_label if shown_label in ("pause", "continue") else action)
    return Request(action)


def _label(event: dict, index: int) -> str | None:
    """The label of row ``index`` in the pane as the server held it when the click came (visdom sends it along)."""
    pane = event.get("pane_data")
    content = pane.get("content") if isinstance(pane, dict) else None
    if isinstance(content, list) and index < len(content) and isinstance(content[index], dict):
        label = content[index].get("value")
        return label if isinstance(label, str) else None
    return None


def request_in(message: str | bytes, env: str, state: PaneState) -> Request | None:
    """The request a message from the server's socket makes of this run's pane (``request_of``), or None.

    Anything that is not JSON, or is nested too deep to decode, is no request.
    """
    try:
        event = json.loads(message)
    except (ValueError, TypeError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None
    return request_of(event, env, state)


class Listener:
    """A websocket to the visdom server that turns clicks on a run's control pane into requests.

    Args:
        url: the server's URL (``http://localhost``) and ``port``.
        env: the run's environment.
        state: called for the pane as it is shown now (the listener reads it from its thread).
        deliver: called with each request, from the listener's thread: it must only queue it.
        cookie: visdom's login cookie when the server asks for a login.

    The thread is a daemon and blocks in ``recv``: nobody clicking costs nothing. When
    the server goes away it calls again every ``RECONNECT_SECONDS``; ``close`` ends it.
    """

    def __init__(self, url: str, port: int, env: str, state: Callable[[], PaneState],
                 deliver: Callable[[Request], None], cookie: str | None = None, base_url: str = ""):
        scheme = "wss" if url.startswith("https") else "ws"
        self.address = f"{scheme}://{url.split('://', 1)[-1]}:{port}{base_url}/vis_socket"
        self.env, self.state, self.deliver = env, state, deliver
        self.header = [f"Cookie: user_password={cookie}"] if cookie else []
        self.connected = threading.Event()  # set while a socket is open (tests wait on it)
        self._closed = threading.Event()
        self._socket = None  # a websocket.WebSocket while one is open
        self._thread = threading.Thread(target=self._run, name="visdom-controls", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop listening (the thread ends at once, or with the process: it is a daemon)."""
        self._closed.set()
        sock = self._socket
        if sock is not None:
            try:
                sock.abort()  # wakes the thread's recv
            except Exception:  # the socket is gone already
                pass

    def _run(self) -> None:
        import websocket  # websocket-client, which visdom's own client uses too

        while not self._closed.is_set():
            try:
                self._socket = websocket.create_connection(self.address, header=self.header, timeout=10)
                self._socket.settimeout(None)
                self.connected.set()
                while not self._closed.is_set():
                    self._take(self._socket.recv())
            except Exception:  # refused, reset, closed: call again in a while
                pass
            finally:
                self.connected.clear()
                if self._socket is not None:
                    self._socket.close()
                    self._socket = None
            self._closed.wait(RECONNECT_SECONDS)

    def _take(self, message) -> None:
        """One message from the server: a request of this run's pane is delivered; anything else dropped."""
        if not message:
            raise ConnectionError("the server closed the socket")
        request = request_in(message, self.env, self.state())
        if request is not None:
            self.deliver(request)
