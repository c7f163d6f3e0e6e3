"""The main process's side of the MLflow writers: :class:`Tracker` (one writer process per store
and experiment) and :class:`WriterPool` (several, for a batched sweep's finished runs)."""

from __future__ import annotations

import os
import queue
import re
import socket
import subprocess
import sys
import threading
from concurrent.futures import Future
from dataclasses import replace
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from gdexp.errors import warn
from gdexp.session import SESSION
from gdexp.tracking import protocol as p
from gdexp.tracking.protocol import WRITER_URI
from gdexp.tracking.uri import TRACKING_ALLOWED, TrackingError, masked


class Tracker:
    """The main process's end of a writer, one per (tracking URI, experiment) and process."""

    def __init__(self, uri: str, experiment: str, files_only: bool = False):
        self.uri, self.experiment = uri, experiment
        # A plain subprocess on a socket pair, not multiprocessing: it works the same from a
        # launcher's worker processes (loky, submitit), whatever start method they use.
        ours, theirs = socket.socketpair()
        # The URI goes in the environment, which only this user can read (/proc/PID/environ is
        # 0400), not on the command line, which every user of the machine sees (ps): it may hold
        # credentials. The command line shows it masked.
        self._process = subprocess.Popen(
            [sys.executable, "-m", "gdexp.tracking.writer", str(theirs.fileno()), masked(uri), experiment]
            + (["--files"] if files_only else []),
            pass_fds=[theirs.fileno()],
            stdin=subprocess.DEVNULL,
            env={**os.environ, WRITER_URI: uri},
        )
        theirs.close()
        self._conn = Connection(ours.detach())
        self._ready: str | None = None
        # One request and its answer at a time: a batched sweep's writer threads share this
        # writer with the main thread (which looks up finished runs while they write).
        self._lock = threading.RLock()

    @property
    def shown_uri(self) -> str:
        """The store's URI as it may be printed: credentials masked."""
        return masked(self.uri)

    @classmethod
    def get(cls, uri: str, experiment: str) -> Tracker:
        """The process's tracker for ``uri`` and ``experiment``, its writer started if need be
        (the session keeps it, and closes it when the process ends)."""
        key = (uri, experiment)
        tracker = SESSION.writers.get(key)
        if not isinstance(tracker, Tracker) or tracker._process.poll() is not None:
            tracker = cls(uri, experiment)
            SESSION.writers[key] = tracker
        return tracker

    def ready(self, timeout: float = 120.0) -> str:
        """Wait until the store is open; its experiment id, or a :class:`TrackingError`."""
        with self._lock:
            return self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> str:
        if self._ready is None:
            if not self._conn.poll(timeout):
                raise TrackingError(
                    f"tracking.uri={self.shown_uri}: no answer from the store in {timeout:.0f} s; "
                    f"allowed: {TRACKING_ALLOWED}"
                )
            try:
                ready = self._conn.recv()
            except EOFError:
                ready = p.Ready(error=f"tracking.uri={self.shown_uri}: the MLflow writer died while connecting")
            if ready.error is not None:
                self._forget()
                raise TrackingError(ready.error)
            if ready.note and ready.note not in SESSION.said:
                SESSION.said.add(ready.note)
                warn(f"tracking.uri={self.shown_uri}: {ready.note}")
            self._ready = ready.experiment_id
        return self._ready

    def call(self, op: p.Op, timeout: float = 300.0) -> Any:
        """Send an ``answered`` operation and wait for its value (one caller at a time)."""
        with self._lock:
            return self._call(op, timeout)

    def _call(self, op: p.Op, timeout: float) -> Any:
        self.ready()
        name = type(op).__name__
        try:
            self._conn.send(op)
            answered = self._conn.poll(timeout)
        except OSError:
            raise TrackingError(f"tracking.uri={self.shown_uri}: the MLflow writer is gone ({name})") from None
        if not answered:
            raise TrackingError(f"tracking: no answer from the MLflow writer in {timeout:.0f} s ({name})")
        try:
            reply: p.Reply = self._conn.recv()
        except (EOFError, OSError):
            raise TrackingError(f"tracking.uri={self.shown_uri}: the MLflow writer is gone ({name})") from None
        if reply.failure:
            warn_failures([reply.failure])
        if reply.error is not None:
            raise TrackingError(f"tracking.uri={self.shown_uri}: {reply.error}")
        return reply.value

    def send(self, op: p.Op) -> None:
        """Queue an unanswered operation: a writer that is gone loses nothing the run's record keeps."""
        try:
            with self._lock:
                self._conn.send(op)
        except OSError:
            pass

    def start_run(
        self,
        name: str,
        tags: dict[str, str],
        params: dict[str, str],
        start_time: int | None = None,
        dataset: p.DatasetSpec | None = None,
    ) -> str:
        """Create a RUNNING run with its tags, params and dataset input; its run id."""
        return self.call(p.StartRun(name, tags, params, start_time, dataset))

    def finished_run(self, config_hash: str) -> str | None:
        """The id of a FINISHED run of the experiment with this config hash, if there is one."""
        return self.call(p.FindFinished(config_hash))

    def find_runs(self, filter_string: str) -> list[str]:
        """The ids of the experiment's runs matching an MLflow filter, newest first."""
        return self.call(p.FindRuns(filter_string))

    def run_tags(self, run_id: str) -> dict[str, str]:
        """A run's tags."""
        return self.call(p.RunTags(run_id))

    def reopen_run(self, run_id: str) -> None:
        """RUNNING again: a study's parent run, continued."""
        self.call(p.ReopenRun(run_id))

    def finished_runs(self) -> dict[str, str]:
        """Config hash -> id of a FINISHED run, for every finished run of the experiment."""
        return self.call(p.FinishedRuns())

    def log_metrics(self, run_id: str, rows: list[p.MetricRow]) -> None:
        """Queue ``(key, value, step)`` rows; the writer logs them in batches of 1000."""
        if rows:
            self.send(p.LogMetrics(run_id, rows))

    def set_tags(self, run_id: str, tags: dict[str, str]) -> None:
        self.send(p.SetTags(run_id, tags))

    def log_artifact(self, run_id: str, path: Path, artifact_path: str | None = None) -> None:
        self.send(p.LogArtifact(run_id, str(path), artifact_path))

    def log_loss_curve(self, run_id: str, loss: list[float], path: Path, title: str) -> None:
        """Have the writer draw the run's loss curve into ``path`` and log it."""
        self.send(p.DrawLossCurve(run_id, loss, str(path), title))

    def end_run(self, run_id: str, status: str) -> None:
        """End the run once every queued write is in the store."""
        self.call(p.EndRun(run_id, status))

    def write_runs(self, runs: list[p.FinishedRun], timeout: float = 600.0, unless: str = "") -> p.WrittenRuns:
        """Write finished runs to the store (see :meth:`gdexp.tracking.writer.Writer.write_runs`)."""
        return self.call(p.WriteRuns(runs, unless), timeout=timeout)

    def store_files(self, files: list[p.RunFiles], timeout: float = 600.0) -> list[str]:
        """Draw loss curves and store runs' files; the failures."""
        return self.call(p.StoreFiles(files), timeout=timeout)

    def close(self, timeout: float = 60.0) -> None:
        """Stop the writer; runs still open are ended FAILED."""
        try:
            self._conn.send(p.Close())
        except OSError:
            pass
        try:
            self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            self._process.terminate()
        self._forget()

    def _forget(self) -> None:
        if SESSION.writers.get((self.uri, self.experiment)) is self:
            del SESSION.writers[(self.uri, self.experiment)]


class WriterPool:
    """Writer processes for one store, fed by threads, for a batched sweep's finished runs.

    Store writers create the runs (the first is the process's own writer, which opened the
    sweep's parent run: one MLflow start-up less); one more writer, when there are two or more,
    draws the loss curves and stores the artifacts of the runs they created, which needs no store
    call. All of it overlaps the main process training the next population; the process's writer
    takes one request at a time, so the main thread may use it meanwhile."""

    CHUNK = 32  # runs per message; small enough to keep several writers busy
    MOST = 256  # runs a writer takes at once when more are waiting

    def __init__(self, uri: str, experiment: str, size: int):
        SESSION.pools.append(self)  # a sweep's launches share it; the sweep's end closes it
        stores = max(1, size - 1) if size >= 2 else 1
        # the file writer opens no store (StoreFiles needs none): MLflow's client is 180 MB a process
        self.own = [Tracker(uri, experiment, files_only=i >= stores - 1) for i in range(max(1, size) - 1)]
        self.stores = [Tracker.get(uri, experiment), *self.own[: stores - 1]]
        self.artifacts = self.own[stores - 1 :]
        self.runs: queue.Queue = queue.Queue()
        self.files: queue.Queue = queue.Queue()
        self.store_threads = [threading.Thread(target=self._feed_runs, args=(t,), daemon=True) for t in self.stores]
        self.file_threads = [threading.Thread(target=self._feed_files, args=(t,), daemon=True) for t in self.artifacts]
        for thread in self.store_threads + self.file_threads:
            thread.start()

    def submit(self, runs: list[tuple[p.FinishedRun, p.RunFiles]]) -> list[Future]:
        """Queue finished runs with their files; a future of each one's MLflow run id (None if it failed)."""
        futures: list[Future] = [Future() for _ in runs]
        for i in range(0, len(runs), self.CHUNK):
            self.runs.put((runs[i : i + self.CHUNK], futures[i : i + self.CHUNK]))
        return futures

    def _feed_runs(self, tracker: Tracker) -> None:
        while (item := self._gather()) is not None:
            runs, futures = item
            try:
                result = tracker.write_runs([run for run, _ in runs])
            except TrackingError as err:
                result = p.WrittenRuns([None] * len(runs), [str(err)])
            warn_failures(result.failures)
            stored = []
            for (_, files), future, written in zip(runs, futures, result.written):
                if written is None:
                    future.set_result(None)
                else:
                    where = replace(files, artifact_uri=written.artifact_uri, run_id=written.run_id)
                    stored.append((future, written.run_id, where))
            if stored and self.artifacts:
                self.files.put(stored)
            elif stored:
                self._store_files(tracker, stored)

    def _gather(self) -> tuple[list, list[Future]] | None:
        """The next runs to write. A pool's only store writer takes what is queued, up to ``MOST``
        runs, as one message (one transaction on the bulk path, whose commit costs about the same
        for one run or hundreds: a writer that falls behind catches up); several take a message
        each. None: the pool is closing."""
        item = self.runs.get()
        if item is None:
            return None
        runs, futures = list(item[0]), list(item[1])
        while len(self.stores) == 1 and len(runs) < self.MOST:
            try:
                more = self.runs.get_nowait()
            except queue.Empty:
                break
            if more is None:
                self.runs.put(None)  # for the next call: the close is still to be seen
                break
            runs += more[0]
            futures += more[1]
        return runs, futures

    def _feed_files(self, tracker: Tracker) -> None:
        while (stored := self.files.get()) is not None:
            self._store_files(tracker, stored)

    @staticmethod
    def _store_files(tracker: Tracker, stored: list[tuple[Future, str, p.RunFiles]]) -> None:
        try:
            warn_failures(tracker.store_files([files for _, _, files in stored]))
        except TrackingError as err:
            warn_failures([str(err)])
        for future, run_id, _ in stored:
            future.set_result(run_id)

    def close(self) -> None:
        """Let the writers finish what is queued, then stop this pool's own."""
        if self not in SESSION.pools:
            return
        SESSION.pools.remove(self)
        for queue_, threads in ((self.runs, self.store_threads), (self.files, self.file_threads)):
            for _ in threads:
                queue_.put(None)
            for thread in threads:
                thread.join()
        for tracker in self.own:
            tracker.close()


def warn_failures(failures: list[str]) -> None:
    """Note the MLflow writes that failed (their records keep everything for ``gdexp-sync``),
    and say on stderr the first of each kind: a full disk fails every run after it the same way,
    and its one line is enough. The command's last line counts them (``SESSION.unstored``)."""
    for failure in failures:
        SESSION.unstored.append(failure)
        kind = re.sub(r"^\[[^\]]*\] |'[^']*'", "", failure)  # the run's name and the paths aside
        if kind not in SESSION.said:
            SESSION.said.add(kind)
            warn(f"an MLflow write failed: {failure}")
