"""Hyper-parameter sweeps on Optuna: one study, long-lived workers running its trials, one dashboard.

The study holds every trial to run, queued when it is created (``enqueue_trial``): the
grid's points, or ``--trials`` open slots that the sampler fills. A worker takes the next
queued trial and runs it through ``trainers.core.training.train``, the code path of
``trainviz TRAINER``, so a trial is an ordinary run folder. Workers stop when nothing is
queued and nothing runs anywhere, so every point runs exactly once however many workers
and machines share the study.

A trial that cannot finish goes back into the queue with the same settings:
- stopped by Ctrl-C: it is continued from its checkpoint when the sweep runs again;
- its worker died (SIGKILL, a machine gone): a worker on the same host sees the process
  is gone; with a database storage, the trial's heartbeat goes stale. It runs again from
  the start, and its folder says failed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import multiprocessing
import os
import re
import shlex
import signal
import socket
import sys
import threading
import time
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path

import click
import optuna
import sqlalchemy
from optuna.trial import FrozenTrial, TrialState
from tqdm import tqdm

from trainers.catalog import command_words, trainer_of
from trainers.core.errors import UserError
from trainers.core.run import Pruned, RunDir, RunHooks, process_alive
from trainers.runs.table import epoch_records, text_table
from trainers.sweeps import optuna_internals as internals
from trainers.sweeps.space import PLUMBING, PRUNERS, Param, convert, differences, grid_points
from viz.dashboard.sweep_board import SweepBoard, label, short
from viz.paths import available_memory, human_bytes

POLL = 1.0  # seconds between a waiting worker's (and the progress bar's) looks at the study
HEARTBEAT = 10  # default seconds between a running trial's heartbeats (database storages)
GRACE_BEATS = 3  # a trial whose heartbeat is this many intervals old is failed and run again
FIRST_JUDGED_EPOCH = 2  # --pruner median judges a trial from its second epoch on (epochs count from 1) ...
STARTUP_TRIALS = 3  # ... once this many trials have finished; --pruner halfway waits for at least as many
# What a database storage raises when it goes away: SQLAlchemy's errors, or Optuna's wrapping of them.
STORAGE_ERRORS = (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError)
TABLE_RACE_RETRIES = 3  # tries again to open a database whose tables another machine is creating
HOST = socket.gethostname()
# What one worker process takes: torch, the data set on the device, one model (measured
# about 650 MB with Fashion-MNIST on the CPU); --jobs is capped at what memory holds.
WORKER_MEMORY = 700 * 2**20
MAX_TRIALS = 10_000  # trials a study may queue: about half a minute of queueing on a journal file
TEST_WAIT = 300  # seconds to wait for another process measuring the chosen trial's test accuracy


@dataclass(frozen=True)
class Sweep:
    """Everything a sweep's processes need to know; plain data, so it travels to the workers."""

    trainer: str
    config: dict  # the fixed settings, as TrainConfig.to_dict gives them; out is the study's folder
    params: tuple[Param, ...]
    study: str
    storage: str  # a database URL, or the path of a journal file
    sampler: str  # grid, random or tpe
    trials: int  # the study's total number of trials, over all workers and machines
    pruner: str  # one of trainers.sweeps.space.PRUNERS
    jobs: int
    seed: int
    heartbeat: int
    space: dict  # what makes a study this one (trainers.sweeps.space.space)
    refit: bool = False  # train the chosen settings again on the training and validation images, at the end

    @property
    def folder(self) -> Path:
        """Where this machine's trial folders go: ``<out>/<study>``."""
        return Path(self.config["out"])


# ---------------------------------------------------------------- storage and study


def masked(url: str) -> str:
    """The storage URL with its password replaced by ***, for anything printed or saved."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url)


def open_storage(sweep: Sweep):
    """The Optuna storage named by ``sweep.storage``.

    A path is a journal file, safe for several processes on one machine; a URL is a
    database (``postgresql://`` needs psycopg: ``pip install 'trainviz[postgres]'``), whose trials send heartbeats so that a
    dead worker's trial is failed and run again.

    Raises:
        UserError: the storage cannot be opened; the message never shows a password.
    """
    from optuna.storages import JournalStorage, RDBStorage
    from optuna.storages.journal import JournalFileBackend

    try:
        if "://" not in sweep.storage:
            Path(sweep.storage).parent.mkdir(parents=True, exist_ok=True)
            check_journal(Path(sweep.storage))
            return JournalStorage(JournalFileBackend(sweep.storage))
        url = sweep.storage
        if url.startswith("postgresql"):
            import psycopg  # noqa: F401  (SQLAlchemy's driver for postgresql:// URLs; say so if it is missing)
        for attempt in range(TABLE_RACE_RETRIES + 1):
            try:
                with warnings.catch_warnings():  # heartbeats are "experimental" since Optuna 2.9
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    return RDBStorage(url, heartbeat_interval=sweep.heartbeat,
                                      grace_period=GRACE_BEATS * sweep.heartbeat,
                                      heartbeat_stale_trial_callback=_rerun_stale,
                                      engine_kwargs=_engine_options(url))
            except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):
                # Machines started together on an empty database both create Optuna's
                # tables (a duplicate key, or "relation already exists"); the one that
                # loses finds them made on its next try.
                if attempt == TABLE_RACE_RETRIES:
                    raise
                time.sleep(0.5 + attempt)
    except ModuleNotFoundError as err:
        raise UserError(f"--storage {masked(sweep.storage)} needs the {err.name} package: "
                        "pip install 'trainviz[postgres]'") from None
    except UserError:
        raise
    except Exception as err:  # SQLAlchemy and the drivers raise many kinds; say the first line of why
        raise UserError(f"cannot open --storage {masked(sweep.storage)}: {_first_line(err)}") from None


def check_journal(path: Path) -> None:
    """Make a journal file Optuna can read, or refuse it in one line; never make it worse.

    Optuna appends each change as one JSON line. A writer killed in the middle of one
    leaves its last line half-written: Optuna skips it, but the next append runs on from
    it and leaves a line nobody can read, after which every open fails. So a damaged
    last line (looked at again under Optuna's own lock, as a writer may be finishing it)
    is cut off, its bytes kept beside the journal; a damaged line before the last is
    refused with what to do.

    Raises:
        UserError: a line before the last is damaged, or the file is not a journal (not a
            regular file, or a line that is no Optuna operation: a file of one's own).
    """
    from optuna.storages.journal import JournalFileSymlinkLock

    if path.exists() and not path.is_file():  # a FIFO or a device would block or fill the reader
        raise UserError(f"--storage {path} is not a regular file: give a journal file's path (or a database URL)")
    if not _journal_damage(path):
        return
    lock = JournalFileSymlinkLock(str(path))
    lock.acquire()
    try:
        damage = _journal_damage(path)
        if not damage:
            return
        number, start, last = damage
        if number == 1 and not _journal_line(path, start):  # a file of one's own, never a journal
            raise UserError(f"--storage {path} is not an Optuna journal (line {number} is not one of its operations): "
                            "give another path, or a database URL")
        if not last:
            raise UserError(f"the journal {path} is damaged at line {number} (not a whole JSON line), so Optuna "
                            "cannot read the study; restore it from a copy, or move it aside to start the study "
                            "again (the trial folders stay)")
        kept = path.with_name(f"{path.name}.cut-{start}")
        with open(path, "rb") as f:
            f.seek(start)
            kept.write_bytes(f.read())
        os.truncate(path, start)
    finally:
        lock.release()
    click.echo(f"recovered the journal {path}: its last line was half-written (a killed writer); "
               f"cut off, its bytes kept in {kept.name}", err=True)


def _journal_damage(path: Path) -> tuple[int, int, bool] | None:
    """The first damaged line of a journal: (its number, its offset, whether it is the last); None when sound."""
    if not path.is_file():
        return None
    offset = 0
    with open(path, "rb") as f:
        lines = f.readlines()
    for number, line in enumerate(lines, 1):
        try:
            whole = line.endswith(b"\n") and "op_code" in _as_dict(json.loads(line))
        except (ValueError, RecursionError):
            whole = False
        if not whole:
            return number, offset, number == len(lines)
        offset += len(line)
    return None


def _as_dict(value) -> dict:
    return value if isinstance(value, dict) else {}


JOURNAL_LINE = b'{"op_code":'  # how Optuna starts every line of a journal file


def _journal_line(path: Path, offset: int) -> bool:
    """Whether the line at ``offset`` is an Optuna operation, whole or its first bytes (a half-written one)."""
    with open(path, "rb") as f:
        f.seek(offset)
        start = f.read(len(JOURNAL_LINE))
    return JOURNAL_LINE.startswith(start) or start.startswith(JOURNAL_LINE)


def _engine_options(url: str) -> dict:
    """Fail fast when a database does not answer, instead of waiting minutes."""
    return {"connect_args": {"connect_timeout": 10}} if url.startswith("postgresql") else {}


def open_study(sweep: Sweep, storage) -> optuna.Study:
    """Create the study and queue its trials, or join it if it exists with the same space.

    Raises:
        UserError: a study of this name exists with another search space.
    """
    try:
        study = optuna.create_study(study_name=sweep.study, storage=storage, direction="maximize")
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=sweep.study, storage=storage)
        stored = _wait_for_space(study)
        if stored != sweep.space:
            raise UserError(f"study {sweep.study} exists with a different search space "
                            f"({', '.join(differences(stored, sweep.space)) or 'settings'} differ); "
                            "pick another --study") from None
        return study
    # Queue every trial before the space is recorded: a worker that sees the space sees them all.
    # Ctrl-C and SIGTERM wait until then (seconds at most), so a study is never left half made.
    study.set_user_attr("setting_up", {"host": HOST, "pid": os.getpid()})
    points = grid_points(list(sweep.params)) if sweep.sampler == "grid" else [{}] * sweep.trials
    with signals_held():
        for point in points:
            study.enqueue_trial(point)
        study.set_user_attr("trainviz", sweep.space)
        study.set_user_attr("storage", masked(sweep.storage))
    return study


@contextlib.contextmanager
def signals_held():
    """Ctrl-C and SIGTERM wait until the block ends, then do what they would have done (main thread only)."""
    caught: list[int] = []
    previous = {signum: signal.signal(signum, lambda signum, frame: caught.append(signum))
                for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if caught:
            signal.raise_signal(caught[0])


def _wait_for_space(study: optuna.Study, timeout: float = 30) -> dict:
    """The space recorded by the study's creator, which may be queueing its trials right now."""
    deadline = time.monotonic() + timeout
    while "trainviz" not in study.user_attrs:
        maker = study.user_attrs.get("setting_up")  # who is queueing them: absent for a moment after creation
        gone = isinstance(maker, dict) and maker.get("host") == HOST and not process_alive(maker.get("pid"))
        if gone or time.monotonic() > deadline:
            if not maker:
                raise UserError(f"study {study.study_name} was not made by trainviz sweep; pick another --study")
            raise UserError(f"study {study.study_name} was left half made (the sweep that created it stopped while "
                            "queueing its trials); pick another --study, or remove its storage to start it again")
        time.sleep(0.2)
    return study.user_attrs["trainviz"]


def take(study: optuna.Study) -> optuna.Trial | None:
    """The next queued trial, now this process's to run; None when the queue is empty.

    Never creates a trial: a study's trials are exactly the ones queued for it.
    """
    storage = internals.storage(study)
    for waiting in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        trial_id = internals.trial_id(waiting)
        try:
            if not storage.set_trial_state_values(trial_id, state=TrialState.RUNNING):
                continue  # another worker took it first
        except optuna.exceptions.UpdateFinishedTrialError:
            continue
        if heartbeats(storage):  # at once: a worker killed before its trial's first beat still goes stale
            storage.record_heartbeat(trial_id)
        trial = internals.running_trial(study, trial_id)
        # The pid before the host: ``reap`` looks at trials of its own host only, so one that
        # sees the host sees the pid too, and never takes a claim half-written for a dead one.
        trial.set_user_attr("pid", os.getpid())
        trial.set_user_attr("host", HOST)
        return trial
    return None


def settings_of(trial: FrozenTrial) -> dict:
    """The searched settings of a trial, including those it was queued with but never reached."""
    return {**trial.system_attrs.get("fixed_params", {}), **trial.params}


def rerun(study: optuna.Study, trial: FrozenTrial, why: str, resume: str | None = None) -> None:
    """Queue ``trial``'s settings again, after it failed for ``why``; its local folder says so."""
    study.enqueue_trial(settings_of(trial), user_attrs={"rerun_of": trial.number, **({"resume": resume} if resume else {})})
    run_dir = trial.user_attrs.get("run_dir")
    if not resume and run_dir and trial.user_attrs.get("host") == HOST and Path(run_dir).is_dir():
        run = RunDir(Path(run_dir))
        if run.read_status().get("status") == "running":
            run.write_status("failed", error=why)


def _rerun_stale(study: optuna.Study, trial: FrozenTrial) -> None:
    """Optuna's callback for a trial whose heartbeat went stale."""
    rerun(study, trial, "its worker stopped sending heartbeats")


def reap(study: optuna.Study) -> None:
    """Fail and queue again the running trials whose workers are gone.

    A database storage keeps heartbeats: Optuna fails the trials whose heartbeat is stale
    and calls ``_rerun_stale``, whichever machine ran them. A journal file serves one
    machine and keeps none: a trial whose worker process no longer exists is failed here.
    """
    if heartbeats(internals.storage(study)):
        with warnings.catch_warnings():  # "experimental" since Optuna 2.9, and what optimize() calls
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
        return
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if trial.user_attrs.get("host") != HOST or "pid" not in trial.user_attrs:
            continue  # another machine's, or a claim being written right now (see ``take``)
        if process_alive(trial.user_attrs["pid"]):
            continue
        try:
            if not internals.storage(study).set_trial_state_values(internals.trial_id(trial), state=TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another worker reaped it first
        rerun(study, trial, f"its worker (pid {trial.user_attrs.get('pid')}) is gone")


def heartbeats(storage) -> bool:
    """Whether the storage keeps heartbeats (a database storage does; a journal file does not)."""
    return bool(getattr(storage, "get_heartbeat_interval", lambda: None)())


def outstanding(trials: list[FrozenTrial]) -> int:
    """Trials queued or running: the study is done when there are none."""
    return sum(t.state in (TrialState.WAITING, TrialState.RUNNING) for t in trials)


# ---------------------------------------------------------------- a worker


@contextlib.contextmanager
def heartbeat(study: optuna.Study, trial: optuna.Trial, interval: int):
    """Send the trial's heartbeat every ``interval`` seconds while it runs (database storages only)."""
    storage = internals.storage(study)
    if not heartbeats(storage):
        yield
        return
    storage.record_heartbeat(internals.trial_id(trial))
    done = threading.Event()

    def beat() -> None:
        while not done.wait(interval):
            try:
                storage.record_heartbeat(internals.trial_id(trial))
            except Exception:  # storage lost: the trial will be failed stale, and rerun
                return

    thread = threading.Thread(target=beat, name="heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


class TrialHooks(RunHooks):
    """What a trial hears from its run: the folder once made, each epoch's validation accuracy."""

    def __init__(self, trial: optuna.Trial, prune: bool, epochs: int):
        self.trial, self.prune, self.epochs = trial, prune, epochs

    def started(self, run: RunDir) -> None:
        self.trial.set_user_attr("run_dir", str(run.path.resolve()))
        self.trial.set_user_attr("env", run.read_config()["env"])
        for record in epoch_records(run):  # a continued trial's earlier epochs
            if record.get("kind") == "epoch":
                self.trial.report(record["val_acc"], record["epoch"])

    def epoch(self, record: dict) -> None:
        self.trial.report(record["val_acc"], record["epoch"])
        if self.prune and record["epoch"] < self.epochs and self.trial.should_prune():
            raise Pruned(f"pruned after epoch {record['epoch']}")


def sampler_seed(seed: int) -> int:
    """A seed of this worker's own, different on every worker and machine, derived from ``seed``."""
    return int.from_bytes(hashlib.sha1(f"{seed}/{HOST}/{os.getpid()}".encode()).digest()[:4], "big")


def make_sampler(sweep: Sweep, seed: int) -> optuna.samplers.BaseSampler:
    """Random for grids (whose trials come queued with every value) and random searches; TPE for tpe."""
    if sweep.sampler == "tpe":
        # constant_liar: trials still running count as bad, so parallel workers spread out.
        return optuna.samplers.TPESampler(seed=seed, constant_liar=True, n_startup_trials=startup_trials(sweep.trials))
    return optuna.samplers.RandomSampler(seed=seed)


def startup_trials(trials: int) -> int:
    """TPE's random trials before it models the space: a fifth of the study, from 4 up to Optuna's default 10.

    Optuna's default of 10 leaves only 6 modelled trials of 16; 4 random ones give the
    model a start and leave 12.

    >>> [startup_trials(n) for n in (8, 16, 30, 50, 200)]
    [4, 4, 6, 10, 10]
    """
    return min(10, max(4, trials // 5))


def make_pruner(sweep: Sweep) -> optuna.pruners.BasePruner:
    """--pruner's rule: a trial whose best validation accuracy so far is below the median of the
    finished trials' at the same epoch stops there.

    halfway (the default) judges from the epoch that completes half the run, once a quarter
    of the trials (at least 3) have finished: a cosine schedule or a high learning rate
    starts slow and finishes well, and is not judged before it can show it. median, the
    earlier default, judges from the second epoch once 3 trials have finished: quicker,
    and it stops some of the best trials. none runs every trial to its last epoch.
    """
    if sweep.pruner == "halfway":
        return optuna.pruners.MedianPruner(n_startup_trials=max(STARTUP_TRIALS, sweep.trials // 4),
                                           n_warmup_steps=(sweep.config["epochs"] + 1) // 2)
    if sweep.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=STARTUP_TRIALS, n_warmup_steps=FIRST_JUDGED_EPOCH)
    return optuna.pruners.NopPruner()


def suggest(trial: optuna.Trial, param: Param):
    """The trial's value of ``param``: queued with the trial, or drawn by the sampler now."""
    if param.choices:
        return trial.suggest_categorical(param.field, list(param.choices))
    if param.integer:
        return trial.suggest_int(param.field, int(param.low), int(param.high), log=param.log)
    return trial.suggest_float(param.field, float(param.low), float(param.high), log=param.log)


def work(sweep: Sweep, index: int, log_file: Path) -> None:
    """A worker process: load the data once, then run queued trials until the study is done.

    Ctrl-C is left to the sweep, which passes it on as SIGTERM: the running trial saves
    its checkpoint and goes back into the queue, and the worker ends.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stopping.set())
    with open(log_file, "a", buffering=1) as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            _work(sweep, index, stopping)
        except UserError as err:
            print(f"Error: {err.format_message()}", file=sys.stderr, flush=True)
            sys.exit(err.exit_code)
        except Exception as err:  # the storage lost, most often: the traceback above, one line last
            traceback.print_exc()
            print(f"Error: {type(err).__name__}: {_first_line(err)}", file=sys.stderr, flush=True)
            sys.exit(1)


def _work(sweep: Sweep, index: int, stopping: threading.Event) -> None:
    import torch

    from trainers.core.data import DataError, load
    from trainers.core.training import resolve_device

    torch.set_num_threads(max(1, len(os.sched_getaffinity(0)) // sweep.jobs))
    trainer = trainer_of(sweep.trainer)
    command = click.Command(trainer.name, params=_options(trainer))
    ctx = click.Context(command)
    try:
        data = load(sweep.config["dataset"], sweep.config["data_dir"] and Path(sweep.config["data_dir"]),
                    resolve_device(sweep.config["device"]))
    except DataError as err:
        raise UserError(str(err)) from None
    seed = sampler_seed(sweep.seed)
    study = optuna.load_study(study_name=sweep.study, storage=open_storage(sweep),
                              sampler=make_sampler(sweep, seed), pruner=make_pruner(sweep))
    print(f"worker {index} on {HOST}, pid {os.getpid()}, sampler seed {seed}, "
          f"{torch.get_num_threads()} torch threads", flush=True)
    while not stopping.is_set():
        reap(study)
        trial = take(study)
        if trial is None:
            if not outstanding(study.get_trials(deepcopy=False)):
                return  # nothing queued, nothing running anywhere: the study is done
            time.sleep(POLL)  # a trial running elsewhere may yet fail and come back
            continue
        trial.set_user_attr("sampler_seed", seed)
        if run_trial(sweep, study, trial, data, command, ctx) == "stopped":
            return


def _options(trainer) -> list[click.Parameter]:
    """The trainer command's options, to check and convert sampled values exactly as the CLI does."""
    from trainers.options import train_options

    return train_options(trainer.config, activation=trainer.activation)(click.Command(trainer.name)).params


def run_trial(sweep: Sweep, study: optuna.Study, trial: optuna.Trial, data, command: click.Command,
              ctx: click.Context) -> str:
    """Run one trial as a run folder and tell the study how it ended: its state's name.

    A trial that crashes, anywhere from drawing its settings to its last epoch, is failed
    in the storage (with the error) and its folder says so; the worker goes on with the
    next. Only a lost storage ends the worker.
    """
    try:
        return _run_trial(sweep, study, trial, data, command, ctx)
    except STORAGE_ERRORS:
        raise
    except Exception as err:
        traceback.print_exc()  # into the worker's log
        error = f"{type(err).__name__}: {_first_line(err)}"
        storage = internals.storage(study)
        if storage.get_trial(internals.trial_id(trial)).state == TrialState.RUNNING:
            trial.set_user_attr("ended", "failed")
            trial.set_user_attr("error", error)
            study.tell(trial, state=TrialState.FAIL)
        run_dir = trial.user_attrs.get("run_dir")
        if run_dir and Path(run_dir).is_dir() and RunDir(Path(run_dir)).read_status().get("status") == "running":
            RunDir(Path(run_dir)).write_status("failed", error=error)
        print(f"trial {trial.number} crashed: {error}", flush=True)
        return "failed"


def _run_trial(sweep: Sweep, study: optuna.Study, trial: optuna.Trial, data, command: click.Command,
               ctx: click.Context) -> str:
    """``run_trial``'s work: the expected ends (finished, pruned, stopped, diverged, refused) told here."""
    from trainers.core.training import DivergedError, Stopped, train

    raw = {p.field: suggest(trial, p) for p in sweep.params}
    values = {p.field: convert(p, raw[p.field], command, ctx) for p in sweep.params}
    trainer = trainer_of(sweep.trainer)
    name = f"trial-{trial.number:03d}"
    resume = trial.user_attrs.get("resume")
    if resume and not (RunDir(Path(resume)).checkpoint_file.is_file() and trial.user_attrs.get("host") == HOST):
        resume = None
    config = trainer.config.from_dict({**sweep.config, **values, "trainer": sweep.trainer,
                                       "env": f"{sweep.study}_{name}", "resume": resume})
    labels = {"study": sweep.study, "trial": trial.number, "params": raw, "run_name": name}
    hooks = TrialHooks(trial, sweep.pruner != "none", config.epochs)
    started = time.monotonic()
    with heartbeat(study, trial, sweep.heartbeat):
        try:
            record = train(config, data, labels=labels, hooks=hooks)
        except Pruned:
            study.tell(trial, state=TrialState.PRUNED)
            return "pruned"
        except Stopped as err:
            trial.set_user_attr("ended", "stopped")
            study.tell(trial, state=TrialState.FAIL)
            rerun(study, internals.storage(study).get_trial(internals.trial_id(trial)), "stopped", resume=trial.user_attrs.get("run_dir"))
            print(err.format_message(), flush=True)
            return "stopped"
        except (DivergedError, UserError) as err:
            trial.set_user_attr("ended", "diverged" if isinstance(err, DivergedError) else "failed")
            trial.set_user_attr("error", err.format_message())
            study.tell(trial, state=TrialState.FAIL)
            print(f"trial {trial.number}: {err.format_message()}", flush=True)
            return "failed"
    trial.set_user_attr("seconds", round(time.monotonic() - started, 1))
    study.tell(trial, record["val_acc"])
    return "complete"


# ---------------------------------------------------------------- the sweep command


def run(sweep: Sweep) -> None:
    """Run the sweep on this machine: ``sweep.jobs`` workers, a progress bar, the study's dashboard, a summary.

    Raises:
        UserError: the storage or the study cannot be used.
        click.exceptions.Exit: stopped by Ctrl-C (status 130) or SIGTERM (143).
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if sweep.storage.startswith("sqlite") and sweep.jobs > 1:
        raise UserError("sqlite cannot take several workers writing at once (Optuna advises against it); "
                        "use --jobs 1, the default journal file, or a PostgreSQL --storage")
    storage = open_storage(sweep)
    study = open_study(sweep, storage)
    sweep.folder.mkdir(parents=True, exist_ok=True)
    reap(study)
    trials = study.get_trials(deepcopy=False)
    pruning = "no pruning" if sweep.pruner == "none" else f"{sweep.pruner} pruning"
    click.echo(f"study {sweep.study}: {sweep.trials} trial{'s' * (sweep.trials != 1)} ({sweep.sampler}, {pruning}), "
               f"{sweep.jobs} worker{'s' * (sweep.jobs > 1)} here; trials in {sweep.folder}; "
               f"storage {masked(sweep.storage)}")
    board = make_board(sweep)
    try:
        signum = None
        if outstanding(trials):
            signum = _run_workers(sweep, study, board)
        try:
            if signum is None:
                reap(study)  # a worker that died (killed, out of memory) leaves its trial failed, not running
            trials = study.get_trials(deepcopy=False)
        except STORAGE_ERRORS as err:
            raise StorageLost(f"lost the storage {masked(sweep.storage)} ({_first_line(err)}); the trial folders "
                              "are intact: run the same command to continue once it answers") from None
        if board is not None:
            board.draw(trial_rows(trials))
    finally:
        if board is not None:
            board.close()  # delivers what is queued
    click.echo(summary_table(sweep, trials))
    if signum is not None:
        done = sweep.trials - outstanding(trials)
        click.echo(f"{signal.Signals(signum).name}: stopped with {done} of {sweep.trials} trials done; "
                   "run the same command to continue the study", err=True)
        raise click.exceptions.Exit(128 + signum)
    if best_trial(trials) is None:
        failed = [t for t in trials if t.state == TrialState.FAIL and t.user_attrs.get("error")]
        why = (f": {len(failed)} of {len(trials)} trial{'s' * (len(trials) != 1)} failed "
               f"(trial {failed[0].number}: {failed[0].user_attrs['error']})" if failed else "")
        raise SweepFailed(f"no trial finished{why}; the workers' logs are in {sweep.folder}")
    report_choice(sweep, study, trials)


def _run_workers(sweep: Sweep, study: optuna.Study, board) -> int | None:
    """Start the workers, follow the study until they end; the signal that stopped them, if any."""
    context = multiprocessing.get_context("spawn")
    workers = []
    for index in range(sweep.jobs):
        log_file = sweep.folder / f"worker-{HOST}-{os.getpid()}-{index}.log"
        workers.append(context.Process(target=work, args=(sweep, index, log_file), name=f"worker-{index}"))
    stopped: list[int] = []

    def stop(signum, frame) -> None:
        if not stopped:
            tqdm.write(f"{signal.Signals(signum).name}: the running trials save a checkpoint and stop "
                       "(again to quit at once)")
        stopped.append(signum)
        for worker in workers:
            if worker.pid is not None and worker.is_alive():
                os.kill(worker.pid, signal.SIGTERM)

    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        for worker in workers:
            worker.start()
        trials = study.get_trials(deepcopy=False)
        with tqdm(total=sweep.trials, initial=sweep.trials - outstanding(trials), unit="trial",
                  desc=sweep.study, dynamic_ncols=True) as bar:
            shown = None
            while any(worker.is_alive() for worker in workers):
                time.sleep(POLL)
                try:
                    trials = study.get_trials(deepcopy=False)
                except STORAGE_ERRORS:
                    continue  # the storage is gone: the workers say so and stop
                bar.update(sweep.trials - outstanding(trials) - bar.n)
                best = best_trial(trials)
                if best is not None:
                    bar.set_postfix(best=f"{best.value:.4f}", refresh=False)
                state = [(t.number, t.state, len(t.intermediate_values)) for t in trials]
                if board is not None and state != shown:
                    board.draw(trial_rows(trials))
                    shown = state
    finally:
        for worker in workers:
            worker.join()
        for s, handler in previous.items():
            signal.signal(s, handler)
    for index, worker in enumerate(workers):
        if worker.exitcode not in (0, -signal.SIGTERM) and not stopped:
            log_file = sweep.folder / f"worker-{HOST}-{os.getpid()}-{index}.log"
            lines = log_file.read_text().strip().splitlines() if log_file.is_file() else []
            click.echo(f"worker {index} stopped: {lines[-1] if lines else f'status {worker.exitcode}'} "
                       f"(log: {log_file})", err=True)
    return stopped[0] if stopped else None


class StorageLost(click.ClickException):
    """The database went away during the sweep: exit status 1."""


class SweepFailed(click.ClickException):
    """No trial of the study finished: exit status 1."""


def _first_line(err: BaseException) -> str:
    """The first line of what went wrong, from the driver's own error when there is one, password masked."""
    while isinstance(err, optuna.exceptions.StorageInternalError) and err.__cause__ is not None:
        err = err.__cause__  # Optuna's wrapper says only "an exception is raised during the commit"
    lines = str(getattr(err, "orig", None) or err).strip().splitlines()
    return masked(lines[0]) if lines else type(err).__name__


def best_trial(trials: list[FrozenTrial]) -> FrozenTrial | None:
    """The finished trial with the highest validation accuracy; of equals, the lowest-numbered.

    Numbers follow the order trials were queued (a grid's points in order), so the choice
    does not depend on which worker finished first. Pruned trials are never chosen: their
    value is an unfinished run's last epoch.
    """
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    return max(complete, key=lambda t: (t.value, -t.number)) if complete else None


def state_name(trial: FrozenTrial) -> str:
    """complete, pruned, running, waiting, or why it failed (stopped, diverged, failed)."""
    if trial.state == TrialState.FAIL:
        return trial.user_attrs.get("ended", "failed")
    return trial.state.name.lower()


def trial_rows(trials: list[FrozenTrial]) -> list[dict]:
    """The study's trials as plain rows, best first: what the table and the dashboard show."""
    rows = []
    for t in trials:
        if t.state == TrialState.WAITING:
            continue
        curve = sorted(t.intermediate_values.items())
        rows.append({"number": t.number, "params": settings_of(t), "state": state_name(t),
                     "value": t.value if t.state in (TrialState.COMPLETE, TrialState.PRUNED) else None,
                     "epochs": len(curve), "curve": curve, "seconds": t.user_attrs.get("seconds"),
                     "env": t.user_attrs.get("env"), "run_dir": t.user_attrs.get("run_dir")})
    rank = {"complete": 0, "pruned": 1, "running": 2}
    return sorted(rows, key=lambda r: (rank.get(r["state"], 3), -(r["value"] or 0), r["number"]))


def summary_table(sweep: Sweep, trials: list[FrozenTrial]) -> str:
    """The trials as an aligned text table, best first."""
    rows = trial_rows(trials)
    if not rows:
        return "no trials have run yet"
    names = [p.field for p in sweep.params]
    head = ["#", *[n.replace("_", "-") for n in names], "val acc", "epochs", "state", "seconds"]
    body = [[str(r["number"]), *[short(r["params"].get(n)) for n in names],
             "-" if r["value"] is None else f"{r['value']:.4f}", str(r["epochs"]), r["state"],
             "-" if r["seconds"] is None else f"{r['seconds']:.0f}"] for r in rows]
    return text_table([head, *body])


def report_choice(sweep: Sweep, study: optuna.Study, trials: list[FrozenTrial]) -> None:
    """The chosen trial (best validation accuracy): its folder, its test accuracy, the command that reproduces it;
    with ``sweep.refit``, the refit's beside it."""
    best = best_trial(trials)
    if best is None:
        click.echo("no trial finished, so none is chosen")
        return
    run_dir = best.user_attrs.get("run_dir")
    values = option_values(sweep, settings_of(best))
    click.echo(f"chosen: trial {best.number} ({label(settings_of(best))}), validation accuracy {best.value:.4f}, "
               f"folder {run_dir} on {best.user_attrs.get('host')}")
    tested = None
    if best.user_attrs.get("host") == HOST and run_dir and Path(run_dir).is_dir():
        try:
            tested = test_record(RunDir(Path(run_dir)), sweep.config["device"])
        except (UserError, OSError) as err:  # a damaged folder, or another process writing it
            message = err.format_message() if isinstance(err, UserError) else f"{err.strerror}: {err.filename}"
            click.echo(f"warning: trial {best.number}'s test accuracy is not known: {message}", err=True)
        else:
            study.set_user_attr("test", {"trial": best.number, "test_acc": tested["test_acc"],
                                         "test_images": images_of(tested)})
            notes = [note for note in (error_note(tested), "the test set was used for this trial only") if note]
            click.echo(f"test accuracy of trial {best.number}: {accuracy_text(tested)} ({'; '.join(notes)})")
    click.echo(f"reproduce trial {best.number}: {reproduce_command(sweep, values)}")
    if sweep.refit:
        run = refit(sweep, best, values)
        refitted = test_record(run, sweep.config["device"])
        beside = f" beside trial {best.number}'s {accuracy_text(tested)}" if tested else ""
        note = f" ({error_note(refitted)})" if error_note(refitted) else ""
        click.echo(f"test accuracy of {run.name}: {accuracy_text(refitted)}{beside}{note}")
        click.echo(f"reproduce {run.name}: {reproduce_command(sweep, {**values, 'val_size': 0})}")


def option_values(sweep: Sweep, settings: dict) -> dict:
    """A trial's searched settings (as sampled or queued) as the trainer's options make them."""
    trainer = trainer_of(sweep.trainer)
    command = click.Command(trainer.name, params=_options(trainer))
    ctx = click.Context(command)
    return {p.field: convert(p, settings[p.field], command, ctx) for p in sweep.params if p.field in settings}


def refit(sweep: Sweep, best: FrozenTrial, values: dict) -> RunDir:
    """Train the chosen trial's settings again on the training and validation images together, for
    as many epochs, through ``trainers.core.training.train``: the run folder ``OUT/STUDY/refit-NNN``.

    The validation split cost the trials that many training images; the refit gets them
    back, and is what the study's settings give. A finished refit is kept (the same command
    reports it again); one that stopped or was killed continues from its checkpoint.
    """
    from trainers.core.training import train

    name = f"refit-{best.number:03d}"
    run = RunDir(sweep.folder / name)
    if run.read_status().get("status") == "finished":
        return run
    click.echo(f"refit: trial {best.number}'s settings on the training and validation images together "
               f"(--val-size 0), {sweep.config['epochs']} epochs, in {run.path}")
    config = trainer_of(sweep.trainer).config.from_dict({
        **sweep.config, **values, "trainer": sweep.trainer, "val_size": 0, "test": True,
        "env": f"{sweep.study}_{name}", "resume": run.path if run.checkpoint_file.is_file() else None})
    hooks = FolderHook()
    train(config, labels={"study": sweep.study, "refit_of": best.number, "params": settings_of(best),
                          "run_name": name}, hooks=hooks)
    return hooks.run


class FolderHook(RunHooks):
    """Keeps the folder a run was given (a name already taken gets a suffix)."""

    run: RunDir

    def started(self, run: RunDir) -> None:
        self.run = run


def test_record(run: RunDir, device: str) -> dict:
    """The run's "test" record in its metrics.jsonl: its test accuracy, evaluated once and then kept.

    It is measured holding the run folder's lock, so of two sweeps ending together one
    measures it and the other, waiting, reads the record. It counts the test images
    (``test_images``), for the accuracy's standard error.
    """
    with run.writing(wait=TEST_WAIT):
        records = epoch_records(run)
        for record in records:
            if record.get("kind") == "test":
                return record
        from trainers.core.training import evaluate_run

        result = evaluate_run(run, None, device)
        last = [r for r in records if r.get("kind") == "epoch"][-1]
        record = {"kind": "test", "epoch": last["epoch"], "step": last["step"], "test_loss": result.loss,
                  "test_acc": result.accuracy, "test_images": len(result.predictions)}
        run.append_metrics([record])
        return record


def images_of(record: dict) -> int | None:
    """How many test images a test record was measured on; None for one without a sound count (an older trainviz's)."""
    images = record.get("test_images")
    return images if isinstance(images, int) and not isinstance(images, bool) and images > 0 else None


def accuracy_text(record: dict) -> str:
    """A test record's accuracy with its standard error, e.g. ``0.8900 ± 0.0031``."""
    images = images_of(record)
    if images is None:
        return f"{record['test_acc']:.4f}"
    return f"{record['test_acc']:.4f} ± {standard_error(record['test_acc'], images):.4f}"


def error_note(record: dict) -> str:
    """What the ± of ``accuracy_text`` is; "" for a record without a count."""
    images = images_of(record)
    return f"± one standard error over {images:,} test images" if images else ""


def standard_error(accuracy: float, images: int) -> float:
    """The binomial standard error of an accuracy measured on ``images`` images: sqrt(p (1 - p) / n).

    Two accuracies closer than a few of these are not told apart by the test set: at 0.89
    on 10,000 images it is 0.0031, a third of a point.

    >>> round(standard_error(0.89, 10_000), 4)
    0.0031
    """
    return math.sqrt(accuracy * (1 - accuracy) / images)


def reproduce_command(sweep: Sweep, values: dict) -> str:
    """``trainviz TRAINER ...``: the settings that differ from the defaults, the searched ones included.

    It keeps --val-size, so it trains on the same images as the trial; it evaluates the
    test set every epoch, so it prints the test accuracy reported above.
    """
    def plain(settings: dict) -> dict:  # tuples as lists, as in config.json
        return json.loads(json.dumps(settings))

    defaults = plain(trainer_of(sweep.trainer).config().to_dict())
    words = command_words(sweep.trainer)
    for field, value in plain({**sweep.config, **values}).items():
        if field in PLUMBING or field == "test" or field not in defaults or value == defaults[field]:
            continue
        words += [f"--{field.replace('_', '-')}", ",".join(map(str, value)) if isinstance(value, list) else str(value)]
    return shlex.join(words)


def make_board(sweep: Sweep):
    """The study's own dashboard environment, drawn through the live sink into OUT/STUDY/events.jsonl; None with --no-viz.

    A server that is missing costs one warning line: the board fills in once one answers,
    and ``trainviz replay OUT/STUDY --env STUDY`` rebuilds it any time.
    """
    if not sweep.config["viz"]:
        return None
    from viz.dashboard.sender import VisdomSink  # visdom's client: only for a sweep with a dashboard

    sweep.folder.mkdir(parents=True, exist_ok=True)
    sink = VisdomSink(sweep.config["server"], sweep.config["port"], sweep.study, sweep.folder / "events.jsonl")
    return SweepBoard(sink, [p.field for p in sweep.params])


def capped_jobs(jobs: int, trials: int, memory: int | None) -> int:
    """--jobs, or fewer when there are fewer trials or memory for fewer workers, said in one line."""
    if jobs > trials:
        click.echo(f"--jobs {jobs} is more than the {trials} trial{'s' * (trials != 1)}: "
                   f"{trials} worker{'s' * (trials != 1)} here", err=True)
        jobs = trials
    room = max(1, memory // WORKER_MEMORY) if memory is not None else jobs
    if jobs > room:
        click.echo(f"--jobs {jobs} would take about {human_bytes(jobs * WORKER_MEMORY)} of memory "
                   f"({human_bytes(WORKER_MEMORY)} a worker) and {human_bytes(memory)} is free: "
                   f"{room} worker{'s' * (room != 1)} here", err=True)
        jobs = room
    return jobs


def plan(trainer: str, config: dict, params: list[Param], *, study: str | None, storage: str | None,
         sampler: str | None, trials: int | None, prune: bool | None, jobs: int, heartbeat: int,
         pruner: str | None = None, refit: bool = False) -> Sweep:
    """The sweep a command line asks for, with every default filled in and every rule checked.

    ``prune`` is --prune/--no-prune: True for the default pruner (on a grid too), False for none.

    Raises:
        UserError: the options do not make a sweep.
    """
    from trainers.sweeps.space import default_study_name, is_grid, space

    sampler = sampler or ("grid" if is_grid(params) else "tpe")
    if sampler == "grid":
        if not is_grid(params):
            raise UserError("--sampler grid needs every --param to be a list of choices (a|b|c)")
        total = math.prod(len(p.choices) for p in params)
        if trials is not None and trials != total:
            raise UserError(f"the grid has {total} points; leave out --trials (or give --trials {total})")
    elif trials is None:
        raise UserError(f"--sampler {sampler} needs --trials N: the number of trials over all workers")
    else:
        total = trials
    if total > MAX_TRIALS:
        what = f"the grid has {total:,} points," if sampler == "grid" else f"--trials {total:,} is"
        raise UserError(f"{what} more than the {MAX_TRIALS:,} trials a study may queue: search a smaller space")
    pruner = chosen_pruner(sampler, prune, pruner)
    jobs = capped_jobs(jobs, total, available_memory())
    the_space = {**space(trainer, params, config, total), "sampler": sampler, "pruner": pruner}
    study = study or default_study_name(the_space)
    out = Path(config["out"]) / study
    return Sweep(trainer=trainer, config={**config, "out": str(out)}, params=tuple(params), study=study,
                 storage=storage or str(out / "journal.log"), sampler=sampler, trials=total,
                 pruner=pruner, jobs=jobs, seed=config["seed"],
                 heartbeat=heartbeat, space=the_space, refit=refit)


def chosen_pruner(sampler: str, prune: bool | None, pruner: str | None) -> str:
    """--pruner, else what --prune/--no-prune says, else the default: halfway for random and tpe, none for a grid.

    Raises:
        UserError: --prune or --no-prune says the opposite of --pruner.
    """
    if prune is not None and pruner is not None and prune != (pruner != "none"):
        raise UserError(f"--{'' if prune else 'no-'}prune and --pruner {pruner} disagree; give one of them")
    if pruner is not None:
        return pruner
    if prune is None:
        prune = sampler != "grid"
    return PRUNERS[0] if prune else "none"
