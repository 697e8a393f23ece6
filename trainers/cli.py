"""The ``trainviz`` command: one subcommand per trainer, plus the tools around runs.

This module imports neither torch nor torchvision: help, ``--version``, every option
error, ``server``, ``replay`` answer at once. A trainer's command imports them when its
run starts.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from trainers import __version__
from trainers.catalog import TRAINERS, Trainer
from trainers.options import UserError, env_name, server_options, train_options
from trainers.run import RunDir
from viz.server import server_cli


class OneLineErrors(click.Group):
    """A group whose errors are one line on stderr (no usage block), with their exit status."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        try:
            status = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.ClickException as err:
            click.echo(f"Error: {err.format_message()}", err=True)
            status = err.exit_code
        except click.Abort:
            click.echo("Aborted.", err=True)
            status = 1
        status = status if isinstance(status, int) else 0
        if standalone_mode:
            sys.exit(status)
        return status


@click.group(cls=OneLineErrors, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "--version", prog_name="trainviz")
def cli():
    """Train small PyTorch models and watch them live in Visdom."""


def trainer_command(trainer: Trainer) -> click.Command:
    """The ``trainviz NAME`` command of one trainer: its options, then a run."""

    @click.command(trainer.name, help=trainer.summary)
    @train_options(trainer.config, activation=trainer.activation)
    def command(**options):
        from trainers.command import train  # torch, torchvision: only now that a run starts

        train(trainer.config(trainer=trainer.name, **options))

    return command


for _trainer in TRAINERS.values():
    cli.add_command(trainer_command(_trainer))
cli.add_command(server_cli)


@cli.command("replay")
@click.argument("run_dir", type=click.Path(path_type=Path))
@server_options
@click.option("--env", default=None, callback=env_name, help="Environment to rebuild; default: the run's own.")
def replay_command(run_dir: Path, server: str, port: int, env: str | None):
    """Rebuild a run's dashboard on a visdom server from RUN_DIR/events.jsonl."""
    run = RunDir(run_dir)
    if not run.events_file.is_file():
        raise UserError(f"{run_dir} holds no events.jsonl: give the folder of a run trained with the dashboard on")
    if not run.config_file.is_file() and env is None:
        raise UserError(f"{run_dir} holds no config.json; name the environment with --env")
    from viz.render import Renderer
    from viz.sink import read_events
    from viz.visdom_sink import connect, rebuild

    events, damaged = read_events(run.events_file)
    env = env or run.read_config().get("env") or run.path.name
    vis = connect(server, port, env)
    if vis is None:
        raise UserError(f"no visdom server answers at {server}:{port}; start one with: trainviz server start")
    rebuild(vis, Renderer(vis, env), events)
    note = f"; skipped {damaged} damaged line{'s' * (damaged != 1)}" if damaged else ""
    click.echo(f"replayed {len(events)} events into environment {env} at {server}:{port}{note}")


@cli.command("evaluate")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--data-dir", type=click.Path(path_type=Path), default=None,
              help="Read the test set from here instead of the run's own data source.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="cpu", show_default=True)
def evaluate_command(run_dir: Path, data_dir: Path | None, device: str):
    """Print the test loss and accuracy of a finished run's checkpoint."""
    run = RunDir(run_dir)
    if not run.checkpoint_file.is_file():
        raise UserError(f"{run_dir} holds no checkpoint.pt: give the folder of a trainviz run")
    from trainers.command import evaluate_run

    result = evaluate_run(run, data_dir, device)
    click.echo(f"{run_dir}: test loss {result.loss:.4f}, test accuracy {result.accuracy:.4f}")
