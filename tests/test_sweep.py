"""Sweeps: the search space, the study, workers that share it, Ctrl-C and continue, the runs table."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.conftest import write_idx_dir
from tests.test_bad_input import assert_one_line_error
from trainers.cli import cli
from trainers.runs.table import find_runs, summary

ROOT = Path(__file__).resolve().parent.parent
# Small and quick: 600 training images of which 100 validate, batches of 32.
FAST = ["--val-size", "100", "--batch-size", "32", "--no-viz"]


def sweep_args(idx_dir: Path, out: Path, *args: str) -> list[str]:
    return ["sweep", "mlp", "--data-dir", str(idx_dir), "--out", str(out), *FAST, *args]


def study_trials(out: Path):
    """The one study under ``out``, read straight from its journal file: its trials."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    (journal,) = out.glob("*/journal.log")
    storage = JournalStorage(JournalFileBackend(str(journal)))
    (study,) = optuna.get_all_study_summaries(storage)
    return optuna.load_study(study_name=study.study_name, storage=storage).get_trials()


def trial_folders(out: Path) -> list[dict]:
    """config.json and status.json of every trial folder under ``out``."""
    return [{"config": run.read_config(), "status": run.read_status()["status"], "run": run}
            for run in find_runs(out)]


# ---------------------------------------------------------------- the search space


def parse(*specs: str):
    from trainers.catalog import TRAINERS
    from trainers.sweeps.space import parse_params

    command = cli.commands["sweep"].commands["mlp"]
    ctx = command.make_context("mlp", ["--param", "lr=1"])
    return parse_params(specs, TRAINERS["mlp"].config, command, ctx)


def test_specs_parse_into_choices_and_ranges():
    from trainers.sweeps.space import grid_points, is_grid

    lr, hidden, batch, dropout = parse("lr=0.01..0.3:log", "hidden=100|200,200", "batch-size=16..256:int",
                                       "dropout=0..0.5")
    assert (lr.low, lr.high, lr.log, lr.integer) == (0.01, 0.3, True, False)
    assert hidden.choices == ("100", "200,200") and hidden.option == "--hidden"
    assert (batch.field, batch.low, batch.high, batch.integer) == ("batch_size", 16, 256, True)
    assert (dropout.low, dropout.high, dropout.log) == (0, 0.5, False)
    assert not is_grid([lr, hidden])
    assert grid_points(parse("lr=0.1|0.2", "activation=relu|leaky-relu")) == [
        {"lr": "0.1", "activation": "relu"}, {"lr": "0.1", "activation": "leaky-relu"},
        {"lr": "0.2", "activation": "relu"}, {"lr": "0.2", "activation": "leaky-relu"}]


def test_a_sampled_value_becomes_what_the_option_gives():
    from trainers.sweeps.space import convert

    command = cli.commands["sweep"].commands["mlp"]
    ctx = command.make_context("mlp", ["--param", "lr=1"])
    (hidden,) = parse("hidden=100|200,200")
    (batch,) = parse("batch-size=16..256:int")
    assert convert(hidden, "200,200", command, ctx) == (200, 200)
    assert convert(batch, 64, command, ctx) == 64


def test_the_storage_password_is_masked():
    from trainers.sweeps.study import masked

    assert masked("postgresql://ann:s3cr:et@db.example/sweeps") == "postgresql://ann:***@db.example/sweeps"
    assert masked("runs/study/journal.log") == "runs/study/journal.log"


# ---------------------------------------------------------------- the chosen trial


def trials_of(*ended: tuple[str, float | None]):
    """An in-memory study's trials, numbered 0, 1, ... in order, each ended in (state, value)."""
    import optuna
    from optuna.trial import TrialState, create_trial

    study = optuna.create_study(direction="maximize")
    for state, value in ended:
        study.add_trial(create_trial(state=TrialState[state], value=value,
                                     intermediate_values={} if value is None else {1: value}))
    return study.get_trials()


def test_the_chosen_trial_has_the_best_validation_accuracy_of_the_finished_ones_the_earliest_of_equals():
    from trainers.sweeps.study import best_trial

    trials = trials_of(("COMPLETE", 0.81), ("PRUNED", 0.95), ("COMPLETE", 0.84), ("FAIL", None),
                       ("COMPLETE", 0.84), ("COMPLETE", 0.79))
    assert best_trial(trials).number == 2  # 0.95 was a pruned trial's last epoch, not a finished run
    assert best_trial(trials[::-1]).number == 2  # equals go to the lowest number, whatever the order
    assert best_trial(trials_of(("PRUNED", 0.9), ("FAIL", None))) is None


def test_a_claim_is_reaped_only_once_its_pid_is_written_and_that_process_is_gone(tmp_path):
    """Another worker's ``reap`` may look between ``take``'s writes: it must never rerun a live claim."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend
    from optuna.trial import TrialState

    from trainers.sweeps import optuna_internals as internals
    from trainers.sweeps.study import HOST, reap, take

    storage = JournalStorage(JournalFileBackend(str(tmp_path / "journal.log")))
    study = optuna.create_study(storage=storage, direction="maximize")
    study.enqueue_trial({})
    written = []
    original = storage.set_trial_user_attr

    def watch(trial_id, key, value):  # what a reaping worker would read after each write
        original(trial_id, key, value)
        written.append(dict(storage.get_trial(trial_id).user_attrs))

    storage.set_trial_user_attr = watch
    trial = take(study)
    assert all(attrs.get("host") != HOST or "pid" in attrs for attrs in written)  # never a host without its pid
    storage.set_trial_user_attr = original

    half = study.enqueue_trial({}) or study.get_trials()[1]  # a claim with its host and no pid yet
    storage.set_trial_state_values(internals.trial_id(half), state=TrialState.RUNNING)
    storage.set_trial_user_attr(internals.trial_id(half), "host", HOST)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    storage.set_trial_user_attr(internals.trial_id(trial), "pid", int(dead.stdout))
    reap(study)
    assert [t.state for t in study.get_trials()] == [TrialState.FAIL, TrialState.RUNNING, TrialState.WAITING]
    assert study.get_trials()[2].user_attrs["rerun_of"] == 0  # the dead one's point, queued again


def test_a_trial_tells_the_study_its_validation_accuracy_even_with_a_test_accuracy_at_hand(monkeypatch):
    import optuna

    from trainers.core import training as command
    from trainers.core.config import MLPConfig
    from trainers.sweeps.study import Sweep, run_trial

    monkeypatch.setattr(command, "train", lambda config, data, labels, hooks: {"val_acc": 0.7, "test_acc": 0.9})
    sweep = Sweep(trainer="mlp", config=MLPConfig(val_size=100).to_dict(), params=(), study="s", storage="",
                  sampler="random", trials=1, pruner="none", jobs=1, seed=0, heartbeat=10, space={})
    study = optuna.create_study(direction="maximize")
    assert run_trial(sweep, study, study.ask(), None, None, None) == "complete"
    assert [t.value for t in study.get_trials()] == [0.7]


# ---------------------------------------------------------------- pruning and sampling


def planned(monkeypatch, idx_dir: Path, tmp_path: Path, *args: str):
    """The Sweep that ``trainviz sweep mlp ARGS`` plans; nothing runs."""
    from trainers.sweeps import study as sweep

    plans = []
    monkeypatch.setattr(sweep, "run", plans.append)
    result = CliRunner().invoke(cli, sweep_args(idx_dir, tmp_path / "runs", *args))
    assert result.exit_code == 0, result.output
    return plans[0]


def judged(sweep, finished: int, curve: list[float], others: float = 0.85) -> list[bool]:
    """Whether ``sweep``'s pruner stops a trial with ``curve``, epoch by epoch, once ``finished``
    trials have ended with ``others`` at every epoch."""
    import optuna
    from optuna.trial import TrialState, create_trial

    from trainers.sweeps.study import make_pruner

    study = optuna.create_study(direction="maximize", pruner=make_pruner(sweep))
    for _ in range(finished):
        epochs = range(1, sweep.config["epochs"] + 1)
        study.add_trial(create_trial(state=TrialState.COMPLETE, value=others,
                                     intermediate_values={e: others for e in epochs}))
    trial = study.ask()
    verdicts = []
    for epoch, value in enumerate(curve, 1):
        trial.report(value, epoch)
        verdicts.append(trial.should_prune())
    return verdicts


def test_the_default_pruner_judges_from_half_the_epochs_once_a_quarter_of_the_trials_finished(
        idx_dir, tmp_path, monkeypatch):
    sweep = planned(monkeypatch, idx_dir, tmp_path, "--epochs", "10", "--trials", "16", "--param", "lr=0.01..0.3:log")
    assert sweep.pruner == "halfway" and sweep.space["pruner"] == "halfway"
    slow = [0.5] * 9  # far below the others at every epoch
    assert judged(sweep, 4, slow) == [False] * 4 + [True] * 5  # from epoch 5 of 10 on
    assert judged(sweep, 3, slow) == [False] * 9  # 3 finished of 16 are too few to judge by
    assert judged(sweep, 4, [0.5] * 4 + [0.9] * 5) == [False] * 9  # caught up by halfway: goes on

    early = planned(monkeypatch, idx_dir, tmp_path, "--epochs", "10", "--trials", "16", "--pruner", "median",
                    "--param", "lr=0.01..0.3:log")
    assert judged(early, 3, slow) == [False] + [True] * 8  # the earlier default: from epoch 2, after 3
    off = planned(monkeypatch, idx_dir, tmp_path, "--epochs", "10", "--trials", "16", "--no-prune",
                  "--param", "lr=0.01..0.3:log")
    assert off.pruner == "none" and judged(off, 8, slow) == [False] * 9


def test_a_grid_is_not_pruned_unless_asked(idx_dir, tmp_path, monkeypatch):
    grid = ["--epochs", "4", "--param", "lr=0.1|0.2"]
    assert planned(monkeypatch, idx_dir, tmp_path, *grid).pruner == "none"
    assert planned(monkeypatch, idx_dir, tmp_path, *grid, "--prune").pruner == "halfway"
    assert planned(monkeypatch, idx_dir, tmp_path, *grid, "--pruner", "median").pruner == "median"


def test_tpe_models_the_space_after_a_fifth_of_the_trials():
    """Optuna's default, 10 random trials, would leave 6 of a 16-trial study to the model."""
    import optuna

    from trainers.sweeps.study import Sweep, make_sampler, startup_trials

    assert [startup_trials(n) for n in (8, 16, 20, 50, 200)] == [4, 4, 4, 10, 10]

    def drawn(sampler) -> list[float]:
        study = optuna.create_study(direction="maximize", sampler=sampler)
        study.optimize(lambda t: -(t.suggest_float("x", 0, 1) - 0.3) ** 2, n_trials=6)
        return [t.params["x"] for t in study.get_trials()]

    sweep = Sweep(trainer="mlp", config={}, params=(), study="s", storage="", sampler="tpe", trials=16,
                  pruner="halfway", jobs=1, seed=0, heartbeat=10, space={})
    tpe, random = drawn(make_sampler(sweep, 7)), drawn(optuna.samplers.RandomSampler(seed=7))
    assert tpe[:4] == random[:4] and tpe[4:] != random[4:]  # random for 4 trials, then the model's


# ---------------------------------------------------------------- the refit


def printed(output: str, start: str) -> str:
    """The rest of the one output line that begins with ``start``."""
    (line,) = [line for line in output.splitlines() if line.startswith(start)]
    return line[len(start):]


def with_error(record: dict) -> str:
    """A test accuracy as the summary prints it: with sqrt(p (1 - p) / n), n its test images."""
    p = record["test_acc"]
    return f"{p:.4f} ± {math.sqrt(p * (1 - p) / record['test_images']):.4f}"


def trainings(monkeypatch) -> list:
    """The configs ``trainers.core.training.train`` is called with in this process (a sweep's trials run in workers)."""
    from trainers.core import training as command

    trained = []
    real_train = command.train
    monkeypatch.setattr(command, "train", lambda config, *args, **kwargs: trained.append(config) or
                        real_train(config, *args, **kwargs))
    return trained


def test_test_accuracies_come_with_their_binomial_standard_error():
    from trainers.sweeps.study import accuracy_text, error_note, standard_error

    assert standard_error(0.89, 10_000) == pytest.approx(0.0031289)  # a third of a point
    assert standard_error(0.5, 100) == pytest.approx(0.05)
    assert standard_error(1.0, 200) == 0
    assert accuracy_text({"test_acc": 0.89, "test_images": 10_000}) == "0.8900 ± 0.0031"
    assert error_note({"test_acc": 0.89, "test_images": 10_000}) == "± one standard error over 10,000 test images"
    for count in (None, "10000", True, 0, -5):  # a record from before the count, or a damaged one: no ±
        record = {"test_acc": 0.89} if count is None else {"test_acc": 0.89, "test_images": count}
        assert (accuracy_text(record), error_note(record)) == ("0.8900", "")


def test_refit_trains_the_chosen_settings_on_training_and_validation_images_and_reproduces(
        idx_dir, tmp_path, monkeypatch):
    from trainers.core.run import RunDir

    trained = trainings(monkeypatch)
    out = tmp_path / "runs"
    args = sweep_args(idx_dir, out, "--epochs", "2", "--param", "lr=0.05|0.2", "--refit")
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    best = max(study_trials(out), key=lambda t: (t.value, -t.number))
    (config,) = trained  # the refit, in this process, through train (the trials ran in a worker)
    assert (config.val_size, config.test, config.epochs, config.lr) == (0, True, 2, float(best.params["lr"]))

    (study,) = [path for path in out.iterdir() if path.is_dir()]
    refit = RunDir(study / f"refit-{best.number:03d}")
    assert refit.read_status()["status"] == "finished"
    assert refit.read_config()["refit_of"] == best.number and refit.read_config()["val_size"] == 0
    epochs = [r for r in refit.read_metrics() if r["kind"] == "epoch"]
    assert [r["step"] for r in epochs] == [19, 38]  # 600 images an epoch in batches of 32; the trials had 500
    (tested,) = [r for r in refit.read_metrics() if r["kind"] == "test"]
    (chosen,) = [r for r in RunDir(Path(best.user_attrs["run_dir"])).read_metrics() if r["kind"] == "test"]
    assert tested["test_images"] == chosen["test_images"] == 200
    assert printed(result.output, f"test accuracy of trial {best.number}: ") == (
        f"{with_error(chosen)} (± one standard error over 200 test images; the test set was used for this trial only)")
    assert printed(result.output, f"test accuracy of {refit.name}: ") == (
        f"{with_error(tested)} beside trial {best.number}'s {with_error(chosen)} (± one standard error over 200 test "
        "images)")

    # the command printed for it trains the same model
    reproduce = printed(result.output, f"reproduce {refit.name}: ").split()
    assert reproduce[:2] == ["trainviz", "mlp"] and "--val-size" not in reproduce
    again = CliRunner().invoke(cli, [*reproduce[1:], "--data-dir", str(idx_dir), "--out", str(tmp_path / "again"),
                                     "--no-viz"])
    assert again.exit_code == 0, again.output
    (copy,) = find_runs(tmp_path / "again")
    assert [r for r in copy.read_metrics() if r["kind"] == "epoch"][-1]["test_loss"] == epochs[-1]["test_loss"]

    # the same command again reports the refit it has, without training it again
    trained.clear()
    rerun = CliRunner().invoke(cli, args)
    assert rerun.exit_code == 0, rerun.output
    assert trained == [] and printed(rerun.output, f"test accuracy of {refit.name}: ") == \
        printed(result.output, f"test accuracy of {refit.name}: ")


def test_a_refit_stopped_midway_continues_from_its_checkpoint_with_the_same_command(idx_dir, tmp_path, monkeypatch):
    from trainers.core.run import RunDir
    from trainers.sweeps import study as sweep

    trained = trainings(monkeypatch)
    stops = [signal.SIGTERM]  # once, as the refit's first epoch ends: it stops early in the second
    monkeypatch.setattr(sweep.FolderHook, "epoch", lambda self, record: stops and os.kill(os.getpid(), stops.pop()))
    args = sweep_args(idx_dir, tmp_path / "runs", "--epochs", "2", "--param", "lr=0.1", "--refit")
    stopped = CliRunner().invoke(cli, args)
    assert stopped.exit_code == 143, stopped.output  # 128 + SIGTERM, as for any run stopped by it
    (refit,) = [RunDir(path) for path in (tmp_path / "runs").glob("*/refit-000")]
    assert refit.read_status()["status"] == "stopped" and refit.checkpoint_file.is_file()

    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 0, again.output
    assert [config.resume for config in trained] == [None, refit.path]
    assert refit.read_status()["status"] == "finished"
    assert [r["epoch"] for r in refit.read_metrics() if r["kind"] == "epoch"] == [1, 2]  # each once
    assert f"test accuracy of {refit.name}: " in again.output


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("args, words", [
    (["--param", "foo=1"], ["foo", "searchable"]),
    (["--param", "lr"], ["NAME=SPEC"]),
    (["--param", "lr=0.1.."], ["--lr"]),
    (["--param", "lr=0.3..0.1"], ["low to high"]),
    (["--param", "lr=0..0.1:log"], ["--lr", "0"]),
    (["--param", "lr=0|0.1"], ["--lr", "0"]),
    (["--param", "hidden=1..3"], ["--hidden", "choices"]),
    (["--param", "lr=0.5..1.5:int"], ["whole-number"]),
    (["--param", "lr=0.1|0.1"], ["distinct"]),
    (["--param", "val-size=1|2"], ["val-size", "searchable"]),
    (["--param", "fork=runs/a|runs/b"], ["fork", "searchable"]),  # where a run starts, not what it learns
    (["--param", "keep-checkpoints=true|false"], ["keep-checkpoints", "searchable"]),
    (["--param", "lr=0.01..0.1"], ["--trials"]),
    (["--param", "lr=0.1|0.2", "--trials", "5"], ["grid has 2 points"]),
    (["--param", "lr=0.1|0.2", "--sampler", "grid", "--param", "momentum=0..0.9", "--trials", "3"], ["grid"]),
    (["--param", "lr=0.1|0.2", "--storage", "sqlite:///s.db", "--jobs", "2"], ["sqlite", "--jobs 1"]),
    (["--param", "lr=0.1|0.2", "--storage", "postgresql://ann:topsecret@127.0.0.1:1/sweeps"], ["cannot open"]),
    (["--param", "lr=0.1|0.2", "--val-size", "0"], ["--val-size"]),
    (["--param", "lr=0.01..0.1", "--trials", "4", "--no-prune", "--pruner", "median"], ["--no-prune", "disagree"]),
    (["--param", "lr=0.01..0.1", "--trials", "4", "--prune", "--pruner", "none"], ["--prune", "disagree"]),
    (["--param", "lr=0.01..0.1", "--trials", "4", "--pruner", "early"], ["--pruner", "early"]),
    (["--param", "lr=0.1|0.2", "--resume", "runs/x"], ["--resume"]),
    (["--param", "lr=0.1|0.2", "--test"], ["--test"]),
    (["--param", "lr=0.01..inf:log", "--trials", "1"], ["--lr", "not a finite number"]),
    (["--param", "lr=nan|0.1"], ["--lr", "not a finite number"]),
    (["--param", "hidden=100000000|10"], ["--hidden", "wider than 1,000,000"]),
    (["--param", "lr=0.1..0.2:LOG", "--trials", "2"], ["a range ends in :log or :int", ":LOG"]),
    (["--param", "batch-size=16..64", "--trials", "2"], ["--batch-size takes whole numbers", "16..64:int"]),
    (["--param", "seed=1|99999999999999999999999"], ["--seed", "64 bits"]),  # its range, not only its type
    (["--param", "lr=0.01..0.1", "--trials", "20000"], ["--trials 20,000", "10,000 trials"]),
    (["--param", "lr=0.1|0.2", "--storage", "/dev/null"], ["--storage /dev/null", "not a regular file"]),
], ids=lambda v: " ".join(v) if isinstance(v, list) and v and v[0].startswith("--") else None)
def test_bad_sweeps_exit_2_with_one_line_and_start_nothing(args, words, idx_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "runs"
    result = CliRunner().invoke(cli, [*sweep_args(idx_dir, out), *args])
    assert_one_line_error(result, *words)
    assert "topsecret" not in result.output
    assert not list(out.glob("*/trial-*"))


def test_a_range_may_start_at_a_decimal_point():
    from trainers.catalog import TRAINERS
    from trainers.sweeps.space import parse_params

    ctx = cli.commands["sweep"].commands["mlp"].make_context("mlp", ["--param", "lr=.001..0.1"])
    (param,) = parse_params(ctx.params["specs"], TRAINERS["mlp"].config, ctx.command, ctx)
    assert (param.low, param.high, param.log) == (0.001, 0.1, False)


def test_a_file_of_ones_own_is_never_taken_for_a_journal(idx_dir, tmp_path):
    notes = tmp_path / "notes.json"
    notes.write_text('{"a": 1}')  # one line, no newline: not a half-written Optuna operation
    result = CliRunner().invoke(cli, [*sweep_args(idx_dir, tmp_path / "runs"), "--param", "lr=0.1|0.2",
                                      "--storage", str(notes)])
    assert_one_line_error(result, f"--storage {notes} is not an Optuna journal")
    assert notes.read_text() == '{"a": 1}' and not list(tmp_path.glob("notes.json?*"))  # untouched, nothing cut


def sweep_plan(idx_dir: Path, out: Path, *args: str):
    """The Sweep that ``trainviz sweep mlp ARGS`` would run, and the module that runs it."""
    from trainers.catalog import TRAINERS
    from trainers.sweeps import study as sweep
    from trainers.sweeps.space import parse_params

    ctx = cli.commands["sweep"].commands["mlp"].make_context("mlp", sweep_args(idx_dir, out, *args)[2:])
    searched = ("specs", "sampler", "trials", "prune", "pruner", "refit", "study", "storage", "jobs", "heartbeat")
    options = {k: v for k, v in ctx.params.items() if k not in searched}
    params = parse_params(ctx.params["specs"], TRAINERS["mlp"].config, ctx.command, ctx)
    config = TRAINERS["mlp"].config(trainer="mlp", **{**options, "test": False}).to_dict()
    return sweep.plan("mlp", config, params, study=ctx.params["study"], storage=None, sampler=None,
                      trials=ctx.params["trials"], prune=None, jobs=1, heartbeat=10), sweep


def test_ctrl_c_while_a_study_is_queued_waits_until_it_is_whole(idx_dir, tmp_path, monkeypatch):
    import optuna

    plan, sweep = sweep_plan(idx_dir, tmp_path / "runs", "--param", "lr=0.01..0.1", "--trials", "20",
                             "--study", "held")
    queued = optuna.Study.enqueue_trial

    def enqueue_and_interrupt(study, *args, **kwargs):
        queued(study, *args, **kwargs)
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C after each trial queued

    monkeypatch.setattr(optuna.Study, "enqueue_trial", enqueue_and_interrupt)
    storage = sweep.open_storage(plan)
    with pytest.raises(KeyboardInterrupt):
        sweep.open_study(plan, storage)
    monkeypatch.undo()
    study = optuna.load_study(study_name="held", storage=storage)
    assert len(study.get_trials()) == 20 and study.user_attrs["trainviz"] == plan.space  # whole: it continues


def test_a_study_whose_maker_died_while_queueing_is_refused_in_one_line(idx_dir, tmp_path):
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    from trainers.sweeps.study import HOST

    journal = tmp_path / "journal.log"
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a pid no process has now
    study = optuna.create_study(study_name="half", storage=JournalStorage(JournalFileBackend(str(journal))))
    study.set_user_attr("setting_up", {"host": HOST, "pid": gone.pid})
    study.enqueue_trial({})
    result = CliRunner().invoke(cli, [*sweep_args(idx_dir, tmp_path / "runs"), "--param", "lr=0.01..0.1",
                                      "--trials", "4", "--study", "half", "--storage", str(journal)])
    assert result.exit_code == 2, result.output
    assert result.stderr.strip().splitlines()[-1].startswith("Error: study half was left half made")


def test_a_studys_name_stays_what_it_was_so_the_same_command_continues_it():
    """The name is a hash of the space: a change to what a space holds would rename every stored study."""
    from trainers.catalog import TRAINERS
    from trainers.sweeps.space import default_study_name, space

    config = TRAINERS["mlp"].config(trainer="mlp", val_size=5000, test=False).to_dict()
    assert default_study_name(space("mlp", [], config, 16)) == "mlp-315e5e"  # as before --standardize existed
    standardized = TRAINERS["mlp"].config(trainer="mlp", val_size=5000, test=False, standardize=True).to_dict()
    assert default_study_name(space("mlp", [], standardized, 16)) == "mlp-75cb82"


def test_two_spaces_differ_in_the_options_that_differ_only():
    from trainers.sweeps.space import differences

    stored = {"trainer": "mlp", "params": {"lr": "0.1|0.2"}, "fixed": {"epochs": 3, "momentum": 0.9}, "trials": None}
    wanted = {**stored, "fixed": {"epochs": 5, "momentum": 0.9}, "trials": 8}
    assert differences(stored, wanted) == ["--epochs", "--trials"]
    assert differences(stored, {**stored, "params": {"lr": "0.1|0.3"}}) == ["--param lr"]


def test_a_study_name_reused_with_another_space_is_refused(idx_dir, tmp_path):
    out = tmp_path / "runs"
    first = CliRunner().invoke(cli, sweep_args(idx_dir, out, "--epochs", "1", "--param", "lr=0.1", "--study", "s"))
    assert first.exit_code == 0, first.output
    again = CliRunner().invoke(cli, sweep_args(idx_dir, out, "--epochs", "1", "--param", "lr=0.2", "--study", "s"))
    assert_one_line_error(again, "study s exists with a different search space", "--param lr")
    assert len(study_trials(out)) == 1


# ---------------------------------------------------------------- sweeps that run


@pytest.mark.slow
def test_a_grid_with_two_workers_runs_every_point_once(idx_dir, tmp_path):
    out = tmp_path / "runs"
    result = CliRunner().invoke(cli, sweep_args(idx_dir, out, "--epochs", "1", "--jobs", "2",
                                                "--param", "lr=0.05|0.1|0.2", "--param", "hidden=16|32"))
    assert result.exit_code == 0, result.output
    grid = {(lr, hidden) for lr in ("0.05", "0.1", "0.2") for hidden in ("16", "32")}

    trials = study_trials(out)
    assert [t.state.name for t in trials] == ["COMPLETE"] * 6
    assert {(t.params["lr"], t.params["hidden"]) for t in trials} == grid
    folders = trial_folders(out)
    assert len(folders) == 6 and {f["status"] for f in folders} == {"finished"}
    assert {(f["config"]["params"]["lr"], f["config"]["params"]["hidden"]) for f in folders} == grid
    assert {tuple(f["config"]["hidden"]) for f in folders} == {(16,), (32,)}
    assert all(f["config"]["val_size"] == 100 and f["config"]["test"] is False for f in folders)

    # the chosen trial is the best on validation; only it was evaluated on the test set
    best = max(trials, key=lambda t: (t.value, -t.number))
    assert f"chosen: trial {best.number} " in result.output
    tested = [f for f in folders if any(r.get("kind") == "test" for r in f["run"].read_metrics())]
    assert [f["config"]["trial"] for f in tested] == [best.number]
    assert f"reproduce trial {best.number}: trainviz mlp " in result.output and "--val-size 100" in result.output

    # trainviz runs lists them, best validation accuracy first
    table = CliRunner().invoke(cli, ["runs", str(out), "--sort", "val_acc", "--json"])
    assert table.exit_code == 0, table.output
    rows = json.loads(table.output)
    assert len(rows) == 6 and {r["status"] for r in rows} == {"finished"}
    assert [r["val_acc"] for r in rows] == sorted((r["val_acc"] for r in rows), reverse=True)
    assert rows[0]["val_acc"] == pytest.approx(best.value)
    text = CliRunner().invoke(cli, ["runs", str(out)])
    assert text.output.splitlines()[0].split()[:3] == ["run", "trainer", "status"]
    assert len(text.output.splitlines()) == 7


@pytest.mark.slow
def test_a_trial_far_below_the_median_is_pruned(idx_dir, tmp_path):
    out = tmp_path / "runs"
    result = CliRunner().invoke(cli, sweep_args(idx_dir, out, "--epochs", "3", "--prune",
                                                "--param", "lr=0.1|0.2|0.15|0.00001"))
    assert result.exit_code == 0, result.output
    states = {t.params["lr"]: t.state.name for t in study_trials(out)}
    assert states == {"0.1": "COMPLETE", "0.2": "COMPLETE", "0.15": "COMPLETE", "0.00001": "PRUNED"}
    (slow,) = [f for f in trial_folders(out) if f["config"]["params"]["lr"] == "0.00001"]
    assert slow["status"] == "pruned"
    assert summary(slow["run"], out)["epochs"] == 2  # judged from the second epoch on, never the last


@pytest.mark.slow
def test_ctrl_c_then_the_same_command_completes_the_study_without_repeats(tmp_path):
    # About 1,000 steps an epoch: once a trial's first epoch is on disk, Ctrl-C lands well inside it.
    idx = write_idx_dir(tmp_path / "idx", n_train=8300)
    out = tmp_path / "runs"
    args = [sys.executable, "-m", "trainers", *sweep_args(idx, out, "--epochs", "3", "--batch-size", "8",
                                                          "--jobs", "2", "--param", "lr=0.02|0.05|0.1")]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with open(tmp_path / "first.log", "w") as log:
        proc = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not any('"kind": "epoch"' in m.read_text() for m in out.glob("*/trial-*/metrics.jsonl")):
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "first.log").read_text()
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in the terminal does
        assert proc.wait(timeout=120) == 130, (tmp_path / "first.log").read_text()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    first = (tmp_path / "first.log").read_text()
    assert "Traceback" not in first and "run the same command to continue" in first, first
    stopped = [f for f in trial_folders(out) if f["status"] == "stopped"]
    assert stopped, first

    again = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    trials = study_trials(out)
    complete = sorted(t.params["lr"] for t in trials if t.state.name == "COMPLETE")
    assert complete == ["0.02", "0.05", "0.1"]  # every point, once
    assert not [t for t in trials if t.state.name in ("WAITING", "RUNNING")]
    folders = trial_folders(out)
    assert len(folders) == 3 and {f["status"] for f in folders} == {"finished"}
    for folder in folders:  # a stopped trial was continued in its own folder, each epoch recorded once
        epochs = [r["epoch"] for r in folder["run"].read_metrics() if r["kind"] == "epoch"]
        assert epochs == [1, 2, 3], folder["run"].path


@pytest.mark.slow
def test_trials_left_running_by_a_killed_sweep_run_again(tmp_path):
    """A SIGKILLed sweep leaves its trial 'running' in the journal; the next start fails it and reruns its point."""
    idx = write_idx_dir(tmp_path / "idx", n_train=8300)  # long epochs: the kill lands inside the first trial
    out = tmp_path / "runs"
    args = sweep_args(idx, out, "--epochs", "3", "--batch-size", "8", "--param", "lr=0.05|0.1")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "trainers", *args], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not any('"kind": "epoch"' in m.read_text() for m in out.glob("*/trial-*/metrics.jsonl")):
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the sweep and its worker, at once
        proc.wait()
    assert [t.state.name for t in study_trials(out)] == ["RUNNING", "WAITING"]
    (killed,) = trial_folders(out)
    assert killed["status"] == "running"

    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 0, again.output
    trials = study_trials(out)
    assert sorted(t.params["lr"] for t in trials if t.state.name == "COMPLETE") == ["0.05", "0.1"]
    assert [t.state.name for t in trials].count("FAIL") == 1
    assert killed["run"].read_status()["status"] == "failed"
    assert {f["status"] for f in trial_folders(out)} == {"failed", "finished"}


def test_the_parsed_search_space_is_printed_before_anything_starts(idx_dir, tmp_path, monkeypatch):
    """A SPEC cut short by the shell (`dropout=0|0.2` unquoted) shows as one choice at once."""
    from trainers.core.errors import UserError
    from trainers.sweeps import study as sweep

    def refuse(_):
        raise UserError("storage refused by the test")

    monkeypatch.setattr(sweep, "open_storage", refuse)
    result = CliRunner().invoke(cli, ["sweep", "mlp", "--data-dir", str(idx_dir), "--out", str(tmp_path / "out"),
                                      "--param", "dropout=0", "--param", "lr=0.01..0.3:log",
                                      "--param", "hidden=100|200,200", "--param", "batch-size=16..64:int", "--trials", "4",
                                      "--jobs", "8"])  # more workers than trials: said after the space
    assert result.exit_code == 2 and "--jobs 8 is more than the 4 trials" in result.output
    assert result.output.splitlines()[0] == ("search space: --dropout 0 (1 choice); --lr 0.01..0.3 (log scale); "
                                             "--hidden 100 | 200,200 (2 choices); --batch-size 16..64 (integers)")
    assert not (tmp_path / "out").exists()


def test_sweep_help_shows_the_defaults_a_sweep_uses():
    text = " ".join(CliRunner().invoke(cli, ["sweep", "mlp", "--help"], terminal_width=200).output.split())
    assert "[default: no-test]" in text and "[default: test]" not in text
    assert "Training images held out as a validation set (a fixed split; 0: none). [default: 5000;" in text
    assert "'hidden=100|200,200'" in text
    assert "--pruner [halfway|median|none]" in text and "(default for random and tpe)" in text
