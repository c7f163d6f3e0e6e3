"""``python -m gdexp.guard OWNER GROUP``: ends a process group once its owner is gone.

``gdexp-ui`` starts MLflow's server (and the server its workers) in a process group of its own,
so that a Ctrl-C in the terminal reaches ``gdexp-ui`` alone, which then stops the server in
order. A ``kill -9`` of ``gdexp-ui`` runs no clean-up at all: this guard, started beside the
server in a session of its own, sees its owner gone (it is given to another parent) and ends
the group: SIGTERM, then SIGKILL after 10 s. Nothing here imports more than the standard library.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Sequence

GRACE = 10.0  # seconds between the SIGTERM and the SIGKILL


def _signal_group(group: int, sig: int) -> bool:
    """Send ``sig`` to the group; whether the group still had a process."""
    try:
        os.killpg(group, sig)
        return True
    except ProcessLookupError:
        return False


def guard(owner: int, group: int, poll: float = 0.25) -> None:
    """Wait while ``owner`` is this process's parent, then end ``group``."""
    while os.getppid() == owner:
        time.sleep(poll)
    if not _signal_group(group, signal.SIGTERM):
        return
    deadline = time.monotonic() + GRACE
    while time.monotonic() < deadline:
        if not _signal_group(group, 0):
            return
        time.sleep(0.2)
    _signal_group(group, signal.SIGKILL)


def main(argv: Sequence[str] | None = None) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C is the owner's to handle
    owner, group = (int(a) for a in (sys.argv[1:] if argv is None else argv))
    guard(owner, group)


if __name__ == "__main__":
    main()
