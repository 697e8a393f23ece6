"""``python -m trainers`` is the ``trainviz`` command."""

from trainers.cli import cli

if __name__ == "__main__":
    cli(prog_name="trainviz")
