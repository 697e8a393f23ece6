"""What every trainer command shares: its options and what running it does."""

from __future__ import annotations

import dataclasses
import math
import os
import signal
import time
from pathlib import Path

import click
import torch
from click.core import ParameterSource
from tqdm import tqdm

from trainers.catalog import TRAINERS
from trainers.config import TrainConfig
from trainers.data import Data, DataError, load
from trainers.loop import Diverged, Evaluation, Interrupted, Parts, Progress, evaluate, fit
from trainers.options import UserError
from trainers.report import Smoothed, report_curves, report_layers, report_panes, sample_indices
from trainers.run import Pruned, RunDir, RunHooks
from trainers.schedule import Schedule
from viz.economy import Budget
from viz.sink import HeldSink, Sink

# The costly dashboard panes may take this share of the run's time (their measured cost
# decides how often they are refreshed); the curves are drawn every epoch regardless.
PANES_SHARE = 0.02
# What a refresh of the panes is taken to cost before one is measured: about what one
# costs the trainer, the sender and the server together on 2 CPU cores. So the first
# refresh comes 5 s into a run, and a run of a few seconds shows them at its end.
PANES_PRIOR = 0.1
SMOOTHING = 0.6  # weight of the past in the smoothed training loss (TensorBoard's default)


class Stopped(click.ClickException):
    """Training was stopped by a signal: exit status 128 + the signal's number."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


class DivergedError(click.ClickException):
    """Training produced a non-finite loss: exit status 3."""

    exit_code = 3


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
          hooks: RunHooks = RunHooks()) -> dict:
    """Run one trainer end to end: data, run folder, training, checkpoints, summary line.

    This is every run's one path: ``trainviz TRAINER``, a sweep's trials and the tests.
    With ``config.resume`` it continues that run folder from its checkpoint instead.

    Args:
        config: the run's settings.
        data: the dataset already loaded (a sweep worker loads it once for all its
            trials); None loads ``config.dataset``.
        labels: more settings for config.json, such as a sweep trial's study and number
            (``run_name`` names the folder).
        hooks: told of the run folder once made and of each epoch once saved; raising
            ``Pruned`` from ``hooks.epoch`` ends the run with status pruned.

    Returns:
        The last epoch's record.

    Raises:
        UserError, Stopped, DivergedError, Pruned: the run did not finish; its
        status.json says why.
    """
    device = resolve_device(config.device)
    state = None
    if config.resume is not None:
        run, state = open_run(config)
        config = resumed_config(config, state)
    if not config.test and not config.val_size:
        raise UserError("--no-test leaves nothing to evaluate: give --val-size N too")
    if data is None:
        try:
            data = load(config.dataset, config.data_dir, device)
        except DataError as err:
            raise UserError(str(err)) from None
    try:
        data = data.held_out(config.val_size, config.test)
    except ValueError as err:
        raise UserError(str(err)) from None
    if config.batch_size > len(data.train):
        raise UserError(f"--batch-size {config.batch_size} is larger than the {len(data.train)} training samples")
    if state is None:
        run = new_run(config, labels)

    torch.manual_seed(config.seed)
    parts = TRAINERS[config.trainer].build()(config, device)
    generator = torch.Generator().manual_seed(config.seed)
    progress = Progress()
    if state is None:
        settings = {**config.to_dict(), **(labels or {}), "env": config.env or run.name, "run_dir": str(run.path),
                    "torch": torch.__version__, "device_name": str(device), "data_source": str(data.source)}
        run.write_config(settings)
    else:
        settings = run.read_config()
        parts.model.load_state_dict(state["model"])
        parts.optimizer.load_state_dict(state["optimizer"])
        progress = Progress(**state["progress"])
        generator.set_state(state["generator"])
        if "rng" in state:  # dropout's draws continue where they stopped
            torch.set_rng_state(state["rng"])
        run.truncate_metrics(progress.step)
    run.write_status("running")
    hooks.started(run)
    schedule = Schedule(config.schedule, config.lr, config.epochs, math.ceil(len(data.train) / config.batch_size))
    shown = "test" if data.test is not None else "val"  # the held-out split the panes show
    sink = make_sink(config, run, resumed=state is not None)
    samples = sample_indices(len(getattr(data, shown)), config.images, config.seed)
    budget = Budget(PANES_SHARE, background=sink.background_seconds, prior=PANES_PRIOR)
    smoothed = Smoothed(SMOOTHING)
    held = HeldSink()  # layer norms, throughput, learning rate: drawn with the panes
    config_shown = state is not None  # a resumed run's environment has it already

    def save() -> None:
        run.save_checkpoint(checkpoint(parts, config, progress, generator))

    def on_steps(epoch: int, points: list[tuple[int, float]]) -> None:
        run.append_metrics([{"kind": "step", "epoch": epoch, "step": s, "train_loss": v} for s, v in points])
        if not sink.active:
            return
        steps, losses = [s for s, _ in points], [v for _, v in points]
        sink.series("train_loss", steps, {"loss": losses, "smoothed": [smoothed(v) for v in losses]})
        if config.schedule != "constant":  # a constant rate is in the config pane
            held.scalars("lr", x=steps[-1], values={"lr": schedule(steps[-1] - 1)})

    def show(record: dict, evaluations: dict[str, Evaluation]) -> None:
        """The epoch on the dashboard: curves always; the rest when the budget allows, and at the end."""
        nonlocal config_shown
        report_curves(sink, record)
        report_layers(held, record, parts, len(data.train))
        if record["epoch"] < config.epochs and not budget.due():
            return
        started = time.perf_counter()
        report_panes(sink, record, evaluations[shown], getattr(data, shown), shown, data.classes, parts, samples)
        held.release(sink)
        if not config_shown:  # after the first panes, so its window comes last on the page
            sink.config(settings)
            config_shown = True
        sink.save()
        budget.spent(started, time.perf_counter() - started)

    last_epoch: dict = {}  # the latest epoch's record, for the dashboard's final word

    def epoch_done(record: dict, evaluations: dict[str, Evaluation]) -> None:
        run.append_metrics([record])
        last_epoch.update(record)
        if sink.active:  # first, so the sender draws while the checkpoint is written
            show(record, evaluations)
        if record["epoch"] % config.save_every == 0 or record["epoch"] == config.epochs:
            save()
        tqdm.write(epoch_line(record, config.epochs))
        hooks.epoch(record)

    def end(status: str, **details) -> None:
        """The run's final status, in status.json and on the dashboard with the last epoch's numbers."""
        run.write_status(status, **details)
        sink.outcome(status, {k: v for k, v in last_epoch.items() if isinstance(v, (int, float))})

    # The handlers stay installed while a stop is saved, so a second signal still quits at once.
    with StopSignals() as stop:
        try:
            record = fit(parts, data, epochs=config.epochs, batch_size=config.batch_size, generator=generator,
                         progress=progress, schedule=schedule, log_every=config.log_every, on_steps=on_steps,
                         on_epoch=epoch_done, should_stop=stop.requested)
        except Interrupted:
            save()
            held.release(sink)
            sink.save()
            end("stopped", epoch=progress.epoch, step=progress.step)
            raise Stopped(
                f"{signal.Signals(stop.signum).name} at epoch {progress.epoch + 1}, step {progress.step}: "
                f"checkpoint and metrics saved in {run.path}; continue with: "
                f"trainviz {config.trainer} --resume {run.path}",
                128 + stop.signum,
            ) from None
        except Diverged as err:
            end("diverged", step=err.step)
            raise DivergedError(
                f"{err}; the last good epoch's checkpoint and metrics are in {run.path}. Try a smaller --lr"
            ) from None
        except Pruned:
            save()
            held.release(sink)
            sink.save()
            end("pruned", epoch=progress.epoch)
            raise
        except BaseException as err:
            end("failed", error=f"{type(err).__name__}: {err}")
            raise
        else:
            end("finished", epoch=record["epoch"])
        finally:
            sink.close()
    accuracy = f"test accuracy {record['test_acc']:.4f}" if "test_acc" in record else \
        f"validation accuracy {record['val_acc']:.4f}"
    click.echo(f"{run.path}: {accuracy} after {record['epoch']} epochs")
    return record


def epoch_line(record: dict, epochs: int) -> str:
    """One epoch's results as one terminal line."""
    line = f"epoch {record['epoch']}/{epochs}  train loss {record['train_loss']:.4f} acc {record['train_acc']:.4f}"
    for split in ("val", "test"):
        if f"{split}_acc" in record:
            line += f"  {split} loss {record[f'{split}_loss']:.4f} acc {record[f'{split}_acc']:.4f}"
    return f"{line}  {record['seconds']:.2f} s"


def new_run(config: TrainConfig, labels: dict | None = None) -> RunDir:
    """A fresh run folder under ``config.out`` (named by ``labels["run_name"]`` when given), or a UserError."""
    try:
        return RunDir.create(config.out, config.trainer, (labels or {}).get("run_name"))
    except OSError as err:
        raise UserError(f"cannot create a run folder in {config.out}: {err.strerror}; pick another --out") from None


def open_run(config: TrainConfig) -> tuple[RunDir, dict]:
    """The run folder named by --resume and its checkpoint, or a UserError."""
    run = RunDir(config.resume)
    if not (run.config_file.is_file() and run.checkpoint_file.is_file()):
        raise UserError(f"--resume {config.resume} is not a trainviz run folder (no config.json and checkpoint.pt)")
    try:
        state = run.load_checkpoint()
    except Exception as err:  # a damaged file surfaces as one of many pickle/zip errors
        raise UserError(f"cannot read {run.checkpoint_file}: {err}") from None
    if state["config"].get("trainer") != config.trainer:
        raise UserError(f"--resume {config.resume} is a {state['config'].get('trainer')} run; "
                        f"resume it with: trainviz {state['config'].get('trainer')} --resume {config.resume}")
    return run, state


def resumed_config(given: TrainConfig, state: dict) -> TrainConfig:
    """The run's own settings, with where to show it (and a larger --epochs) from this command line."""
    config = type(given).from_dict(state["config"])
    ctx = click.get_current_context(silent=True)
    explicit = ctx is not None and ctx.get_parameter_source("epochs") == ParameterSource.COMMANDLINE
    return dataclasses.replace(
        config, viz=given.viz, server=given.server, port=given.port, device=given.device,
        epochs=given.epochs if explicit else config.epochs, resume=given.resume,
    )


def make_sink(config: TrainConfig, run: RunDir, resumed: bool = False) -> Sink:
    """The null sink for --no-viz, else a Visdom sink that also writes RUN_DIR/events.jsonl.

    A resumed run first redraws its environment from the events it already has.
    """
    if not config.viz:
        return Sink()
    from viz.visdom_sink import VisdomSink  # imports requests and visdom: only when streaming

    return VisdomSink(config.server, config.port, run.read_config()["env"], run.events_file, rebuild_first=resumed)


def checkpoint(parts: Parts, config: TrainConfig, progress: Progress, generator: torch.Generator) -> dict:
    """Everything needed to evaluate the model or continue the run exactly."""
    return {
        "model": parts.model.state_dict(),
        "optimizer": parts.optimizer.state_dict(),
        "config": config.to_dict(),
        "progress": dataclasses.asdict(progress),
        "generator": generator.get_state(),
        "rng": torch.get_rng_state(),  # dropout draws from torch's global generator
    }


def evaluate_run(run: RunDir, data_dir: Path | None, device: str) -> Evaluation:
    """The test loss and accuracy of a run's checkpoint (its own data source unless ``data_dir``)."""
    target = resolve_device(device)
    state = run.load_checkpoint(target)
    trainer = TRAINERS.get(state["config"].get("trainer"))
    if trainer is None:
        raise UserError(f"{run.checkpoint_file} names no known trainer")
    config = trainer.config.from_dict(state["config"])
    try:
        data = load(config.dataset, data_dir or config.data_dir, target)
    except DataError as err:
        raise UserError(str(err)) from None
    torch.manual_seed(config.seed)
    parts = trainer.build()(config, target)
    parts.model.load_state_dict(state["model"])
    return evaluate(parts, data.test)
