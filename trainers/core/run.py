"""A run's folder: its config, its metrics as they happen, and its checkpoint.

One process writes a folder at a time (``RunDir.writing``). Folders are copied, edited by
hand and left half-written by killed processes, so every reader checks what it reads and
names a damaged file (``Damaged``) instead of failing on it.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import socket
import stat
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

from trainers.catalog import TRAINERS
from trainers.core.config import KEEP_EPOCHS, TrainConfig, json_kind, settings_problem
from trainers.core.errors import UserError
from trainers.options import ENV_NAME
from viz.paths import append_whole, atomic_path, no_space, try_lock
from viz.values import is_number, is_whole

# What status.json can say. A run writes "running" when it starts and one of the others
# when it ends; a run killed outright leaves "running", with the pid and host that ran it.
STATUSES = ("running", "finished", "stopped", "diverged", "pruned", "failed")
# status.json is always this many bytes, padded with spaces: when the disk is full and no new
# file can be written, the status is still rewritten in place, in blocks the file already has.
STATUS_BYTES = 4096
CHECKPOINT_KEYS = {"model", "optimizer", "config", "progress", "generator"}


def process_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this machine (a pid that is not a number: no)."""
    if not is_whole(pid) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # OverflowError: larger than any pid
        return False
    except PermissionError:  # it exists, and belongs to another user
        return True
    return True


SMALL_FILE = 16 << 20  # the most of a config.json or status.json read (a few kilobytes each; viz.init's at most 1 MiB)


class NotSmallFile(ValueError):
    """A settings file that is not a regular file of at most ``SMALL_FILE`` bytes (a FIFO, /dev/zero, a huge file)."""


def read_small(path: Path) -> bytes:
    """The bytes of a small regular file: what a hostile folder puts there can neither block nor fill the memory.

    Raises:
        OSError: it cannot be read (FileNotFoundError: there is none).
        NotSmallFile: it is no regular file, or too large.
    """
    info = path.stat()
    if not stat.S_ISREG(info.st_mode):
        raise NotSmallFile("it is not a regular file")
    if info.st_size > SMALL_FILE:
        raise NotSmallFile(f"it holds {info.st_size:,} bytes, more than a run's settings take ({SMALL_FILE:,})")
    with open(path, "rb") as f:
        return f.read(SMALL_FILE + 1)


def config_of(values) -> type[TrainConfig]:
    """The settings class that saved ``values`` name by their trainer (TrainConfig for an unknown or odd one)."""
    trainer = values.get("trainer") if isinstance(values, dict) else None
    return TRAINERS[trainer].config if isinstance(trainer, str) and trainer in TRAINERS else TrainConfig


class Damaged(UserError):
    """A file of a run folder cannot be used: one line naming it, what is wrong and what to do (exit 2)."""

    def __init__(self, file: Path, problem: str, todo: str = "restore it from a copy of the run folder"):
        super().__init__(f"{file} is damaged: {problem}; {todo}")
        self.file, self.problem = file, problem


class Busy(UserError):
    """Another process is writing the run folder (exit 2)."""


def first_sentence(err: BaseException) -> str:
    """The first line (and sentence) of an error, or its type's name when it says nothing."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return text.split(". ")[0].rstrip(".")


class Pruned(Exception):
    """A sweep's pruner ended the run after an epoch (raised by ``RunHooks.epoch``)."""


class RunHooks:
    """What a caller of ``trainers.core.training.train`` hears of its run; these do nothing.

    A sweep's trials subclass it to record the run folder and report each epoch.
    """

    def started(self, run: RunDir) -> None:
        """The run folder exists and holds its config (a resumed run: its metrics so far)."""

    def epoch(self, record: dict) -> None:
        """An epoch's record is saved; raising ``Pruned`` ends the run with status pruned."""

    def steer(self, steering) -> None:
        """Training starts: ``steering.inbox`` takes ``viz.Request``s as the dashboard's control pane sends them."""


class RunDir:
    """``<out>/<trainer>-<YYYYmmdd-HHMMSS>``: config.json, status.json, metrics.jsonl, checkpoint.pt, .lock."""

    def __init__(self, path: Path):
        self.path = path
        self.config_file = path / "config.json"
        self.metrics_file = path / "metrics.jsonl"
        self.checkpoint_file = path / "checkpoint.pt"
        self.events_file = path / "events.jsonl"
        self.status_file = path / "status.json"
        self.lock_file = path / ".lock"  # held by the one process writing the folder
        self.epochs_dir = path / "checkpoints"  # epoch-NNNN.pt: what a fork starts from
        self.pinned: set[int] = set()  # epochs a fork started by this process starts from: never deleted

    @property
    def name(self) -> str:
        return self.path.name

    @classmethod
    def create(cls, out: Path, trainer: str, stem: str | None = None) -> RunDir:
        """Make a new, uniquely named run folder (a suffix keeps runs of the same name apart).

        The name is ``stem``, by default the trainer and the time: ``mlp-20260101-120000``.
        """
        out.mkdir(parents=True, exist_ok=True)
        stem = stem or f"{trainer}-{time.strftime('%Y%m%d-%H%M%S')}"
        for n in range(1, 1000):
            path = out / (stem if n == 1 else f"{stem}-{n}")
            try:
                path.mkdir()
            except FileExistsError:
                continue
            return cls(path)
        raise FileExistsError(f"too many runs named {stem} in {out}")

    @contextlib.contextmanager
    def writing(self, wait: float = 0.0) -> Iterator[None]:
        """Be the folder's one writer for the ``with`` block, or raise ``Busy`` naming the one that is.

        The lock (``flock`` on ``.lock``) is the kernel's: a process killed outright lets go
        of it at once, so a run it left behind can be resumed straight away. ``wait``:
        seconds to wait for another writer to finish first.
        """
        try:
            handle = try_lock(self.lock_file, wait)
        except OSError as err:
            raise UserError(f"cannot write in {self.path}: {err.strerror}") from None
        if handle is None:
            status = self.read_status()
            holder = (f"pid {status['pid']} on {status.get('host', '?')}" if status.get("pid")
                      else "another process")
            raise Busy(f"{self.path} is in use: {holder} is writing it (see its status.json); "
                       "wait for that run to end, or stop it, then try again")
        try:
            yield
        finally:
            handle.close()

    def write_config(self, settings: dict) -> None:
        """Save every setting of the run (atomically)."""
        self._replace(self.config_file, (json.dumps(settings, indent=2) + "\n").encode())

    def read_config(self) -> dict:
        """The settings saved by ``write_config``.

        Raises:
            OSError: there is no config.json (FileNotFoundError) or it cannot be read.
            Damaged: it is not JSON, not an object, or a setting has the wrong type.
        """
        try:
            values = json.loads(read_small(self.config_file))
        except NotSmallFile as err:
            raise Damaged(self.config_file, str(err)) from None
        except (ValueError, RecursionError) as err:  # UnicodeDecodeError included; RecursionError: nested too deep
            raise Damaged(self.config_file, f"it is not JSON ({first_sentence(err)})") from None
        problem = settings_problem(values, config_of(values))
        if problem is None and values.get("env") is not None and not (
                isinstance(values["env"], str) and ENV_NAME.fullmatch(values["env"])):
            problem = f"env is {values['env']!r:.40}, not a usable environment name"
        if problem:
            raise Damaged(self.config_file, problem)
        return values

    def update_config(self, **changes) -> None:
        """Change some saved settings (a resume given a larger --epochs or a new --data-dir), keeping the rest."""
        self.write_config({**self.read_config(), **changes})

    def write_status(self, status: str, **details) -> None:
        """Say how the run stands (one of ``STATUSES``), atomically, keeping when it started.

        "running" also records this process's pid and host, so a reader can tell a run in
        progress from one that was killed. On a full disk the file is rewritten in place.
        """
        now = time.time()
        previous = self.read_status()
        record = {"status": status, "started": previous.get("started", now), "updated": now}
        if status == "running":
            record |= {"pid": os.getpid(), "host": socket.gethostname()}
        record |= details
        if len(json.dumps(record)) > STATUS_BYTES - 1:  # only an error message can be this long
            record["error"] = str(record.get("error", ""))[: STATUS_BYTES // 2]
        text = json.dumps(record)
        data = (text + " " * (STATUS_BYTES - 1 - len(text)) + "\n").encode()
        try:
            self._replace(self.status_file, data)
        except OSError as err:
            if not (no_space(err) and self._overwrite(self.status_file, data)):
                raise

    def read_status(self) -> dict:
        """What ``write_status`` last wrote; {} for a run without one (or one that is damaged)."""
        try:
            status = json.loads(read_small(self.status_file))
        except (OSError, ValueError, RecursionError):
            return {}
        return status if isinstance(status, dict) else {}

    def status_problem(self) -> str | None:
        """Why status.json is damaged; None when it is sound or absent."""
        try:
            status = json.loads(read_small(self.status_file))
        except FileNotFoundError:
            return None
        except OSError as err:
            return f"status.json cannot be read ({err.strerror})"
        except NotSmallFile as err:
            return f"status.json: {err}"
        except (ValueError, RecursionError) as err:
            return f"status.json is not JSON ({first_sentence(err)})"
        if not isinstance(status, dict):
            return f"status.json holds {json_kind(status)}, not an object"
        if status.get("status") not in STATUSES:
            return f"status.json says {status.get('status')!r:.40}, not one of {', '.join(STATUSES)}"
        return None

    def append_metrics(self, records: list[dict]) -> None:
        """Add records to metrics.jsonl, one JSON object per line, all of them or (a full disk) none."""
        append_whole(self.metrics_file, "".join(json.dumps(record) + "\n" for record in records).encode())

    def metric_lines(self) -> Iterator[tuple[int, int, dict | None, str]]:
        """Each line of metrics.jsonl: (line number, offset of its end, the record or None, why not).

        A record is a JSON object with a whole-number ``step``; a ``step`` or ``epoch``
        record also has a whole-number ``epoch`` and a number ``train_loss``. The last line is cut off
        when it has no newline: its writer was killed in the middle of it.
        """
        if not self.metrics_file.is_file():
            return
        end = 0
        with open(self.metrics_file, "rb") as f:
            for number, line in enumerate(f, 1):
                end += len(line)
                if not line.strip():
                    continue
                if not line.endswith(b"\n"):
                    yield number, end, None, "is cut off (its writer was killed)"
                    continue
                try:
                    record = json.loads(line)
                except (ValueError, RecursionError):
                    yield number, end, None, "is not JSON"
                    continue
                if not isinstance(record, dict) or not is_whole(record.get("step")) or (
                        record.get("kind") in ("step", "epoch")
                        and not (is_whole(record.get("epoch")) and is_number(record.get("train_loss")))):
                    yield number, end, None, "is not a metrics record"
                    continue
                yield number, end, record, ""

    def read_metrics(self) -> list[dict]:
        """Every record in metrics.jsonl; a cut-off last line (a killed writer) is left out.

        Raises:
            Damaged: a line before the last is not a record.
        """
        records = []
        for number, _, record, why in self.metric_lines():
            if record is None:
                if why.startswith("is cut off"):
                    continue
                raise Damaged(self.metrics_file, f"line {number} {why}")
            records.append(record)
        return records

    def truncate_metrics(self, step: int, dry_run: bool = False) -> None:
        """Drop records after ``step``: a resume continues from the checkpoint, not from later lines.

        Records are in step order, so this cuts the file where the first later one begins,
        in place; damaged lines after the last kept record go with them (a killed
        writer's last line). ``dry_run``: only check that it can.

        Raises:
            Damaged: a damaged line comes before a record the checkpoint needs.
        """
        if self.metrics_file.is_symlink() or (self.metrics_file.exists() and not self.metrics_file.is_file()):
            raise Damaged(self.metrics_file, "it is a symbolic link or not a regular file, which a resume would "
                          "cut in place", "put the run's own metrics.jsonl there, or start the run again")
        keep, damaged, kept = 0, None, False
        for number, end, record, why in self.metric_lines():
            if record is None:
                damaged = damaged or f"line {number} {why}"
            elif record["step"] <= step:
                if damaged:
                    raise Damaged(self.metrics_file, f"{damaged}, before the checkpoint's step {step}",
                                  "restore the file from a copy, or delete that line to resume without it")
                keep, kept = end, True
        if damaged and not kept and step > 0:  # the checkpoint's records are all gone: this is no run's file
            raise Damaged(self.metrics_file, f"{damaged}, and it holds no record up to the checkpoint's step {step}",
                          "restore the file from a copy, or move it aside to resume without the metrics")
        if not dry_run and self.metrics_file.is_file() and self.metrics_file.stat().st_size > keep:
            os.truncate(self.metrics_file, keep)

    def events_size(self) -> int:
        """How long events.jsonl is now (0: not there), for a checkpoint to say where its events end."""
        try:
            return self.events_file.stat().st_size
        except FileNotFoundError:
            return 0

    def truncate_events(self, size: int | None) -> None:
        """Drop the events written after a checkpoint that said events.jsonl was ``size`` bytes long then.

        A killed run's last steps are trained again by its resume, which draws them again:
        kept, they would be drawn twice when the dashboard is rebuilt from the file. Nothing
        is cut unless ``size`` ends a line of the file (None: a checkpoint older than this).
        """
        if size is None or not self.events_file.is_file() or self.events_file.is_symlink():
            return
        with open(self.events_file, "rb") as f:
            if os.fstat(f.fileno()).st_size <= size:
                return
            if size > 0:
                f.seek(size - 1)
                if f.read(1) != b"\n":
                    return  # not where a line ends: not the file the checkpoint measured
        os.truncate(self.events_file, size)

    def check_written(self) -> None:
        """Check that the files a resume writes besides metrics.jsonl are of the kind it writes.

        Raises:
            Damaged: events.jsonl is a link or no regular file (a folder, a FIFO that would
                block its writer), checkpoints a link or no folder, or status.json a folder
                (a link or a FIFO there is replaced, not written through).
        """
        if self.status_file.is_dir() and not self.status_file.is_symlink():
            raise Damaged(self.status_file, "it is a folder, where a resume writes the run's status",
                          "move it aside to resume")
        for path, folder in ((self.events_file, False), (self.epochs_dir, True)):
            if path.is_symlink() or (path.exists() and not (path.is_dir() if folder else path.is_file())):
                kind = "folder" if folder else "regular file"
                raise Damaged(path, f"it is a symbolic link or not a {kind}, which a resume would write into",
                              "move it aside to resume without it")

    def save_checkpoint(self, state: dict) -> None:
        """Write checkpoint.pt atomically: a crash mid-write, or a full disk, leaves the previous one intact."""
        import torch  # here, not at the top: listing and replaying runs needs no torch

        buffer = io.BytesIO()  # serialised first, so a full disk surfaces as an OSError naming the file
        torch.save(state, buffer)
        self._replace(self.checkpoint_file, buffer.getbuffer())

    def keep_epoch(self, epoch: int, keep: int | None = KEEP_EPOCHS) -> None:
        """Keep checkpoint.pt, just saved at the end of ``epoch``, as checkpoints/epoch-NNNN.pt for forks.

        A hard link (no space taken while checkpoint.pt is the same file), made under a
        temporary name and renamed into place; then all but the newest ``keep`` epochs'
        are deleted (``keep`` None: none are), except the ``pinned`` ones.
        """
        self.epochs_dir.mkdir(exist_ok=True)
        target = self.epoch_checkpoint(epoch)
        with atomic_path(target) as partial:
            partial.unlink()  # its unique name, for the link
            try:
                os.link(self.checkpoint_file, partial)
            except OSError as err:
                if no_space(err):
                    raise
                partial.write_bytes(self.checkpoint_file.read_bytes())  # a file system without hard links
        if keep is not None:
            for old in self.kept_epochs()[:-keep]:
                if old not in self.pinned:
                    self.epoch_checkpoint(old).unlink(missing_ok=True)

    def epoch_checkpoint(self, epoch: int) -> Path:
        """Where the checkpoint of the end of ``epoch`` is kept."""
        return self.epochs_dir / f"epoch-{epoch:04d}.pt"

    def kept_epochs(self) -> list[int]:
        """The epochs whose checkpoints are kept, in order: the files named as ``epoch_checkpoint`` names them."""
        found = []
        for file in self.epochs_dir.glob("epoch-*.pt") if self.epochs_dir.is_dir() else ():
            number = file.stem.removeprefix("epoch-")
            # int() also reads other scripts' digits; epoch-2.pt is not where epoch 2 is looked for
            if number.isascii() and number.isdigit() and file == self.epoch_checkpoint(int(number)):
                found.append(int(number))
        return sorted(found)

    def load_checkpoint(self, device="cpu", file: Path | None = None) -> dict:
        """The state saved by ``save_checkpoint`` (or kept by ``keep_epoch``: ``file``), its tensors on ``device``.

        Raises:
            OSError: there is no checkpoint.pt (FileNotFoundError) or it cannot be opened.
            Damaged: it is empty, truncated, or not a trainviz checkpoint.
        """
        import torch

        file = file or self.checkpoint_file
        again = "restore it from a copy of the run folder, or train the run again"
        if file.is_symlink() and not file.exists():  # a link to nothing, or to itself
            raise Damaged(file, "it is a symbolic link to no file", again)
        if file.exists() and not file.is_file():  # a FIFO or a device would never end, a folder holds no state
            raise Damaged(file, "it is not a regular file", again)
        try:
            state = torch.load(file, map_location=device, weights_only=True)
        except FileNotFoundError:
            raise
        except OSError as err:
            raise Damaged(file, f"it cannot be read ({err.strerror})", again) from None
        except Exception as err:  # a damaged file surfaces as one of many pickle, zip, EOF and OS errors
            why = "the file is empty" if file.stat().st_size == 0 else first_sentence(err)
            raise Damaged(file, f"it cannot be read ({why})", again) from None
        if not isinstance(state, dict) or not CHECKPOINT_KEYS <= state.keys():
            raise Damaged(file, "it does not hold a trainviz checkpoint",
                          "restore it from a copy of the run folder, or train the run again")
        problem = settings_problem(state["config"], config_of(state["config"]))
        if problem:
            raise Damaged(file, f"its settings: {problem}",
                          "restore it from a copy of the run folder, or train the run again")
        return state

    def checkpoint_problem(self) -> str | None:
        """Why checkpoint.pt is not a whole file (looked at without torch); None when it is, or is absent."""
        if not self.checkpoint_file.exists():
            return None
        if not self.checkpoint_file.is_file():  # a FIFO would block the reader, a device never end
            return "checkpoint.pt is not a regular file"
        try:
            whole = zipfile.is_zipfile(self.checkpoint_file)  # torch.save writes a zip archive
        except OSError as err:
            return f"checkpoint.pt cannot be read ({err.strerror})"
        return None if whole else "checkpoint.pt is not a whole checkpoint (empty or cut short)"

    def partial_checkpoints(self) -> list[Path]:
        """What a process killed while saving a checkpoint leaves beside it."""
        return sorted(self.path.glob(f".{self.checkpoint_file.name}.*.partial"))

    @staticmethod
    def _replace(target: Path, data: bytes) -> None:
        """Write ``target`` whole under a temporary name and rename it into place."""
        try:
            with atomic_path(target) as partial, open(partial, "wb") as f:
                f.write(data)
        except OSError as err:
            raise OSError(err.errno, err.strerror, str(target)) from None

    @staticmethod
    def _overwrite(target: Path, data: bytes) -> bool:
        """Rewrite ``target`` in place, if it is exactly as long as ``data``: no new blocks needed."""
        try:
            with open(os.open(target, os.O_RDWR | os.O_NOFOLLOW), "r+b") as f:  # never a link's target
                if os.fstat(f.fileno()).st_size != len(data):
                    return False
                os.pwrite(f.fileno(), data, 0)
            return True
        except OSError:
            return False

