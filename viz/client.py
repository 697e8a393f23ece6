"""The Visdom client trainviz uses, imported without torch.

visdom's client module imports torch when it can, only to accept tensors, which
trainviz never sends (the sinks hand it numpy arrays and lists). Commands that need
no torch (replay, compare, the sweep's dashboard) would wait two seconds for it, so
visdom is imported with torch hidden unless torch is already loaded.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import math
import os
import sys

import numpy as np
import requests
from PIL import Image

REQUEST_TIMEOUT = 10.0  # seconds; a hung server must not hang a sender forever


def import_visdom():
    """The visdom package, imported without torch when torch is not loaded yet."""
    if "visdom" in sys.modules or "torch" in sys.modules:
        import visdom
        return visdom
    sys.modules["torch"] = None  # `import torch` now raises ImportError, which visdom catches
    try:
        import visdom
    finally:
        del sys.modules["torch"]
    return visdom


visdom = import_visdom()

# The visdom client logs a warning for every session and socket decision it makes.
logging.getLogger("visdom").setLevel(logging.ERROR)


class Client(visdom.Visdom):
    """A Visdom client whose requests time out and whose connection errors are raised, not printed."""

    def _handle_post(self, url, data=None):
        return self.session.post(url, data=data or {}, timeout=REQUEST_TIMEOUT).text

    def win_exists(self, win, env=None):
        """Whether the window is on the server; ConnectionError when the server does not answer."""
        return self._win_exists_wrap(win, env) == "true"

    def png(self, image: np.ndarray, win: str, env: str, opts: dict) -> str:
        """Draw a uint8 RGB image (3, H, W) as window ``win``: the request of visdom's ``image``.

        visdom's own PNG uses zlib's default level, which on these grids takes three times
        as long as level 1 for 6% fewer bytes, and its ``images`` builds the grid in floats.
        """
        buffer = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(image.transpose(1, 2, 0))).save(buffer, format="PNG", compress_level=1)
        source = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
        return self._send({"data": [{"content": {"src": source, "caption": None}, "type": "image"}],
                           "win": win, "eid": env, "opts": opts})

    def append_traces(self, win: str, env: str, points: list[tuple[list[float], list[float]] | None]) -> str:
        """Append points to every trace of an existing line window in one request.

        visdom pairs the i-th entry with the window's i-th trace; None leaves that trace
        as it is. visdom's own ``line(update="append")`` costs a request per trace and
        another to ask whether the window exists, which at every epoch of a fast run is
        most of the sender's work.
        """
        nothing = {"x": [math.nan], "y": [math.nan]}  # visdom skips a trace whose new x are all NaN
        data = [{"x": list(xy[0]), "y": list(xy[1])} if xy else nothing for xy in points]
        return self._send({"data": data, "win": win, "eid": env, "append": True}, endpoint="update")

    def add_trace(self, x: list[float], y: list[float], win: str, env: str, name: str, opts: dict,
                  mode: str = "lines") -> str:
        """Add the line trace ``name`` to window ``win``, creating the window if it is missing.

        One request, which the server applies whole: visdom's own ``line(update="append")``
        first asks whether the window exists and then creates it, replacing whatever
        another process put there in between.
        """
        # visdom's append creates a missing window but not a missing environment; this does,
        # and does nothing to one that exists.
        self._handle_post(f"{self.server}:{self.port}{self.base_url}/env/{env}", data=json.dumps({"eid": env}))
        trace = {"x": list(x), "y": list(y), "name": name, "type": "scatter", "mode": mode}
        return self._send({"data": [trace], "win": win, "eid": env, "name": name, "append": True,
                           "layout": visdom._opts2layout(opts), "opts": opts}, endpoint="update")


def connect(server: str, port: int, env: str) -> Client | None:
    """A client for ``env`` on the server, or None when it does not answer."""
    try:
        return Client(server=server, port=port, env=env, raise_exceptions=True, use_incoming_socket=False,
                      username=os.environ.get("VISDOM_USERNAME"), password=os.environ.get("VISDOM_PASSWORD"))
    except (ConnectionError, requests.RequestException):
        return None
