"""How long the command takes to answer and to start training, against ``import torch``.

Each round runs, one after another in fresh processes: ``python -c "import torch"``,
``trainviz --help``, a bad-input error (``trainviz mlp --lr abc``), and a one-epoch
``--no-viz`` run of nn-softmax and of scratch-softmax on a warm data cache. A run's
start-up cost is its wall time minus its epoch's ``seconds`` (training plus evaluation,
from metrics.jsonl): imports, data loading, building the model, writing the run folder,
and exiting. Every figure is the median over the rounds, and each ratio divides by the
median ``import torch`` of the same rounds. ``import torch, torch._dynamo`` is the floor
under a run that uses torchvision or ``torch.optim``: torchvision's ``ops`` import
``torch._dynamo`` when torchvision is imported, and so does the first ``Optimizer.step()``.

Run: python tests/benchmarks/bench_startup.py [--rounds 7] [--data-dir DIR]
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click

TRAINVIZ = [sys.executable, "-m", "trainers"]
RUNS = ("nn-softmax", "scratch-softmax")


def wall(command: list[str], expect: int = 0) -> float:
    """Seconds a fresh process takes to run ``command``."""
    started = time.perf_counter()
    result = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "TQDM_DISABLE": "1"})
    seconds = time.perf_counter() - started
    if result.returncode != expect:
        raise SystemExit(f"{' '.join(command)} exited {result.returncode}: {result.stderr.strip()[-300:]}")
    return seconds


def run_startup(trainer: str, out: Path, data_dir: str | None) -> float:
    """Wall time of a one-epoch run minus its epoch's seconds."""
    out.mkdir(parents=True, exist_ok=True)
    before = set(out.iterdir())
    extra = ["--data-dir", data_dir] if data_dir else []
    seconds = wall([*TRAINVIZ, trainer, "--epochs", "1", "--no-viz", "--out", str(out), *extra])
    (run,) = set(out.iterdir()) - before
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return seconds - sum(r["seconds"] for r in records if r["kind"] == "epoch")


@click.command()
@click.option("--rounds", type=click.IntRange(1), default=7, show_default=True)
@click.option("--data-dir", type=click.Path(exists=True, file_okay=False), default=None)
def main(rounds: int, data_dir: str | None):
    """Print the medians and their ratios to ``import torch``."""
    data_dir = data_dir and os.path.abspath(data_dir)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        run_startup(RUNS[0], out / "warm-up", data_dir)  # fills the data cache
        times: dict[str, list[float]] = {}
        for _ in range(rounds):
            for name, measure in (
                ("import torch", lambda: wall([sys.executable, "-c", "import torch"])),
                # what torchvision's import and the first torch.optim step import whether or not anything
                # is compiled: the floor under any run that uses either
                ("import torch, torch._dynamo", lambda: wall([sys.executable, "-c", "import torch, torch._dynamo"])),
                ("trainviz --help", lambda: wall([*TRAINVIZ, "--help"])),
                ("trainviz mlp --lr abc", lambda: wall([*TRAINVIZ, "mlp", "--lr", "abc"], expect=2)),
                *((f"{trainer} start-up", lambda t=trainer: run_startup(t, out / t, data_dir)) for trainer in RUNS),
            ):
                times.setdefault(name, []).append(measure())
    base = statistics.median(times["import torch"])
    print(f"medians of {rounds} alternated rounds; start-up = a one-epoch run's wall time minus its epoch")
    print(f"{'':<28}{'seconds':>9}{'x import torch':>16}")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:<28}{median:>9.3f}{median / base:>15.2f}x")


if __name__ == "__main__":
    main()
