"""What a user is told when something is wrong: one error family, one way to warn.

Every error a user sees is a :class:`UserError`, said as one line (``key=value: problem; allowed:
...``) with its exit status: 2 for bad input (the default), 1 for a failure while running. Warnings
go to stderr, always through :func:`warn`. Kept free of imports so that every layer, the MLflow
writer process included (which imports neither Hydra nor torch), can use it.
"""

from __future__ import annotations

import sys


class UserError(Exception):
    """Bad input or an unusable store, file or server: one line, reported before any training
    where it can be; ``status`` is the command's exit status (2: bad input, 1: a failure)."""

    status: int = 2

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        if status is not None:
            self.status = status


def warn(message: str) -> None:
    """One warning line on stderr, ``gdexp: warning: ...``: training goes on."""
    print(f"gdexp: warning: {message}", file=sys.stderr, flush=True)
