"""The ``trainviz`` command: one subcommand per trainer, plus the tools around runs.

This module imports neither torch nor torchvision: help, ``--version``, every option
error, ``server``, ``replay``, ``runs`` and ``compare`` answer at once. A trainer's command imports them when its
run starts.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import click
from click.core import ParameterSource

from trainers import __version__
from trainers.catalog import TRAINERS, Trainer
from trainers.core.errors import TrainvizError, UserError
from trainers.core.run import Damaged, RunDir
from trainers.options import env_name, server_options, train_options
from trainers.runs.table import COLUMNS, find_runs, format_table, problems, sort_rows, summary
from trainers.sweeps.space import PRUNERS
from viz.dashboard.windows import COMPARE_ENV
from viz.server.manager import server_cli


def write_installed(formatter: click.HelpFormatter, heading: str) -> None:
    """A help section of the trainers installed packages offer, by name and entry point, if any.

    Read from the packages' metadata: none of them is imported (nor torch).
    """
    from trainers.models import own

    if own.installed():
        with formatter.section(heading):
            formatter.write_dl(sorted(own.installed().items()))


class OneLineErrors(click.Group):
    """A group whose errors are one line on stderr (no usage block), with their exit status."""

    def format_epilog(self, ctx, formatter) -> None:
        """After the commands: the trainers installed packages offer."""
        write_installed(formatter, "Trainers from installed packages (trainviz run NAME)")
        super().format_epilog(ctx, formatter)

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        try:
            status = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except (click.ClickException, TrainvizError) as err:
            # A run stopped from its dashboard ends as asked (status 0), but not finished: said on stderr too.
            click.echo(f"{'Error: ' if err.exit_code else ''}{err.format_message()}", err=True)
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
    """The ``trainviz NAME`` command of one trainer (``trainviz run PATH.py``: a model of one's own)."""
    force = [click.option("--force", is_flag=True, help="With --resume: go on though the model file changed.")] \
        if trainer.name not in TRAINERS else []

    @click.command(trainer.name, help=trainer.summary)
    @train_options(trainer.config, activation=trainer.activation)
    def command(force: bool = False, **options):
        from trainers.core.training import train  # torch, torchvision: only now that a run starts

        ctx = click.get_current_context()
        given = {name for name in options if ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE}
        train(trainer.config(trainer=trainer.name, **options), given=given, force=force)

    for option in force:
        command = option(command)
    if trainer.name not in TRAINERS:  # a file that runs also sweeps: a clash with the sweep's options is said now
        sweep_command(trainer)
    return without_clashes(command, trainer)


def without_clashes(command: click.Command, trainer: Trainer) -> click.Command:
    """``command``, or a UserError when a setting a model file adds takes a name the command has already."""
    names = [param.name for param in command.params]
    clashes = sorted({name for name in names if names.count(name) > 1} | ({"ctx", "help"} & set(names)))
    if clashes:
        raise UserError(f"{trainer.name}: Config.{clashes[0]} takes the name of an option trainviz has already "
                        f"(--{clashes[0].replace('_', '-')}); name the setting otherwise")
    return command


class OwnTrainers(click.Group):
    """``trainviz run SPEC``: SPEC is a model file, ``module:function`` or an installed name, resolved when run."""

    def list_commands(self, ctx) -> list[str]:
        from trainers.models import own

        return sorted(own.installed())

    def format_commands(self, ctx, formatter) -> None:
        write_installed(formatter, "Installed trainers")

    def get_command(self, ctx, name: str) -> click.Command | None:
        from trainers.models import own  # the user's file imports torch: only once one is named

        if not own.is_own(name):
            raise UserError(f"trainviz run {name}: give a model file PATH.py, module:function or an installed "
                            f"trainer ({', '.join(own.installed()) or 'none installed'}); the built-in ones run "
                            f"as trainviz NAME ({', '.join(TRAINERS)})")
        return trainer_command(own.load(name))


@cli.group("run", cls=OwnTrainers, no_args_is_help=True,
           subcommand_metavar="PATH.py|MODULE:FUNCTION|NAME [OPTIONS]")
def run_group():
    """Train a model of your own with the shared loop, dashboard, resume, runs and sweeps.

    \b
    PATH.py          a file that defines build(config, device), returning an nn.Module
                     (trained with cross-entropy and the SGD the options describe) or
                     (model, loss, optimizer); a dataclass Config extending TrainConfig
                     adds options of its own
    MODULE:FUNCTION  the same, from an importable module
    NAME             a trainer an installed package offers (entry points: trainviz.trainers)
    trainviz run PATH.py --help lists the file's options.
    """


SWEEP_VAL_SIZE = 5000  # a sweep's default validation split: 1/12 of Fashion-MNIST's training set


class SweepGroup(click.Group):
    """``trainviz sweep TRAINER``: a built-in trainer, or a model of one's own (as ``trainviz run`` takes it)."""

    def get_command(self, ctx, name: str) -> click.Command | None:
        command = super().get_command(ctx, name)
        if command is not None:
            return command
        from trainers.models import own  # the user's file imports torch: only once one is named

        return sweep_command(own.load(name)) if own.is_own(name) else None


@click.group("sweep", cls=SweepGroup)
def sweep_group():
    """Search a trainer's settings with Optuna: trainviz sweep TRAINER [OPTIONS] --param NAME=SPEC ...

    \b
    SPEC:  'a|b|c'      choices (any option's values, as typed on the command line),
                        in quotes: unquoted, the shell takes | for a pipe
           lo..hi       a float range
           lo..hi:log   a float range searched in log space
           lo..hi:int   an integer range
    Every trial is a run folder under OUT/STUDY; the study's dashboard is environment STUDY.
    """


def sweep_command(trainer: Trainer) -> click.Command:
    """The ``trainviz sweep NAME`` command of one trainer: its options, the search's, then a sweep."""

    @click.command(trainer.name, help=f"Sweep {trainer.name}: {trainer.summary}")
    @train_options(trainer.config, activation=trainer.activation, val_size=SWEEP_VAL_SIZE, test=False)
    @click.option("--param", "specs", multiple=True, required=True, metavar="NAME=SPEC",
                  help="A setting to search, e.g. lr=0.01..0.5:log, 'hidden=100|200,200' (repeat for more).")
    @click.option("--sampler", type=click.Choice(["grid", "random", "tpe"]), default=None,
                  help="grid when every param is a list of choices, else tpe.")
    @click.option("--trials", type=click.IntRange(min=1), default=None,
                  help="Trials in all, over all workers and machines (random and tpe).")
    @click.option("--pruner", type=click.Choice(PRUNERS), default=None,
                  help="Stop a trial whose validation accuracy is below the median of the finished trials' at "
                       "the same epoch: halfway judges from half the epochs, once a quarter of the trials have "
                       "finished (default for random and tpe); median from the 2nd epoch, once 3 have (quicker, "
                       "and it stops some of the best); none (default for grid).")
    @click.option("--prune/--no-prune", default=None,
                  help="--prune: the default pruner, on a grid too; --no-prune: --pruner none.")
    @click.option("--refit", is_flag=True,
                  help="After the search, train the chosen trial's settings again on the training and validation "
                       "images together (--val-size 0), as many epochs, in OUT/STUDY/refit-NNN, and print its "
                       "test accuracy beside the trial's.")
    @click.option("--study", default=None, callback=env_name,
                  help="Study name, also its dashboard environment; default: the trainer and a hash of the "
                       "search, so the same command continues the same study.")
    @click.option("--storage", default=None, metavar="URL|PATH",
                  help="Optuna storage: a database URL (postgresql://USER:PASSWORD@HOST/DB) for several "
                       "machines; default: a journal file in OUT/STUDY.")
    @click.option("--jobs", type=click.IntRange(min=1), default=1, show_default=True,
                  help="Worker processes on this machine; each gets cores / jobs torch threads.")
    @click.option("--heartbeat", type=click.IntRange(min=1), default=10, show_default=True, metavar="SECONDS",
                  help="With a database storage: seconds between a trial's heartbeats; a trial silent for "
                       "3 intervals is failed and run again.")
    @click.pass_context
    def command(ctx, specs, sampler, trials, pruner, prune, refit, study, storage, jobs, heartbeat, **options):
        for name, why in (("resume", "continue a sweep by running the same command again"),
                          ("fork", "fork one of its trials' run folders with trainviz TRAINER --fork"),
                          ("from_epoch", "it goes with --fork, which a sweep does not take"),
                          ("env", "a sweep names its environments after the study")):
            if options[name] is not None:
                raise UserError(f"--{name.replace('_', '-')} is not a sweep option: {why}")
        if options["test"]:
            raise UserError("--test is not a sweep option: trials are chosen on validation accuracy, and the "
                            "chosen trial's test accuracy is reported at the end")
        if not options["val_size"]:
            raise UserError("a sweep chooses on a validation split: give --val-size N above 0")
        from trainers.sweeps.space import describe, parse_params

        params = parse_params(specs, trainer.config, ctx.command, ctx)
        click.echo(describe(params))  # first: a SPEC the shell cut short shows before anything starts
        config = trainer.config(trainer=trainer.name, **{**options, "test": False}).to_dict()
        from trainers.sweeps import study as sweep  # Optuna: only now that a sweep starts

        sweep.run(sweep.plan(trainer.name, config, params, study=study, storage=storage, sampler=sampler,
                             trials=trials, prune=prune, pruner=pruner, jobs=jobs, heartbeat=heartbeat,
                             refit=refit))

    return without_clashes(command, trainer)


for _trainer in TRAINERS.values():
    cli.add_command(trainer_command(_trainer))
    sweep_group.add_command(sweep_command(_trainer))
cli.add_command(sweep_group)
cli.add_command(server_cli)


def visdom_at(server: str, port: int, env: str):
    """A client of the visdom server at server:port, or a UserError saying how to start one."""
    from viz.dashboard.sender import connect  # visdom's client: only for the commands that draw

    vis = connect(server, port, env)
    if vis is None:
        raise UserError(f"no visdom server answers at {server}:{port}; start one with: trainviz server start")
    return vis


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
    if env is None:
        try:
            env = run.read_config().get("env") or run.path.name
        except Damaged as err:
            raise Damaged(err.file, err.problem, "name the environment to draw into with --env") from None
        except OSError as err:
            raise UserError(f"cannot read {run.config_file} ({err.strerror}); name the environment with --env") from None
    from viz.dashboard.render import Renderer
    from viz.dashboard.sender import rebuild
    from viz.dashboard.sink import read_events

    try:
        events, damaged = read_events(run.events_file)
    except OSError as err:
        raise UserError(f"cannot read {run.events_file} ({err.strerror})") from None
    vis = visdom_at(server, port, env)
    rebuild(vis, Renderer(vis, env), events)
    note = f"; skipped {damaged} damaged line{'s' * (damaged != 1)}" if damaged else ""
    click.echo(f"replayed {len(events)} events into environment {env} at {server}:{port}{note}")


@cli.command("runs")
@click.argument("directory", type=click.Path(path_type=Path, file_okay=False), default=Path("runs"))
@click.option("--sort", "column", type=click.Choice([key for key, _ in COLUMNS]), default="run", show_default=True,
              help="Column to sort by (accuracies, epochs and seconds: largest first).")
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON instead of a table.")
def runs_command(directory: Path, column: str, as_json: bool):
    """A table of every run under DIRECTORY (default ./runs), sweep trials included."""
    if not directory.is_dir():
        raise UserError(f"{directory} is not a folder; give the --out folder your runs went to")
    rows = sort_rows([summary(run, directory) for run in find_runs(directory)], column)
    if as_json:
        # strict JSON for scripts: a diverged run's nan or inf is null
        click.echo(json.dumps([{k: None if isinstance(v, float) and not math.isfinite(v) else v
                                for k, v in row.items()} for row in rows], indent=2))
    elif rows:
        click.echo(format_table(rows))
    else:
        click.echo(f"no runs under {directory}")


@cli.command("compare")
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(path_type=Path, file_okay=False))
@server_options
@click.option("--env", default=COMPARE_ENV, show_default=True, callback=env_name,
              help="Environment to draw into; its windows are replaced.")
def compare_command(run_dirs: tuple[Path, ...], server: str, port: int, env: str):
    """Draw the epoch curves of the runs in RUN_DIRS side by side in one environment."""
    runs = [RunDir(path) for path in run_dirs]
    for run in runs:
        if not (run.config_file.is_file() and run.metrics_file.is_file()):
            raise UserError(f"{run.path} is not a trainviz run folder (no config.json and metrics.jsonl)")
        drawn_from = [found for found in problems(run)[2] if found.startswith(("config.json", "metrics.jsonl"))]
        if drawn_from:
            raise UserError(f"{run.path} is damaged: {drawn_from[0]}; restore it from a copy of the run folder, "
                            "or compare without it")
    from trainers.runs.table import comparison_events, identical_curves
    from viz.dashboard.render import Renderer

    vis = visdom_at(server, port, env)
    vis.close(None, env=env)  # only the runs asked for
    renderer = Renderer(vis, env)
    renderer.render([*comparison_events(runs, env), {"kind": "save"}])
    click.echo(f"compared {len(runs)} runs in environment {env} at {server}:{port}")
    for names in identical_curves(runs):
        click.echo(f"note: {', '.join(names)} have the same curves (same settings and seed?): "
                   "their traces lie on top of each other")


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
    from trainers.core.training import evaluate_run

    result = evaluate_run(run, data_dir, device)
    click.echo(f"{run_dir}: test loss {result.loss:.4f}, test accuracy {result.accuracy:.4f}")
