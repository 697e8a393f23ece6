"""What live logging costs: the MLP trained with --no-viz, with every-step streaming to a
real local visdom server, and with the seeds' synchronous per-step ``viz.line`` call.

All three run in this one process against one server, alternating, ``--repeats`` times;
each mode's epoch time is the median of its epochs (``seconds`` in metrics.jsonl:
training plus evaluation). The whole-run wall time, which also holds the epoch-end
dashboard report and the final flush, is printed beside it.

Run: python tests/benchmarks/bench_viz.py [--epochs 3] [--repeats 2] [--data-dir DIR]
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")  # progress bars would interleave with the table

import click

from tests.conftest import free_port
from trainers import command
from trainers.config import MLPConfig
from viz import server
from viz.sink import Sink
from viz.visdom_sink import connect


class SeedSink(Sink):
    """The seeds' way: one blocking ``viz.line(..., update='append')`` per training step."""

    def __init__(self, vis):
        self.vis = vis

    def emit(self, event: dict) -> None:
        if event["kind"] == "scalars" and event["win"] == "train_loss" and "loss" in event["values"]:
            self.vis.line([event["values"]["loss"]], [event["x"]], win="train_loss", update="append")


def run_once(mode: str, epochs: int, port: int, out: Path, data_dir: str | None) -> tuple[float, float]:
    """Train the MLP once in ``mode``; return (median epoch seconds, whole-run seconds)."""
    config = MLPConfig(trainer="mlp", epochs=epochs, viz=mode == "live", port=port, out=out,
                       server="http://127.0.0.1", data_dir=Path(data_dir) if data_dir else None)
    original = command.make_sink
    if mode == "seeds":
        vis = connect("http://127.0.0.1", port, f"seeds-{time.time_ns()}")
        command.make_sink = lambda config, run, resumed=False: SeedSink(vis)
    try:
        started = time.perf_counter()
        command.train(config)
        wall = time.perf_counter() - started
    finally:
        command.make_sink = original
    run_dir = max(out.iterdir(), key=lambda p: p.stat().st_mtime)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return statistics.median(r["seconds"] for r in records if r["kind"] == "epoch"), wall


@click.command()
@click.option("--epochs", type=click.IntRange(1), default=3, show_default=True)
@click.option("--repeats", type=click.IntRange(1), default=2, show_default=True)
@click.option("--data-dir", type=click.Path(), default=None)
def main(epochs: int, repeats: int, data_dir: str | None):
    """Print epoch times of the three modes and their ratios to --no-viz."""
    modes = ("no-viz", "live", "seeds")
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["TRAINVIZ_CACHE"] = os.environ.get("TRAINVIZ_CACHE", str(Path.home() / ".cache" / "trainviz"))
        port = free_port()
        info = server.start(port=port, env_path=Path(tmp) / "visdom")
        try:
            results = {mode: [] for mode in modes}
            for _ in range(repeats):
                for mode in modes:
                    results[mode].append(run_once(mode, epochs, port, Path(tmp) / mode, data_dir))
        finally:
            server.stop(info.port)
    base_epoch = min(e for e, _ in results["no-viz"])
    base_wall = min(w for _, w in results["no-viz"])
    print(f"MLP, {epochs} epochs x {repeats} runs per mode, every-step logging, local visdom server")
    print(f"{'mode':<8}{'epoch s':>9}{'vs no-viz':>11}{'run s':>8}{'vs no-viz':>11}")
    for mode in modes:
        epoch, wall = min(e for e, _ in results[mode]), min(w for _, w in results[mode])
        print(f"{mode:<8}{epoch:>9.3f}{epoch / base_epoch - 1:>+10.1%}{wall:>8.2f}{wall / base_wall - 1:>+10.1%}")


if __name__ == "__main__":
    main()
