"""One way for gdexp's four command lines to fail: ``PROG: error: <one line>`` on stderr and the
error's exit status (2 for bad input, 1 for a failure while running), never a traceback or a
usage block. ``gdexp-run``, ``gdexp-compare``, ``gdexp-ui`` and ``gdexp-sync`` all go through it."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

from gdexp.errors import UserError


def say(prog: str, message: str) -> None:
    """The command's one error line, on stderr."""
    print(f"{prog}: error: {message}", file=sys.stderr, flush=True)


def fail(prog: str, message: str, status: int = 2) -> NoReturn:
    """Say ``message`` as the command's one error line, and exit with ``status``."""
    say(prog, message)
    sys.exit(status)


class OneLineParser(argparse.ArgumentParser):
    """argparse, its errors said in one line (no usage block), exit status 2."""

    def error(self, message: str) -> NoReturn:
        fail(self.prog.split()[0], message)  # a subcommand's parser says the command's name


@contextmanager
def user_errors(prog: str) -> Iterator[None]:
    """Any :class:`~gdexp.errors.UserError` raised inside ends the command in one line."""
    try:
        yield
    except UserError as err:
        fail(prog, str(err), err.status)
