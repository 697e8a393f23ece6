"""Sweeps across machines: separate sweep processes sharing one study in a real PostgreSQL.

Each test's "machines" are separate ``trainviz sweep`` processes with their own --out
folders. The cluster is a throwaway one, made in a temporary folder on a free port and
removed afterwards; without PostgreSQL installed the tests skip, or fail under
TRAINVIZ_REQUIRE_FULL (CI).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.conftest import free_port, missing

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def as_postgres(command: list[str]) -> list[str]:
    """``initdb`` and the server refuse to run as root: run them as the postgres user then."""
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


class Cluster:
    """A throwaway PostgreSQL cluster in a temporary folder on a free port, with a password-protected user."""

    def __init__(self):
        found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
        if not found:
            missing("PostgreSQL is not installed (apt-get install postgresql)")
        try:
            import psycopg  # noqa: F401
        except ImportError:
            missing("psycopg is not installed (pip install 'psycopg[binary]')")
        self.bin = found[-1].parent
        # Outside pytest's own temporary folders, which the postgres user may not enter.
        self.root = Path(tempfile.mkdtemp(prefix="trainviz-pg-"))
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres")
        self.port, password = free_port(), secrets.token_hex(8)
        self.data = self.root / "data"
        subprocess.run(as_postgres([str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres"]),
                       check=True, capture_output=True)
        self.start()
        psql = [str(self.bin / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-q"]
        subprocess.run([*psql, "-c", f"CREATE USER sweeper PASSWORD '{password}'"], check=True, capture_output=True)
        subprocess.run([*psql, "-c", "CREATE DATABASE sweeps OWNER sweeper"], check=True, capture_output=True)
        self.url = f"postgresql://sweeper:{password}@127.0.0.1:{self.port}/sweeps"

    def start(self) -> None:
        subprocess.run(as_postgres([str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.root / "log"), "-w",
                                    "-o", f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1", "start"]),
                       check=True, capture_output=True)

    def stop(self) -> None:
        """Stop the server at once (pg_ctl signals the pid in its data folder's postmaster.pid)."""
        subprocess.run(as_postgres([str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"]),
                       capture_output=True)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="module")
def database():
    """The URL of an empty database in a throwaway cluster shared by the module's tests."""
    cluster = Cluster()
    try:
        yield cluster.url
    finally:
        cluster.remove()


def sweep(idx: Path, out: Path, url: str, study: str, *args: str, log: Path) -> subprocess.Popen:
    """A ``trainviz sweep mlp`` process, as one machine would start it, in its own process group."""
    command = [sys.executable, "-m", "trainers", "sweep", "mlp", "--data-dir", str(idx), "--out", str(out),
               "--val-size", "100", "--batch-size", "32", "--no-viz", "--storage", url, "--study", study,
               "--heartbeat", "1", *args]
    with open(log, "w") as f:
        return subprocess.Popen(command, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=f,
                                stderr=subprocess.STDOUT, start_new_session=True)


def finish(procs: list[subprocess.Popen], timeout: float = 240) -> None:
    try:
        for proc in procs:
            proc.wait(timeout=timeout)
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def trials(url: str, study: str):
    import optuna

    return optuna.load_study(study_name=study, storage=url).get_trials()


def test_two_machines_share_a_grid_and_run_every_point_once(database, idx_dir, tmp_path):
    grid = ["--param", "lr=0.05|0.1|0.2", "--param", "hidden=16|32", "--epochs", "2"]
    procs = [sweep(idx_dir, tmp_path / f"machine-{m}", database, "grid6", *grid, log=tmp_path / f"{m}.log")
             for m in "ab"]
    finish(procs)
    logs = {m: (tmp_path / f"{m}.log").read_text() for m in "ab"}
    assert [p.returncode for p in procs] == [0, 0], logs
    done = trials(database, "grid6")
    assert [t.state.name for t in done] == ["COMPLETE"] * 6
    assert sorted((t.params["lr"], t.params["hidden"]) for t in done) == sorted(
        (lr, h) for lr in ("0.05", "0.1", "0.2") for h in ("16", "32"))
    folders = sorted(p.parent.name for p in tmp_path.glob("machine-*/grid6/trial-*/config.json"))
    assert folders == [f"trial-{n:03d}" for n in range(6)]  # each trial in one machine's folder
    secret = database.split(":")[2].split("@")[0]
    for text in [*logs.values(), *(p.read_text() for p in tmp_path.glob("machine-*/**/*.json*"))]:
        assert secret not in text


def test_a_tpe_study_of_8_trials_over_two_machines_ends_with_8(database, idx_dir, tmp_path):
    search = ["--param", "lr=0.01..0.5:log", "--param", "momentum=0..0.9", "--trials", "8", "--epochs", "2"]
    procs = [sweep(idx_dir, tmp_path / f"machine-{m}", database, "tpe8", *search, log=tmp_path / f"{m}.log")
             for m in "ab"]
    finish(procs)
    assert [p.returncode for p in procs] == [0, 0], [(tmp_path / f"{m}.log").read_text() for m in "ab"]
    states = [t.state.name for t in trials(database, "tpe8")]
    assert len(states) == 8 and set(states) <= {"COMPLETE", "PRUNED"}, states


def test_a_machine_killed_mid_trial_leaves_the_study_to_the_other(database, tmp_path):
    from tests.conftest import write_idx_dir

    idx = write_idx_dir(tmp_path / "idx", n_train=8300)  # about 1,000 steps an epoch: the kill lands mid-trial
    grid = ["--param", "lr=0.02|0.05|0.1|0.2", "--epochs", "3", "--batch-size", "8"]
    doomed = sweep(idx, tmp_path / "machine-a", database, "kill4", *grid, log=tmp_path / "a.log")
    try:
        deadline = time.monotonic() + 120
        while not any('"kind": "epoch"' in m.read_text() for m in tmp_path.glob("machine-a/kill4/*/metrics.jsonl")):
            assert doomed.poll() is None and time.monotonic() < deadline, (tmp_path / "a.log").read_text()
            time.sleep(0.02)
    finally:
        os.killpg(doomed.pid, signal.SIGKILL)  # the machine dies: its sweep and workers at once
        doomed.wait()
    assert [t.state.name for t in trials(database, "kill4")] == ["RUNNING", "WAITING", "WAITING", "WAITING"]

    # The other machine finds the dead trial's heartbeat stale (3 s with --heartbeat 1), fails it and runs it again.
    survivor = sweep(idx, tmp_path / "machine-b", database, "kill4", *grid, log=tmp_path / "b.log")
    finish([survivor])
    assert survivor.returncode == 0, (tmp_path / "b.log").read_text()
    done = trials(database, "kill4")
    assert sorted(t.params["lr"] for t in done if t.state.name == "COMPLETE") == ["0.02", "0.05", "0.1", "0.2"]
    assert [t.state.name for t in done].count("FAIL") == 1
    (killed,) = [p.parent for p in tmp_path.glob("machine-a/kill4/trial-*/status.json")]
    assert '"failed"' in (killed / "status.json").read_text()


def test_a_storage_lost_mid_sweep_stops_it_with_one_line_and_the_same_command_continues(tmp_path):
    from tests.conftest import write_idx_dir

    cluster = Cluster()  # its own: this test stops the server
    try:
        idx = write_idx_dir(tmp_path / "idx", n_train=8300)
        grid = ["--param", "lr=0.05|0.1|0.2", "--epochs", "2", "--batch-size", "8"]
        first = sweep(idx, tmp_path / "out", cluster.url, "lost", *grid, log=tmp_path / "first.log")
        try:
            deadline = time.monotonic() + 120
            while not any('"kind": "epoch"' in m.read_text() for m in tmp_path.glob("out/lost/*/metrics.jsonl")):
                assert first.poll() is None and time.monotonic() < deadline, (tmp_path / "first.log").read_text()
                time.sleep(0.02)
            cluster.stop()
            finish([first])
        finally:
            if first.poll() is None:
                os.killpg(first.pid, signal.SIGKILL)
                first.wait()
        log = (tmp_path / "first.log").read_text()
        assert first.returncode == 1 and "Traceback" not in log, log
        assert "lost the storage" in log and "run the same command to continue" in log, log
        assert cluster.url.split(":")[2].split("@")[0] not in log
        (interrupted,) = [json.loads(p.read_text())["status"] for p in tmp_path.glob("out/lost/trial-*/status.json")]
        assert interrupted == "failed"

        cluster.start()
        again = sweep(idx, tmp_path / "out", cluster.url, "lost", *grid, log=tmp_path / "again.log")
        finish([again])
        assert again.returncode == 0, (tmp_path / "again.log").read_text()
        done = trials(cluster.url, "lost")
        assert sorted(t.params["lr"] for t in done if t.state.name == "COMPLETE") == ["0.05", "0.1", "0.2"]
    finally:
        cluster.remove()
