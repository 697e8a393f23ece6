"""Where trainviz keeps files that outlive a run, and how processes share them safely.

Several trainers, sweep workers and ``launch.sh`` runs may touch the same cache at
once: whatever they write is written under a name of its own and renamed into place
(``atomic_path``), and steps that must not interleave hold a lock (``locked``).
A run folder has one writer, holding its lock for as long as it runs (``try_lock``).
Appends are whole or nothing (``append_whole``), and a full disk is told apart and
described (``no_space``, ``free_space``), as is the memory left (``available_memory``).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

# What a write into a full disk (or a spent quota) fails with.
NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


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


def try_lock(lock_file: Path, wait: float = 0.0) -> IO | None:
    """An open handle holding an exclusive lock on ``lock_file``, or None if another process holds it.

    Waits up to ``wait`` seconds for the lock. Closing the handle releases the lock, and
    so does the process's death: a killed holder never leaves it held.
    """
    try:  # never a link's target, and never waiting on a FIFO for a reader
        fd = os.open(lock_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644)
    except OSError as err:
        if err.errno in (errno.ELOOP, errno.ENXIO):
            raise OSError(err.errno, f"{lock_file.name} is a symbolic link or a FIFO, not a lock file", str(lock_file)) \
                from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, f"{lock_file.name} is not a regular file", str(lock_file))
    handle = open(fd, "a")
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return handle
        except BlockingIOError:
            if time.monotonic() >= deadline:
                handle.close()
                return None
            time.sleep(0.1)


def append_whole(path: Path, data: bytes, handle: IO[bytes] | None = None) -> None:
    """Append ``data`` to ``path`` whole or not at all.

    A write that fails part way (a full disk) is cut back off, so the file never ends
    in half a line. ``handle``: ``path`` already open unbuffered for appending ("ab", 0).

    Raises:
        OSError: the write failed; its ``filename`` is ``path``.
    """
    with contextlib.ExitStack() as stack:
        f = handle or stack.enter_context(open(path, "ab", buffering=0))
        start = os.lseek(f.fileno(), 0, os.SEEK_END)
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(f.fileno(), view):]
        except OSError as err:
            os.ftruncate(f.fileno(), start)
            raise OSError(err.errno, err.strerror, str(path)) from None


def no_space(err: BaseException) -> bool:
    """Whether ``err`` says the disk (or the user's quota) is full."""
    return isinstance(err, OSError) and err.errno in NO_SPACE


def free_space(path: Path) -> str:
    """The free space on the disk holding ``path`` (or its nearest existing folder), for a person."""
    for folder in (path, *path.parents):
        try:
            return human_bytes(shutil.disk_usage(folder).free)
        except OSError:
            continue
    return "unknown space"


def human_bytes(size: float) -> str:
    """A size for a person: ``512 bytes``, ``12 KB``, ``3.4 GB``."""
    units = ["bytes", "KB", "MB", "GB"]
    unit = units.pop(0)
    while size >= 1024 and units:
        size, unit = size / 1024, units.pop(0)
    return f"{size:.3g} {unit}" if unit != "bytes" and size < 100 else f"{size:,.0f} {unit}"


def available_memory() -> int | None:
    """Bytes of memory this machine can still give (Linux's MemAvailable); None where it is not known."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


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
