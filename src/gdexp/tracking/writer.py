"""The MLflow writer: a child process that does all of a process's writing to the store.

``python -m gdexp.tracking.writer FD URI EXPERIMENT`` opens the store while the main process
imports torch and trains, then serves the operations of :mod:`gdexp.tracking.protocol` that
arrive on the socket ``FD``, one handler each. Tracking thus costs the main process almost
nothing, and a run is never left RUNNING: when the main process dies, the writer sees the socket
close and ends every run it opened as FAILED. Imports neither Hydra nor torch.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from gdexp.tracking import protocol as p
from gdexp.tracking.bulk import BulkWriter, open_bulk
from gdexp.tracking.files import DamagedRecord, set_run_id
from gdexp.tracking.loss_curve import drawer, save_loss_curve
from gdexp.tracking.store import (
    check_reachable,
    connect,
    connection_lost,
    find_finished,
    finished_runs,
    first_line,
    log_whole,
    out_of_room,
    put_artifacts,
    retrying,
)
from gdexp.tracking.tags import fit_run_name
from gdexp.tracking.uri import TrackingError


class Writer:
    """One store, one experiment, the operations of one main process."""

    def __init__(self, conn: Connection, uri: str, client: Any, experiment_id: str, bulk: BulkWriter | None = None):
        self.conn, self.uri, self.client, self.experiment_id = conn, uri, client, experiment_id
        self.bulk = bulk  # finished runs many to a transaction (SQL stores of this MLflow's schema)
        self.remote = uri.startswith(("http://", "https://"))
        self.down = False  # the server stopped answering: fail fast until a new run finds it back
        self.open_runs: set[str] = set()
        self.failure: str | None = None  # an unanswered write that failed, reported with the next reply
        self.handlers: dict[type, Callable[[Any], Any]] = {
            p.StartRun: self.start_run,
            p.LogMetrics: self.log_metrics,
            p.SetTags: self.set_tags,
            p.LogArtifact: self.log_artifact,
            p.DrawLossCurve: self.draw_loss_curve,
            p.EndRun: self.end_run,
            p.FindFinished: self.find_finished,
            p.FinishedRuns: self.finished_runs,
            p.FindRuns: self.find_runs,
            p.RunTags: self.run_tags,
            p.ReopenRun: self.reopen_run,
            p.WriteRuns: self.write_runs,
            p.StoreFiles: self.store_files,
        }

    # ------------------------------------------------------------------ the handlers

    def start_run(self, op: p.StartRun) -> str:
        run = retrying(
            self.client.create_run,
            self.experiment_id,
            run_name=fit_run_name(op.name),
            tags=op.tags,
            start_time=op.start_time,
        )
        self.open_runs.add(run.info.run_id)
        log_whole(self.client, run.info.run_id, params=op.params)
        self._log_dataset(run.info.run_id, op.dataset)
        return run.info.run_id

    def log_metrics(self, op: p.LogMetrics) -> None:
        log_whole(self.client, op.run_id, metrics=op.rows)

    def set_tags(self, op: p.SetTags) -> None:
        log_whole(self.client, op.run_id, tags=op.tags)

    def log_artifact(self, op: p.LogArtifact) -> None:
        retrying(self.client.log_artifact, op.run_id, op.path, op.artifact_path)

    def draw_loss_curve(self, op: p.DrawLossCurve) -> None:
        drawn = save_loss_curve(op.loss, Path(op.path), op.title)
        retrying(self.client.log_artifact, op.run_id, str(drawn))

    def end_run(self, op: p.EndRun) -> None:
        retrying(self.client.set_terminated, op.run_id, op.status)
        self.open_runs.discard(op.run_id)

    def find_finished(self, op: p.FindFinished) -> str | None:
        return find_finished(self.client, self.experiment_id, op.config_hash)

    def find_runs(self, op: p.FindRuns) -> list[str]:
        runs = retrying(
            self.client.search_runs, [self.experiment_id], op.filter, order_by=["attributes.start_time DESC"]
        )
        return [r.info.run_id for r in runs]

    def run_tags(self, op: p.RunTags) -> dict[str, str]:
        return dict(retrying(self.client.get_run, op.run_id).data.tags)

    def reopen_run(self, op: p.ReopenRun) -> None:
        retrying(self.client.update_run, op.run_id, status="RUNNING")
        self.open_runs.add(op.run_id)

    def finished_runs(self, op: p.FinishedRuns) -> dict[str, str]:
        return finished_runs(self.client, self.experiment_id)

    def write_runs(self, op: p.WriteRuns) -> p.WrittenRuns:
        """The finished runs in one transaction of the bulk path where the store has one; else,
        or where that transaction fails (it leaves nothing behind), each run through the client."""
        if not op.unless:
            return self._write(op.runs)
        have = self._tagged(op.unless, [run.tags[op.unless] for run in op.runs])
        present = [i for i, run in enumerate(op.runs) if run.tags[op.unless] in have]
        out = self._write([run for run in op.runs if run.tags[op.unless] not in have])
        landed = iter(out.written)
        written = [None if i in present else next(landed) for i in range(len(op.runs))]
        return p.WrittenRuns(written, out.failures, present)

    def _tagged(self, key: str, values: list[str]) -> set[str]:
        """Which of ``values`` the experiment's live runs hold as their tag ``key``."""
        if self.bulk is not None:
            return retrying(self.bulk.tagged, key, values)
        found = (retrying(self.client.search_runs, [self.experiment_id], f"tags.`{key}` = '{v}'") for v in values)
        return {run.data.tags[key] for runs in found for run in runs}

    def _write(self, runs: list[p.FinishedRun]) -> p.WrittenRuns:
        if self.bulk is not None and runs:
            try:
                return p.WrittenRuns(written=list(retrying(self.bulk.write, runs)))
            except Exception as err:
                if out_of_room(err):  # run by run, each would be left half-written
                    why = f"{type(err).__name__}: {first_line(err)}"
                    return p.WrittenRuns([None] * len(runs), [f"[{run.name}] {why}" for run in runs])
                # else each run on its own through the client: the one that fails says why
        return self.write_each(runs)

    def write_each(self, runs: list[p.FinishedRun]) -> p.WrittenRuns:
        """Each finished run in as few calls as MLflow's client allows: create (with its tags), one
        ``log_batch`` per 1000 params and metrics, end. A run that fails is ended FAILED if it was
        created; its record keeps everything for ``gdexp.sync``."""
        out = p.WrittenRuns()
        for run in runs:
            created = None
            try:
                created = retrying(
                    self.client.create_run,
                    self.experiment_id,
                    run_name=fit_run_name(run.name),
                    tags=run.tags,
                    start_time=run.start_time,
                )
                log_whole(self.client, created.info.run_id, params=run.params, metrics=run.metrics)
                self._log_dataset(created.info.run_id, run.dataset)
                retrying(self.client.set_terminated, created.info.run_id, run.status, run.end_time)
                out.written.append(p.Written(created.info.run_id, created.info.artifact_uri))
            except Exception as err:
                out.failures.append(f"[{run.name}] {type(err).__name__}: {first_line(err)}")
                out.written.append(None)
                if created is not None:
                    self._end_failed(created.info.run_id)
        return out

    def store_files(self, op: p.StoreFiles) -> list[str]:
        """Draw each run's loss curve and put it and the run's files in its artifact location (no
        store call: the artifact repository is reached from the run's artifact URI); then note
        the run's id in its record."""

        failures = []
        for files in op.files:
            try:
                drawn = (
                    [str(save_loss_curve(files.loss, Path(files.loss_curve), files.name))] if files.loss_curve else []
                )
                put_artifacts(files.artifact_uri, [Path(f) for f in [*files.artifacts, *drawn]], self.uri)
            except Exception as err:
                failures.append(f"[{files.name}] artifacts: {type(err).__name__}: {first_line(err)}")
            if files.record:  # here, beside the store, not in the process that trains the next runs
                try:
                    set_run_id(Path(files.record), files.run_id)
                except (OSError, DamagedRecord) as err:
                    failures.append(f"[{files.name}] run.json: {first_line(err)}")
        return failures

    # ------------------------------------------------------------------ serving

    def serve(self) -> None:
        """Handle operations until the main process closes the socket or says :class:`~p.Close`."""
        while True:
            try:
                op = self.conn.recv()
            except (EOFError, OSError):
                break
            if isinstance(op, p.Close):
                break
            self.handle(op)
        for run_id in list(self.open_runs):
            self._end_failed(run_id)

    def handle(self, op: p.Op) -> None:
        if self.down and isinstance(op, p.StartRun):
            try:
                check_reachable(self.uri, timeout=3)
                self.down = False
            except TrackingError:
                pass
        if self.down:
            self._answer(op, error="the tracking server is not answering", failure=f"{type(op).__name__}: down")
            return
        try:
            value = self.handlers[type(op)](op)
        except Exception as err:  # keep serving: a lost write must not lose the rest of the run
            self.down = self.remote and connection_lost(err)
            self._answer(op, error=f"{type(op).__name__}: {type(err).__name__}: {first_line(err)}")
            return
        if op.answered:
            self.conn.send(p.Reply(value=value, failure=self.failure))
            self.failure = None

    def _answer(self, op: p.Op, *, error: str, failure: str | None = None) -> None:
        """An operation that failed: answered with the error, or kept to report with the next reply."""
        if op.answered:
            self.conn.send(p.Reply(error=error))
        else:
            self.failure = self.failure or failure or error

    def _log_dataset(self, run_id: str, spec: p.DatasetSpec | None) -> None:
        """The run's dataset input. Never fails the run: MLflow inserts a dataset it has not seen
        after looking for it, so two processes logging the same new dataset at once may collide
        (a unique-key error); a second try finds it. A lasting failure is reported as a warning."""
        if spec is None:
            return
        from mlflow.entities import Dataset, DatasetInput, InputTag

        dataset = Dataset(spec.name, spec.digest, spec.source_type, spec.source, spec.schema, spec.profile)
        context = InputTag(key="mlflow.data.context", value="training")
        for attempt in range(4):
            try:
                retrying(self.client.log_inputs, run_id, [DatasetInput(dataset, tags=[context])])
                return
            except Exception as err:
                if attempt == 3:
                    self.failure = self.failure or f"dataset input: {type(err).__name__}: {first_line(err)}"
                    return
                time.sleep(0.1 * (attempt + 1))

    def _end_failed(self, run_id: str) -> None:
        try:
            retrying(self.client.set_terminated, run_id, "FAILED")
        except Exception:
            pass
        self.open_runs.discard(run_id)


def main(fd: int, uri: str, experiment: str, files_only: bool = False) -> None:
    """The writer process: open the store, say so, serve. A pool's file writer (``files_only``)
    opens no store: it puts runs' files in their artifact locations, reached from each run's
    artifact URI, and notes their ids in their records; MLflow is imported only for a location
    that is not local (its client costs a process about 180 MB)."""
    # The main process decides when runs end; a Ctrl-C or SIGTERM to the process group must not
    # cut a write in half. When the main process is gone, recv() raises EOFError.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # A server that stops answering should fail a write in seconds, not after minutes of retries:
    # the run's own record keeps everything for gdexp.sync.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")

    conn = Connection(fd)
    if files_only:
        try:
            conn.send(p.Ready(experiment_id=""))
        except OSError:
            return
        Writer(conn, uri, None, "").serve()
        return
    try:
        client, experiment_id = connect(uri, experiment)
    except TrackingError as err:
        try:
            conn.send(p.Ready(error=str(err)))
        except OSError:
            pass
        return
    bulk, note = open_bulk(client, uri, experiment_id)
    try:
        conn.send(p.Ready(experiment_id=experiment_id, note=note))
    except OSError:  # the main process is gone already (it failed before its first write)
        return
    drawer()  # Matplotlib's import, while the main process is still importing torch
    Writer(conn, uri, client, experiment_id, bulk).serve()


if __name__ == "__main__":
    # the URI from the environment (credentials and all); the command line shows it masked
    main(int(sys.argv[1]), os.environ.pop(p.WRITER_URI, sys.argv[2]), sys.argv[3], "--files" in sys.argv[4:])
