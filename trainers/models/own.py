"""A model of the user's own as a trainer: ``trainviz run PATH.py``, ``module:function`` or an installed name.

The contract is the built-in trainers' own: the file (or module) defines
``build(config, device)`` and returns the loop's parts, as ``trainers.core.loop.Parts``
or a ``(model, loss, optimizer)`` tuple, or a bare ``nn.Module``, which gets
cross-entropy and the SGD the shared options describe. Optionally it defines a
dataclass ``Config`` extending ``trainers.core.config.TrainConfig`` (or ``MLPConfig``):
its own fields become options of the command, each of type int, float, str or bool.

Packages offer trainers through the entry-point group ``trainviz.trainers``: each entry
names its ``module:function``, and ``trainviz run NAME`` runs it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import importlib.metadata
import importlib.util
import inspect
import re
import sys
import traceback
from pathlib import Path

from trainers.catalog import Trainer
from trainers.core.config import MLPConfig, TrainConfig, annotation
from trainers.core.errors import UserError

GROUP = "trainviz.trainers"  # the entry-point group packages offer trainers in
OPTION_TYPES = ("int", "float", "str", "bool")  # what a Config field of one's own may be


def installed() -> dict[str, str]:
    """The trainers installed packages offer: name -> ``module:function`` (read from metadata, nothing imported)."""
    return {entry.name: entry.value for entry in importlib.metadata.entry_points(group=GROUP)}


def is_own(spec: str) -> bool:
    """Whether a trainer name is a file, a ``module:function`` or an installed entry point, not a built-in."""
    return spec.endswith(".py") or ":" in spec or spec in installed()


def short_name(spec: str) -> str:
    """What a model of one's own is called in folder names and the runs table: ``lenet`` for /path/lenet.py."""
    return Path(spec).stem if spec.endswith(".py") else spec.replace(":", ".").rsplit("/", 1)[-1]


def comments(config: type) -> dict[str, str]:
    """Each field's trailing comment in the source of ``config`` (``filters: int = 6  # filters of ...``)."""
    try:
        source = inspect.getsource(config)
    except (OSError, TypeError):
        return {}
    found = (re.match(r"\s*(\w+)\s*:[^=#]*=[^#]*#\s*(.+)$", line) for line in source.splitlines())
    return {m.group(1): m.group(2).strip() for m in found if m}


def digest(path: Path) -> str:
    """The sha256 of a model file's contents, recorded with its runs."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load(spec: str) -> Trainer:
    """The trainer ``spec`` names: a path to a .py file, ``module:function``, or an installed name.

    Raises:
        UserError: no such file or module, it fails to import (its own error's last line),
            it has no such function, or its ``Config`` is not one trainviz can take.
    """
    if spec in installed():
        spec = installed()[spec]
    if spec.endswith(".py"):
        path = Path(spec).expanduser().resolve()
        if not path.is_file():
            raise UserError(f"{spec}: no such file; give the path of a .py file that defines build(config, device)")
        module, function, source = _import_file(path), "build", str(path)
    else:
        name, _, function = spec.partition(":")
        module, source = _import_module(name, spec), None
        function = function or "build"
    build = getattr(module, function, None)
    if not callable(build):
        raise UserError(f"{spec} defines no function {function}(config, device); "
                        "it should return a model, or (model, loss, optimizer)")
    config = _config_of(module, spec)
    return Trainer(name=source or spec, module=module.__name__, config=config,
                   summary=f"Train the model of {source or spec}.", function=function, source=source)


def _import_file(path: Path):
    """Import a model file under a name of its own: its path's and contents' hash (two files of one name
    stay apart, and a file changed since it was imported in this process is imported again)."""
    name = f"trainviz_own_{path.stem}_{hashlib.sha256(str(path).encode() + path.read_bytes()).hexdigest()[:10]}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException as err:  # SyntaxError, ImportError, sys.exit(), or anything the file's own code raises
        del sys.modules[name]
        if isinstance(err, KeyboardInterrupt):
            raise
        raise UserError(f"{path} fails to import: {last_line(err)}") from None
    return module


def _import_module(name: str, spec: str):
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as err:
        if err.name and name.startswith(err.name):
            raise UserError(f"{spec}: no module named {err.name}; give PATH.py or an importable module:function") \
                from None
        raise UserError(f"{spec} fails to import: {last_line(err)}") from None
    except (Exception, SystemExit) as err:
        raise UserError(f"{spec} fails to import: {last_line(err)}") from None


def last_line(err: BaseException) -> str:
    """What an error says in its traceback's last line: ``NameError: name 'nn' is not defined``."""
    return traceback.format_exception_only(type(err), err)[-1].strip()


def _config_of(module, spec: str) -> type[TrainConfig]:
    """The module's ``Config`` dataclass, checked, or the shared settings when it has none."""
    config = getattr(module, "Config", None)
    if config is None:
        return TrainConfig
    if not (isinstance(config, type) and issubclass(config, TrainConfig) and dataclasses.is_dataclass(config)):
        raise UserError(f"{spec}: Config must be a dataclass extending trainers.core.config.TrainConfig")
    for field in own_fields(config):
        if annotation(field) not in OPTION_TYPES:
            raise UserError(f"{spec}: Config.{field.name} is {annotation(field)}; a setting of one's own is "
                            f"one of {', '.join(OPTION_TYPES)}")
        if field.default is dataclasses.MISSING:
            raise UserError(f"{spec}: Config.{field.name} needs a default value (the option's default)")
    return config


def own_fields(config: type[TrainConfig]) -> list[dataclasses.Field]:
    """The fields a Config adds to the shared settings (and the MLP's, when it extends those)."""
    shared = {f.name for f in dataclasses.fields(MLPConfig if issubclass(config, MLPConfig) else TrainConfig)}
    return [f for f in dataclasses.fields(config) if f.name not in shared]
