"""Sweeps on Fashion-MNIST: how fast (``--part speed``) and how good (``--part quality``).

speed: a 12-trial MLP grid as one sweep with two workers, against the same 12 runs as a
shell loop. Both do the same training: 3 epochs of ``trainviz mlp`` for each of lr in
{0.05, 0.1, 0.2, 0.3} x hidden in {100, 200,200, 400}, 5,000 training images held out for
validation and the test set left alone, no dashboard. The loop is a bash ``for`` over
``trainviz mlp`` commands, one process per run; the sweep is ``trainviz sweep mlp --jobs 2``,
whose two workers load torch and the data once and split the 2 cores between them (the
loop's runs use both cores each). Rounds alternate loop and sweep; each figure is the
median over the rounds, and the ratio is the median sweep over the median loop (each
round's own ratio is printed too).

quality: TPE sweeps over three broad MLP search spaces, each with every pruner side by
side (none, median, halfway), as a user would run them: 16 trials of 10 epochs, --jobs 2,
no dashboard. For each: the chosen trial's test accuracy, the sweep's wall time, how many
trials were pruned, and (unless --no-refit) the test accuracy of its refit on the training
and validation images, timed apart (the same command again with --refit). Every setting
runs once per seed; the pruners' order turns with the seed, so drift in the machine's
speed falls on each alike. The table gives medians over the seeds. TPE's draws differ
between runs of the same seed (each worker's sampler seed also takes its pid), so the
seeds are repeats, not replays.

Run: python tests/benchmarks/bench_sweep.py [--part speed] [--rounds 2]
     python tests/benchmarks/bench_sweep.py --part quality [--seeds 2] [--trials 16] [--epochs 10]
"""

from __future__ import annotations

import json
import os
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

# Broad spaces, none tuned to one answer: what a user would write for each part of the model.
SPACES = {
    # the issue's: six knobs as a new user writes them
    "user": ["lr=0.01..0.5:log", "momentum=0|0.9", "hidden=200,200|500,250", "dropout=0..0.5",
             "weight-decay=0|0.0001|0.001", "schedule=constant|cosine"],
    # the optimizer alone, every knob a range or all its choices
    "optimizer": ["lr=0.001..1:log", "momentum=0..0.95", "weight-decay=0.000001..0.01:log",
                  "schedule=constant|cosine|step"],
    # the network's shape and regularization, with the rate it needs
    "model": ["hidden=100|256|512,256|1024,512", "activation=relu|leaky-relu", "dropout=0..0.6",
              "lr=0.005..0.5:log", "momentum=0|0.9"],
}
PRUNERS = ("none", "median", "halfway")


def timed(command: list[str]) -> float:
    """Seconds ``command`` took; its output is thrown away, a failure stops the benchmark."""
    started = time.perf_counter()
    result = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={"TQDM_DISABLE": "1", **os.environ})
    if result.returncode != 0:
        raise SystemExit(f"{shlex.join(command)} failed: {result.stderr.strip()[-400:]}")
    return time.perf_counter() - started


# ---------------------------------------------------------------- speed


def loop_command(out: Path) -> list[str]:
    """bash: the 12 runs one after another, as a user would script them."""
    trainviz = f"{shlex.quote(sys.executable)} -m trainers mlp {' '.join(SETTINGS)} --no-test --out {out}"
    script = (f"set -e; for lr in {' '.join(LRS)}; do for hidden in {' '.join(HIDDEN)}; do "
              f"{trainviz} --lr $lr --hidden $hidden; done; done")
    return ["bash", "-c", script]


def grid_command(out: Path) -> list[str]:
    return [sys.executable, "-m", "trainers", "sweep", "mlp", *SETTINGS, "--out", str(out), "--jobs", "2",
            "--param", f"lr={'|'.join(LRS)}", "--param", f"hidden={'|'.join(HIDDEN)}"]


def speed(rounds: int) -> None:
    """The grid as a sweep against the shell loop, alternating, medians over ``rounds``."""
    loops, sweeps = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            loops.append(timed(loop_command(Path(tmp) / f"loop-{r}")))
            sweeps.append(timed(grid_command(Path(tmp) / f"sweep-{r}")))
            runs = len(list((Path(tmp) / f"loop-{r}").iterdir()))
            trials = len(list((Path(tmp) / f"sweep-{r}").glob("*/trial-*")))
            assert runs == trials == 12, (runs, trials)
            print(f"round {r + 1}: loop {loops[-1]:.1f} s, sweep {sweeps[-1]:.1f} s, "
                  f"ratio {sweeps[-1] / loops[-1]:.3f}", flush=True)
    loop, sweep = statistics.median(loops), statistics.median(sweeps)
    print(f"12 runs of 3 epochs, medians over {rounds} rounds: shell loop {loop:.1f} s, "
          f"sweep --jobs 2 {sweep:.1f} s; sweep / loop = {sweep / loop:.3f}x")


# ---------------------------------------------------------------- quality


def tpe_command(out: Path, space: str, pruner: str, seed: int, trials: int, epochs: int, jobs: int,
                data_dir: Path | None) -> list[str]:
    """``trainviz sweep mlp`` over one of SPACES with one pruner: the sweep a user would run."""
    params = [word for spec in SPACES[space] for word in ("--param", spec)]
    data = ["--data-dir", str(data_dir)] if data_dir else []
    return [sys.executable, "-m", "trainers", "sweep", "mlp", "--epochs", str(epochs), "--no-viz", "--out", str(out),
            "--sampler", "tpe", "--trials", str(trials), "--pruner", pruner, "--jobs", str(jobs), "--seed", str(seed),
            *data, *params]


def recorded_test(run: Path) -> dict:
    """The "test" record a sweep wrote into a run folder's metrics.jsonl."""
    with open(run / "metrics.jsonl") as f:
        (record,) = [json.loads(line) for line in f if '"kind": "test"' in line]
    return record


def outcome(out: Path) -> dict:
    """What the one study under ``out`` chose: its trials' states, the chosen trial, its test accuracy, its refit's."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    (journal,) = out.glob("*/journal.log")
    storage = JournalStorage(JournalFileBackend(str(journal)))
    (summary,) = optuna.get_all_study_summaries(storage)
    trials = optuna.load_study(study_name=summary.study_name, storage=storage).get_trials()
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    best = max(complete, key=lambda t: (t.value, -t.number))
    refit = journal.parent / f"refit-{best.number:03d}"
    return {"trials": len(trials), "pruned": sum(t.state.name == "PRUNED" for t in trials),
            "epochs": sum(len(t.intermediate_values) for t in trials), "val": best.value,
            "test": recorded_test(Path(best.user_attrs["run_dir"]))["test_acc"],
            "refit": recorded_test(refit)["test_acc"] if refit.is_dir() else None}


def quality(seeds: int, trials: int, epochs: int, jobs: int, refit: bool, spaces: tuple[str, ...],
            data_dir: Path | None) -> None:
    """Every space with every pruner, once per seed; a line per sweep, then medians over the seeds."""
    results: dict[tuple[str, str], list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(seeds):
            order = PRUNERS[seed % len(PRUNERS):] + PRUNERS[:seed % len(PRUNERS)]
            for space in spaces:
                for pruner in order:
                    out = Path(tmp) / f"{space}-{pruner}-{seed}"
                    command = tpe_command(out, space, pruner, seed, trials, epochs, jobs, data_dir)
                    seconds = timed(command)
                    refit_seconds = timed([*command, "--refit"]) if refit else None
                    result = {**outcome(out), "seconds": seconds, "refit_seconds": refit_seconds}
                    results.setdefault((space, pruner), []).append(result)
                    refitted = (f", refit {result['refit']:.4f} ({refit_seconds:.0f} s)" if refit else "")
                    print(f"{space}, {pruner}, seed {seed}: chosen val {result['val']:.4f} test {result['test']:.4f}"
                          f"{refitted}; {result['pruned']} of {result['trials']} pruned, {result['epochs']} epochs, "
                          f"{seconds:.0f} s", flush=True)
    print(f"\nTPE, {trials} trials of {epochs} epoch{'s' * (epochs != 1)}, --jobs {jobs}; "
          f"medians over {seeds} seed{'s' * (seeds != 1)}:")
    print(table(results, refit))


def table(results: dict[tuple[str, str], list[dict]], refit: bool) -> str:
    """One row per space and pruner: medians of the test accuracies, pruned trials, epochs and seconds."""
    def median(rows: list[dict], key: str) -> float:
        return statistics.median(row[key] for row in rows)

    head = ["space", "pruner", "chosen test", *(["refit test"] if refit else []), "pruned", "epochs", "sweep s",
            *(["refit s"] if refit else [])]
    body = [[space, pruner, f"{median(rows, 'test'):.4f}", *([f"{median(rows, 'refit'):.4f}"] if refit else []),
             f"{median(rows, 'pruned'):g}", f"{median(rows, 'epochs'):g}", f"{median(rows, 'seconds'):.0f}",
             *([f"{median(rows, 'refit_seconds'):.0f}"] if refit else [])]
            for (space, pruner), rows in results.items()]
    widths = [max(len(row[i]) for row in [head, *body]) for i in range(len(head))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in [head, *body])


@click.command()
@click.option("--part", type=click.Choice(["speed", "quality"]), default="speed", show_default=True)
@click.option("--rounds", type=click.IntRange(min=1), default=2, show_default=True, help="speed: rounds.")
@click.option("--seeds", type=click.IntRange(min=1), default=2, show_default=True, help="quality: seeds.")
@click.option("--trials", type=click.IntRange(min=1), default=16, show_default=True, help="quality: TPE trials.")
@click.option("--epochs", type=click.IntRange(min=1), default=10, show_default=True, help="quality: epochs a trial.")
@click.option("--jobs", type=click.IntRange(min=1), default=2, show_default=True, help="quality: workers.")
@click.option("--refit/--no-refit", default=True, show_default=True, help="quality: refit each sweep's choice too.")
@click.option("--space", "spaces", type=click.Choice(sorted(SPACES)), multiple=True,
              help="quality: only these search spaces (default: all three).")
@click.option("--data-dir", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Fashion-MNIST's folder; default: where trainviz finds it.")
def main(part: str, rounds: int, seeds: int, trials: int, epochs: int, jobs: int, refit: bool,
         spaces: tuple[str, ...], data_dir: Path | None) -> None:
    if part == "speed":
        speed(rounds)
    else:
        quality(seeds, trials, epochs, jobs, refit, spaces or tuple(SPACES), data_dir)


if __name__ == "__main__":
    main()
