"""What goes wrong in trainviz, as exceptions that carry one line for the user and an exit status.

None of them is Click's: the library functions (``trainers.core.training.train``, a sweep's
workers, ``viz``) raise them, and the command line (``trainers.cli``) prints the line
and exits with the status.
"""

from __future__ import annotations


class TrainvizError(Exception):
    """A run or a command that cannot go on: ``format_message()`` says why, in one line."""

    exit_code = 1

    def __init__(self, message: str, exit_code: int | None = None):
        super().__init__(message)
        self.message = message
        if exit_code is not None:
            self.exit_code = exit_code

    def format_message(self) -> str:
        """The line to show."""
        return self.message


class UserError(TrainvizError):
    """A mistake in the user's input or setup: one line, exit status 2."""

    exit_code = 2
