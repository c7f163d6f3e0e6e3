"""The process's state: one owner for what a command, or one call of the Python API, has seen and
opened.

- the jobs that failed and those ``tracking.skip_finished`` skipped, whatever process ran them:
  the command's exit status and the end of its sweep's parent run come from here;
- the sweeps this process opened (their parent runs), which an interrupt ends KILLED;
- whether the first job has started (before it, any failure is the configuration's);
- the MLflow writer processes and writer pools it started, closed when it ends.

``gdexp.run`` enters :data:`SESSION` once; each ``gdexp.train`` and ``gdexp.sweep`` call enters it
for its own duration. Hydra's global state allows one composition at a time in a process, so calls
from two threads take turns (:meth:`Session.command` holds a lock). Imports nothing heavy: the
writer's client side uses it too.
"""

from __future__ import annotations

import atexit
import fcntl
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from gdexp.errors import UserError


class Closable(Protocol):
    def close(self) -> None: ...


class OpenSweep(Protocol):
    """A sweep whose parent run this process opened (:class:`gdexp.sweeps.parent.SweepRun`)."""

    folder: Path
    target: Any  # its store (a gdexp.tracking.uri.Target), None with tracking off

    def interrupted(self) -> None:
        """End what the sweep left open after an interrupt: records KILLED, the parent KILLED."""


@dataclass(frozen=True)
class JobFailure:
    """A job that failed: its run name, the one line that says why, whether it was bad input."""

    name: str
    message: str
    bad_input: bool
    swept: bool = False  # a sweep's job: the command's last line names it

    def returned(self) -> dict[str, Any]:
        """As a job's return value: it reaches the main process from any launcher's workers."""
        return {"status": "failed", "error": self.message, "bad_input": self.bad_input, "name": self.name}


class Session:
    """What this process's command has seen and opened (see the module's docstring)."""

    def __init__(self) -> None:
        self.failures: list[JobFailure] = []
        self.skipped: list[str] = []  # run names of jobs found FINISHED already
        self.unstored: list[str] = []  # MLflow writes that failed: their records keep them for a sync
        self.sweeps: list[OpenSweep] = []
        self.task_started = False
        self.writers: dict[tuple[str, str], Closable] = {}  # (uri, experiment) -> its writer process
        self.pools: list[Closable] = []  # writer pools of batched launches; a sweep's end closes them
        self.said: set[str] = set()  # notes about a store, said once a process
        self.folders: list[Any] = []  # sweep directories this process writes: their locks, held
        # Set when an interrupted study stops its trials in flight: a launcher waiting for a job
        # in a thread of its own (gdexp.sweeps.study) cancels that job and returns.
        self.stopping = threading.Event()
        self._turn = threading.RLock()
        atexit.register(self.close_writers)

    def begin(self) -> None:
        """A new command: no failures, skips, sweeps, started task. Writers stay: starting one
        costs seconds, and a notebook's next call uses the same store."""
        self.failures.clear()
        self.skipped.clear()
        self.unstored.clear()
        self.sweeps.clear()
        self.stopping.clear()
        self.task_started = False
        self.release_folders()

    def hold_folder(self, folder: Path) -> None:
        """Hold a sweep directory for this command: another process's sweep writing there (two
        sweeps started in the same second share Hydra's ``multirun/DATE/TIME``, and their job
        directories and records would mix) is a :class:`UserError`, before either makes a run. The
        lock dies with the process, so a killed sweep's directory can be resumed."""
        folder.mkdir(parents=True, exist_ok=True)
        lock = open(folder / ".gdexp-sweep.lock", "a+")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "another process"
            lock.close()
            raise UserError(
                f"hydra.sweep.dir={folder}: another sweep ({holder}) is writing there; "
                f"allowed: a directory of its own, e.g. hydra.sweep.dir={folder}-2"
            ) from None
        lock.truncate(0)
        lock.write(f"process {os.getpid()}")
        lock.flush()
        self.folders.append(lock)

    def release_folders(self) -> None:
        for lock in self.folders:
            lock.close()
        self.folders.clear()

    @contextmanager
    def command(self) -> Iterator[Session]:
        """One command (or API call) at a time in this process, from a fresh start."""
        with self._turn:
            self.begin()
            yield self

    def close_pools(self) -> None:
        """Let every writer pool finish what it was given, and stop it."""
        for pool in list(self.pools):
            pool.close()

    def close_writers(self) -> None:
        """Stop every writer this process started; runs still open are ended FAILED by them."""
        self.close_pools()
        for writer in list(self.writers.values()):
            writer.close()


SESSION = Session()
