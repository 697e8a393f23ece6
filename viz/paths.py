"""Where trainviz keeps files that outlive a run, and how processes share them safely.

Several trainers, sweep workers and ``launch.sh`` runs may touch the same cache at
once: whatever they write is written under a name of its own and renamed into place
(``atomic_path``), and steps that must not interleave hold a lock (``locked``).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from collections.abc import Iterator
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


@contextlib.contextmanager
def locked(lock_file: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``lock_file`` (created if missing) for the ``with`` block.

    The lock is the kernel's (``flock``): it is released when the block ends, and also
    when the process dies, so a killed process never leaves it held.
    """
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_file, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


@contextlib.contextmanager
def atomic_path(target: Path, mode: int = 0o644) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; when the block succeeds it replaces ``target``.

    The temporary name is unique to this process, so two writers never share a file,
    and a reader sees either the old file or the whole new one.
    """
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".partial")
    os.close(fd)
    partial = Path(name)
    try:
        yield partial
        os.chmod(partial, mode)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
