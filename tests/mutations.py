"""Mutation testing: would the fast tests notice the bugs a careless edit makes?

Each mutation below is one small, realistic bug (an off-by-one, a dropped ``.detach()``,
``<`` for ``<=``, an inverted condition), written as exact source snippets and their
replacements in one file. The tool copies the repository (the files git tracks or would
track: no .venv, runs, data or caches) to a temporary folder, checks that Python started
there imports the copy and that the copy passes the chosen tests, then applies each
mutation in turn, runs that mutation's fast tests (``-m 'not slow'``) in the copy and
puts the file back. A mutation the tests fail on is killed; one they pass survives.

PYTHONPATH points at the copy, so the subprocesses tests start (``python -m trainers``)
import the mutated code too. A snippet that is not in its file exactly once is an error,
reported as such: a mutation list that drifted from the code must not pass quietly.

Run from the repository root::

    .venv/bin/python tests/mutations.py                # every mutation, then the score
    .venv/bin/python tests/mutations.py --list         # what each mutation does
    .venv/bin/python tests/mutations.py --only gate-127-prefix --only runs-dead-shown-running

Not a test module (pytest collects ``test_*.py`` only): it runs pytest itself.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 600  # seconds one mutation's tests may take; a mutation that hangs them is killed
TARGET = 95.0  # percent of mutations the fast tests must kill


@dataclass(frozen=True)
class Mutation:
    """One bug: exact snippets of ``path`` and what each becomes, and the fast tests that should catch it."""

    name: str
    path: str  # relative to the repository root
    edits: tuple[tuple[str, str], ...]  # (snippet, replacement); each snippet occurs exactly once
    tests: tuple[str, ...]  # pytest paths or node ids, run with -m 'not slow'
    bug: str  # what a user would meet


def nodes(path: str, *tests: str) -> tuple[str, ...]:
    """Pytest node ids of the named tests in ``path``."""
    return tuple(f"{path}::{test}" for test in tests)


DEFINITIONS = "tests/test_definitions.py"
STEERING = "tests/test_steering.py"
(RESUME,) = nodes("tests/test_reliability.py",
                  "test_a_run_stopped_and_resumed_in_process_matches_an_uninterrupted_one_bit_for_bit")
(SGD_STEPS,) = nodes("tests/test_knobs.py", "test_hand_written_sgd_takes_the_steps_torch_optim_takes")
(SCHEDULES,) = nodes("tests/test_knobs.py",
                     "test_cosine_falls_to_zero_over_the_run_and_step_decays_at_half_and_three_quarters")
(SPLIT,) = nodes("tests/test_knobs.py", "test_the_validation_split_is_fixed_disjoint_and_leaves_test_alone")
DECIMATION = nodes("tests/test_economy.py", "test_decimation_keeps_the_ends_and_every_buckets_extremes",
                   "test_a_short_curve_is_not_decimated", "test_traces_on_the_server_stay_bounded")
BUDGET = nodes("tests/test_economy.py",
               "test_the_first_refresh_waits_for_its_prior_cost_then_each_next_for_the_last_cost",
               "test_time_spent_in_the_background_counts_towards_the_cost", "test_a_cheap_refresh_is_due_again_soon")
GATE = nodes("tests/test_gate.py", "test_host_name_drops_the_port_and_brackets", "test_loopback_names_and_addresses",
             "test_gate_rules", "test_names_that_only_look_like_allowed_ones_are_refused")
CHOICE = nodes("tests/test_sweep.py",
               "test_the_chosen_trial_has_the_best_validation_accuracy_of_the_finished_ones_the_earliest_of_equals",
               "test_a_trial_tells_the_study_its_validation_accuracy_even_with_a_test_accuracy_at_hand")

MUTATIONS = (
    # --- the loop (trainers/core/loop.py)
    Mutation("loop-train-loss-batch-means", "trainers/core/loop.py",
             (("loss_sum.add_(loss, alpha=len(labels))", "loss_sum.add_(loss)"),
              ("train_loss = loss_sum.item() / len(data.train)", "train_loss = loss_sum.item() / n_batches")),
             (DEFINITIONS,), "train_loss averages batch means: a smaller last batch counts as much as a full one"),
    Mutation("loop-train-acc-inverted", "trainers/core/loop.py",
             (("(logits.argmax(dim=1) == labels).sum()", "(logits.argmax(dim=1) != labels).sum()"),),
             (DEFINITIONS,), "train_acc counts the mistakes"),
    Mutation("loop-step-loss-attached", "trainers/core/loop.py",
             (("                loss = loss.detach()\n", ""),),
             (DEFINITIONS,), "queued step losses keep their autograd graphs alive until read back"),
    Mutation("loop-evaluate-batch-means", "trainers/core/loop.py",
             (("loss_sum += parts.loss(logits, labels) * len(labels)", "loss_sum += parts.loss(logits, labels)"),
              ("Evaluation(loss_sum.item() / len(split),", "Evaluation(loss_sum.item() / len(confidence),")),
             (DEFINITIONS,), "evaluate averages batch means: a smaller last batch counts as much as a full one"),
    Mutation("loop-evaluate-in-train-mode", "trainers/core/loop.py",
             (("    parts.model.eval()\n    loss_sum", "    loss_sum"),),
             (DEFINITIONS,), "evaluation runs with dropout on"),
    Mutation("loop-schedule-off-by-one", "trainers/core/loop.py",
             (('rate = schedule(progress.step)', 'rate = schedule(progress.step + 1)'),),
             ("tests/test_knobs.py::test_a_run_with_a_validation_split_and_no_test_records_only_validation",),
             "each step uses the next step's learning rate"),
    Mutation("loop-last-points-not-flushed", "trainers/core/loop.py",
             (("(len(pending) >= SYNC_EVERY or i == n_batches or stop)", "(len(pending) >= SYNC_EVERY or stop)"),),
             (DEFINITIONS, "tests/test_cli.py::test_each_trainer_learns_and_leaves_a_complete_run_dir"),
             "step losses still queued when an epoch ends are never reported"),
    Mutation("loop-resume-order-not-replayed", "trainers/core/loop.py",
             (("        if progress.batch:\n            generator.set_state(progress.order_state)\n        else:\n"
               "            progress.order_state = generator.get_state()\n",
               "        progress.order_state = generator.get_state()\n"),),
             (RESUME,), "a resumed epoch draws a new shuffling order instead of finishing the one it began"),
    Mutation("loop-resume-batches-not-skipped", "trainers/core/loop.py",
             (("skip=progress.batch)", "skip=0)"),),
             (RESUME,), "a resumed epoch trains again on the batches it had done before the stop"),
    Mutation("loop-position-kept-after-epoch", "trainers/core/loop.py",
             (("progress.epoch, progress.batch, progress.loss_sum, progress.correct = epoch, 0, 0.0, 0",
               "progress.epoch, progress.loss_sum, progress.correct = epoch, 0.0, 0"),),
             (RESUME,), "the epoch after a resumed one replays the old order and skips its first batches"),
    # --- the hand-written SGD (trainers/models/scratch_softmax.py)
    Mutation("sgd-momentum-after-gradient", "trainers/models/scratch_softmax.py",
             (('g = velocity.mul_(group["momentum"]).add_(g)', 'g = velocity.add_(g).mul_(group["momentum"])'),),
             (SGD_STEPS,), "momentum also scales the current gradient: not torch.optim.SGD's step"),
    Mutation("sgd-velocity-not-restored", "trainers/models/scratch_softmax.py",
             (('        for velocity, saved in zip(self.velocity, state["velocity"]):\n'
               "            velocity.copy_(saved)\n", ""),),
             ("tests/test_knobs.py::test_hand_written_sgd_state_round_trips", RESUME),
             "a resumed scratch-softmax run loses its momentum"),
    # --- the schedule (trainers/core/schedule.py)
    Mutation("schedule-cosine-ends-an-epoch-early", "trainers/core/schedule.py",
             (("total = self.epochs * self.steps_per_epoch", "total = (self.epochs - 1) * self.steps_per_epoch"),),
             (SCHEDULES,), "the cosine rate reaches 0 an epoch before the run ends"),
    Mutation("schedule-step-decays-an-epoch-late", "trainers/core/schedule.py",
             (("epoch >= math.ceil(share * self.epochs)", "epoch > math.ceil(share * self.epochs)"),),
             (SCHEDULES,), "the step schedule decays an epoch later than documented"),
    # --- the data split and batching (trainers/core/data.py)
    Mutation("data-last-batch-dropped", "trainers/core/data.py",
             (("        for start in range(skip * batch_size, n, batch_size):\n            index = order",
               "        for start in range(skip * batch_size, n - batch_size + 1, batch_size):\n"
               "            index = order"),),
             ("tests/test_data.py::test_batches_cover_the_split_once_in_a_seeded_order", DEFINITIONS),
             "the smaller last batch of an epoch is never trained on"),
    Mutation("data-validation-follows-the-global-seed", "trainers/core/data.py",
             (("order = torch.randperm(n, generator=torch.Generator().manual_seed(VALIDATION_SEED))",
               "order = torch.randperm(n)"),),
             (SPLIT,), "each trial of a sweep validates on other images"),
    Mutation("data-validation-overlaps-training", "trainers/core/data.py",
             (("order[val_size:].sort().values", "order[val_size - 1:].sort().values"),),
             (SPLIT,), "one validation image is also trained on"),
    Mutation("data-subset-drops-standardizing", "trainers/core/data.py",
             (("        return dataclasses.replace(self, pixels=self.pixels.index_select(0, index),",
               "        return Split(pixels=self.pixels.index_select(0, index),"),),
             ("tests/test_data.py::test_standardized_batches_use_the_training_splits_mean_and_std_in_every_split",),
             "a run with a validation split trains on pixels in [0, 1] while asking for standardized ones"),
    Mutation("sweep-older-studies-renamed", "trainers/sweeps/space.py",
             (("and not (k in ADDED_LATER and v == ADDED_LATER[k])", ""),),
             ("tests/test_sweep.py::test_a_studys_name_stays_what_it_was_so_the_same_command_continues_it",),
             "the command of a study saved before --standardize existed starts a new study"),
    # --- resume (trainers/core/training.py)
    Mutation("resume-generator-state", "trainers/core/training.py",
             (('    generator.set_state(state["generator"])\n', ""),),
             (RESUME,), "a run resumed at an epoch boundary shuffles as a new run would"),
    Mutation("resume-rng-state", "trainers/core/training.py",
             (('    if "rng" in state:  # dropout\'s draws continue where they stopped\n'
               '        torch.set_rng_state(state["rng"])\n', ""),),
             (RESUME,), "a resumed run draws other dropout masks"),
    Mutation("resume-optimizer-state", "trainers/core/training.py",
             (('    parts.optimizer.load_state_dict(state["optimizer"])\n', ""),),
             (RESUME,), "a resumed run loses its momentum buffers"),
    # --- the renderer's decimation (viz/dashboard/economy.py, viz/dashboard/render.py)
    Mutation("decimate-drops-the-last-point", "viz/dashboard/economy.py",
             (("    keep.append(n - 1)\n", ""),),
             DECIMATION, "a long curve is drawn without its latest point"),
    Mutation("decimate-keeps-only-maxima", "viz/dashboard/economy.py",
             (("keep += sorted({start + int(segment.argmin()), start + int(segment.argmax())})",
               "keep.append(start + int(segment.argmax()))"),),
             DECIMATION, "dips in the loss vanish from a long curve"),
    Mutation("render-cap-checks-new-points-only", "viz/dashboard/render.py",
             (("if len(shown) > TRACE_CAP:", "if len(xy) > TRACE_CAP:"),),
             DECIMATION, "a trace grows without bound, and every redraw with it"),
    # --- the budget (viz/dashboard/economy.py)
    Mutation("budget-prior-ignored", "viz/dashboard/economy.py",
             (("self.seconds = prior  #", "self.seconds = 0.0  #"),),
             BUDGET, "the costly panes are refreshed at the first epoch of every run"),
    Mutation("budget-background-counted-whole", "viz/dashboard/economy.py",
             (("cost = self.seconds + self.background() - self.background_mark",
               "cost = self.seconds + self.background()"),),
             BUDGET, "the sender's time since the start counts against every refresh: panes stop refreshing"),
    # --- the gate (viz/server/visdom_server.py)
    Mutation("gate-127-prefix", "viz/server/visdom_server.py",
             (("    if name in LOOPBACK_NAMES:", '    if name in LOOPBACK_NAMES or name.startswith("127."):'),),
             GATE, "Host: 127.evil.example passes the gate (DNS rebinding)"),
    Mutation("gate-allowed-suffix", "viz/server/visdom_server.py",
             (("is_loopback(name) or name in self.allowed_hosts",
               "is_loopback(name) or any(name.endswith(allowed) for allowed in self.allowed_hosts)"),),
             GATE, "--allow-host dashboard.lan lets evildashboard.lan in"),
    Mutation("gate-origin-port-ignored", "viz/server/visdom_server.py",
             (("urllib.parse.urlsplit(origin).netloc.lower() != request.host.lower()",
               "urllib.parse.urlsplit(origin).hostname != host_name(request.host)"),),
             GATE, "a page served on another port of localhost may post into the dashboard"),
    # --- the sweep's choice (trainers/sweeps/study.py)
    Mutation("sweep-tie-goes-to-the-latest", "trainers/sweeps/study.py",
             (("key=lambda t: (t.value, -t.number)", "key=lambda t: (t.value, t.number)"),),
             CHOICE, "of equal trials the last, not the documented earliest, is chosen"),
    Mutation("sweep-pruned-trials-chosen", "trainers/sweeps/study.py",
             (("complete = [t for t in trials if t.state == TrialState.COMPLETE]",
               "complete = [t for t in trials if t.value is not None]"),),
             CHOICE, "a pruned trial's last epoch can win over finished runs"),
    Mutation("sweep-told-test-accuracy", "trainers/sweeps/study.py",
             (('study.tell(trial, record["val_acc"])',
               'study.tell(trial, record.get("test_acc", record["val_acc"]))'),),
             CHOICE, "trials are ranked on the test set"),
    # --- the runs table (trainers/runs/table.py)
    Mutation("runs-dead-shown-running", "trainers/runs/table.py",
             (("and not process_alive(status.get(\"pid\", 0))", "and process_alive(status.get(\"pid\", 0))"),),
             (DEFINITIONS,), "a killed run is listed as running, a live one as failed"),
    Mutation("runs-other-hosts-judged-here", "trainers/runs/table.py",
             (('if status.get("status") == "running" and status.get("host") == socket.gethostname() \\\n',
               'if status.get("status") == "running" \\\n'),),
             (DEFINITIONS,), "a run in progress on another machine is listed as failed"),
    Mutation("runs-best-val-is-the-last", "trainers/runs/table.py",
             (('"val_acc": max(val) if val else None', '"val_acc": val[-1] if val else None'),),
             (DEFINITIONS,), "the 'best val acc' column shows the last epoch's"),
    Mutation("runs-sort-reversed", "trainers/runs/table.py",
             (("reverse=column in DESCENDING", "reverse=column not in DESCENDING"),),
             (DEFINITIONS,), "--sort val_acc puts the worst run first"),
    # --- steering and forks (trainers/core/steering.py, controls.py, training.py)
    Mutation("steer-other-env-acts", "viz/dashboard/controls.py",
             (('event.get("eid") != env or ', ""),),
             (STEERING,), "a click on another run's pane steers this one"),
    Mutation("steer-change-not-checkpointed", "trainers/core/training.py",
             (('"steering": steering.changes,', '"steering": [],'),),
             (STEERING,), "a steered run, stopped and resumed, forgets its rate changes"),
    Mutation("steer-factor-from-step-zero", "trainers/core/steering.py",
             (("factor = rate / planned", "factor = rate / self.schedule(0)"),),
             (STEERING,), "a rate set on a cosine lands somewhere else than asked"),
    Mutation("steer-pause-counted", "trainers/core/loop.py",
             (('record["seconds"] = time.perf_counter() - started - paused()',
               'record["seconds"] = time.perf_counter() - started'),),
             (STEERING,), "an epoch's seconds include the time it sat paused"),
    Mutation("fork-history-one-step-short", "trainers/core/training.py",
             (('if record["step"] <= step])', 'if record["step"] < step])'),),
             (STEERING,), "a fork's metrics lose its parent's last epoch record"),
    Mutation("compare-fork-drawn-whole", "trainers/runs/table.py",
             (('record["epoch"] < start:', 'record["epoch"] < 0:'),),
             (STEERING,), "compare draws a fork's copied history over its parent's"),
)


class SnippetError(Exception):
    """A mutation's snippet is not in its file exactly once."""


def mutated(text: str, mutation: Mutation) -> str:
    """``text`` with the mutation's edits applied, or SnippetError."""
    for snippet, replacement in mutation.edits:
        count = text.count(snippet)
        if count != 1:
            raise SnippetError(f"snippet found {count} times in {mutation.path}: {snippet.strip()[:60]!r}")
        text = text.replace(snippet, replacement)
    return text


def copy_repo(dest: Path) -> None:
    """Copy the files git tracks or would track (so no .venv, runs, data or caches) into ``dest``."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=ROOT, capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():  # tracked files deleted in the working tree are listed too
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)


def environment(copy: Path) -> dict:
    """The environment tests run in: the copy first on the path, and no bytecode left behind.

    Without bytecode files, a mutation and its undoing, written within the same second at
    the same size, cannot be mistaken for each other by Python's cache check.
    """
    return {**os.environ, "PYTHONPATH": str(copy), "PYTHONDONTWRITEBYTECODE": "1"}


def check_imports(copy: Path, mutations: list[Mutation]) -> None:
    """Fail unless Python started elsewhere with this environment imports the mutated modules from the copy."""
    modules = sorted({m.path[:-3].replace("/", ".") for m in mutations})
    script = "import importlib, sys\nfor name in sys.argv[1:]:\n    print(importlib.import_module(name).__file__)"
    with tempfile.TemporaryDirectory() as elsewhere:
        found = subprocess.run([sys.executable, "-c", script, *modules], cwd=elsewhere, env=environment(copy),
                               capture_output=True, text=True)
    files = found.stdout.split()
    if found.returncode or len(files) != len(modules) or not all(Path(f).is_relative_to(copy) for f in files):
        sys.exit(f"the copy is not what gets imported:\n{found.stdout}{found.stderr}")


def run_tests(copy: Path, tests: list[str]) -> tuple[str, list[str], float]:
    """Run ``tests`` (fast ones only) in the copy: ("passed" | "failed" | "error" | "timeout", failing ids, seconds)."""
    command = [sys.executable, "-m", "pytest", "-q", "-m", "not slow", "-p", "no:cacheprovider", "-rfE", *tests]
    started = time.monotonic()
    try:
        done = subprocess.run(command, cwd=copy, env=environment(copy), capture_output=True, text=True,
                              timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        return "timeout", [], time.monotonic() - started
    seconds = time.monotonic() - started
    # "FAILED tests/x.py::test[id] - reason": ids may hold spaces, the reason follows " - ".
    failing = re.findall(r"^(?:FAILED|ERROR) (.+?)(?: - .*)?$", done.stdout, flags=re.MULTILINE)
    if done.returncode == 0:
        return "passed", [], seconds
    if done.returncode in (1, 2) and failing:  # 2: a test module failed to import (collection error)
        return "failed", failing, seconds
    return "error", [done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr[-300:]], seconds


def condensed(ids: list[str]) -> str:
    """Failing test ids, one entry per test function: ``file::test (3 cases)`` for parametrized ones."""
    counts: dict[str, int] = {}
    for test in ids:
        base = test.split("[", 1)[0]
        counts[base] = counts.get(base, 0) + 1
    return " ".join(base + (f" ({n} cases)" if n > 1 else "") for base, n in counts.items())


def main(argv: list[str] | None = None) -> int:
    """List the mutations, or run them and print the score; 0 when it meets TARGET with no errors."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--list", action="store_true", help="print the mutations and exit")
    parser.add_argument("--only", action="append", metavar="NAME", help="run only this mutation (repeatable)")
    parser.add_argument("--keep", action="store_true", help="keep the copy and print where it is")
    args = parser.parse_args(argv)

    by_name = {m.name: m for m in MUTATIONS}
    unknown = [name for name in args.only or [] if name not in by_name]
    if unknown:
        parser.error(f"no mutation named {', '.join(unknown)} (see --list)")
    chosen = [by_name[name] for name in args.only] if args.only else list(MUTATIONS)
    width = max(len(m.name) for m in chosen)
    if args.list:
        path_width = max(len(m.path) for m in chosen)
        for m in chosen:
            try:
                mutated((ROOT / m.path).read_text(), m)
                note = ""
            except SnippetError as err:
                note = f"  [ERROR: {err}]"
            print(f"{m.name:{width}}  {m.path:{path_width}}  {m.bug}{note}")
        return 0

    # A SIGTERM ends the run as Ctrl-C does: the running tests are killed and the copy removed.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    copy = Path(tempfile.mkdtemp(prefix="trainviz-mutations-")) / "repo"
    try:
        copy_repo(copy)
        check_imports(copy, chosen)
        tests = list(dict.fromkeys(t for m in chosen for t in m.tests))
        outcome, failing, seconds = run_tests(copy, tests)
        if outcome != "passed":
            print(f"the unmutated copy does not pass its tests ({outcome}): {condensed(failing)}")
            return 2
        print(f"unmutated copy in {copy.parent} passes its tests ({len(tests)} paths and ids, {seconds:.0f} s)",
              flush=True)
        killed = errors = 0
        for m in chosen:
            source = copy / m.path
            original = source.read_text()
            try:
                source.write_text(mutated(original, m))
            except SnippetError as err:
                errors += 1
                print(f"{'ERROR':8}  {m.name:{width}}  {err}", flush=True)
                continue
            try:
                outcome, failing, seconds = run_tests(copy, list(m.tests))
            finally:
                source.write_text(original)
            if outcome in ("failed", "timeout"):
                killed += 1
                caught = condensed(failing) if failing else f"tests ran past {TIMEOUT} s"
                print(f"{'killed':8}  {m.name:{width}}  {seconds:4.0f} s  by {caught}", flush=True)
            elif outcome == "passed":
                print(f"{'SURVIVED':8}  {m.name:{width}}  {seconds:4.0f} s  {m.bug}; ran {' '.join(m.tests)}",
                      flush=True)
            else:
                errors += 1
                print(f"{'ERROR':8}  {m.name:{width}}  {seconds:4.0f} s  {' '.join(failing)}", flush=True)
        score = 100 * killed / len(chosen)
        print(f"score: {killed}/{len(chosen)} mutations killed by fast tests ({score:.1f}%), {errors} errors"
              f" (target {TARGET:g}%)")
        return 0 if score >= TARGET and not errors else 1
    finally:
        if args.keep:
            print(f"copy kept in {copy}")
        else:
            shutil.rmtree(copy.parent, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
