"""A sweep's search space: ``--param NAME=SPEC`` parsed and checked against the trainer's own options.

Imports neither torch nor Optuna: every mistake in a search is reported before anything
starts. A SPEC is one of

    a|b|c       choices, each given as on the command line (``200,200|400``)
    lo..hi      floats, uniform between lo and hi
    lo..hi:log  floats, uniform in log space (lo > 0): learning rates, weight decay
    lo..hi:int  integers from lo to hi, both included
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import re
from dataclasses import dataclass

import click

from trainers.catalog import TRAINERS
from trainers.core.config import TrainConfig
from trainers.core.errors import UserError
from trainers.models.own import short_name

# Settings that say where a run goes or how it is watched, not what it learns: never
# searched, and not part of what makes two studies the same.
PLUMBING = frozenset({"trainer", "data_dir", "device", "out", "viz", "server", "port", "env", "log_every",
                      "images", "save_every", "resume"})
# Settings of how a run starts or what it keeps, not what it learns: never searched either
# (they stay part of a study's identity, as they always were).
UNSEARCHABLE = PLUMBING | {"keep_checkpoints", "fork", "from_epoch"}
# Settings added after studies were first saved, with the value every such study had: left
# out of a study's identity at that value, so the command of an older study continues it.
ADDED_LATER = {"standardize": False}
# Settings every trial must share for their validation accuracies to be comparable.
SHARED = frozenset({"dataset", "val_size", "test"})
# How a sweep stops trials early (``trainers.sweeps.study.make_pruner``); the first is the default
# for random and TPE searches, and a grid runs every point to the end unless told otherwise.
PRUNERS = ("halfway", "median", "none")

RANGE = re.compile(r"(?P<lo>[^.:]*\.?[^.:]+)\.\.(?P<hi>[^:]+)(?::(?P<scale>[^:]*))?")
SCALES = ("log", "int")  # what may follow a range's colon


@dataclass(frozen=True)
class Param:
    """One searched setting."""

    field: str  # the config field, e.g. "batch_size"
    spec: str  # as the user wrote it after '=', e.g. "16|32|64"
    choices: tuple[str, ...] = ()  # for a choice list: the values as typed
    low: float = 0.0  # for a range: its bounds ...
    high: float = 0.0
    log: bool = False  # ... sampled in log space
    integer: bool = False  # ... or as integers

    @property
    def option(self) -> str:
        """The command-line option it sets, e.g. ``--batch-size``."""
        return "--" + self.field.replace("_", "-")


def parse_params(specs: tuple[str, ...], config: type[TrainConfig], command: click.Command,
                 ctx: click.Context) -> list[Param]:
    """``NAME=SPEC`` strings -> Params of ``config``'s fields, each value checked by the option's own type.

    Raises:
        UserError: an unknown or unsearchable name, a malformed SPEC, a value the option
            rejects, or the same name twice.
    """
    fields = {f.name for f in dataclasses.fields(config)}
    options = {p.name: p for p in command.params if isinstance(p, click.Option) and p.name in fields}
    params: dict[str, Param] = {}
    for text in specs:
        name, sep, spec = text.partition("=")
        field = name.strip().lstrip("-").replace("-", "_")
        if not sep or not spec:
            raise UserError(f"--param {text!r} is not NAME=SPEC, like lr=0.01..0.3:log or hidden=100|200,200")
        if field not in options or field in UNSEARCHABLE | SHARED:
            searchable = ", ".join(sorted(n.replace("_", "-") for n in options if n not in UNSEARCHABLE | SHARED))
            raise UserError(f"--param {text}: {command.name} has no searchable option {name!r}; "
                            f"it can search: {searchable}")
        if field in params:
            raise UserError(f"--param {name} is given twice")
        params[field] = _parse_spec(field, spec, options[field], ctx, text)
    return list(params.values())


def _parse_spec(field: str, spec: str, option: click.Option, ctx: click.Context, text: str) -> Param:
    def check(value: str):
        try:
            converted = option.type.convert(value, option, ctx)
            return option.callback(ctx, option, converted) if option.callback else converted  # --seed's range
        except click.BadParameter as err:
            raise UserError(f"--param {text}: {err.format_message()}") from None

    match = RANGE.fullmatch(spec) if "|" not in spec else None
    if match is None:
        choices = tuple(part.strip() for part in spec.split("|"))
        if any(not choice for choice in choices) or len(set(choices)) != len(choices):
            raise UserError(f"--param {text}: choices must be distinct and non-empty, like 16|32|64")
        for choice in choices:
            check(choice)
        return Param(field, spec, choices=choices)
    if match["scale"] is not None and match["scale"] not in SCALES:
        raise UserError(f"--param {text}: a range ends in :log or :int, not :{match['scale']}")
    low, high = check(match["lo"]), check(match["hi"])
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)):
        raise UserError(f"--param {text}: {option.opts[0]} is not a number; give choices like a|b|c")
    integer, log = match["scale"] == "int", match["scale"] == "log"
    if isinstance(low, int) and isinstance(high, int) and not integer:  # an option of whole numbers
        raise UserError(f"--param {text}: {option.opts[0]} takes whole numbers; write {match['lo']}..{match['hi']}:int")
    if integer and not all(float(v).is_integer() for v in (low, high)):
        raise UserError(f"--param {text}: an :int range needs whole-number bounds")
    if not low < high:
        raise UserError(f"--param {text}: the range must go from low to high")
    if log and low <= 0:
        raise UserError(f"--param {text}: a :log range needs a low bound above 0")
    return Param(field, spec, low=low, high=high, log=log, integer=integer)


def convert(param: Param, value, command: click.Command, ctx: click.Context):
    """A sampled value (a choice as typed, or a number) -> the config field's value."""
    option = next(p for p in command.params if p.name == param.field)
    return option.type.convert(str(value) if param.choices else value, option, ctx)


def describe(params: list[Param] | tuple[Param, ...]) -> str:
    """The search space as parsed, one setting after another, so a mistyped SPEC shows before anything runs.

    >>> describe([Param("lr", "0.01..0.3:log", low=0.01, high=0.3, log=True), Param("dropout", "0", ("0",))])
    'search space: --lr 0.01..0.3 (log scale); --dropout 0 (1 choice)'
    """
    def one(param: Param) -> str:
        if param.choices:
            count = len(param.choices)
            return f"{param.option} {' | '.join(param.choices)} ({count} choice{'s' * (count != 1)})"
        scale = "integers" if param.integer else "log scale" if param.log else "uniform"
        return f"{param.option} {param.low:g}..{param.high:g} ({scale})"

    return "search space: " + "; ".join(one(param) for param in params)


def grid_points(params: list[Param]) -> list[dict[str, str]]:
    """Every combination of the choice lists, in order (the last param varies fastest)."""
    return [dict(zip([p.field for p in params], values)) for values in itertools.product(*[p.choices for p in params])]


def is_grid(params: list[Param]) -> bool:
    """Whether every param is a choice list, so the whole space can be enumerated."""
    return all(p.choices for p in params)


def space(trainer: str, params: list[Param], fixed: dict, total: int | None) -> dict:
    """What makes two sweeps the same study: trainer, searched params, shared fixed settings, trial budget.

    A setting added later (ADDED_LATER) holding the value studies had before it is left out.
    """
    searched = {p.field for p in params}
    settings = {k: v for k, v in fixed.items()
                if k not in PLUMBING and k not in searched and not (k in ADDED_LATER and v == ADDED_LATER[k])}
    return json.loads(json.dumps({"trainer": trainer, "params": {p.field: p.spec for p in params},
                                  "fixed": settings, "trials": total}))


def default_study_name(space_: dict) -> str:
    """``<trainer>-<6 hex digits of the space>``: the same command always continues the same study.

    A model file of one's own is named by its file's stem (``lenet-3f2a1c``).
    """
    digest = hashlib.sha1(json.dumps(space_, sort_keys=True).encode()).hexdigest()[:6]
    trainer = space_["trainer"]
    return f"{trainer if trainer in TRAINERS else short_name(trainer)}-{digest}"


def differences(stored: dict, wanted: dict) -> list[str]:
    """The top-level settings in which two spaces differ, named as options."""
    keys = []
    for section in ("params", "fixed"):
        a, b = stored.get(section, {}), wanted.get(section, {})
        keys += [f"{'--param ' if section == 'params' else '--'}{k.replace('_', '-')}"
                 for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    keys += [f"--{k}" for k in sorted((set(stored) | set(wanted)) - {"params", "fixed"})
             if stored.get(k) != wanted.get(k)]
    return keys
