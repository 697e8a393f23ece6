"""launch.sh's choice of interpreter: TRAINVIZ_PYTHON, python_requires, an existing venv of another Python."""

from __future__ import annotations

import configparser
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def python_requires() -> str:
    """setup.cfg's minimum Python, e.g. '3.11'."""
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    return config["options"]["python_requires"].removeprefix(">=")


def fake_python(folder: Path, version: str) -> Path:
    """An executable that answers launch.sh's version question like a Python of ``version``."""
    folder.mkdir(parents=True, exist_ok=True)
    python = folder / "python3"
    python.write_text(f"#!/bin/sh\necho {version}\n")
    python.chmod(0o755)
    return python


def launch(tmp_path: Path, python: str | None, venv: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "TRAINVIZ_VENV": str(venv)}
    if python is not None:
        env["TRAINVIZ_PYTHON"] = python
    return subprocess.run([str(ROOT / "launch.sh"), "setup"], env=env, capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("version", ["3.9", "3.10"])
def test_an_interpreter_below_python_requires_gets_one_line_and_exit_2(tmp_path, version):
    python = fake_python(tmp_path / "bin", version)

    result = launch(tmp_path, str(python), tmp_path / "venv")

    assert result.returncode == 2
    assert result.stderr == (f"[launch] error: {python} is Python {version}; trainviz needs Python >= "
                             f"{python_requires()} (set TRAINVIZ_PYTHON to one)\n")
    assert not (tmp_path / "venv").exists()


def test_a_missing_interpreter_is_named(tmp_path):
    result = launch(tmp_path, str(tmp_path / "no-such-python"), tmp_path / "venv")

    assert result.returncode == 2
    assert result.stderr == (f"[launch] error: no Python at '{tmp_path / 'no-such-python'}'; trainviz needs "
                             f"Python >= {python_requires()} (set TRAINVIZ_PYTHON to one)\n")


def test_a_venv_of_another_python_is_not_reused_when_one_is_asked_for(tmp_path):
    venv = tmp_path / "venv"
    fake_python(venv / "bin", "3.12")
    (venv / "bin" / "python3").rename(venv / "bin" / "python")
    this = f"{sys.version_info.major}.{sys.version_info.minor}"
    if this == "3.12":
        fake_python(venv / "bin", "3.13").rename(venv / "bin" / "python")

    result = launch(tmp_path, sys.executable, venv)

    held = "3.13" if this == "3.12" else "3.12"
    assert result.returncode == 2
    assert result.stderr == (f"[launch] error: {venv} holds Python {held}, not {this}; remove it or set "
                             "TRAINVIZ_VENV to another folder\n")


# --- the package as pip installs it -------------------------------------------------------


@pytest.mark.slow
def test_the_built_wheel_runs_from_another_folder_without_the_clone(tmp_path, idx_dir):
    """`pip install .` (not editable): server start and a run work with nothing of the clone on the path."""
    from tests.conftest import free_port

    wheels = tmp_path / "wheels"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(wheels), str(ROOT)], capture_output=True, text=True, timeout=300,
                           env={**os.environ, "PIP_CONFIG_FILE": os.devnull})
    assert build.returncode == 0, build.stderr
    (wheel,) = wheels.glob("trainviz-*.whl")
    installed = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(installed)
    assert not (installed / "tests").exists()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(installed), "TRAINVIZ_CACHE": str(tmp_path / "cache"),
           "HOME": str(tmp_path / "home"), "OMP_NUM_THREADS": "1"}

    def trainviz(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "trainers", *args], cwd=elsewhere, env=env,
                              capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)

    where = subprocess.run([sys.executable, "-c", "import trainers, viz; print(trainers.__file__, viz.__file__)"],
                           cwd=elsewhere, env=env, capture_output=True, text=True, timeout=60)
    assert where.stdout.split() == [str(installed / "trainers" / "__init__.py"), str(installed / "viz" / "__init__.py")]
    port = str(free_port())
    started = trainviz("server", "start", "--port", port)
    try:
        assert started.returncode == 0, started.stderr
        run = trainviz("mlp", "--epochs", "1", "--data-dir", str(idx_dir), "--port", port, "--out", "runs")
        assert run.returncode == 0, run.stderr
        assert "warning" not in run.stderr, run.stderr
        assert "test accuracy" in run.stdout
    finally:
        stopped = trainviz("server", "stop", "--port", port)
    assert stopped.stdout == f"visdom server on port {port} stopped\n", stopped.stderr
    assert [path.parent.name for path in (elsewhere / "runs").glob("*/checkpoint.pt")] != []
