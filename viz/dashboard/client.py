"""The Visdom client trainviz uses, imported without torch.

visdom's package imports torch when it can, only to accept tensors, which trainviz
never sends (the sinks hand it numpy arrays and lists), and visdom 0.3.0 also imports
openTSNE (and with it scikit-learn and scipy) for embedding plots, which trainviz never
draws. Commands that need neither (replay, compare, the sweep's dashboard, the server)
would wait seconds for them, so :func:`import_visdom` hides those two packages while
visdom is imported: an import finder that answers "not installed" for them, removed
right after. ``sys.modules`` is left alone, so libraries that look torch up there later
(scipy does) see it either loaded or absent, never a placeholder.
"""

from __future__ import annotations

import base64
import importlib.abc
import json
import logging
import math
import os
import struct
import sys
import zlib

import numpy as np
import requests

from trainers.core.errors import UserError

REQUEST_TIMEOUT = 10.0  # seconds; a hung server must not hang a sender forever


# Packages visdom imports only for what trainviz does not use: tensors, t-SNE embeddings.
HIDDEN_FROM_VISDOM = ("torch", "openTSNE")


class _Hidden(importlib.abc.MetaPathFinder):
    """An import finder that says the hidden packages and their submodules are not installed."""

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in HIDDEN_FROM_VISDOM:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


def import_visdom():
    """The visdom package, imported without importing torch or openTSNE.

    Where torch is loaded already (a training run), visdom finds it in ``sys.modules``,
    past any finder, and accepts tensors as usual.
    """
    if "visdom" in sys.modules:
        return sys.modules["visdom"]
    hidden = _Hidden()
    sys.meta_path.insert(0, hidden)  # visdom catches the ImportError of each
    try:
        import visdom
    finally:
        sys.meta_path.remove(hidden)
    return visdom


visdom = import_visdom()

# The visdom client logs a warning for every session and socket decision it makes.
logging.getLogger("visdom").setLevel(logging.ERROR)

# visdom 0.3.0 keeps an experiment record per environment (settings, metrics, status),
# which its own views list; 0.2.4 has none, and trainviz draws the same windows on both.
EXPERIMENTS = hasattr(visdom.Visdom, "experiment")
# trainviz's statuses that end a run for good, as visdom's ("stopped" can be resumed).
FINAL_STATUS = {"finished": "finished", "pruned": "failed", "diverged": "failed", "failed": "failed"}


def gaps(values) -> list:
    """A trace's values with NaN and infinities as None: a gap in the line.

    JSON has no NaN: the server would store it and hand it to the browser as a bare
    ``NaN``, which the page cannot parse, so the window would never draw again (visdom's
    own ``line`` does the same with ``nan2none``).

        >>> gaps([1.0, float("nan"), float("inf"), 2])
        [1.0, None, None, 2]
    """
    return [v if v is None or math.isfinite(v) else None for v in values]


class LoginRefused(UserError):
    """The server asks for a login that VISDOM_USERNAME and VISDOM_PASSWORD do not give."""


class Client(visdom.Visdom):
    """A Visdom client whose requests time out and whose connection errors are raised, not printed."""

    status = None  # the HTTP status of the last request's answer

    def _handle_post(self, url, data=None):
        answer = self.session.post(url, data=data or {}, timeout=REQUEST_TIMEOUT)
        self.status = answer.status_code
        return answer.text

    def win_exists(self, win, env=None):
        """Whether the window is on the server; ConnectionError when the server does not answer."""
        return self._win_exists_wrap(win, env) == "true"

    def png(self, image: np.ndarray, win: str, env: str, opts: dict) -> str:
        """Draw a uint8 RGB image (H, W, 3) as window ``win``: the request of visdom's ``image``."""
        source = "data:image/png;base64," + base64.b64encode(png_bytes(image)).decode()
        return self._send({"data": [{"content": {"src": source, "caption": None}, "type": "image"}],
                           "win": win, "eid": env, "opts": opts})

    def lines(self, traces: list[tuple[str, list[float], list[float], str]], win: str, env: str, opts: dict) -> str:
        """Create or replace line window ``win`` with ``traces``, each (name, x, y, mode), in one request.

        visdom's ``line`` wants every trace to have the same x; these need not (the
        per-step loss and its epoch means). ``mode`` is "lines" or "markers".
        """
        data = [{"x": gaps(x), "y": gaps(y), "name": name, "type": "scatter", "mode": mode, "marker": {"size": 6}}
                for name, x, y, mode in traces]
        return self._send({"data": data, "win": win, "eid": env, "layout": visdom._opts2layout(opts), "opts": opts})

    def add_trace(self, x: list[float], y: list[float], win: str, env: str, name: str, opts: dict) -> str:
        """Add the line trace ``name`` to window ``win``, creating the window if it is missing.

        One request, which the server applies whole: visdom's own ``line(update="append")``
        first asks whether the window exists and then creates it, replacing whatever
        another process put there in between.
        """
        # visdom's append creates a missing window but not a missing environment; this does,
        # and does nothing to one that exists.
        self._handle_post(f"{self.server}:{self.port}{self.base_url}/env/{env}", data=json.dumps({"eid": env}))
        trace = {"x": gaps(x), "y": gaps(y), "name": name, "type": "scatter", "mode": "lines"}
        return self._send({"data": [trace], "win": win, "eid": env, "name": name, "append": True,
                           "layout": visdom._opts2layout(opts), "opts": opts}, endpoint="update")

    def record_run(self, env: str, settings: dict) -> None:
        """List the run among visdom's experiments with its settings as params (visdom 0.3.0+)."""
        if EXPERIMENTS:
            params = {name: value if isinstance(value, (bool, int, float, str)) else json.dumps(value)
                      for name, value in settings.items() if value is not None}
            self.experiment(name=env, params=params, env=env)

    def end_run(self, env: str, status: str, metrics: dict[str, float]) -> None:
        """Record how the run ended, and its last numbers, in its visdom experiment (visdom 0.3.0+).

        visdom refuses changes to an experiment it was told is over (a replay of a
        finished run answers 409, which changes nothing).
        """
        if not EXPERIMENTS:
            return
        if metrics:
            self.log_metrics(metrics, step=metrics.get("step"), env=env)
        self.experiment(tags={"status": status}, env=env)
        if status in FINAL_STATUS:
            self.finish_experiment(FINAL_STATUS[status], env=env)


def png_bytes(image: np.ndarray) -> bytes:
    """A uint8 RGB image (H, W, 3) as a PNG file: unfiltered rows, zlib level 1.

    Pillow's encoder (and so visdom's) tries a filter per row and compresses harder; on
    the dashboard's grids, mostly flat white and grey, that takes two to three times as
    long for 1 to 2% fewer bytes. zlib works without the GIL, beside training.
    """
    height, width, _ = image.shape
    rows = np.hstack([np.zeros((height, 1), dtype=np.uint8), image.reshape(height, -1)])  # filter byte 0: none

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8 bits, RGB, no interlace
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows.tobytes(), 1))
            + chunk(b"IEND", b""))


# How visdom answers a request without its login cookie: 0.2.4 with 400, 0.3.0 with 401.
LOGIN_NEEDED = (400, 401)


def connect(server: str, port: int, env: str) -> Client | None:
    """A client for ``env`` on the server, or None when it does not answer.

    Raises:
        LoginRefused: the server asks for a login, and VISDOM_USERNAME and VISDOM_PASSWORD
            give none or one it refuses.
    """
    username = os.environ.get("VISDOM_USERNAME")
    try:
        client = Client(server=server, port=port, env=env, raise_exceptions=True, use_incoming_socket=False,
                        username=username, password=os.environ.get("VISDOM_PASSWORD"))
    except (ConnectionError, requests.RequestException):
        return None
    except RuntimeError as err:  # visdom's word for a login the server refused
        if str(err) != "Authentication failed":
            raise
        raise LoginRefused(f"the visdom server at {server}:{port} refused the login of VISDOM_USERNAME "
                           f"{username!r}: check VISDOM_PASSWORD") from None
    if client.status in LOGIN_NEEDED:  # its first request, which makes the environment, was refused
        raise LoginRefused(f"the visdom server at {server}:{port} asks for a login: set VISDOM_USERNAME and "
                           "VISDOM_PASSWORD to the ones it was started with")
    return client
