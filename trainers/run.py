"""A run's folder: its config, its metrics as they happen, and its checkpoint."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

from viz.paths import atomic_path


# What status.json can say. A run writes "running" when it starts and one of the others
# when it ends; a run killed outright leaves "running", with the pid and host that ran it.
STATUSES = ("running", "finished", "stopped", "diverged", "pruned", "failed")


def process_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this machine."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, and belongs to another user
        return True
    return True


class Pruned(Exception):
    """A sweep's pruner ended the run after an epoch (raised by ``RunHooks.epoch``)."""


class RunHooks:
    """What a caller of ``trainers.command.train`` hears of its run; these do nothing.

    A sweep's trials subclass it to record the run folder and report each epoch.
    """

    def started(self, run: RunDir) -> None:
        """The run folder exists and holds its config (a resumed run: its metrics so far)."""

    def epoch(self, record: dict) -> None:
        """An epoch's record is saved; raising ``Pruned`` ends the run with status pruned."""


class RunDir:
    """``<out>/<trainer>-<YYYYmmdd-HHMMSS>``: config.json, status.json, metrics.jsonl, checkpoint.pt."""

    def __init__(self, path: Path):
        self.path = path
        self.config_file = path / "config.json"
        self.metrics_file = path / "metrics.jsonl"
        self.checkpoint_file = path / "checkpoint.pt"
        self.events_file = path / "events.jsonl"
        self.status_file = path / "status.json"

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

    def write_config(self, settings: dict) -> None:
        """Save every setting of the run."""
        self.config_file.write_text(json.dumps(settings, indent=2) + "\n")

    def read_config(self) -> dict:
        """The settings saved by ``write_config``."""
        return json.loads(self.config_file.read_text())

    def write_status(self, status: str, **details) -> None:
        """Say how the run stands (one of ``STATUSES``), atomically, keeping when it started.

        "running" also records this process's pid and host, so a reader can tell a run in
        progress from one that was killed.
        """
        now = time.time()
        previous = self.read_status()
        record = {"status": status, "started": previous.get("started", now), "updated": now}
        if status == "running":
            record |= {"pid": os.getpid(), "host": socket.gethostname()}
        with atomic_path(self.status_file) as partial:
            partial.write_text(json.dumps(record | details) + "\n")

    def read_status(self) -> dict:
        """What ``write_status`` last wrote; {} for a run without one (or one being replaced)."""
        try:
            return json.loads(self.status_file.read_text())
        except (OSError, ValueError):
            return {}

    def append_metrics(self, records: list[dict]) -> None:
        """Add records to metrics.jsonl, one JSON object per line."""
        with open(self.metrics_file, "a") as f:
            f.writelines(json.dumps(record) + "\n" for record in records)

    def read_metrics(self) -> list[dict]:
        """Every record in metrics.jsonl."""
        if not self.metrics_file.exists():
            return []
        return [json.loads(line) for line in self.metrics_file.read_text().splitlines() if line.strip()]

    def truncate_metrics(self, step: int) -> None:
        """Drop records after ``step``: a resume continues from the checkpoint, not from later lines."""
        kept = [r for r in self.read_metrics() if r["step"] <= step]
        with atomic_path(self.metrics_file) as partial:
            partial.write_text("".join(json.dumps(r) + "\n" for r in kept))

    def save_checkpoint(self, state: dict) -> None:
        """Write checkpoint.pt atomically: a crash mid-write leaves the previous one intact."""
        import torch  # here, not at the top: listing and replaying runs needs no torch

        with atomic_path(self.checkpoint_file) as partial:
            torch.save(state, partial)

    def load_checkpoint(self, device="cpu") -> dict:
        """The state saved by ``save_checkpoint``, its tensors on ``device``."""
        import torch

        return torch.load(self.checkpoint_file, map_location=device, weights_only=True)
