"""What the live dashboard costs: every-step streaming to a real local visdom server against --no-viz.

Part 1, overhead. The MLP (4 epochs) and scratch-softmax (10 epochs) train in this one
process, alternating live and --no-viz runs, ``--repeats`` times each. For every run it
takes the sum of its epochs' ``seconds`` (training plus evaluation, from metrics.jsonl)
and its whole wall time (which also holds the epoch reports, start-up and the final
flush); the figures are the medians over the repeats, and the ratios divide live by
--no-viz.

Part 2, growth. Live scratch-softmax runs of 10 and of 100 epochs, each against a fresh
server: the server process's CPU time per epoch (its threads' run time, from /proc), and
how long headless Chromium takes to load each run's environment until every window drew
(median of three loads).

Part 3, requests. Why the renderer draws a line window whole instead of appending to
it: the server's CPU for appending 50 points to two traces of a window, against
replacing the whole window, for traces of 10, 150 and 300 points.

Part 4, peers. One loop of this file's own (an MLP on Fashion-MNIST, 2 epochs) that logs
its loss at every step: without logging, with ``viz`` (``run.log``, the dashboard live and
everything delivered by ``finish``), TensorBoard's ``SummaryWriter.add_scalar``, trackio's
``log`` and visdom's own ``line(update="append")``, in alternated rounds. Each peer's run
sits between two runs of the loop without logging, and its ratio is its wall time over
their mean: the machine's load drifts over seconds, and a 2-second loop moves by several
points from one run to the next, so each run is compared with its neighbours; the figure
is the median of those ratios over the rounds. Beside the wall time, the CPU time the
loop cost this process's threads and the server's, whose ratios move less. A peer that
is not installed (``pip install -e .[bench]``) is skipped with a line.

Run: python tests/benchmarks/bench_viz.py [--part all|overhead|growth|requests|peers] [--repeats 3] [--long 100]
[--data-dir DIR]
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import socket
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")  # progress bars would bury the table

import click

from trainers.catalog import TRAINERS
from trainers.core import training as command
from viz.dashboard.client import connect
from viz.dashboard.windows import WINDOWS, opts
from viz.server import manager as server

HOST = "http://127.0.0.1"
SHOWN = len([key for key in WINDOWS if not key.startswith(("compare_", "sweep_")) and key != "lr"])


def train(trainer: str, epochs: int, live: bool, port: int, out: Path, data_dir: str | None,
          env: str | None = None) -> tuple[float, float]:
    """Train once; return (sum of the epochs' seconds, whole-run wall seconds)."""
    config = TRAINERS[trainer].config(trainer=trainer, epochs=epochs, viz=live, port=port, server=HOST, out=out,
                                      env=env, data_dir=Path(data_dir) if data_dir else None)
    started = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # each run's epoch lines would bury the table
        command.train(config)
    wall = time.perf_counter() - started
    run_dir = max(out.iterdir(), key=lambda p: p.stat().st_mtime)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return sum(r["seconds"] for r in records if r["kind"] == "epoch"), wall


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def local_server(env_path: Path):
    """A visdom server of its own on a free port for the ``with`` block, stopped after it: its ``ServerInfo``."""
    port = free_port()
    info = server.start(port=port, env_path=env_path, echo=lambda line: None)
    try:
        yield info
    finally:
        server.stop(port)


def cpu_seconds(pid: int) -> float:
    """CPU time of a process's threads so far, to the nanosecond (/proc's user and system times count 10 ms ticks)."""
    return sum(int((task / "schedstat").read_text().split()[0]) for task in Path(f"/proc/{pid}/task").iterdir()) / 1e9


def load_seconds(port: int, env: str, loads: int = 3) -> float:
    """Median seconds for headless Chromium to show every window of ``env``."""
    from playwright.sync_api import sync_playwright

    times = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        try:
            for _ in range(loads):
                page = browser.new_page(viewport={"width": 1600, "height": 1000})
                started = time.perf_counter()
                page.goto(f"http://127.0.0.1:{port}/env/{env}")
                page.wait_for_function(
                    """n => document.querySelectorAll('.window').length >= n
                        && Array.from(document.querySelectorAll('.window img')).every(i => i.complete)
                        && Array.from(document.querySelectorAll('.js-plotly-plot')).every(p => p.querySelector('svg'))""",
                    arg=SHOWN, timeout=60_000)
                times.append(time.perf_counter() - started)
                page.close()
        finally:
            browser.close()
    return statistics.median(times)


def overhead(repeats: int, port: int, tmp: Path, data_dir: str | None) -> None:
    print(f"Part 1: live every-step streaming against --no-viz, medians of {repeats} alternated runs")
    print(f"{'run':<22}{'epochs s: no-viz':>17}{'live':>8}{'ratio':>8}{'whole run s: no-viz':>21}{'live':>8}"
          f"{'ratio':>8}")
    for trainer, epochs in (("mlp", 4), ("scratch-softmax", 10)):
        results: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
        for i in range(repeats):
            for live in (False, True) if i % 2 == 0 else (True, False):
                results[live].append(train(trainer, epochs, live, port, tmp / f"{trainer}-{live}", data_dir))
        (off_epochs, off_wall), (on_epochs, on_wall) = (
            tuple(statistics.median(column) for column in zip(*results[live])) for live in (False, True))
        print(f"{f'{trainer}, {epochs} epochs':<22}{off_epochs:>17.3f}{on_epochs:>8.3f}{on_epochs / off_epochs:>7.3f}x"
              f"{off_wall:>21.3f}{on_wall:>8.3f}{on_wall / off_wall:>7.3f}x")


def growth(long: int, tmp: Path, data_dir: str | None) -> None:
    print(f"\nPart 2: the dashboard's cost against run length (scratch-softmax, live, a fresh server each)")
    print(f"{'epochs':>7}{'server CPU s':>14}{'per epoch':>11}{'browser load s':>16}")
    per_epoch = {}
    for epochs in (10, long):
        with local_server(tmp / f"envs-{epochs}") as info:
            before = cpu_seconds(info.pid)
            train("scratch-softmax", epochs, True, info.port, tmp / f"growth-{epochs}", data_dir,
                  env=f"growth-{epochs}")
            used = cpu_seconds(info.pid) - before
            per_epoch[epochs] = used / epochs
            load = load_seconds(info.port, f"growth-{epochs}")
        print(f"{epochs:>7}{used:>14.3f}{per_epoch[epochs]:>11.4f}{load:>16.2f}")
    print(f"server CPU per epoch, {long} epochs over 10 epochs: {per_epoch[long] / per_epoch[10]:.2f}x")


def requests_cost(tmp: Path, requests: int = 30) -> None:
    """Server CPU of appending 50 points to two traces of a line window, against drawing the window whole."""
    print(f"\nPart 3: the server's CPU per request on a 3-trace line window (mean of {requests})")
    print(f"{'points a trace':>15}{'append 50 ms':>14}{'draw whole ms':>15}")
    with local_server(tmp / "envs-requests") as info:
        vis = connect(HOST, info.port, "requests")
        for points in (10, 150, 300):
            x, y = list(range(points)), [1 / (i + 1) for i in range(points)]
            window = [("loss", x, y, "lines"), ("smoothed", x, y, "lines"), ("epoch mean", x[:10], y[:10], "markers")]
            new = {"x": list(range(points, points + 50)), "y": [0.5] * 50}
            append = {"data": [new, new, {"x": [math.nan], "y": [math.nan]}], "win": "w", "eid": "requests",
                      "append": True}  # what visdom's own line(update="append") sends, for every trace at once
            spent = {"append": 0.0, "draw": 0.0}
            for _ in range(requests):
                vis.lines(window, win="w", env="requests", opts=opts("train_loss"))  # back to `points` a trace
                for kind, send in (("append", lambda: vis._send(append, endpoint="update")),
                                   ("draw", lambda: vis.lines(window, win="w", env="requests", opts=opts("train_loss")))):
                    before = cpu_seconds(info.pid)
                    send()
                    spent[kind] += cpu_seconds(info.pid) - before
            print(f"{points:>15}{spent['append'] / requests * 1000:>14.2f}{spent['draw'] / requests * 1000:>15.2f}")


def peer_loop(data, log, epochs: int = 2, batch_size: int = 128) -> float:
    """Wall seconds of ``epochs`` of a small MLP's training, ``log(step, loss)`` called at every step."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    images, labels = data.train.pixels, data.train.labels
    generator = torch.Generator().manual_seed(0)
    started = time.perf_counter()
    step = 0
    for _ in range(epochs):
        for index in torch.randperm(len(labels), generator=generator).split(batch_size):
            loss = nn.functional.cross_entropy(model(images[index].float() / 255), labels[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            log(step, loss.detach())
            step += 1
    return time.perf_counter() - started


def peers(repeats: int, port: int, server_pid: int, tmp: Path, data_dir: str | None) -> None:
    """Each peer's loop against the loop without logging, in alternated rounds."""
    import torch

    import viz
    from trainers.core.data import load

    data = load("fashion-mnist", Path(data_dir) if data_dir else None, torch.device("cpu"))

    finishes: list[float] = []  # seconds of each trainviz run's ``finish``

    def trainviz() -> float:
        run = viz.init(name="peer", out=tmp / "peers", port=port, server=HOST)
        seconds = peer_loop(data, lambda step, loss: run.log({"train/loss": loss}, step=step))
        started = time.perf_counter()
        run.finish()
        finishes.append(time.perf_counter() - started)
        return seconds + finishes[-1]

    def tensorboard() -> float:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(tmp / "tensorboard" / str(time.monotonic_ns())))
        seconds = peer_loop(data, lambda step, loss: writer.add_scalar("train/loss", loss, step))
        started = time.perf_counter()
        writer.close()
        return seconds + time.perf_counter() - started

    def trackio() -> float:
        import trackio as tracker

        os.environ.setdefault("TRACKIO_DIR", str(tmp / "trackio"))
        with contextlib.redirect_stdout(io.StringIO()):
            tracker.init(project="peers")
        seconds = peer_loop(data, lambda step, loss: tracker.log({"train/loss": loss.item()}, step=step))
        started = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            tracker.finish()
        return seconds + time.perf_counter() - started

    def visdom_append() -> float:
        vis = connect(HOST, port, "peer-append")
        vis.delete_env("peer-append")  # every round appends to a window of its own, from nothing
        return peer_loop(data, lambda step, loss: vis.line(X=[step], Y=[loss.item()], win="loss", env="peer-append",
                                                            update="append"))

    loops = {"trainviz run.log": trainviz, "TensorBoard add_scalar": tensorboard, "trackio log": trackio,
             "visdom line(append)": visdom_append}
    for name, module in (("TensorBoard add_scalar", "torch.utils.tensorboard"), ("trackio log", "trackio")):
        try:
            __import__(module)
        except ImportError as err:
            print(f"skipped {name}: {err} (pip install -e .[bench])")
            del loops[name]
    print(f"\nPart 4: one MLP loop (2 epochs) logging its loss every step, {repeats} alternated rounds, each "
          "peer between two loops without logging")

    def without() -> float:
        return peer_loop(data, lambda step, loss: None)

    def timed(loop) -> tuple[float, float]:
        """The loop's wall seconds, and the CPU seconds it cost this process and the server together."""
        cpu = cpu_seconds(os.getpid()) + cpu_seconds(server_pid)
        wall = loop()
        return wall, cpu_seconds(os.getpid()) + cpu_seconds(server_pid) - cpu

    spent: dict[str, list[tuple[float, float]]] = {name: [] for name in loops}  # (wall, cpu) per round
    ratios: dict[str, list[tuple[float, float]]] = {name: [] for name in loops}
    bare = [timed(without)]
    for round_ in range(repeats):
        for name in list(loops) if round_ % 2 == 0 else list(loops)[::-1]:
            spent[name].append(timed(loops[name]))
            bare.append(timed(without))
            ratios[name].append(tuple(run / ((before + after) / 2)
                                      for run, before, after in zip(spent[name][-1], bare[-2], bare[-1])))

    def medians(pairs: list[tuple[float, float]]) -> tuple[float, float]:
        return statistics.median(p[0] for p in pairs), statistics.median(p[1] for p in pairs)

    print(f"{'loop':<24}{'wall s':>9}{'ratio':>9}{'CPU s':>9}{'ratio':>9}")
    wall, cpu = medians(bare)
    print(f"{'no logging':<24}{wall:>9.2f}{1:>8.3f}x{cpu:>9.2f}{1:>8.3f}x")
    for name in loops:
        (wall, cpu), (wall_ratio, cpu_ratio) = medians(spent[name]), medians(ratios[name])
        print(f"{name:<24}{wall:>9.2f}{wall_ratio:>8.3f}x{cpu:>9.2f}{cpu_ratio:>8.3f}x")
    if "trainviz run.log" in loops:
        print(f"trainviz: run.log {log_call_seconds(tmp) * 1e6:.1f} us a call (20,000 calls of a CPU tensor, "
              f"the dashboard off, read-backs included); finish {statistics.median(finishes) * 1e3:.0f} ms "
              "(median over the rounds)")
    print("medians over the rounds; a ratio is the median over the rounds of a run's figure over the mean of the two "
          "runs without logging on either side of it; CPU s: this process's threads and the server's")


def log_call_seconds(tmp: Path, calls: int = 20_000) -> float:
    """Mean seconds of one ``run.log`` call of a CPU tensor, its share of the read-backs and metrics.jsonl included."""
    import torch

    import viz

    values = [torch.tensor(float(i)) for i in range(calls)]
    run = viz.init(name="calls", out=tmp / "calls", dashboard=False)
    started = time.perf_counter()
    for step, value in enumerate(values):
        run.log({"train/loss": value}, step=step)
    run.finish()
    return (time.perf_counter() - started) / calls


@click.command()
@click.option("--repeats", type=click.IntRange(1), default=3, show_default=True)
@click.option("--long", type=click.IntRange(11), default=100, show_default=True, help="Epochs of the long run.")
@click.option("--data-dir", type=click.Path(), default=None)
@click.option("--part", type=click.Choice(["all", "overhead", "growth", "requests", "peers"]), default="all",
              show_default=True)
def main(repeats: int, long: int, data_dir: str | None, part: str):
    """Print the dashboard's overhead, how its cost grows with run length, and what a request costs the server."""
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        os.environ.setdefault("TRAINVIZ_CACHE", str(Path.home() / ".cache" / "trainviz"))
        if part in ("all", "overhead"):
            with local_server(tmp / "envs") as info:
                overhead(repeats, info.port, tmp, data_dir)
        if part in ("all", "growth"):
            growth(long, tmp, data_dir)
        if part in ("all", "requests"):
            requests_cost(tmp)
        if part in ("all", "peers"):
            with local_server(tmp / "envs-peers") as info:
                peers(repeats, info.port, info.pid, tmp, data_dir)


if __name__ == "__main__":
    main()
