"""The one place gdexp writes to MLflow.

All writes go through a *writer*: a child process that imports MLflow and opens the store while
the main process imports torch and trains, then takes metric chunks over a pipe and writes them
with ``MlflowClient.log_batch``. Tracking thus costs the main process almost nothing, and a run is
never left RUNNING: if the main process dies, the writer sees the pipe close and ends every run
it opened as FAILED.

A sweep is one parent run, opened by :class:`SweepCallback` when Hydra's multirun starts. Its id
is written to ``<sweep dir>/gdexp_sweep.json``, where every job finds it, whichever process or
machine the launcher runs it in.
"""

from __future__ import annotations

import atexit
import getpass
import json
import logging
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import Future
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from gdexp.config import PACKAGE_DIR, ConfigError

SWEEP_FILE = "gdexp_sweep.json"
BATCH = 1000  # MLflow's limit of metrics per log_batch call
TRACKING_ALLOWED = "a reachable MLflow tracking URI (sqlite:///path.db, http://host:port, postgresql://...)"


class TrackingError(RuntimeError):
    """The tracking store cannot be used: one line, reported before any training."""


def resolve_uri(uri: str | None, launch_dir: Path) -> str:
    """``uri``, else ``MLFLOW_TRACKING_URI``, else ``mlflow.db`` in the launch directory; a
    relative SQLite path is made absolute so that jobs never split the store, and a bare
    ``postgresql://`` gets the psycopg2 driver."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{launch_dir / 'mlflow.db'}"
    if uri.startswith(("postgresql://", "postgres://")):
        # SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3; gdexp ships psycopg2.
        uri = "postgresql+psycopg2://" + uri.split("://", 1)[1]
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        path = uri[len("sqlite:///") :]
        if path and path != ":memory:":
            uri = f"sqlite:///{(launch_dir / path).resolve()}"
    return uri


# --------------------------------------------------------------------------- the writer process


def _connection_lost(err: Exception) -> bool:
    text = str(err)
    return any(s in text for s in ("Max retries exceeded", "Connection refused", "ConnectionError", "timed out"))


def _check_reachable(uri: str, timeout: float = 10) -> None:
    if uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as reply:
                reply.read()
        except (urllib.error.URLError, OSError) as err:
            reason = getattr(err, "reason", err)
            raise TrackingError(
                f"tracking.uri={uri}: cannot reach the tracking server ({reason}); allowed: {TRACKING_ALLOWED}"
            ) from None
    elif uri.startswith("sqlite:///"):
        folder = Path(uri[len("sqlite:///") :]).parent
        if not folder.is_dir() or not os.access(folder, os.W_OK):
            raise TrackingError(
                f"tracking.uri={uri}: the folder {folder} does not exist or is not "
                f"writable; allowed: {TRACKING_ALLOWED}"
            )


def _connect(uri: str, experiment: str, attempts: int = 5):
    """Open the store and the experiment. Two processes opening a fresh store at once race to
    create its tables (or the experiment): the loser retries, with backoff."""
    for attempt in range(attempts):
        try:
            return _open_store(uri, experiment)
        except TrackingError:
            if attempt == attempts - 1 or uri.startswith(("http://", "https://")):
                raise
            time.sleep(0.2 * 2**attempt)


def _open_store(uri: str, experiment: str):
    _check_reachable(uri)
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    for name in ("mlflow", "alembic"):  # store migrations log at INFO: not the user's business
        logging.getLogger(name).setLevel(logging.WARNING)

    try:
        client = MlflowClient(tracking_uri=uri)
        found = client.get_experiment_by_name(experiment)
        if found is not None:
            return client, found.experiment_id
        location = None
        if uri.startswith("sqlite:///"):
            location = (Path(uri[len("sqlite:///") :]).parent / "mlartifacts").as_uri()
        try:
            return client, client.create_experiment(experiment, artifact_location=location)
        except MlflowException:  # created meanwhile by a parallel job
            return client, client.get_experiment_by_name(experiment).experiment_id
    except MlflowException as err:
        raise TrackingError(f"tracking.uri={uri}: {_first_line(err)}; allowed: {TRACKING_ALLOWED}") from None
    except Exception as err:  # a driver error, a refused connection, a bad scheme
        problem = f"{type(err).__name__}: {_first_line(err)}"
        raise TrackingError(f"tracking.uri={uri}: {problem}; allowed: {TRACKING_ALLOWED}") from None


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _retrying(call, *args, attempts: int = 12, **kwargs):
    """``call`` with backoff while SQLite reports the store locked by another writer (parallel
    jobs): 0.05 s doubling to 2 s, about 15 s in all, before the error is let through."""
    for attempt in range(attempts):
        try:
            return call(*args, **kwargs)
        except Exception as err:
            if "locked" not in str(err).lower() or attempt == attempts - 1:
                raise
            time.sleep(min(0.05 * 2**attempt, 2.0))


# The writer's operations that the caller waits on (the others are fire-and-forget).
_ANSWERED = ("start", "end", "find_finished", "finished_runs", "runs", "artifacts")


def log_whole(client, run_id: str, *, params: dict | None = None, metrics=(), tags: dict | None = None) -> None:
    """Log params, ``(key, value, step)`` metric rows and tags on a run in as few ``log_batch``
    calls as MLflow's limits allow (100 params, 100 tags, 1000 entries a call), each retried
    while SQLite reports the store locked."""
    from mlflow.entities import Metric, Param, RunTag

    now = int(time.time() * 1000)
    ps = [Param(k, v) for k, v in (params or {}).items()]
    ms = [Metric(k, v, now, s) for k, v, s in metrics]
    ts = [RunTag(k, v) for k, v in (tags or {}).items()]
    while ps or ms or ts:
        some_params, ps = ps[:100], ps[100:]
        some_tags, ts = ts[:100], ts[100:]
        room = BATCH - len(some_params) - len(some_tags)
        some_metrics, ms = ms[:room], ms[room:]
        _retrying(client.log_batch, run_id, metrics=some_metrics, params=some_params, tags=some_tags)


def _writer(conn, uri: str, experiment: str) -> None:
    # The main process decides when runs end; a Ctrl-C or SIGTERM to the process group must not
    # cut a write in half. When the main process is gone, recv() raises EOFError.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # A server that stops answering should fail a write in seconds, not after minutes of retries:
    # the run's own record keeps everything for gdexp.sync.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
    try:
        client, experiment_id = _connect(uri, experiment)
    except TrackingError as err:
        conn.send(("error", str(err)))
        return

    conn.send(("ready", experiment_id))
    remote = uri.startswith(("http://", "https://"))
    down = False  # the server stopped answering: fail fast until a new run finds it back
    from gdexp.plots import save_loss_curve  # while the main process is still importing torch

    open_runs: set[str] = set()
    failure: str | None = None  # an asynchronous write that failed, reported at the next reply
    while True:
        try:
            op, *args = conn.recv()
        except (EOFError, OSError):
            break
        if down and op == "start":
            try:
                _check_reachable(uri, timeout=3)
                down = False
            except TrackingError:
                pass
        if down:
            failure = failure or f"{op}: the tracking server is down"
            if op in _ANSWERED:
                conn.send(("error", "the tracking server is not answering", None))
                failure = None
            elif op == "close":
                break
            continue
        try:
            if op == "start":
                name, tags, params = args
                run = _retrying(client.create_run, experiment_id, run_name=name, tags=tags)
                run_id = run.info.run_id
                open_runs.add(run_id)
                log_whole(client, run_id, params=params)
                conn.send(("ok", run_id, failure))
            elif op == "metrics":
                run_id, rows = args
                log_whole(client, run_id, metrics=rows)
            elif op == "tags":
                run_id, tags = args
                log_whole(client, run_id, tags=tags)
            elif op == "artifact":
                run_id, path, artifact_path = args
                _retrying(client.log_artifact, run_id, path, artifact_path)
            elif op == "loss_curve":
                run_id, loss, path, title = args
                _retrying(client.log_artifact, run_id, str(save_loss_curve(loss, Path(path), title)))
            elif op == "runs":
                (payloads,) = args
                conn.send(("ok", _write_runs(client, experiment_id, payloads), failure))
                failure = None
            elif op == "artifacts":
                (jobs,) = args
                conn.send(("ok", _write_artifacts(uri, jobs, save_loss_curve), failure))
                failure = None
            elif op == "finished_runs":
                found, token = {}, None
                while True:
                    page = _retrying(
                        client.search_runs,
                        [experiment_id],
                        "attributes.status = 'FINISHED'",
                        max_results=10000,
                        page_token=token,
                    )
                    for run in page:
                        found.setdefault(run.data.tags.get("gdexp.config_hash"), run.info.run_id)
                    token = page.token
                    if not token:
                        break
                conn.send(("ok", found, failure))
            elif op == "find_finished":
                (config_hash,) = args
                found = _retrying(
                    client.search_runs,
                    [experiment_id],
                    f"tags.`gdexp.config_hash` = '{config_hash}' and attributes.status = 'FINISHED'",
                    max_results=1,
                )
                conn.send(("ok", found[0].info.run_id if found else None, failure))
            elif op == "end":
                run_id, status = args
                _retrying(client.set_terminated, run_id, status)
                open_runs.discard(run_id)
                conn.send(("ok", None, failure))
                failure = None
            elif op == "close":
                break
        except Exception as err:  # keep serving: a lost write must not lose the rest of the run
            down = remote and _connection_lost(err)
            failure = f"{op}: {type(err).__name__}: {_first_line(err)}"
            if op in _ANSWERED:
                conn.send(("error", failure, None))
                failure = None
    for run_id in open_runs:
        try:
            _retrying(client.set_terminated, run_id, "FAILED")
        except Exception:
            pass


def _write_runs(client, experiment_id: str, payloads: list[dict[str, Any]]) -> tuple[list, list]:
    """Write finished runs to the store, each in as few calls as MLflow allows: create (with its
    tags), one ``log_batch`` per 1000 params and metrics, end. For each, its (run id, artifact
    URI), or None when it failed (a run created by then is ended FAILED); and the failures."""
    written, failures = [], []
    for p in payloads:
        run = None
        try:
            run = _retrying(client.create_run, experiment_id, run_name=p["name"], tags=p["tags"])
            log_whole(client, run.info.run_id, params=p["params"], metrics=p["metrics"])
            _retrying(client.set_terminated, run.info.run_id, p["status"])
            written.append((run.info.run_id, run.info.artifact_uri))
        except Exception as err:  # the run's record keeps everything for gdexp.sync
            failures.append(f"[{p['name']}] {type(err).__name__}: {_first_line(err)}")
            written.append(None)
            if run is not None:
                try:
                    client.set_terminated(run.info.run_id, "FAILED")
                except Exception:
                    pass
    return written, failures


def _write_artifacts(uri: str, jobs: list[dict[str, Any]], save_loss_curve) -> list[str]:
    """Draw each run's loss curve and put it and the run's files in its artifact location (no
    store call: the artifact repository is reached from the run's artifact URI). The failures."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    failures = []
    for job in jobs:
        try:
            repository = get_artifact_repository(job["artifact_uri"], tracking_uri=uri)
            drawn = save_loss_curve(job["loss"], Path(job["loss_curve"]), job["name"])
            for path in [*job["artifacts"], str(drawn)]:
                _retrying(repository.log_artifact, path)
        except Exception as err:
            failures.append(f"[{job['name']}] artifacts: {type(err).__name__}: {_first_line(err)}")
    return failures


class Tracker:
    """The main process's end of a writer, one per (tracking URI, experiment) and process."""

    _open: dict[tuple[str, str], Tracker] = {}
    _atexit_registered = False

    def __init__(self, uri: str, experiment: str):
        self.uri, self.experiment = uri, experiment
        # A plain subprocess on a socket pair, not multiprocessing: it works the same from a
        # launcher's worker processes (loky, submitit), whatever start method they use.
        ours, theirs = socket.socketpair()
        self._process = subprocess.Popen(
            [sys.executable, "-m", "gdexp.tracking", str(theirs.fileno()), uri, experiment],
            pass_fds=[theirs.fileno()],
            stdin=subprocess.DEVNULL,
        )
        theirs.close()
        self._conn = Connection(ours.detach())
        self._ready: str | None = None
        if not Tracker._atexit_registered:
            atexit.register(Tracker.close_all)
            Tracker._atexit_registered = True

    @classmethod
    def get(cls, uri: str, experiment: str) -> Tracker:
        """The process's tracker for ``uri`` and ``experiment``, its writer started if need be."""
        key = (uri, experiment)
        tracker = cls._open.get(key)
        if tracker is None or tracker._process.poll() is not None:
            tracker = cls._open[key] = cls(uri, experiment)
        return tracker

    def ready(self, timeout: float = 120.0) -> str:
        """Wait until the store is open; its experiment id, or a :class:`TrackingError`."""
        if self._ready is None:
            if not self._conn.poll(timeout):
                raise TrackingError(
                    f"tracking.uri={self.uri}: no answer from the store in {timeout:.0f} s; allowed: {TRACKING_ALLOWED}"
                )
            try:
                kind, value = self._conn.recv()
            except EOFError:
                kind, value = "error", f"tracking.uri={self.uri}: the MLflow writer died while connecting"
            if kind == "error":
                self._open.pop((self.uri, self.experiment), None)
                raise TrackingError(value)
            self._ready = value
        return self._ready

    def _call(self, *message: Any, timeout: float = 300.0) -> Any:
        self.ready()
        try:
            self._conn.send(message)
            answered = self._conn.poll(timeout)
        except OSError:
            raise TrackingError(f"tracking.uri={self.uri}: the MLflow writer is gone ({message[0]})") from None
        if not answered:
            raise TrackingError(f"tracking: no answer from the MLflow writer in {timeout:.0f} s ({message[0]})")
        try:
            kind, value, failure = self._conn.recv()
        except (EOFError, OSError):
            raise TrackingError(f"tracking.uri={self.uri}: the MLflow writer is gone ({message[0]})") from None
        if failure:
            print(f"gdexp: warning: an MLflow write failed: {failure}", flush=True)
        if kind == "error":
            raise TrackingError(f"tracking.uri={self.uri}: {value}")
        return value

    def start_run(self, name: str, tags: dict[str, str], params: dict[str, str]) -> str:
        """Create a RUNNING run with its tags and params; its run id."""
        return self._call("start", name, tags, params)

    def finished_run(self, config_hash: str) -> str | None:
        """The id of a FINISHED run of the experiment with this config hash, if there is one."""
        return self._call("find_finished", config_hash)

    def finished_runs(self) -> dict[str, str]:
        """Config hash -> id of a FINISHED run, for every finished run of the experiment (one
        paged search: what a batched sweep's resume checks its jobs against)."""
        return self._call("finished_runs")

    def _send(self, *message: Any) -> None:
        # Asynchronous writes: a writer that is gone loses nothing the run's record keeps.
        try:
            self._conn.send(message)
        except OSError:
            pass

    def log_metrics(self, run_id: str, rows: list[tuple[str, float, int]]) -> None:
        """Queue ``(key, value, step)`` rows; the writer logs them in batches of 1000."""
        if rows:
            self._send("metrics", run_id, rows)

    def set_tags(self, run_id: str, tags: dict[str, str]) -> None:
        self._send("tags", run_id, tags)

    def log_artifact(self, run_id: str, path: Path, artifact_path: str | None = None) -> None:
        self._send("artifact", run_id, str(path), artifact_path)

    def log_loss_curve(self, run_id: str, loss: list[float], path: Path, title: str) -> None:
        """Have the writer draw the run's loss curve into ``path`` and log it."""
        self._send("loss_curve", run_id, loss, str(path), title)

    def end_run(self, run_id: str, status: str) -> None:
        """End the run once every queued write is in the store."""
        self._call("end", run_id, status)

    def log_runs(self, payloads: list[dict[str, Any]], timeout: float = 600.0) -> tuple[list, list]:
        """Write finished runs to the store (see :func:`_write_runs`)."""
        return self._call("runs", payloads, timeout=timeout)

    def log_run_artifacts(self, jobs: list[dict[str, Any]], timeout: float = 600.0) -> list[str]:
        """Draw loss curves and store runs' files (see :func:`_write_artifacts`)."""
        return self._call("artifacts", jobs, timeout=timeout)

    def close(self, timeout: float = 60.0) -> None:
        """Stop the writer; runs still open are ended FAILED."""
        try:
            self._conn.send(("close",))
        except (OSError, BrokenPipeError):
            pass
        try:
            self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            self._process.terminate()
        if self._open.get((self.uri, self.experiment)) is self:
            del self._open[(self.uri, self.experiment)]

    @classmethod
    def close_all(cls) -> None:
        for tracker in list(cls._open.values()):
            tracker.close()


class WriterPool:
    """Writer processes for one store, fed by threads, for a batched sweep's finished runs.

    Store writers create the runs (the first is the process's own writer, which opened the
    sweep's parent run: one MLflow start-up less); one more writer, when there are two or more,
    draws the loss curves and stores the artifacts of the runs they created, which needs no store
    call. All of it overlaps the main process training the next population. Not thread-safe with
    other users of the process's writer: a launch uses it alone until :meth:`close`."""

    CHUNK = 8  # runs per message: small enough to keep every writer busy to the end

    def __init__(self, uri: str, experiment: str, size: int):
        stores = max(1, size - 1) if size >= 2 else 1
        self.own = [Tracker(uri, experiment) for _ in range(max(1, size) - 1)]
        self.stores = [Tracker.get(uri, experiment), *self.own[: stores - 1]]
        self.artifacts = self.own[stores - 1 :]
        self.runs: queue.Queue = queue.Queue()
        self.files: queue.Queue = queue.Queue()
        self.store_threads = [threading.Thread(target=self._feed_runs, args=(t,), daemon=True) for t in self.stores]
        self.file_threads = [threading.Thread(target=self._feed_files, args=(t,), daemon=True) for t in self.artifacts]
        for thread in self.store_threads + self.file_threads:
            thread.start()

    def submit(self, payloads: list[dict[str, Any]]) -> list[Future]:
        """Queue finished runs; a future of each one's MLflow run id (None if it failed)."""
        futures = [Future() for _ in payloads]
        for i in range(0, len(payloads), self.CHUNK):
            self.runs.put((payloads[i : i + self.CHUNK], futures[i : i + self.CHUNK]))
        return futures

    def _feed_runs(self, tracker: Tracker) -> None:
        while (item := self.runs.get()) is not None:
            payloads, futures = item
            try:
                written, failures = tracker.log_runs([{k: p[k] for k in _RUN_KEYS} for p in payloads])
            except TrackingError as err:
                written, failures = [None] * len(payloads), [str(err)]
            _warn_failures(failures)
            jobs = []
            for payload, future, done in zip(payloads, futures, written):
                if done is None:
                    future.set_result(None)
                else:
                    jobs.append((future, done[0], {**payload, "artifact_uri": done[1]}))
            if jobs and self.artifacts:
                self.files.put(jobs)
            elif jobs:
                self._store_files(tracker, jobs)

    def _feed_files(self, tracker: Tracker) -> None:
        while (jobs := self.files.get()) is not None:
            self._store_files(tracker, jobs)

    @staticmethod
    def _store_files(tracker: Tracker, jobs: list) -> None:
        try:
            _warn_failures(tracker.log_run_artifacts([{k: j[k] for k in _FILE_KEYS} for _, _, j in jobs]))
        except TrackingError as err:
            _warn_failures([str(err)])
        for future, run_id, _ in jobs:
            future.set_result(run_id)

    def close(self) -> None:
        """Let the writers finish what is queued, then stop this pool's own."""
        for queue_, threads in ((self.runs, self.store_threads), (self.files, self.file_threads)):
            for _ in threads:
                queue_.put(None)
            for thread in threads:
                thread.join()
        for tracker in self.own:
            tracker.close()


_RUN_KEYS = ("name", "tags", "params", "metrics", "status")
_FILE_KEYS = ("name", "artifact_uri", "artifacts", "loss", "loss_curve")


def _warn_failures(failures: list[str]) -> None:
    for failure in failures:
        print(f"gdexp: warning: an MLflow write failed: {failure}", file=sys.stderr, flush=True)


def log_file(uri: str, run_id: str, path: Path) -> None:
    """Log one file on an existing run, outside any job (the sweep report on its parent run)."""
    from mlflow import MlflowClient

    MlflowClient(uri).log_artifact(run_id, str(path))


# --------------------------------------------------------------------------- run metadata

_GIT_COMMIT: list[str | None] = []


def git_commit() -> str | None:
    """The commit of the gdexp checkout the code runs from, when it is one."""
    if not _GIT_COMMIT:
        try:
            out = subprocess.run(
                ["git", "-C", str(PACKAGE_DIR), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
            )
            _GIT_COMMIT.append(out.stdout.strip() if out.returncode == 0 else None)
        except (OSError, subprocess.SubprocessError):
            _GIT_COMMIT.append(None)
    return _GIT_COMMIT[0]


def source_tags() -> dict[str, str]:
    """MLflow's own source tags, which the fluent API would set."""
    tags = {"mlflow.source.name": "gdexp.run", "mlflow.source.type": "LOCAL"}
    try:
        tags["mlflow.user"] = getpass.getuser()
    except Exception:
        pass
    commit = git_commit()
    if commit:
        tags["mlflow.source.git.commit"] = commit
    return tags


def run_name(overrides: list[str]) -> str:
    """A run's name: its overrides in command-line order, tracking settings left out."""
    shown = []
    for override in overrides:
        key, _, value = override.lstrip("+~").partition("=")
        if not key.startswith(("tracking.", "hydra.")):
            # Hydra writes swept booleans back as True/False; show them as the user typed them.
            shown.append(f"{key}={value.lower() if value in ('True', 'False') else value}")
    return ",".join(shown) or "default"


# --------------------------------------------------------------------------- sweeps


class SweepAborted(BaseException):
    """Raised from a Hydra callback, which would swallow an ordinary exception."""

    def __init__(self, error: Exception):
        super().__init__(str(error))
        self.error = error


def sweep_dir(folder: str, launch_dir: str) -> Path:
    """A sweep's directory, absolute: jobs may run elsewhere than the launch directory."""
    path = Path(folder)
    return path if path.is_absolute() else Path(launch_dir) / path


def read_sweep(folder: Path) -> dict[str, Any] | None:
    """The record of the sweep whose directory is ``folder``, if it has one."""
    path = folder / SWEEP_FILE
    return json.loads(path.read_text()) if path.is_file() else None


class SweepCallback(Callback):
    """Checks every sweep value before any job trains, and opens the sweep's parent run."""

    def __init__(self) -> None:
        # Launchers pickle Hydra's context, callbacks included: keep no process handles here.
        self.store: tuple[str, str] | None = None
        self.parent: str | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from gdexp.run import preflight

        try:
            overrides = list(config.hydra.overrides.task)
            sweep_params = [f"{k}={v}" for k, v in (config.hydra.sweeper.get("params") or {}).items()]
            jobs = preflight(config, sweep_params + overrides)
            folder = sweep_dir(config.hydra.sweep.dir, config.hydra.runtime.cwd)
            folder.mkdir(parents=True, exist_ok=True)
            record: dict[str, Any] = {"parent_run_id": None, "overrides": sweep_params + overrides, "jobs": jobs}
            if config.tracking.enabled:
                uri = resolve_uri(config.tracking.uri, Path(config.hydra.runtime.cwd))
                self.store = (uri, config.tracking.experiment)
                tracker = Tracker.get(*self.store)
                name = "sweep " + (" ".join(sweep_params + overrides) or "default")
                tags = {
                    **source_tags(),
                    "gdexp.role": "sweep",
                    "gdexp.overrides": " ".join(sweep_params + overrides),
                    "gdexp.sweep_dir": str(folder),
                    "gdexp.jobs": str(jobs),
                }
                self.parent = tracker.start_run(name, tags, {})
                record.update(parent_run_id=self.parent, tracking_uri=uri, experiment=config.tracking.experiment)
            (folder / SWEEP_FILE).write_text(json.dumps(record, indent=2))
        except (ConfigError, TrackingError) as err:
            raise SweepAborted(err) from None

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        path = sweep_dir(config.hydra.sweep.dir, config.hydra.runtime.cwd) / SWEEP_FILE
        if path.is_file():  # the sweep's end goes on record first, for gdexp.sync
            record = json.loads(path.read_text())
            path.write_text(json.dumps({**record, "status": "FINISHED"}, indent=2))
        if self.store is not None and self.parent is not None:
            try:
                Tracker.get(*self.store).end_run(self.parent, "FINISHED")
            except TrackingError as err:
                print(f"gdexp: warning: {err}; `python -m gdexp.sync {path.parent}` ends the sweep's run")


if __name__ == "__main__":  # the writer process: python -m gdexp.tracking FD URI EXPERIMENT
    _writer(Connection(int(sys.argv[1])), sys.argv[2], sys.argv[3])
