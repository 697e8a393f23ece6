"""Where trainviz keeps files that outlive a run: data copies and server state."""

import os
from pathlib import Path


def cache_dir() -> Path:
    """The user's trainviz cache folder.

    ``$TRAINVIZ_CACHE`` wins (tests point it at a temporary folder), then
    ``$XDG_CACHE_HOME/trainviz``, then ``~/.cache/trainviz``.
    """
    if os.environ.get("TRAINVIZ_CACHE"):
        return Path(os.environ["TRAINVIZ_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "trainviz"
