"""Processes started at the same moment: shared data cache, server files, run folders.

Users start several trainers (``launch.sh -j 4``), two ``launch.sh`` in two terminals,
and sweep workers at once. Every test here starts real processes together and checks
that each one succeeds and that what they share is whole.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.conftest import free_port, write_idx_dir
from trainers.core.run import RunDir
from viz.server import frontend
from viz.server import manager as server

ROOT = Path(__file__).resolve().parent.parent
PROCESSES = 4
ROUNDS = 3

# Loads a dataset the way a trainer does and prints a checksum of what it read. With
# a SYSTEM folder it stands in for Debian's package folder (no --data-dir: the cache,
# then the system folder staged into the cache).
LOAD_SCRIPT = """
import dataclasses, sys
from pathlib import Path
import torch
from trainers.core import data
folder, mode = Path(sys.argv[1]), sys.argv[2]
if mode == "system":
    data.DATASETS["fashion-mnist"] = dataclasses.replace(data.DATASETS["fashion-mnist"], system_dir=folder)
loaded = data.load("fashion-mnist", folder if mode == "data-dir" else None, torch.device("cpu"))
print(len(loaded.train), int(loaded.train.pixels.sum()), int(loaded.test.labels.sum()))
"""


def start_together(commands: list[list[str]], env: dict) -> list[subprocess.CompletedProcess]:
    """Start every command at once, wait for all, return what each did."""
    procs = [subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for command in commands]
    results = []
    try:
        for proc, command in zip(procs, commands):
            stdout, stderr = proc.communicate(timeout=180)
            results.append(subprocess.CompletedProcess(command, proc.returncode, stdout, stderr))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return results


@pytest.mark.parametrize("mode", ["system", "data-dir"])
def test_loaders_started_together_on_an_empty_cache_all_read_the_same_data(mode, tmp_path):
    source = write_idx_dir(tmp_path / "source")  # gzipped loose files: both paths unpack them
    for round_ in range(ROUNDS):
        cache = tmp_path / f"cache-{round_}"
        env = {**os.environ, "TRAINVIZ_CACHE": str(cache), "PYTHONPATH": str(ROOT)}
        results = start_together([[sys.executable, "-c", LOAD_SCRIPT, str(source), mode]] * PROCESSES, env)
        for result in results:
            assert result.returncode == 0, f"round {round_}: {result.stderr}"
        assert len({result.stdout for result in results}) == 1, [r.stdout for r in results]
        assert results[0].stdout.split()[0] == "600"
        assert not list(cache.rglob("*.partial")), "a temporary file was left behind"
        # Every split was decoded once into the cache, which later runs read without torchvision.
        assert len(list((cache / "data" / "decoded").glob("*.pt"))) == 2


def test_trainers_started_together_on_an_empty_cache_all_finish(tmp_path):
    source = write_idx_dir(tmp_path / "source")
    env = {**os.environ, "TRAINVIZ_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(ROOT),
           "OMP_NUM_THREADS": "1"}
    commands = [[sys.executable, "-m", "trainers", "scratch-softmax", "--data-dir", str(source), "--epochs", "1",
                 "--no-viz", "--out", str(tmp_path / "runs")]] * PROCESSES
    results = start_together(commands, env)
    for result in results:
        assert result.returncode == 0, result.stderr
    runs = sorted((tmp_path / "runs").iterdir())
    assert len(runs) == PROCESSES  # one folder each, even when started in the same second
    metrics = {(run / "metrics.jsonl").read_text().split('"seconds"')[0] for run in runs}
    assert len(metrics) == 1, "the same seed on the same data must give the same first epoch"


def test_run_folders_created_together_are_distinct(tmp_path):
    made: list[Path] = []
    barrier = threading.Barrier(8)

    def create() -> None:
        barrier.wait()
        made.append(RunDir.create(tmp_path, "mlp").path)

    threads = [threading.Thread(target=create) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(made)) == 8 and all(path.is_dir() for path in made)


@pytest.mark.slow
def test_two_server_starts_at_once_start_one_server(tmp_path):
    """Two `launch.sh` in two terminals: one server, the other command reuses it; pid and log intact."""
    if not frontend.is_ready():
        pytest.skip("visdom front-end files not installed")
    port = free_port()
    env = {**os.environ, "TRAINVIZ_CACHE": str(tmp_path / "cache"), "HOME": str(tmp_path),
           "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "trainers", "server", "start", "--port", str(port)]
    try:
        results = start_together([command, command], env)
        for result in results:
            assert result.returncode == 0, result.stderr
        outputs = sorted(result.stdout for result in results)
        assert "(reused)" in outputs[0] and "(pid " in outputs[1], outputs
        pid = int((tmp_path / "cache" / "server" / f"visdom-{port}.pid").read_text())
        assert f"(pid {pid}," in outputs[1]
        log = (tmp_path / "cache" / "server" / f"visdom-{port}.log").read_text()
        assert "Address already in use" not in log, log
    finally:
        stop = subprocess.run([sys.executable, "-m", "trainers", "server", "stop", "--port", str(port)],
                              env=env, cwd=ROOT, capture_output=True, text=True)
    assert stop.returncode == 0 and "stopped" in stop.stdout, stop
    assert server.probe(port) is None

