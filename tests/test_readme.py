"""Every command README.md shows runs when pasted into bash as written.

Each ```bash block must parse (``bash -n``); each ``trainviz`` and ``./launch.sh`` command
in one, and each complete command in inline code, must hold no unquoted shell operator
(an unquoted ``|`` in ``--param dropout=0|0.2`` pipes into a command ``0.2``) and must be
accepted by the real command line: trainer runs and sweeps go through Click up to the
point where training would start, the other commands through Click's parser.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from trainers.catalog import TRAINERS
from trainers.cli import cli

README = Path(__file__).resolve().parent.parent / "README.md"
FENCE = re.compile(r"^(?P<indent> *)```bash\n(?P<body>.*?)^(?P=indent)```", re.MULTILINE | re.DOTALL)
INLINE = re.compile(r"`((?:trainviz|\./launch\.sh) [^`]+)`")
# A command shown as an indented block: four spaces after a blank line, outside the fences.
INDENTED = re.compile(r"(?<=\n\n) {4}((?:trainviz|\./launch\.sh) [^\n]+)")
LAUNCH_OWN = {"test", "stop", "setup", "-j", "-h", "--help"}  # launch.sh's own words, not trainviz's
# An inline span is a synopsis, not a command, when it holds placeholders or alternatives.
SYNOPSIS = re.compile(r"\[|\.\.\.|\||\b[A-Z][A-Z_]+\b")


def model_files() -> dict[str, str]:
    """The model files the README's commands run, by the name it saves them under: its ```python block."""
    text = README.read_text()
    section = text[text.index("## Your own model as a trainer"):]
    return {"lenet.py": re.search(r"```python\n(.*?)```", section, re.S).group(1)}


def blocks() -> list[str]:
    """The text of every ```bash block."""
    return [re.sub(rf"^{m['indent']}", "", m["body"], flags=re.MULTILINE) for m in FENCE.finditer(README.read_text())]


def commands() -> list[str]:
    """Every trainviz and launch.sh command line: in bash blocks (continuations joined), then in inline code."""
    found = []
    for block in blocks():
        for line in block.replace("\\\n", " ").splitlines():
            if line.strip().startswith(("trainviz ", "./launch.sh")):
                found.append(line.strip())
    text = README.read_text()
    outside = FENCE.sub("", text)
    found += INDENTED.findall(outside)
    # inline code: a command when it has options or arguments, a name (``trainviz replay``) when one word
    found += [span for span in INLINE.findall(text)
              if not SYNOPSIS.search(span) and (len(span.split()) > 2 or "-" in span)]
    return found


def named_commands() -> list[str]:
    """The commands inline code names in one word (`trainviz replay`): each must be one trainviz has."""
    return sorted({span.split()[1] for span in INLINE.findall(README.read_text())
                   if span.startswith("trainviz ") and len(span.split()) == 2
                   and "-" not in span and not SYNOPSIS.search(span)})


def words(line: str) -> list[str]:
    """The words bash would pass, comments dropped; a test failure for any unquoted shell operator."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    tokens = list(lexer)
    operators = [token for token in tokens if set(token) <= set("();<>|&")]
    assert not operators, f"README: {line!r} has an unquoted {operators[0]!r}: bash would not pass it to the command"
    return tokens


def as_trainviz(argv: list[str]) -> list[list[str]]:
    """The trainviz command lines a README command runs (launch.sh passes its options on)."""
    program, *args = argv
    if program == "trainviz":
        return [args]
    if not args or args[0] in LAUNCH_OWN:
        return []
    if args[0].startswith("-"):  # options for all four trainers
        return [[trainer, *args] for trainer in TRAINERS]
    return [args]


def test_every_bash_block_parses():
    assert blocks(), "README has no bash blocks"
    for block in blocks():
        result = subprocess.run(["bash", "-n"], input=block, capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, f"bash -n on README block:\n{block}\n{result.stderr}"


def test_the_readme_shows_commands_to_check():
    found = commands()
    assert any(line.startswith("trainviz sweep ") for line in found)
    assert any(line.startswith("./launch.sh ") for line in found)


def test_every_command_the_readme_names_is_one_trainviz_has():
    assert "replay" in named_commands()
    for name in named_commands():
        assert name in cli.commands, f"README names `trainviz {name}`, which is no trainviz command"


def test_the_fork_command_shown_as_an_indented_block_is_checked():
    assert any(line.startswith("trainviz mlp --fork ") for line in commands())


def leaves(group: click.Group):
    """Every command under ``group``, with the group it belongs to."""
    for command in group.commands.values():
        if isinstance(command, click.Group):
            yield from leaves(command)
        else:
            yield group, command


@pytest.mark.parametrize("line", commands())
def test_every_command_is_accepted_by_the_command_line(line, monkeypatch, tmp_path):
    import trainers.core.training
    import trainers.sweeps.study

    # Trainer runs and sweeps check everything up to where training would start; the other
    # commands read or serve what exists, so for them parsing is what the README promises.
    started = []
    monkeypatch.setattr(trainers.core.training, "train", lambda config, *a, **k: started.append(config))
    monkeypatch.setattr(trainers.sweeps.study, "run", lambda sweep: started.append(sweep))
    for group, command in leaves(cli):
        if command.name not in TRAINERS:
            monkeypatch.setattr(command, "callback", lambda **options: started.append(options))
    monkeypatch.chdir(tmp_path)
    for name, source in model_files().items():
        (tmp_path / name).write_text(source)
    for args in as_trainviz(words(line)):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 0, f"README: {line!r}: {result.output}"
        assert started or {"--help", "--version"} & set(args), f"README: {line!r} ran nothing"
        started.clear()
