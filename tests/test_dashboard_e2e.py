"""End to end: real trainers stream to real visdom servers, checked in a real browser.

One server, shared by the module, receives a short ``mlp`` run; headless Chromium then
opens its environment and, after ``trainviz compare``, the compare environment, and checks
that every window drew its content; a small sweep's environment is checked the same way. A second test kills a server in the middle of a run, brings it back empty,
and checks the trainer rebuilt the whole environment; then ``trainviz replay`` rebuilds it
on another server, from an intact and from a damaged events.jsonl.

Needs visdom's front-end files, Playwright and /usr/bin/chromium; each missing piece skips
its tests, or fails them when TRAINVIZ_REQUIRE_FULL is set (CI).
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import RAW, free_port, idx_bytes, missing, synthetic_split, write_idx_dir

from trainers.catalog import DATASETS
from trainers.cli import cli
from viz.dashboard.render import TRACE_CAP
from viz.dashboard.windows import COMPARE_ENV, WINDOWS, title
from viz.server import frontend
from viz.server import manager as server

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
HOST = "http://127.0.0.1"
# The learning-rate pane appears only for a rate that changes (--schedule cosine or step, or a
# change from the control pane); the control pane is closed when its run ends.
RUN_WINDOWS = {key for key in WINDOWS if not key.startswith(("compare_", "sweep_")) and key not in ("lr", "controls")}
COMPARE_WINDOWS = {key for key in WINDOWS if key.startswith("compare_")}
SWEEP_WINDOWS = {key for key in WINDOWS if key.startswith("sweep_")}
CLASSES = DATASETS["fashion-mnist"].classes
LINE_WINDOWS = ("train_loss", "loss", "accuracy")
# Where each window of a run (with a learning-rate window) sits on a 1600-px-wide page, in
# pixels from the first one: the page's reading order. visdom 0.2.4 and 0.3.0 both pack
# windows in creation order with the same shelf packer, so both must draw exactly this.
# visdom 0.3.0's page may pack them before it has measured its own width, into a narrow
# column, and keeps that; its Repack button then lays them out as 0.2.4 does at load.
RUN_LAYOUT = {
    "train_loss": (0, 0), "loss": (510, 0), "accuracy": (1020, 0),
    "samples": (0, 345), "predictions": (770, 345),
    "mistakes": (0, 930), "confusion": (770, 930),
    "class_acc": (0, 1110), "weights": (0, 1380), "templates": (770, 1455),
    "throughput": (0, 1680), "weight_norm": (770, 2040), "grad_norm": (1155, 2040),
    "lr": (510, 2325), "config": (0, 2685),
}
NOISY_LABELS = 0.1  # share of test labels changed, so the model always makes some mistakes


class VisdomServer:
    """A real visdom server on a free port; its pid file and log live under ``root``."""

    def __init__(self, root: Path):
        self.root, self.port, self.pid = root, free_port(), None
        (root / "home").mkdir(parents=True, exist_ok=True)

    def _env(self) -> pytest.MonkeyPatch:
        """Point trainviz's cache and HOME at ``root`` while the server is started or stopped."""
        patch = pytest.MonkeyPatch()
        patch.setenv("TRAINVIZ_CACHE", str(self.root / "cache"))
        patch.setenv("HOME", str(self.root / "home"))
        return patch

    def start(self, env_dir: str) -> None:
        """Start the server with an empty (or existing) ``root/env_dir`` to save environments in."""
        patch = self._env()
        try:
            info = server.start(port=self.port, env_path=self.root / env_dir, echo=lambda line: None)
        finally:
            patch.undo()
        assert not info.reused, f"something else already served visdom on port {self.port}"
        self.pid = info.pid

    def stop(self) -> None:
        """Stop it by pid (SIGTERM, then SIGKILL) and wait until the port is free."""
        patch = self._env()
        try:
            server.stop(self.port)
        finally:
            patch.undo()
        if self.pid is not None and Path(f"/proc/{self.pid}").exists():
            try:
                os.kill(self.pid, signal.SIGKILL)  # only our own server's pid
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 10
        while server.probe(self.port, timeout=0.5) is not None and time.monotonic() < deadline:
            time.sleep(0.1)
        self.pid = None


def start_server(root: Path, env_dir: str = "envs") -> VisdomServer:
    """A started server, or a skip when visdom's front-end files are not installed."""
    if not frontend.is_ready():
        missing("visdom front-end files not installed: python -c 'from viz.server import frontend; frontend.install()'")
    running = VisdomServer(root)
    running.start(env_dir)
    return running


@pytest.fixture(scope="module")
def visdom_port(tmp_path_factory):
    """The port of a real visdom server shared by the module, stopped by pid afterwards."""
    root = tmp_path_factory.mktemp("visdom")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TRAINVIZ_CACHE", str(root / "cache"))
        patch.setenv("HOME", str(root / "home"))
        running = start_server(root)  # creates root/home
        try:
            yield running.port
        finally:
            running.stop()


def noisy_idx_dir(folder: Path, n_train: int = 600, n_test: int = 200) -> Path:
    """The synthetic IDX task with a tenth of the test labels shifted by one class.

    The clean task is learnt perfectly within an epoch, and a run without mistakes
    never draws the "mistakes" window.
    """
    write_idx_dir(folder, n_train=n_train, n_test=n_test)
    _, labels = synthetic_split(n_test, 2)
    flip = np.random.default_rng(3).random(n_test) < NOISY_LABELS
    labels = np.where(flip, (labels + 1) % 10, labels).astype(np.uint8)
    name = next(name for name, (part, train) in RAW.items() if part == "labels" and not train)
    with gzip.open(folder / f"{name}.gz", "wb") as f:
        f.write(idx_bytes(labels))
    return folder


def only_run(out: Path) -> Path:
    """The single run folder a command made in ``out``."""
    runs = [path for path in out.iterdir() if path.is_dir()]
    assert len(runs) == 1, f"expected one run folder in {out}, found {runs}"
    return runs[0]


# --- the dashboard in a browser ---------------------------------------------------------

# One record per window: its title bar text and what its content drew.
WINDOW_INFO_JS = """() => Array.from(document.querySelectorAll('.window')).map(w => ({
    title: (w.querySelector('.bar > div.pull-right') || {}).textContent || '',
    plot: w.querySelector('.js-plotly-plot') !== null,
    lines: Array.from(w.querySelectorAll('.scatterlayer .trace .js-line'))
        .filter(p => (p.getAttribute('d') || '').length > 1).length,
    legend: Array.from(w.querySelectorAll('.legendtext')).map(t => t.textContent),
    bars: w.querySelectorAll('.barlayer .point').length,
    heatmap: w.querySelectorAll('g.heatmaplayer .hm image, g.heatmaplayer image').length,
    images: Array.from(w.querySelectorAll('img')).map(i => i.complete ? i.naturalWidth : 0),
    yticks: Array.from(w.querySelectorAll('.ytick text'))
        .map(t => [t.textContent, t.getBoundingClientRect().top]),
    text: (w.querySelector('.content') || {}).innerText || '',
}))"""


LAYOUT_JS = """() => Array.from(document.querySelectorAll('.window')).map(w => {
    const r = w.getBoundingClientRect();
    return {title: (w.querySelector('.bar > div.pull-right') || {}).textContent || '',
            left: r.left, right: r.right, top: r.top, bottom: r.bottom};
})"""


def settled_layout(page, timeout: float = 10) -> list[dict]:
    """The windows' boxes once visdom has stopped moving them into place."""
    deadline = time.monotonic() + timeout
    boxes = page.evaluate(LAYOUT_JS)
    while time.monotonic() < deadline:
        page.wait_for_timeout(300)
        again = page.evaluate(LAYOUT_JS)
        if again == boxes:
            return boxes
        boxes = again
    pytest.fail(f"the window layout kept moving for {timeout} s")


def open_env(page, port: int, env: str, windows: int, screenshot: Path) -> dict[str, dict]:
    """Load an environment, wait until ``windows`` windows drew, save a screenshot, describe them by title."""
    page.goto(f"http://127.0.0.1:{port}/env/{env}")
    page.wait_for_selector(".window", timeout=20_000)
    # Windows arrive over the socket one by one; plots and images render after that.
    page.wait_for_function(
        """n => {
            const ws = document.querySelectorAll('.window');
            return ws.length >= n
                && Array.from(document.querySelectorAll('.window img')).every(i => i.complete)
                && Array.from(document.querySelectorAll('.js-plotly-plot')).every(p => p.querySelector('svg'));
        }""", arg=windows, timeout=20_000)
    if frontend.visdom_version() != "0.2.4":
        page.click("button:has(span.glyphicon-th)")  # Repack (0.2.4 packs at load, at the page's width)
    boxes = settled_layout(page)
    screenshot.parent.mkdir(exist_ok=True)
    page.screenshot(path=str(screenshot), full_page=True)
    overlaps = [(a["title"], b["title"]) for i, a in enumerate(boxes) for b in boxes[i + 1:]
                if a["left"] < b["right"] - 1 and b["left"] < a["right"] - 1
                and a["top"] < b["bottom"] - 1 and b["top"] < a["bottom"] - 1]
    assert not overlaps, f"windows of {env} drawn over each other: {overlaps}"
    shown = page.evaluate(WINDOW_INFO_JS)
    titles = [window["title"] for window in shown]
    assert len(titles) == len(set(titles)), f"duplicate windows in {env}: {sorted(titles)}"
    left, top = min(box["left"] for box in boxes), min(box["top"] for box in boxes)
    for window, box in zip(shown, boxes):  # both walk the page's .window elements in order
        window["at"] = (round(box["left"] - left), round(box["top"] - top))
    return {window["title"]: window for window in shown}


@pytest.fixture
def browser():
    """Headless system Chromium through Playwright."""
    try:
        from playwright.sync_api import Error, sync_playwright
    except ImportError:
        missing("playwright is not installed (pip install playwright)")
    if not Path(CHROMIUM).is_file():
        missing(f"no browser at {CHROMIUM} (apt-get install chromium)")
    with sync_playwright() as playwright:
        try:
            launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        except Error as err:
            missing(f"{CHROMIUM} did not start under Playwright: {str(err).splitlines()[0]}")
        try:
            yield launched
        finally:
            launched.close()


def test_browser_shows_every_window(visdom_port, browser, tmp_path):
    idx, out = noisy_idx_dir(tmp_path / "idx"), tmp_path / "runs"
    result = CliRunner().invoke(cli, ["mlp", "--data-dir", str(idx), "--out", str(out), "--epochs", "2",
                                      "--batch-size", "32", "--schedule", "cosine", "--val-size", "100",
                                      "--port", str(visdom_port), "--server", HOST])
    assert result.exit_code == 0, result.output
    assert "warning" not in result.output, result.output
    run = only_run(out)
    env = json.loads((run / "config.json").read_text())["env"]
    assert env == run.name

    page = browser.new_page(viewport={"width": 1600, "height": 1000})
    expected = RUN_WINDOWS | {"lr"}
    windows = open_env(page, visdom_port, env, len(expected), ARTIFACTS / "dashboard.png")

    by_key = {key: windows.get(title(key)) for key in expected}
    assert sorted(windows) == sorted(title(key) for key in expected), \
        f"missing: {sorted(k for k, w in by_key.items() if w is None)}"
    at = {key: window["at"] for key, window in by_key.items()}
    assert all(abs(at[key][0] - x) <= 2 and abs(at[key][1] - y) <= 2 for key, (x, y) in RUN_LAYOUT.items()), \
        f"the windows are not where the page's reading order puts them: {at}"
    for key, window in by_key.items():
        if window["plot"]:
            assert window["lines"] or window["bars"] or window["heatmap"], f"{key}: the plot drew nothing"
        else:
            assert any(window["images"]) or window["text"].strip(), f"{key}: the window is empty"
    traces = {"train_loss": ["loss", "smoothed", "epoch mean"], "loss": ["train", "val", "test"],
              "accuracy": ["train", "val", "test"]}
    for key in LINE_WINDOWS:
        # Epoch means are drawn as dots, every other trace as a line.
        assert by_key[key]["lines"] == len([t for t in traces[key] if t != "epoch mean"]), f"{key}: {by_key[key]}"
        assert by_key[key]["legend"] == traces[key], key
    for key in ("samples", "mistakes", "templates"):
        assert by_key[key]["images"] and all(by_key[key]["images"]), f"{key}: images not loaded"
    # The confusion matrix reads like a table: the first class's row on top.
    rows = [name for name, _ in sorted(by_key["confusion"]["yticks"], key=lambda tick: tick[1])]
    assert rows == list(CLASSES), rows
    assert any(name in by_key["predictions"]["text"] for name in CLASSES), by_key["predictions"]["text"]
    assert by_key["confusion"]["heatmap"] >= 1, "confusion: no heatmap drawn"
    assert "%" in by_key["confusion"]["text"] or by_key["confusion"]["plot"]
    assert by_key["class_acc"]["bars"] == len(CLASSES)
    assert "trainer" in by_key["config"]["text"]

    assert by_key["lr"]["lines"] == 1

    result = CliRunner().invoke(cli, ["compare", str(run), "--port", str(visdom_port), "--server", HOST])
    assert result.exit_code == 0, result.output
    windows = open_env(page, visdom_port, COMPARE_ENV, len(COMPARE_WINDOWS), ARTIFACTS / "compare.png")
    assert sorted(windows) == sorted(title(key) for key in COMPARE_WINDOWS)
    for shown, window in windows.items():
        ours = [name for name in window["legend"] if name.startswith(run.name)]
        splits = 1 if shown == title("compare_train") else 2  # training; else validation and test
        assert len(ours) == splits, f"{shown}: not {splits} traces of {run.name} in {window['legend']}"
        assert window["lines"] == len(window["legend"]), f"{shown}: {window}"


# --- a server that dies in the middle of a run -----------------------------------------


def window_data(port: int, env: str) -> dict[str, dict]:
    """Every window of ``env`` on the server, as visdom stores it."""
    from visdom import Visdom

    vis = Visdom(server=HOST, port=port, env=env, use_incoming_socket=False, raise_exceptions=True)
    return json.loads(vis.get_window_data(env=env))


def trace_x(window: dict, name: str) -> list[float]:
    """The x values of the trace called ``name`` in a plot window."""
    found = [trace["x"] for trace in window["content"]["data"] if trace.get("name") == name]
    assert len(found) == 1, f"{window.get('title')}: {len(found)} traces named {name!r}"
    return found[0]


def recorded(run: Path) -> tuple[str, list[int], list[int]]:
    """The run's environment name, and the steps and epochs metrics.jsonl recorded."""
    config = json.loads((run / "config.json").read_text())
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [record["step"] for record in metrics if record.get("kind") == "step"]
    epochs = [record["epoch"] for record in metrics if record.get("kind") != "step"]
    assert epochs == list(range(1, config["epochs"] + 1))
    return config["env"], steps, epochs


def assert_complete(port: int, run: Path) -> None:
    """The run's environment holds every window and every point metrics.jsonl recorded."""
    env, steps, epochs = recorded(run)
    windows = window_data(port, env)
    assert sorted(windows) == sorted(RUN_WINDOWS)
    for name in ("loss", "smoothed"):
        # Past TRACE_CAP points the server holds a decimated copy: the same ends, no invented steps.
        shown = trace_x(windows["train_loss"], name)
        assert shown == steps if len(steps) <= TRACE_CAP else (
            shown[0] == steps[0] and shown[-1] == steps[-1] and set(shown) <= set(steps)
            and len(shown) <= TRACE_CAP), name
    for key in ("loss", "accuracy"):
        for name in ("train", "test"):
            assert trace_x(windows[key], name) == epochs, f"{key}/{name}"


def assert_compare_curve(port: int, run: Path, env: str = COMPARE_ENV) -> None:
    """The compare environment holds one curve of the run with one point per epoch."""
    _, _, epochs = recorded(run)
    compare = window_data(port, env)
    assert sorted(compare) == sorted(COMPARE_WINDOWS)
    for key, window in compare.items():
        names = [trace["name"] for trace in window["content"]["data"] if trace["name"].startswith(run.name)]
        assert len(names) == 1, f"{key}: {names}"
        assert trace_x(window, names[0]) == epochs, f"{key}: the run's curve"


def count_lines(path: Path, text: str) -> int:
    """How many lines of ``path`` contain ``text`` (0 while it does not exist)."""
    return sum(text in line for line in path.read_text().splitlines()) if path.is_file() else 0


def wait_for(proc: subprocess.Popen, done, what: str, timeout: float = 30) -> None:
    """Return once ``done()`` is true; fail if the trainer exits first or it takes too long."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if done():
            return
        if proc.poll() is not None:
            pytest.fail(f"the trainer exited with {proc.returncode} before {what}")
        time.sleep(0.02)
    pytest.fail(f"no {what} after {timeout} s")


def wait_for_first_epoch(port: int, run: Path, timeout: float = 15) -> None:
    """Return once the server shows the run's first epoch on its accuracy curve."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        windows = window_data(port, run.name) if server.probe(port) == "visdom" else {}
        if "accuracy" in windows:
            return
        time.sleep(0.1)
    pytest.fail(f"the first epoch of {run.name} did not reach the dashboard in {timeout} s")


@dataclass
class KilledRun:
    """A trainer that lost its server after its first epoch and got an empty one back."""

    port: int  # where the restarted server listens
    run: Path  # the run folder
    returncode: int
    stderr: str


@pytest.fixture(scope="module")
def killed_run(tmp_path_factory):
    """Train scratch-softmax in a subprocess while its server is stopped and started again empty."""
    root = tmp_path_factory.mktemp("killed")
    running = start_server(root / "server", env_dir="envs-1")
    proc = None
    try:
        # Epochs of about half a second: each step below is seen long before the next epoch ends.
        idx, out = noisy_idx_dir(root / "idx", n_train=20000), root / "runs"
        # Output goes to files: a full pipe would block the trainer.
        with open(root / "stdout", "w") as stdout, open(root / "stderr", "w") as stderr:
            proc = subprocess.Popen(
                [sys.executable, "-m", "trainers", "scratch-softmax", "--data-dir", str(idx), "--epochs", "6",
                 "--batch-size", "8", "--port", str(running.port), "--server", HOST, "--out", str(out)],
                cwd=REPO, stdout=stdout, stderr=stderr, env={**os.environ, "HOME": str(root / "server" / "home")})
        # Start-up (torch, decoding the data, the model) takes seconds alone, far longer beside other work.
        wait_for(proc, lambda: out.is_dir() and any(out.iterdir()), "a run folder", timeout=120)
        run = only_run(out)
        wait_for(proc, lambda: count_lines(run / "metrics.jsonl", '"kind": "epoch"') >= 1, "the first epoch",
                 timeout=120)
        wait_for_first_epoch(running.port, run)

        # Once the first epoch is on the dashboard the server goes away while training goes on.
        running.stop()
        down = time.monotonic()
        wait_for(proc, lambda: count_lines(run / "metrics.jsonl", '"kind": "epoch"') >= 2,
                 "a second epoch with the server down")
        # Without a server an epoch takes a fraction of a second: pause the trainer while the
        # server restarts, so that it comes back with epochs still to go.
        proc.send_signal(signal.SIGSTOP)
        try:
            time.sleep(max(0.0, 1.5 - (time.monotonic() - down)))
            running.start("envs-2")  # a fresh folder: the server comes back with nothing saved
        finally:
            proc.send_signal(signal.SIGCONT)
        assert count_lines(run / "metrics.jsonl", '"kind": "epoch"') < 6, "no epochs left after the restart"
        proc.wait(timeout=120)
        yield KilledRun(running.port, run, proc.returncode, (root / "stderr").read_text())
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        running.stop()


def test_server_killed_mid_run_then_complete(killed_run):
    assert killed_run.returncode == 0, killed_run.stderr
    assert "Traceback" not in killed_run.stderr, killed_run.stderr
    assert sum("error" in line.lower() for line in killed_run.stderr.splitlines()) < 5, killed_run.stderr
    assert "did not receive all of this run" not in killed_run.stderr, killed_run.stderr
    assert_complete(killed_run.port, killed_run.run)


def test_replay_rebuilds_the_run_and_skips_damaged_lines(killed_run, tmp_path):
    run = killed_run.run
    replay_server = start_server(tmp_path / "replay")
    try:
        # replay draws the whole run on a server that never saw it...
        replay = ["replay", "--server", HOST, "--port", str(replay_server.port)]
        result = CliRunner().invoke(cli, [*replay, str(run)])
        assert result.exit_code == 0, result.output
        assert "damaged" not in result.output, result.output
        assert_complete(replay_server.port, run)

        # ...and from a damaged copy it skips the bad lines and replaces that environment cleanly.
        damaged = tmp_path / "damaged" / run.name
        shutil.copytree(run, damaged)
        with open(damaged / "events.jsonl", "a", encoding="utf-8") as f:
            f.write("garbage, not JSON\n")
            f.write('{"kind": "scalars", "win": "loss", "x": 7, "val')  # cut off mid-write
        result = CliRunner().invoke(cli, [*replay, str(damaged)])
        assert result.exit_code == 0, result.output
        assert "skipped 2 damaged lines" in result.output, result.output
        assert_complete(replay_server.port, damaged)
    finally:
        replay_server.stop()


def test_four_trainers_at_once_keep_their_own_windows(visdom_port, tmp_path):
    """Four runs stream to one server together: each environment holds its own run only."""
    from trainers.catalog import TRAINERS

    data = noisy_idx_dir(tmp_path / "idx")
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    procs = {}
    # A different batch size each gives each run its own step count, so crossed data would show.
    for trainer, batch in zip(TRAINERS, (16, 24, 32, 40)):
        procs[trainer] = subprocess.Popen(
            [sys.executable, "-m", "trainers", trainer, "--data-dir", str(data), "--epochs", "2",
             "--batch-size", str(batch), "--port", str(visdom_port), "--server", HOST,
             "--out", str(tmp_path / "runs" / trainer)],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for trainer, proc in procs.items():
            _, stderr = proc.communicate(timeout=180)
            assert proc.returncode == 0, f"{trainer}: {stderr}"
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
    runs = [only_run(tmp_path / "runs" / trainer) for trainer in TRAINERS]
    assert len({run.name for run in runs}) == 4
    for run in runs:
        assert_complete(visdom_port, run)
        config = window_data(visdom_port, run.name)["config"]["content"]
        assert run.name in config and all(other.name not in config for other in runs if other != run)

    # compare draws exactly the runs it is given, into the environment it is told
    result = CliRunner().invoke(cli, ["compare", *map(str, runs[:3]), "--env", "picked", "--port", str(visdom_port),
                                      "--server", HOST])
    assert result.exit_code == 0, result.output
    for run in runs[:3]:
        assert_compare_curve(visdom_port, run, env="picked")
    assert not any(trace["name"].startswith(runs[3].name)
                   for window in window_data(visdom_port, "picked").values() for trace in window["content"]["data"])


# --- visdom 0.3.0's experiment records ----------------------------------------------------


def test_a_run_is_recorded_as_a_visdom_experiment_where_visdom_keeps_them(tmp_path):
    """visdom 0.3.0 stores an experiment per environment: the run's settings, last numbers and status."""
    from viz.dashboard.client import EXPERIMENTS

    running = start_server(tmp_path / "server")
    try:
        idx, out = noisy_idx_dir(tmp_path / "idx"), tmp_path / "runs"
        result = CliRunner().invoke(cli, ["nn-softmax", "--data-dir", str(idx), "--out", str(out), "--epochs", "1",
                                          "--port", str(running.port), "--server", HOST])
        assert result.exit_code == 0, result.output
        run = only_run(out)
        saved = json.loads((tmp_path / "server" / "envs" / f"{run.name}.json").read_text())
    finally:
        running.stop()
    if not EXPERIMENTS:  # visdom 0.2.4: the same windows, no experiment record
        assert "experiment" not in saved and "config" in saved["jsons"]
        return
    experiment = saved["experiment"]
    record = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert experiment["status"] == "finished"
    assert experiment["tags"] == [{"key": "status", "value": "finished"}]
    params = {param["key"]: param["value"] for param in experiment["params"]}
    assert params["trainer"] == "nn-softmax" and params["epochs"] == 1 and params["run_dir"] == str(run)
    metrics = {metric["key"]: (metric["value"], metric["step"]) for metric in experiment["metrics"]}
    assert metrics["test_acc"] == (record["test_acc"], record["step"])
    assert metrics["train_loss"] == (record["train_loss"], record["step"])


# --- a sweep's own environment ----------------------------------------------------------

PARCOORDS_JS = """() => Array.from(document.querySelectorAll('.window')).filter(w => w.querySelector('.parcoords'))
    .map(w => ({axes: Array.from(w.querySelectorAll('.parcoords .axis-title')).map(t => t.textContent),
                canvases: w.querySelectorAll('canvas').length}))"""


def test_sweep_environment_draws_in_the_browser(visdom_port, browser, tmp_path):
    idx, out = noisy_idx_dir(tmp_path / "idx"), tmp_path / "runs"
    result = CliRunner().invoke(cli, [
        "sweep", "mlp", "--data-dir", str(idx), "--out", str(out), "--epochs", "2", "--batch-size", "32",
        "--val-size", "100", "--param", "lr=0.05|0.2", "--param", "activation=relu|leaky-relu", "--jobs", "2",
        "--study", "e2e-sweep", "--port", str(visdom_port), "--server", HOST])
    assert result.exit_code == 0, result.output

    page = browser.new_page(viewport={"width": 1600, "height": 1000})
    windows = open_env(page, visdom_port, "e2e-sweep", len(SWEEP_WINDOWS), ARTIFACTS / "sweep.png")
    assert sorted(windows) == sorted(title(key) for key in SWEEP_WINDOWS)
    curves = windows[WINDOWS["sweep_val_acc"].title]
    assert curves["lines"] == 4 and len(curves["legend"]) == 4, curves
    assert all("lr=" in name and "activation=" in name for name in curves["legend"])
    (parcoords,) = page.evaluate(PARCOORDS_JS)
    assert parcoords["axes"] == ["lr", "activation", "val acc"] and parcoords["canvases"] > 0, parcoords
    table = windows[WINDOWS["sweep_trials"].title]["text"]
    assert table.count("complete") == 4 and "★" in table, table

    # every trial streamed to its own environment, linked from the table
    links = page.eval_on_selector_all("a[href*='e2e-sweep_trial-']", "links => links.map(a => a.textContent)")
    assert sorted(links) == [f"e2e-sweep_trial-{n:03d}" for n in range(4)]
    for env in links:
        assert "accuracy" in window_data(visdom_port, env)
    # following a link opens that trial's environment, with its windows
    with page.expect_popup() as popup:
        page.click("a:text-is('e2e-sweep_trial-002')")
    trial = popup.value
    trial.wait_for_load_state()
    assert trial.url == f"http://127.0.0.1:{visdom_port}/env/e2e-sweep_trial-002"
    trial.wait_for_selector(".window", timeout=20_000)
    titles = trial.evaluate(WINDOW_INFO_JS)
    assert WINDOWS["accuracy"].title in [window["title"] for window in titles]
    trial.close()

    # the board went through the study's events.jsonl, so replay rebuilds it elsewhere
    result = CliRunner().invoke(cli, ["replay", str(out / "e2e-sweep"), "--env", "e2e-sweep-again",
                                      "--port", str(visdom_port), "--server", HOST])
    assert result.exit_code == 0, result.output
    again = window_data(visdom_port, "e2e-sweep-again")
    assert sorted(again) == sorted(SWEEP_WINDOWS)
    assert again["sweep_trials"]["content"] == window_data(visdom_port, "e2e-sweep")["sweep_trials"]["content"]
