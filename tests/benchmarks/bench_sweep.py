"""A 12-trial MLP grid as one sweep with two workers, against the same 12 runs as a shell loop.

Both do the same training: 3 epochs of ``trainviz mlp`` on Fashion-MNIST for each of
lr in {0.05, 0.1, 0.2, 0.3} x hidden in {100, 200,200, 400}, 5,000 training images held
out for validation and the test set left alone, no dashboard. The loop is a bash ``for``
over ``trainviz mlp`` commands, one process per run; the sweep is
``trainviz sweep mlp --jobs 2``, whose two workers load torch and the data once and split
the 2 cores between them (the loop's runs use both cores each). Rounds alternate loop
and sweep; each figure is the median over the rounds, and the ratio is the median
sweep over the median loop (each round's own ratio is printed too).

Run: python tests/benchmarks/bench_sweep.py [--rounds 2]
"""

from __future__ import annotations

import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click

LRS = ("0.05", "0.1", "0.2", "0.3")
HIDDEN = ("100", "200,200", "400")
SETTINGS = ["--epochs", "3", "--val-size", "5000", "--no-viz"]


def timed(command: list[str]) -> float:
    """Seconds ``command`` took; its output is thrown away, a failure stops the benchmark."""
    started = time.perf_counter()
    result = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={"TQDM_DISABLE": "1", **__import__("os").environ})
    if result.returncode != 0:
        raise SystemExit(f"{shlex.join(command)} failed: {result.stderr.strip()[-400:]}")
    return time.perf_counter() - started


def loop_command(out: Path) -> list[str]:
    """bash: the 12 runs one after another, as a user would script them."""
    trainviz = f"{shlex.quote(sys.executable)} -m trainers mlp {' '.join(SETTINGS)} --no-test --out {out}"
    script = (f"set -e; for lr in {' '.join(LRS)}; do for hidden in {' '.join(HIDDEN)}; do "
              f"{trainviz} --lr $lr --hidden $hidden; done; done")
    return ["bash", "-c", script]


def sweep_command(out: Path) -> list[str]:
    return [sys.executable, "-m", "trainers", "sweep", "mlp", *SETTINGS, "--out", str(out), "--jobs", "2",
            "--param", f"lr={'|'.join(LRS)}", "--param", f"hidden={'|'.join(HIDDEN)}"]


@click.command()
@click.option("--rounds", type=click.IntRange(min=1), default=2, show_default=True)
def main(rounds: int) -> None:
    loops, sweeps = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            loops.append(timed(loop_command(Path(tmp) / f"loop-{r}")))
            sweeps.append(timed(sweep_command(Path(tmp) / f"sweep-{r}")))
            runs = len(list((Path(tmp) / f"loop-{r}").iterdir()))
            trials = len(list((Path(tmp) / f"sweep-{r}").glob("*/trial-*")))
            assert runs == trials == 12, (runs, trials)
            print(f"round {r + 1}: loop {loops[-1]:.1f} s, sweep {sweeps[-1]:.1f} s, "
                  f"ratio {sweeps[-1] / loops[-1]:.3f}", flush=True)
    loop, sweep = statistics.median(loops), statistics.median(sweeps)
    print(f"12 runs of 3 epochs, medians over {rounds} rounds: shell loop {loop:.1f} s, "
          f"sweep --jobs 2 {sweep:.1f} s; sweep / loop = {sweep / loop:.3f}x")


if __name__ == "__main__":
    main()
