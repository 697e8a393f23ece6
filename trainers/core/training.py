"""What every trainer command shares: its options and what running it does."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Collection
from pathlib import Path

import torch
from tqdm import tqdm

from trainers.catalog import DATASETS, TRAINERS, command_words, trainer_of
from trainers.core.config import KEEP_EPOCHS, TrainConfig
from trainers.core.data import Data, DataError, load
from trainers.core.errors import TrainvizError, UserError
from trainers.core.loop import Diverged, Evaluation, Interrupted, ModelError, Parts, Progress, evaluate, fit
from trainers.core.report import Smoothed, report_curves, report_layers, report_panes
from trainers.core.run import Damaged, Pruned, RunDir, RunHooks
from trainers.core.schedule import Schedule
from trainers.core.steering import Pilot, Steering
from trainers.models import own
from trainers.models.own import last_line
from viz.dashboard.economy import Budget
from viz.dashboard.sink import HeldSink, Sink
from viz.dashboard.controls import PaneState
from viz.dashboard.windows import SMOOTHING, STEERED
from viz.panes import sample_indices
from viz.paths import available_memory, free_space, human_bytes, no_space
from viz.values import is_number, is_whole

# The costly dashboard panes may take this share of the run's time (their measured cost
# decides how often they are refreshed); the curves are drawn every epoch regardless.
PANES_SHARE = 0.02
# What a refresh of the panes is taken to cost before one is measured: about what one
# costs the trainer, the sender and the server together on 2 CPU cores. So the first
# refresh comes 5 s into a run, and a run of a few seconds shows them at its end.
PANES_PRIOR = 0.1


class Stopped(TrainvizError):
    """Training was stopped by a signal: exit status 128 + the signal's number."""


class DivergedError(TrainvizError):
    """Training produced a non-finite loss: exit status 3."""

    exit_code = 3


class DiskFull(TrainvizError):
    """The disk holding the run folder filled up: exit status 1 (what was saved before is intact)."""


def resolve_device(name: str) -> torch.device:
    """``auto``/``cpu``/``cuda`` -> a usable torch device, or a UserError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but torch sees no CUDA GPU here; use --device cpu or auto")
    return torch.device(name)


class StopSignals:
    """Turns the first Ctrl-C (SIGINT) or SIGTERM into a request to stop after the current step.

    A second signal ends the process at once: checkpoints are written to a temporary file
    and renamed, so leaving mid-write never corrupts the last good one. A signal the
    process ignores stays ignored (a sweep worker leaves Ctrl-C to its sweep, which
    passes it on as SIGTERM).
    """

    def __init__(self):
        self.signum: int | None = None
        self.previous: dict = {}

    def __enter__(self) -> StopSignals:
        for signum in (signal.SIGINT, signal.SIGTERM):
            if signal.getsignal(signum) is not signal.SIG_IGN:
                self.previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum, frame) -> None:
        if self.signum is not None:
            os._exit(128 + signum)
        self.signum = signum
        tqdm.write(f"{signal.Signals(signum).name}: stopping after this step (again to quit at once)")

    def requested(self) -> bool:
        """Whether a stop was asked for."""
        return self.signum is not None


def train(config: TrainConfig, data: Data | None = None, *, labels: dict | None = None,
          hooks: RunHooks = RunHooks(), given: Collection[str] = (), force: bool = False) -> dict:
    """Run one trainer end to end: data, run folder, training, checkpoints, summary line.

    This is every run's one path: ``trainviz TRAINER``, a sweep's trials and the tests.
    With ``config.resume`` it continues that run folder from its checkpoint instead; with
    ``config.fork`` it starts a new run folder from the end of epoch ``config.from_epoch``
    of that one.

    Args:
        config: the run's settings.
        data: the dataset already loaded (a sweep worker loads it once for all its
            trials); None loads ``config.dataset``.
        labels: more settings for config.json, such as a sweep trial's study and number
            (``run_name`` names the folder).
        hooks: told of the run folder once made and of each epoch once saved; raising
            ``Pruned`` from ``hooks.epoch`` ends the run with status pruned.
        given: the settings asked for (typed on the command line). A resumed run trains to
            ``config.epochs`` only when it is among them, else to its own epochs; a fork
            changes only these of its parent's settings.
        force: resume a model of one's own even though its file changed since the run began.

    Returns:
        The last epoch's record.

    Raises:
        UserError, Stopped, DivergedError, DiskFull, Pruned: the run did not finish; its
        status.json says why. A run folder that another process writes is refused
        (``trainers.core.run.Busy``, a UserError).
    """
    # The run folder's lock is held from the moment the folder is known until the run ends.
    with contextlib.ExitStack() as writer:
        try:
            return _train(config, data, labels, hooks, writer, frozenset(given), force)
        except OSError as err:
            if not no_space(err):
                raise
            where = Path(err.filename or ".")
            raise DiskFull(f"no space left on the disk holding {where} ({free_space(where)} free) before training "
                           "began: free some space and run again") from None


def _train(config: TrainConfig, data: Data | None, labels: dict | None, hooks: RunHooks,
           writer: contextlib.ExitStack, given: frozenset[str], force: bool) -> dict:
    """``train``'s work; ``writer`` takes the run folder's lock as soon as the folder is known."""
    training = prepare(config, data, labels, hooks, writer, given, force)
    record = training.train()
    accuracy = f"test accuracy {record['test_acc']:.4f}" if "test_acc" in record else \
        f"validation accuracy {record['val_acc']:.4f}"
    print(f"{training.run.path}: {accuracy} after {record['epoch']} epochs", flush=True)
    return record


def prepare(config: TrainConfig, data: Data | None, labels: dict | None, hooks: RunHooks,
            writer: contextlib.ExitStack, given: frozenset[str], force: bool) -> Training:
    """Everything a run needs before its first step: settings, data, model, run folder and reporter.

    A resume or fork reads its checkpoint first, so its settings decide the data and the
    model. What can be refused is refused before the folder is made (a new run) or
    written (a resume), so a bad command line leaves nothing behind.
    """
    device = resolve_device(config.device)
    state, parent, changes = None, None, {}  # a resumed or forked run's checkpoint; a fork's parent
    resumed = config.resume is not None
    if resumed and config.fork is not None:
        raise UserError(f"--resume {config.resume} and --fork {config.fork}: give one, to continue a run "
                        "or to start a new one from another's epoch")
    if config.from_epoch is not None and config.fork is None:
        raise UserError(f"--from-epoch {config.from_epoch} goes with --fork RUN_DIR, the run to start from")
    if resumed:
        run, state = open_run(config, writer)
        config = resumed_config(config, state, given)
        check_model_file(run, config.trainer, force)
    elif config.fork is not None:
        parent, state = open_fork(config)
        config, changes = forked_config(config, state, given, parent)
        check_model_file(parent, config.trainer, force)
    if not config.test and not config.val_size:
        raise UserError("--no-test leaves nothing to evaluate: give --val-size N too")
    data = held_out_data(config, data, device, from_checkpoint=state is not None)

    # The model before the folder: one that cannot be allocated leaves nothing behind.
    torch.manual_seed(config.seed)
    parts = build(config, device)
    check_output(parts, data, config.trainer)
    generator = torch.Generator().manual_seed(config.seed)
    progress = Progress()
    if state is not None:  # before a fork's folder is made: a checkpoint that does not fit leaves nothing behind
        source = parent.epoch_checkpoint(config.from_epoch) if parent else run.checkpoint_file
        progress = restore(parent or run, source, parts, state, generator, config.trainer, force)
        set_hyperparameters(parts, changes)
    if resumed:
        settings = resumed_folder(run, config, state, progress)
    else:
        run = new_run(config, labels)
        writer.enter_context(run.writing())
        settings = {**config.to_dict(), **(labels or {}), "env": config.env or run.name, "run_dir": str(run.path),
                    "torch": torch.__version__, "device_name": str(device), "data_source": str(data.source),
                    **model_file(config.trainer)}
        if parent is not None:
            settings |= {"fork_of": str(parent.path.resolve()), "fork_epoch": config.from_epoch,
                         "fork_changes": changes}
        run.write_config(settings)
        if parent is not None:  # a fork's history up to its epoch is its parent's
            copy_history(parent, run, progress.step)
    schedule = Schedule(config.schedule, config.lr, config.epochs, math.ceil(len(data.train) / config.batch_size))
    # The rate changes made from the dashboard go on in a resumed run and in a fork that keeps the rate.
    steering = Steering(schedule, state.get("steering", []) if state is not None and "lr" not in changes else [])
    report = Reporter(config, run, make_sink(config, run, resumed=resumed), settings, data, parts, steering,
                      resumed=resumed)
    if parent is not None:
        report.history(run.read_metrics())
    return Training(config, run, data, parts, generator, progress, steering, report, hooks,
                    trial=(labels or {}).get("trial") is not None, saved_epoch=progress.epoch if resumed else None)


def held_out_data(config: TrainConfig, data: Data | None, device: torch.device, from_checkpoint: bool) -> Data:
    """The run's data (``data``, or ``config.dataset`` loaded), its validation split held out, standardized if asked.

    A problem is a UserError.
    """
    if data is None:
        if from_checkpoint and config.data_dir is not None and not config.data_dir.exists():
            again = f"--resume {config.resume}" if config.resume is not None else \
                f"--fork {config.fork} --from-epoch {config.from_epoch}"
            raise UserError(f"the run's data folder {config.data_dir} is gone; give the folder that holds the "
                            f"files now: {command_of(config.trainer)} {again} --data-dir FOLDER")
        try:
            data = load(config.dataset, config.data_dir, device)
        except DataError as err:
            raise UserError(str(err)) from None
    try:
        data = data.held_out(config.val_size, config.test)
    except ValueError as err:
        raise UserError(str(err)) from None
    data = as_configured(config, data)
    if config.batch_size > len(data.train):
        raise UserError(f"--batch-size {config.batch_size} is larger than the {len(data.train)} training samples")
    return data


def as_configured(config: TrainConfig, data: Data) -> Data:
    """``data`` (its validation split held out) as ``config``'s model sees it: standardized when asked."""
    return data.standardized() if config.standardize else data


def resumed_folder(run: RunDir, config: TrainConfig, state: dict, progress: Progress) -> dict:
    """Cut a resumed run's folder back to its checkpoint and record this command line's changes; return its settings."""
    run.truncate_metrics(progress.step)
    run.truncate_events(state.get("events"))
    # What this command line changed (a larger --epochs, a new --data-dir) is the run's now.
    recorded = run.read_config()
    updated = {key: value for key, value in config.to_dict().items()
               if key in ("epochs", "data_dir") and recorded.get(key) != value}
    if updated:
        run.update_config(**updated)
    return {**recorded, **updated}


@dataclasses.dataclass
class Training:
    """A run ready to train, as ``prepare`` made it: ``train`` trains it, writing its checkpoints as it goes."""

    config: TrainConfig
    run: RunDir
    data: Data
    parts: Parts
    generator: torch.Generator  # the shuffling's
    progress: Progress  # where the run stands, moved on as it trains
    steering: Steering  # the learning rate, with the dashboard's changes
    report: Reporter
    hooks: RunHooks
    trial: bool  # a sweep's trial, which may be pruned
    saved_epoch: int | None  # epochs done at the last checkpoint written, or the one a resume continues (None: none)

    def train(self) -> dict:
        """Train to the last epoch and return its record, or stop, diverge, be pruned or fail.

        Each ending is recorded in status.json and on the dashboard; a stop or a prune
        saves a checkpoint first, and a failure keeps the checkpoint and metrics written.
        """
        config, run, progress, report = self.config, self.run, self.progress, self.report
        # The handlers stay installed while a stop is saved, so a second signal still quits at once.
        with StopSignals() as stop:
            pilot = Pilot(self.steering, record=report.control, show=report.controls, refresh=report.refresh,
                          fork=lambda: start_fork(config, run, progress.epoch), stop_signal=stop.requested,
                          prune=Pruned if self.trial else None)
            try:
                try:
                    run.write_status("running")
                    self.hooks.started(run)
                    report.steer(pilot, progress.step)
                    self.hooks.steer(self.steering)
                    record = fit(self.parts, self.data, epochs=config.epochs, batch_size=config.batch_size,
                                 generator=self.generator, progress=progress, schedule=self.steering,
                                 log_every=config.log_every, on_steps=report.steps, on_epoch=self.epoch_done,
                                 should_stop=lambda: pilot(progress.step), paused=lambda: pilot.paused_seconds)
                except Interrupted:
                    report.flush()  # before the checkpoint, which says where its events end
                    self.save()
                    report.end("stopped", epoch=progress.epoch, step=progress.step)
                    how, status = (f"{signal.Signals(stop.signum).name}", 128 + stop.signum) if stop.signum \
                        else ("stopped from the dashboard", 0)
                    raise Stopped(
                        f"{how} at epoch {progress.epoch + 1}, step {progress.step}: "
                        f"checkpoint and metrics saved in {run.path}; continue with: "
                        f"{command_of(config.trainer)} --resume {run.path}",
                        status,
                    ) from None
                except Diverged as err:
                    report.end("diverged", step=err.step)
                    if run.checkpoint_file.is_file():
                        kept = f"the last good epoch's checkpoint and metrics are in {run.path}"
                    elif run.metrics_file.is_file():
                        kept = f"it diverged before its first checkpoint; the steps' metrics are in {run.metrics_file}"
                    else:
                        kept = "it diverged before its first checkpoint or metrics"
                    raise DivergedError(f"{err}; {kept}. Try a smaller --lr") from None
                except Pruned:
                    report.flush()
                    self.save()
                    report.end("pruned", epoch=progress.epoch)
                    raise
                except ModelError as err:
                    if config.trainer in TRAINERS:  # a built-in model that fails is trainviz's bug: its traceback
                        raise err.__cause__ from None
                    raise UserError(model_failed(err, run, config.trainer, self.saved_epoch)) from None
                report.end("finished", epoch=record["epoch"])
            except (Stopped, DivergedError, Pruned):
                raise
            except BaseException as err:
                if run.read_status().get("status") == "running":  # not ended yet
                    # On a full disk the status is rewritten in place; the dashboard's copy may not be written.
                    with contextlib.suppress(OSError):
                        report.end("failed", error=f"{type(err).__name__}: {err}")
                if no_space(err):
                    raise DiskFull(disk_full(err, run, config, self.saved_epoch)) from None
                raise
            finally:
                report.close()
        return record

    def epoch_done(self, record: dict, evaluations: dict[str, Evaluation]) -> None:
        """An epoch ended: its report, a checkpoint every --save-every epochs and at the last, its line, the hooks."""
        self.report.epoch(record, evaluations)  # first, so the sender draws while the checkpoint is written
        if record["epoch"] % self.config.save_every == 0 or record["epoch"] == self.config.epochs:
            self.save()
        tqdm.write(epoch_line(record, self.config.epochs))
        self.hooks.epoch(record)

    def save(self) -> None:
        """Write the checkpoint of where the run stands; one at an epoch's end is also kept for forks."""
        self.run.save_checkpoint(checkpoint(self.parts, self.config, self.progress, self.generator, self.steering,
                                            self.run.events_size()))
        if self.progress.batch == 0:
            self.run.keep_epoch(self.progress.epoch, None if self.config.keep_checkpoints else KEEP_EPOCHS)
        self.saved_epoch = self.progress.epoch


class Reporter:
    """What a trainer's run records and shows as it trains: metrics.jsonl, the dashboard, and its policy.

    The curves are drawn every epoch, the per-step loss at every read-back; the costly
    panes only as often as their measured cost allows (``PANES_SHARE`` of the run, a first
    refresh taken to cost ``PANES_PRIOR``) and at the last epoch; the per-layer norms,
    the throughput and the learning rate are held and drawn with the panes. Adding a
    metric to the dashboard is one call here. The control pane's requests are recorded
    and drawn here too: each a control record, a dot on the loss and rate curves, a line
    in the config pane.
    """

    def __init__(self, config: TrainConfig, run: RunDir, sink: Sink, settings: dict, data: Data, parts: Parts,
                 rate: Steering, resumed: bool):
        self.config, self.run, self.sink, self.settings = config, run, sink, settings
        self.data, self.parts, self.rate = data, parts, rate
        self.shown = "test" if data.test is not None else "val"  # the held-out split the panes show
        self.samples = sample_indices(len(getattr(data, self.shown)), config.images, config.seed)
        self.budget = Budget(PANES_SHARE, background=sink.background_seconds, prior=PANES_PRIOR)
        self.smoothed = Smoothed(SMOOTHING)
        self.held = HeldSink()  # layer norms, throughput, learning rate: drawn with the panes
        self.config_shown = resumed  # a resumed run's environment has it already
        self.last_epoch: dict = {}  # the latest epoch's record, for the dashboard's final word
        self.last_loss: float | None = None  # the latest step's loss, where a change's dot is drawn
        self.listener = None  # the control pane's, while the run trains

    def history(self, records: list[dict]) -> None:
        """Draw the curves a fork starts with: its parent's records up to the fork."""
        for record in records:
            if record.get("kind") == "step":
                self.steps(record["epoch"], [(record["step"], record["train_loss"])], write=False)
            elif record.get("kind") == "epoch":
                self.last_epoch = record
                if self.sink.active:
                    report_curves(self.sink, record)

    def steps(self, epoch: int, points: list[tuple[int, float]], write: bool = True) -> None:
        """A read-back's training losses, (step, loss) each (``write`` False: already in metrics.jsonl)."""
        if write:
            self.run.append_metrics([{"kind": "step", "epoch": epoch, "step": s, "train_loss": v} for s, v in points])
        self.last_loss = points[-1][1]
        if not self.sink.active:
            return
        steps, losses = [s for s, _ in points], [v for _, v in points]
        self.sink.series("train_loss", steps, {"loss": losses, "smoothed": [self.smoothed(v) for v in losses]})
        if self.config.schedule != "constant" or self.rate.steered:  # a constant rate is in the config pane
            self.held.scalars("lr", x=steps[-1], values={"lr": self.rate(steps[-1] - 1)})

    def steer(self, pilot: Pilot, step: int) -> None:
        """Show the control pane and listen to it (a run with the dashboard on)."""
        if not self.sink.active:
            return
        pilot.start(step)
        self.listener = self.sink.listen(lambda: pilot.state, pilot.steering.inbox.put)

    def controls(self, state: PaneState) -> None:
        """The control pane as it is now, delivered at once."""
        self.sink.controls(state)
        self.sink.save()

    def control(self, record: dict) -> None:
        """A request the run acted on: its record, and on the dashboard a dot where a rate changed."""
        self.run.append_metrics([record])
        if not self.sink.active:
            return
        step = record["step"]
        if record["action"] == "lr":
            if self.last_loss is not None:
                self.sink.scalars("train_loss", x=step, values={STEERED: self.last_loss})
            self.held.scalars("lr", x=step, values={"lr": self.rate(step), STEERED: record["value"]})
            self.held.release(self.sink)
        changes = self.settings.setdefault("steered", [])
        changes.append(f"step {step}: {record['action']}" + (f" {record['value']:.6g}" if record["value"] else ""))
        if self.config_shown:
            self.sink.config(self.settings)

    def refresh(self, step: int) -> None:
        """Draw the costly panes now, from an evaluation of the held-out split at ``step``."""
        if not self.sink.active:
            return
        result = evaluate(self.parts, getattr(self.data, self.shown))
        self.parts.model.train()  # the epoch goes on in training mode
        report_panes(self.sink, f"Step {step}", result, getattr(self.data, self.shown), self.shown,
                     self.data.classes, self.parts, self.samples)
        self.held.release(self.sink)
        self.sink.save()

    def epoch(self, record: dict, evaluations: dict[str, Evaluation]) -> None:
        """An epoch's record, and the epoch on the dashboard: curves always; the rest when the budget allows."""
        self.run.append_metrics([record])
        self.last_epoch = record
        if not self.sink.active:
            return
        report_curves(self.sink, record)
        report_layers(self.held, record, self.parts, len(self.data.train))
        if record["epoch"] < self.config.epochs and not self.budget.due():
            return
        started = time.perf_counter()
        report_panes(self.sink, f"Epoch {record['epoch']}", evaluations[self.shown], getattr(self.data, self.shown),
                     self.shown, self.data.classes, self.parts, self.samples)
        self.held.release(self.sink)
        if not self.config_shown:  # after the first panes, so its window comes last on the page
            self.sink.config(self.settings)
            self.config_shown = True
        self.sink.save()
        self.budget.spent(started, time.perf_counter() - started)

    def flush(self) -> None:
        """Draw what is held and save the dashboard: a run that stops between its panes' refreshes."""
        self.held.release(self.sink)
        self.sink.save()

    def end(self, status: str, **details) -> None:
        """The run's final status, in status.json and on the dashboard with the last epoch's numbers."""
        self.run.write_status(status, **details)
        self.sink.outcome(status, {k: v for k, v in self.last_epoch.items() if isinstance(v, (int, float))})

    def close(self) -> None:
        """Stop listening to the control pane and deliver what is queued."""
        if self.listener is not None:
            self.listener.close()
        self.sink.close()


def epoch_line(record: dict, epochs: int) -> str:
    """One epoch's results as one terminal line."""
    line = f"epoch {record['epoch']}/{epochs}  train loss {record['train_loss']:.4f} acc {record['train_acc']:.4f}"
    for split in ("val", "test"):
        if f"{split}_acc" in record:
            line += f"  {split} loss {record[f'{split}_loss']:.4f} acc {record[f'{split}_acc']:.4f}"
    return f"{line}  {record['seconds']:.2f} s"


def model_failed(err: ModelError, run: RunDir, trainer: str, saved_epoch: int | None) -> str:
    """The line for a model of one's own that raised in a step or an evaluation: what it said, when, what is kept."""
    kept = f"the checkpoint of epoch {saved_epoch} and the metrics are in {run.path}" if saved_epoch \
        else f"the metrics so far are in {run.path}"
    return (f"{trainer}: the model, its loss or its optimizer failed {err.where}: "
            f"{last_line(err.__cause__)}; {kept}")


def disk_full(err: OSError, run: RunDir, config: TrainConfig, saved_epoch: int | None) -> str:
    """One line for a run stopped by a full disk: which file, how much space, what is intact, what to do."""
    where = f"no space left on the disk holding {err.filename} ({free_space(Path(err.filename or run.path))} free)"
    if saved_epoch is None:
        return f"{where}; nothing was saved yet in {run.path}: free some space and start the run again"
    checkpoint = f"{saved_epoch} epoch{'s' * (saved_epoch != 1)} done"
    return (f"{where}; the last checkpoint ({checkpoint}) and the metrics are intact in {run.path}: free some "
            f"space, then continue with: {command_of(config.trainer)} --resume {run.path}")


def model_file(trainer: str) -> dict:
    """What a run of a model of one's own records of it: its file's path and contents' sha256, and the
    names of its Config's own settings (which the runs table shows beside the shared ones)."""
    found = trainer_of(trainer)
    recorded = {"own_settings": [f.name for f in own.own_fields(found.config)]} if trainer not in TRAINERS else {}
    if found.source:
        recorded |= {"trainer_file": found.source, "trainer_sha256": own.digest(Path(found.source))}
    return recorded


def check_model_file(run: RunDir, trainer: str, force: bool) -> None:
    """Refuse to resume a model of one's own whose file changed since the run began, unless ``force``."""
    recorded = run.read_config().get("trainer_sha256")
    now = model_file(trainer).get("trainer_sha256")
    if recorded and now and recorded != now and not force:
        raise UserError(f"{trainer} changed since {run.path} began (its contents' sha256 is not the one the run "
                        "recorded): restore it, or add --force to go on with the file as it is now")


def command_of(trainer: str) -> str:
    """The command that runs ``trainer``: ``trainviz mlp``, or ``trainviz run PATH.py`` for a model of one's own."""
    return shlex.join(command_words(trainer))


def first_line(err: BaseException) -> str:
    """The first line of an error's message, or its type's name."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


PIXELS, CLASSES = 28 * 28, 10  # every model's inputs and outputs
FLOAT_BYTES = 4


def memory_needed(config: TrainConfig) -> tuple[int, int]:
    """(parameters, bytes) a model of ``config`` takes to train: weights, gradients, momentum, activations."""
    widths = [PIXELS, *getattr(config, "hidden", ()), len(DATASETS[config.dataset].classes)]
    parameters = sum(a * b + b for a, b in zip(widths, widths[1:]))
    copies = 2 + (config.momentum > 0)  # the weights, their gradients, and SGD's momentum buffer
    activations = 2 * (config.batch_size + 2048) * sum(widths)  # forward and backward, training and evaluating
    return parameters, (parameters * copies + activations) * FLOAT_BYTES


def build(config: TrainConfig, device: torch.device) -> Parts:
    """The trainer's parts, or a UserError when the model does not fit in memory.

    A model of one's own (``trainviz run PATH.py``) may return a bare ``nn.Module``, which
    gets cross-entropy and the SGD the shared options describe, or (model, loss, optimizer).
    """
    trainer = trainer_of(config.trainer)
    if config.trainer not in TRAINERS:
        return own_parts(trainer, config, device)
    parameters, needed = memory_needed(config)
    if device.type == "cuda":
        free = torch.cuda.mem_get_info(device)[0]
    else:
        free = available_memory()
    advice = "use smaller --hidden layers" if getattr(config, "hidden", None) else "use a smaller --batch-size"
    if free is not None and needed > free:
        raise UserError(f"the model needs about {human_bytes(needed)} of memory to train ({parameters:,} parameters) "
                        f"and {device.type} has {human_bytes(free)} free; {advice}")
    try:
        return trainer.build()(config, device)
    except (MemoryError, RuntimeError) as err:
        if not isinstance(err, (MemoryError, torch.OutOfMemoryError)) and "alloc" not in str(err):
            raise
        raise UserError(f"the model ({parameters:,} parameters) cannot be allocated on {device.type}: "
                        f"{first_line(err)}; {advice}") from None


def own_parts(trainer, config: TrainConfig, device: torch.device) -> Parts:
    """What a model of one's own builds, as the loop's parts; a UserError for anything else or a failed build."""
    try:
        made = trainer.build()(config, device)
    except (MemoryError, torch.OutOfMemoryError) as err:
        raise UserError(f"{trainer.name}: the model cannot be allocated on {device.type}: {first_line(err)}") from None
    except (Exception, SystemExit) as err:  # SystemExit: a sys.exit() in the file is its failure, not trainviz's exit
        raise UserError(f"{trainer.name}: {trainer.function}(config, device) failed: {last_line(err)}") from None
    if isinstance(made, (tuple, list)) and len(made) == 3:
        made = Parts(*made)
    if isinstance(made, Parts):
        return own_optimizer(made, trainer, config)
    if isinstance(made, torch.nn.Module):
        model = made.to(device)
        optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                                    weight_decay=config.weight_decay)
        return Parts(model, torch.nn.CrossEntropyLoss(), optimizer)
    raise UserError(f"{trainer.name}: {trainer.function}(config, device) returned {type(made).__name__}, not a "
                    "model (an nn.Module) or (model, loss, optimizer)")


def own_optimizer(parts: Parts, trainer, config: TrainConfig) -> Parts:
    """Check the parts a model of one's own built with its own loss and optimizer; keep each group's rate.

    The loop sets every step's rate from --lr and --schedule; a group that starts at
    another rate (an Adam at 1e-3, a smaller rate for some layers) keeps its ratio to --lr.
    """
    if not callable(parts.model) or not callable(parts.loss) or not all(
            callable(getattr(parts.optimizer, name, None)) for name in ("zero_grad", "step", "state_dict")) \
            or not isinstance(getattr(parts.optimizer, "param_groups", None), list):
        raise UserError(f"{trainer.name}: {trainer.function}(config, device) returned parts that are not "
                        "(model, loss, optimizer): a callable model and loss, and a torch.optim optimizer")
    for group in parts.optimizer.param_groups:
        if group.get("lr", config.lr) != config.lr:
            group.setdefault("lr_scale", group["lr"] / config.lr)
    return parts


def check_output(parts: Parts, data: Data, name: str) -> None:
    """Refuse a model whose logits for a batch of training images are not (batch, classes): before any step."""
    images, labels = next(data.train.batches(2))
    parts.model.eval()
    try:
        with torch.no_grad():
            logits = parts.model(images)
    except Exception as err:
        raise UserError(f"{name}: the model fails on a batch of training images of shape {tuple(images.shape)}: "
                        f"{last_line(err)}") from None
    finally:
        parts.model.train()
    wanted = (len(images), len(data.classes))
    shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
    if shape != wanted:
        raise UserError(f"{name}: the model's output for training images of shape {tuple(images.shape)} is "
                        f"{shape}, not {wanted}: a row of {wanted[1]} logits per image")
    if name not in TRAINERS:
        check_gradients(parts, images, labels, name)


def check_gradients(parts: Parts, images: torch.Tensor, labels: torch.Tensor, name: str) -> None:
    """Refuse a model of one's own whose loss gives no gradients, before any step (and leave none behind).

    In evaluation mode, as the output's check: no dropout draws, no batch statistics
    updated, so the run trains as it would without the check.
    """
    parts.model.eval()
    try:
        loss = parts.loss(parts.model(images), labels)
        if not (isinstance(loss, torch.Tensor) and loss.numel() == 1):
            raise UserError(f"{name}: the loss gives {type(loss).__name__}"
                            f"{tuple(loss.shape) if isinstance(loss, torch.Tensor) else ''}, not one number")
        loss.backward()
    except UserError:
        raise
    except Exception as err:
        raise UserError(f"{name}: the model cannot learn from a batch of training images: {last_line(err)}") from None
    finally:
        parts.model.train()
        parts.optimizer.zero_grad(set_to_none=True)


def new_run(config: TrainConfig, labels: dict | None = None) -> RunDir:
    """A fresh run folder under ``config.out`` (named by ``labels["run_name"]`` when given), or a UserError."""
    try:
        name = config.trainer if config.trainer in TRAINERS else own.short_name(config.trainer)
        return RunDir.create(config.out, name, (labels or {}).get("run_name"))
    except OSError as err:
        raise UserError(f"cannot create a run folder in {config.out}: {err.strerror}; pick another --out") from None


def open_run(config: TrainConfig, writer: contextlib.ExitStack) -> tuple[RunDir, dict]:
    """The run folder named by --resume, locked by ``writer`` for this process, and its checkpoint.

    Raises:
        UserError: the folder is not a run, another process writes it, it has no checkpoint
            yet, it is another trainer's, or one of its files is damaged (``Damaged``).
    """
    run = RunDir(config.resume)
    if not (run.config_file.is_file() or run.checkpoint_file.is_file()):
        raise UserError(f"--resume {config.resume} is not a trainviz run folder (no config.json and checkpoint.pt)")
    writer.enter_context(run.writing())  # before reading: the folder is this process's alone from here on
    if not run.config_file.is_file():
        raise UserError(f"--resume {config.resume} has a checkpoint.pt but no config.json: "
                        "restore it from a copy of the run folder")
    run.read_config()  # checked now, so a damaged one is said before the data is loaded
    if not run.checkpoint_file.is_file():
        left = run.partial_checkpoints()
        killed = f" (its process was killed while writing the first one, which left {left[0].name})" if left else ""
        raise UserError(f"--resume {config.resume}: the run has no checkpoint yet{killed}, so there is nothing "
                        f"to continue; start it again: {command_of(config.trainer)} with its settings")
    state = run.load_checkpoint()
    trainer = state["config"].get("trainer")
    if trainer != config.trainer:
        raise UserError(f"--resume {config.resume} is a {trainer} run; "
                        f"resume it with: {command_of(trainer)} --resume {config.resume}")
    progress = state["progress"]
    if not (isinstance(progress, dict) and isinstance(progress.get("epoch"), int)
            and isinstance(progress.get("step"), int)):
        raise Damaged(run.checkpoint_file, "it does not say where the run stands (no epoch and step)",
                      "restore it from a copy of the run folder")
    run.truncate_metrics(progress["step"], dry_run=True)  # damage before the checkpoint's step is said now
    run.check_written()
    return run, state


# What a resume takes from its own command line; it goes on with the rest of the run's settings.
RESUMABLE = ("epochs", "data_dir", "device", "viz", "server", "port")


def resumed_config(given: TrainConfig, state: dict, asked: frozenset[str]) -> TrainConfig:
    """The run's own settings, with where to show it, its data (and, asked, a larger --epochs) from ``given``.

    Raises:
        UserError: another setting was asked to change (a fork may change some), or the run
            has already trained the epochs asked for.
    """
    config = type(given).from_dict(state["config"])
    for name in sorted(asked - set(RESUMABLE) - {"resume"}):
        if getattr(given, name, None) != getattr(config, name, None):
            option = f"--{name.replace('_', '-')}"
            instead = (f"; to train on with another {option}, fork it: --fork {given.resume} --from-epoch N "
                       f"{option} ..." if name in FORKABLE else "")
            raise UserError(f"{option} cannot change in a resume: {given.resume} goes on with its own settings "
                            f"(a resume may give {', '.join('--' + key.replace('_', '-') for key in RESUMABLE)})"
                            f"{instead}")
    explicit = "epochs" in asked
    resumed = dataclasses.replace(
        config, viz=given.viz, server=given.server, port=given.port, device=given.device,
        epochs=given.epochs if explicit else config.epochs, resume=given.resume,
        data_dir=given.data_dir if given.data_dir is not None else config.data_dir,
    )
    done = state["progress"]["epoch"]
    if resumed.epochs <= done:
        if explicit:
            raise UserError(f"--epochs {resumed.epochs} is not above the {done} epochs {given.resume} has trained; "
                            "give a larger --epochs to train it further")
        raise UserError(f"{given.resume} has trained all its {done} epochs; give --epochs N above {done} "
                        "to train it further")
    return resumed


def make_sink(config: TrainConfig, run: RunDir, resumed: bool = False) -> Sink:
    """The null sink for --no-viz, else a Visdom sink that also writes RUN_DIR/events.jsonl.

    A resumed run first redraws its environment from the events it already has.
    """
    if not config.viz:
        return Sink()
    from viz.dashboard.sender import VisdomSink  # imports requests and visdom: only when streaming

    env = run.read_config().get("env") or run.name  # a config.json without one: the folder's name, as replay takes
    return VisdomSink(config.server, config.port, env, run.events_file, rebuild_first=resumed)


def checkpoint(parts: Parts, config: TrainConfig, progress: Progress, generator: torch.Generator,
               steering: Steering, events: int) -> dict:
    """Everything needed to evaluate the model or continue the run exactly; ``events``: how long events.jsonl is."""
    return {
        "model": parts.model.state_dict(),
        "optimizer": parts.optimizer.state_dict(),
        "config": config.to_dict(),
        "progress": dataclasses.asdict(progress),
        "generator": generator.get_state(),
        "rng": torch.get_rng_state(),  # dropout draws from torch's global generator
        "steering": steering.changes,  # the learning-rate changes made from the dashboard: [step, factor]
        "events": events,  # where events.jsonl ends: a resume drops the events a killed run wrote after it
    }


def restore(run: RunDir, file: Path, parts: Parts, state: dict, generator: torch.Generator, trainer: str,
            force: bool) -> Progress:
    """Load ``state``, the checkpoint ``file`` of ``run``, into the parts and the shuffling generator; where it stands.

    Raises:
        Damaged: the checkpoint does not fit the model (a UserError when a model file of
            one's own changed and ``force`` went on with it).
    """
    try:
        check_fits(file, parts, state)
    except Damaged:
        if force and trainer not in TRAINERS:  # the file changed, and with it the model
            raise UserError(f"the model {trainer} builds now does not fit the checkpoint of {run.path}: "
                            "its layers changed since the run began; restore the file to go on with it") from None
        raise
    parts.model.load_state_dict(state["model"])
    try:  # what check_fits does not look at: the optimizer's state, the generators', where the run stands
        parts.optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"])
        if "rng" in state:  # dropout's draws continue where they stopped
            torch.set_rng_state(state["rng"])
        return Progress(**state["progress"])
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise Damaged(file, f"its training state cannot be restored ({last_line(err)})",
                      "restore it from a copy of the run folder, or train the run again") from None


# What a fork may change of its parent's settings; the rest would need another model, split or order.
FORKABLE = ("lr", "momentum", "weight_decay", "schedule", "dropout", "epochs")
# Where and how a run is shown and saved: a fork takes these from its own command line.
OWN_SETTINGS = ("viz", "server", "port", "env", "device", "out", "log_every", "images", "save_every",
                "keep_checkpoints", "fork", "from_epoch")


def open_fork(config: TrainConfig) -> tuple[RunDir, dict]:
    """The run folder named by --fork and its checkpoint of the end of --from-epoch.

    The parent may be running: its kept checkpoints are whole files (renamed into place),
    and nothing of it is written.

    Raises:
        UserError: the folder is not a run, it keeps no checkpoint of that epoch (the message
            lists the ones it keeps), the checkpoint is damaged or another trainer's, or its
            metrics.jsonl is damaged.
    """
    parent = RunDir(config.fork)
    if not parent.config_file.is_file():
        raise UserError(f"--fork {config.fork} is not a trainviz run folder (no config.json)")
    parent.read_config()  # checked now, so a damaged one is said before the data is loaded
    kept = parent.kept_epochs()
    epochs = ", ".join(map(str, kept)) if kept else "none"
    if config.from_epoch is None:
        raise UserError(f"--fork needs --from-epoch N, an epoch whose checkpoint {config.fork} kept: {epochs}")
    if config.from_epoch not in kept:
        raise UserError(f"--from-epoch {config.from_epoch}: {config.fork} keeps the checkpoints of epochs {epochs} "
                        f"(a run keeps its last {KEEP_EPOCHS}; one trained with --keep-checkpoints keeps every one)")
    state = parent.load_checkpoint(file=parent.epoch_checkpoint(config.from_epoch))
    trainer = state["config"].get("trainer")
    if trainer != config.trainer:
        raise UserError(f"--fork {config.fork} is a {trainer} run; fork it with: {command_of(trainer)} "
                        f"--fork {config.fork} --from-epoch {config.from_epoch}")
    progress = state["progress"]
    if not (isinstance(progress, dict) and progress.get("epoch") == config.from_epoch
            and progress.get("batch", 0) == 0 and isinstance(progress.get("step"), int)):
        raise Damaged(parent.epoch_checkpoint(config.from_epoch),
                      f"it does not hold the end of epoch {config.from_epoch}", "fork from another epoch")
    parent.read_metrics()  # checked now, so a damaged record is said before the fork's folder is made
    return parent, state


def forked_config(given: TrainConfig, state: dict, asked: frozenset[str], parent: RunDir) -> tuple[TrainConfig, dict]:
    """A fork's settings: its parent's, with the FORKABLE ones asked for changed; and what changed.

    Raises:
        UserError: another setting was asked to change, or there is no epoch left to train.
    """
    config = type(given).from_dict(state["config"])
    for name in sorted(asked - set(FORKABLE) - set(OWN_SETTINGS) - {"data_dir"}):
        if getattr(given, name, None) != getattr(config, name, None):
            changeable = ", ".join(f"--{key.replace('_', '-')}" for key in FORKABLE)
            raise UserError(f"--{name.replace('_', '-')} cannot change in a fork: it goes on with the model, data and "
                            f"order of {parent.path}; a fork may change {changeable}")
    changes = {name: getattr(given, name) for name in FORKABLE
               if name in asked and getattr(given, name) != getattr(config, name, None)}
    forked = dataclasses.replace(
        config, **{name: getattr(given, name) for name in OWN_SETTINGS}, **changes, resume=None,
        data_dir=given.data_dir if given.data_dir is not None else config.data_dir)
    if forked.epochs <= given.from_epoch:
        raise UserError(f"--epochs {forked.epochs} is not above --from-epoch {given.from_epoch}: give the fork "
                        "epochs to train (--epochs N)")
    return forked, changes


def set_hyperparameters(parts: Parts, changes: dict) -> None:
    """A fork's changed momentum and weight decay, in every optimizer group that has them (the rate: each step)."""
    for group in parts.optimizer.param_groups:
        for name in ("momentum", "weight_decay"):
            if name in changes and name in group:
                group[name] = changes[name]


def copy_history(parent: RunDir, run: RunDir, step: int) -> None:
    """Start a fork's metrics.jsonl with its parent's records up to ``step``."""
    run.append_metrics([record for record in parent.read_metrics() if record["step"] <= step])


def start_fork(config: TrainConfig, run: RunDir, epoch: int) -> str:
    """Start a fork of the running ``run`` at its last kept epoch, as a new process; what to tell the pane.

    The fork is a run of its own (``--fork``), into the same --out and dashboard server;
    its terminal output goes to RUN_DIR/fork-eN-K.log. The epoch's checkpoint is kept for good.
    """
    kept = [e for e in run.kept_epochs() if e <= epoch]
    if not kept:
        return "refused: no epoch has finished and been saved yet; a fork starts from the end of one"
    start = kept[-1]
    run.pinned.add(start)  # the fork reads it in a few seconds, after this run may have saved newer ones
    # -P: a file in the working folder named like a module (click.py) must not shadow it; trainers is found
    # where this process found it.
    command = [sys.executable, "-P", "-m", "trainers", *command_words(config.trainer)[1:], "--fork", str(run.path),
               "--from-epoch", str(start), "--out", str(config.out), "--server", config.server,
               "--port", str(config.port), "--device", config.device, *([] if config.viz else ["--no-viz"])]
    for k in range(1, 1000):
        try:
            log = open(run.path / f"fork-e{start}-{k}.log", "xb")
            break
        except FileExistsError:
            continue
    with log:
        home = str(Path(__file__).resolve().parents[2])
        path = os.pathsep.join([home, *filter(None, [os.environ.get("PYTHONPATH")])])
        child = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                 env={**os.environ, "PYTHONPATH": path},
                                 start_new_session=True)  # a Ctrl-C of the parent leaves the fork running
    threading.Thread(target=child.wait, name="fork-reaper", daemon=True).start()
    return f"started a fork from epoch {start} (pid {child.pid}); its output: {Path(log.name).name}"


def evaluate_run(run: RunDir, data_dir: Path | None, device: str) -> Evaluation:
    """The test loss and accuracy of a run's checkpoint (its own data source unless ``data_dir``).

    Raises:
        UserError: the checkpoint is damaged (``Damaged``) or names no known trainer, or the
            data cannot be read.
    """
    target = resolve_device(device)
    state = run.load_checkpoint(target)
    trainer = state["config"].get("trainer")
    if not isinstance(trainer, str) or not (trainer in TRAINERS or own.is_own(trainer)):
        raise UserError(f"{run.checkpoint_file} names no known trainer")
    config = trainer_of(trainer).config.from_dict(state["config"])
    try:
        # Held out as in training: a standardized run's statistics are those of its training images.
        data = load(config.dataset, data_dir or config.data_dir, target).held_out(config.val_size)
    except (DataError, ValueError) as err:
        raise UserError(str(err)) from None
    data = as_configured(config, data)
    torch.manual_seed(config.seed)
    parts = build(config, target)
    check_fits(run.checkpoint_file, parts, state)
    parts.model.load_state_dict(state["model"])
    return evaluate(parts, data.test)


def check_fits(file: Path, parts: Parts, state: dict) -> None:
    """Refuse (``Damaged``) a checkpoint whose weights, progress, generator or rate changes do not fit the model
    its settings build, each of its type."""
    model = parts.model.state_dict()
    weights = state["model"]
    fits = isinstance(weights, dict) and weights.keys() == model.keys() and all(
        isinstance(weights[k], torch.Tensor) and weights[k].shape == v.shape for k, v in model.items())
    events = state.get("events", 0)
    fits = fits and progress_fits(state["progress"]) and steering_fits(state.get("steering", [])) \
        and isinstance(state["generator"], torch.Tensor) and isinstance(state["optimizer"], dict) \
        and is_whole(events) and events >= 0
    if not fits:
        raise Damaged(file, "its weights or progress do not fit the model its settings describe",
                      "restore it from a copy of the run folder")


def progress_fits(progress) -> bool:
    """Whether a checkpoint's progress holds only Progress's fields, each of its type (counts whole, not negative).

    A sum may be NaN: a run stopped after a step whose loss was NaN and not yet read back,
    whose resume then diverges as the run would have.
    """
    def of_type(field: dataclasses.Field, value) -> bool:
        if field.name == "order_state":
            return value is None or isinstance(value, torch.Tensor)
        if isinstance(field.default, int):
            return is_whole(value) and value >= 0
        return is_number(value)

    fields = {field.name: field for field in dataclasses.fields(Progress)}
    return isinstance(progress, dict) and progress.keys() <= fields.keys() and all(
        of_type(fields[name], value) for name, value in progress.items())


def steering_fits(changes) -> bool:
    """Whether a checkpoint's rate changes are [step, factor] pairs: whole steps ascending, finite factors above 0."""
    return isinstance(changes, list) and all(
        isinstance(change, list) and len(change) == 2 and is_whole(change[0]) and change[0] >= 0
        and is_number(change[1]) and math.isfinite(change[1]) and change[1] > 0 for change in changes) \
        and [step for step, _ in changes] == sorted(step for step, _ in changes)
