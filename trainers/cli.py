"""The ``trainviz`` command: one subcommand per trainer, plus evaluate."""

from __future__ import annotations

import sys
from pathlib import Path

import click
import torch

from trainers import mlp, mlp_lowlevel, nn_softmax, scratch_softmax
from trainers.command import UserError, resolve_device, server_url
from trainers.data import DataError, load
from trainers.loop import evaluate
from trainers.run import RunDir
from viz.server import server_cli

TRAINERS = {module.NAME: module for module in (scratch_softmax, nn_softmax, mlp_lowlevel, mlp)}


@click.command("replay")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--server", envvar="VISDOM_SERVER_URL", default="http://localhost", show_default=True,
              callback=server_url)
@click.option("--port", envvar="VISDOM_PORT", type=click.IntRange(1, 65535), default=8097, show_default=True)
@click.option("--env", default=None, help="Environment to rebuild; default: the run's own.")
def replay_command(run_dir: Path, server: str, port: int, env: str | None):
    """Rebuild a run's dashboard on a visdom server from RUN_DIR/events.jsonl."""
    from viz.render import Renderer
    from viz.sink import read_events
    from viz.visdom_sink import connect, rebuild

    run = RunDir(run_dir)
    if not run.events_file.is_file():
        raise UserError(f"{run_dir} holds no events.jsonl: give the folder of a run trained with the dashboard on")
    events, damaged = read_events(run.events_file)
    if not run.config_file.is_file() and env is None:
        raise UserError(f"{run_dir} holds no config.json; name the environment with --env")
    env = env or run.read_config().get("env") or run.path.name
    vis = connect(server, port, env)
    if vis is None:
        raise UserError(f"no visdom server answers at {server}:{port}; start one with: trainviz server start")
    rebuild(vis, Renderer(vis, env), events)
    note = f"; skipped {damaged} damaged line{'s' * (damaged != 1)}" if damaged else ""
    click.echo(f"replayed {len(events)} events into environment {env} at {server}:{port}{note}")


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
def cli():
    """Train small PyTorch models and watch them live in Visdom."""


for module in TRAINERS.values():
    cli.add_command(module.command)
cli.add_command(server_cli)
cli.add_command(replay_command)


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
    target = resolve_device(device)
    state = run.load_checkpoint(target)
    module = TRAINERS.get(state["config"].get("trainer"))
    if module is None:
        raise UserError(f"{run_dir}/checkpoint.pt names no known trainer")
    config = module.CONFIG.from_dict(state["config"])
    try:
        data = load(config.dataset, data_dir or config.data_dir, target)
    except DataError as err:
        raise UserError(str(err)) from None
    torch.manual_seed(config.seed)
    parts = module.build(config, target)
    parts.model.load_state_dict(state["model"])
    result = evaluate(parts, data.test)
    click.echo(f"{run_dir}: test loss {result.loss:.4f}, test accuracy {result.accuracy:.4f}")
