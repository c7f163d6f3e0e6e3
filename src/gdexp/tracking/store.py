"""Store access: opening a store, its health, the migration lock, retries, and the few calls gdexp makes.

What a URI means and what of it may be shown is :mod:`gdexp.tracking.uri`'s.

Every process that talks to MLflow (the writer, ``gdexp.sync``, ``gdexp.compare``) opens its
store here. Imports neither Hydra nor torch, and MLflow only when a store is opened.
"""

from __future__ import annotations

import base64
import fcntl
import logging
import os
import shutil
import socket
import sqlite3
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote, urlparse, urlsplit, urlunsplit
from urllib.request import pathname2url, url2pathname

from gdexp.tracking.uri import TRACKING_ALLOWED, TrackingError, mask_text, masked

BATCH = 1000  # MLflow's limit of metrics per log_batch call
T = TypeVar("T")


def first_line(err: BaseException) -> str:
    """The first line of an error's text (or its type's name)."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def connection_lost(err: Exception) -> bool:
    """Whether an error says the tracking server stopped answering."""
    text = str(err)
    return any(s in text for s in ("Max retries exceeded", "Connection refused", "ConnectionError", "timed out"))


def _health_request(uri: str) -> urllib.request.Request:
    """``GET /health`` of a tracking server, credentials (from the URI's userinfo, else from
    ``MLFLOW_TRACKING_USERNAME`` and ``MLFLOW_TRACKING_PASSWORD``, as MLflow takes them) sent as
    HTTP basic auth, never as part of the host name."""
    parts = urlsplit(uri)
    host = parts.netloc.rpartition("@")[2]
    url = urlunsplit(parts._replace(netloc=host, path=parts.path.rstrip("/") + "/health"))
    user = unquote(parts.username) if parts.username else os.environ.get("MLFLOW_TRACKING_USERNAME")
    password = unquote(parts.password) if parts.password else os.environ.get("MLFLOW_TRACKING_PASSWORD")
    request = urllib.request.Request(url)
    if user and password:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    return request


def check_reachable(uri: str, timeout: float = 10, write: bool = True) -> None:
    """A :class:`TrackingError` unless the server answers ``/health``, the database takes a
    connection, or the SQLite file is a database in a folder gdexp can write (``write``) or read."""
    if uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(_health_request(uri), timeout=timeout) as reply:
                reply.read()
        except (urllib.error.URLError, OSError) as err:
            reason = getattr(err, "reason", err)
            raise TrackingError(
                f"tracking.uri={masked(uri)}: cannot reach the tracking server ({reason}); allowed: {TRACKING_ALLOWED}"
            ) from None
    elif uri.startswith(("postgresql", "postgres", "mysql", "mssql")):
        # MLflow retries a database it cannot reach for minutes: a refused port is said at once.
        parts = urlsplit(uri)
        default = {"postgresql": 5432, "postgres": 5432, "mysql": 3306, "mssql": 1433}
        port = parts.port or default[parts.scheme.split("+")[0]]
        try:
            socket.create_connection((parts.hostname or "localhost", port), timeout=timeout).close()
        except OSError as err:
            reason = err.strerror or type(err).__name__
            raise TrackingError(
                f"tracking.uri={masked(uri)}: cannot reach the database ({reason}); allowed: {TRACKING_ALLOWED}"
            ) from None
        _probe_database(uri, timeout)
    elif uri.startswith("sqlite:///"):
        path = Path(uri[len("sqlite:///") :])
        if not path.parent.is_dir() or not os.access(path.parent, os.W_OK if write else os.R_OK):
            raise TrackingError(
                f"tracking.uri={masked(uri)}: the folder {path.parent} does not exist or is not "
                f"writable; allowed: {TRACKING_ALLOWED}"
            )
        if path.exists() and not path.is_file():
            raise TrackingError(
                f"tracking.uri={masked(uri)}: {path} is a {'folder' if path.is_dir() else 'special file'}, "
                f"not a database file; allowed: {TRACKING_ALLOWED}"
            )
        if path.is_file():
            _probe_sqlite(uri, path)


def _probe_sqlite(uri: str, path: Path) -> None:
    """The file is a SQLite database (MLflow would say so in a traceback, or make tables in it)."""
    try:
        with closing(sqlite3.connect(f"file:{pathname2url(str(path))}?mode=ro", uri=True, timeout=30)) as db:
            db.execute("pragma schema_version").fetchone()
    except sqlite3.DatabaseError as err:
        raise TrackingError(
            f"tracking.uri={masked(uri)}: {path} is not a SQLite database ({err}); allowed: {TRACKING_ALLOWED}"
        ) from None


def _probe_database(uri: str, timeout: float) -> None:
    """One connection, at once: MLflow retries a database that refuses it for minutes, whatever
    the reason (a parameter the driver does not know, a wrong password, no such database)."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(uri, connect_args={"connect_timeout": max(1, int(timeout))})
    try:
        with engine.connect():
            pass
    except Exception as err:
        reason = first_line(getattr(err, "orig", None) or err)
        raise TrackingError(
            f"tracking.uri={masked(uri)}: the database refuses the connection ({mask_text(reason)}); "
            f"allowed: {TRACKING_ALLOWED}"
        ) from None
    finally:
        engine.dispose()


def connect(uri: str, experiment: str, attempts: int = 5) -> tuple[Any, str]:
    """An ``MlflowClient`` on ``uri`` and the id of ``experiment`` (created if need be). Two
    processes opening a fresh store at once race to create its tables (or the experiment): the
    loser retries, with backoff."""
    for attempt in range(attempts):
        try:
            return _open_store(uri, experiment)
        except TrackingError:
            if attempt == attempts - 1 or uri.startswith(("http://", "https://")):
                raise
            time.sleep(0.2 * 2**attempt)
    raise AssertionError("unreachable")


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock between processes on this machine, held on the file ``path``."""
    with open(path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@contextmanager
def first_open_lock(uri: str, purpose: str = "gdexp") -> Iterator[None]:
    """Held while a process opens a SQLite store: the first open creates or migrates its tables,
    and two processes doing that at once leave it half-migrated (``table _alembic_tmp_... already
    exists``) for good. The lock file sits beside the database (``mlflow.db-gdexp.lock``); another
    ``purpose`` is another lock on the same store (``gdexp-sweeps``: finding or making a parent)."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    path = Path(uri[len("sqlite:///") :])
    with file_lock(path.with_name(f"{path.name}-{purpose}.lock")):
        yield


def _leftover_migration(uri: str, err: BaseException) -> bool:
    """Drop the temporary tables of a migration some process left half done (an older gdexp, or
    another tool opening the store at the same instant), so that it can run again. Called with
    :func:`first_open_lock` held; True when there was something to drop."""
    if not uri.startswith("sqlite:///") or "_alembic_tmp_" not in str(err):
        return False
    time.sleep(1.0)  # a migration that is still running elsewhere gets the time to finish
    with sqlite3.connect(uri[len("sqlite:///") :], timeout=30) as db:
        names = [r[0] for r in db.execute("select name from sqlite_master where name like '_alembic_tmp_%'")]
        for name in names:
            db.execute(f'drop table if exists "{name}"')
    return bool(names)


class _RaisedNoise(logging.Filter):
    """Drops MLflow's log record of a database error it then raises: gdexp says what it raises,
    once (a lock :func:`retrying` waits out; a full disk, one line for the whole sweep), not as
    a traceback a write."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.exc_info


def out_of_room(err: BaseException | str) -> bool:
    """Whether an error says the store's storage takes no more writes: a full disk or a
    read-only one. Writing run by run after it would leave half-written runs."""
    text = str(err).lower()
    return any(
        sign in text
        for sign in ("disk is full", "no space left", "errno 28", "readonly database", "read-only file system")
    )


def _open_store(uri: str, experiment: str) -> tuple[Any, str]:
    check_reachable(uri)
    # MLflow prints a "View run at" link for every run ended on a server, with the URI as given:
    # a password in it would be printed. gdexp prints its own lines, credentials masked.
    os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
    from mlflow import MlflowClient  # heavy: imported when a store is first opened
    from mlflow.exceptions import MlflowException

    for name in ("mlflow", "alembic"):  # store migrations log at INFO: not the user's business
        logging.getLogger(name).setLevel(logging.WARNING)
    # MLflow logs every database error with its traceback before raising it: a store another
    # process holds for a while (retrying waits it out) or a full disk would be a wall of errors.
    sessions = logging.getLogger("mlflow.store.db.utils")
    if not any(isinstance(f, _RaisedNoise) for f in sessions.filters):
        sessions.addFilter(_RaisedNoise())

    try:
        with first_open_lock(uri):
            try:
                return _client_and_experiment(MlflowClient(tracking_uri=uri), uri, experiment)
            except Exception as err:
                if not _leftover_migration(uri, err):
                    raise
                return _client_and_experiment(MlflowClient(tracking_uri=uri), uri, experiment)
    except MlflowException as err:
        raise TrackingError(f"tracking.uri={masked(uri)}: {first_line(err)}; allowed: {TRACKING_ALLOWED}") from None
    except Exception as err:  # a driver error, a refused connection, a bad scheme
        problem = f"{type(err).__name__}: {first_line(err)}"
        raise TrackingError(f"tracking.uri={masked(uri)}: {problem}; allowed: {TRACKING_ALLOWED}") from None


def _client_and_experiment(client: Any, uri: str, experiment: str) -> tuple[Any, str]:
    from mlflow.exceptions import MlflowException

    found = client.get_experiment_by_name(experiment)
    if found is not None:
        return client, found.experiment_id
    location = None
    if uri.startswith("sqlite:///"):
        location = (Path(uri[len("sqlite:///") :]).parent / "mlartifacts").as_uri()
    try:
        # MLflow's UI shows an experiment of this kind on its runs, not on its GenAI overview.
        kind = {"mlflow.experimentKind": "custom_model_development"}
        return client, client.create_experiment(experiment, artifact_location=location, tags=kind)
    except MlflowException:  # created meanwhile by a process on another machine
        found = client.get_experiment_by_name(experiment)
        if found is None:
            raise
        return client, found.experiment_id


def retrying(call: Callable[..., T], *args: Any, attempts: int = 12, **kwargs: Any) -> T:
    """``call`` with backoff while SQLite reports the store locked by another writer (parallel
    jobs): 0.05 s doubling to 2 s, about 15 s in all, before the error is let through."""
    for attempt in range(attempts):
        try:
            return call(*args, **kwargs)
        except Exception as err:
            if "locked" not in str(err).lower() or attempt == attempts - 1:
                raise
            time.sleep(min(0.05 * 2**attempt, 2.0))
    raise AssertionError("unreachable")


def log_whole(
    client: Any,
    run_id: str,
    *,
    params: dict[str, str] | None = None,
    metrics: list[tuple[str, float, int]] | tuple = (),
    tags: dict[str, str] | None = None,
) -> None:
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
        retrying(client.log_batch, run_id, metrics=some_metrics, params=some_params, tags=some_tags)


def finished_runs(client: Any, experiment_id: str) -> dict[str, str]:
    """Config hash -> id of a FINISHED run, for every finished run of the experiment (one paged
    search: what a resumed sweep checks its jobs against)."""
    found: dict[str, str] = {}
    token = None
    while True:
        page = retrying(
            client.search_runs, [experiment_id], "attributes.status = 'FINISHED'", max_results=10000, page_token=token
        )
        for run in page:
            found.setdefault(run.data.tags.get("gdexp.config_hash"), run.info.run_id)
        token = page.token
        if not token:
            return found


def find_finished(client: Any, experiment_id: str, config_hash: str) -> str | None:
    """The id of a FINISHED run of the experiment with this config hash, if there is one."""
    found = retrying(
        client.search_runs,
        [experiment_id],
        f"tags.`gdexp.config_hash` = '{config_hash}' and attributes.status = 'FINISHED'",
        max_results=1,
    )
    return found[0].info.run_id if found else None


def log_file(uri: str, run_id: str, path: Path) -> None:
    """Log one file on an existing run, outside any job (the sweep report on its parent run)."""
    from mlflow import MlflowClient

    MlflowClient(uri).log_artifact(run_id, str(path))


def put_artifacts(artifact_uri: str, paths: list[Path], tracking_uri: str) -> None:
    """Put files in a run's artifact location: copied straight into a local one (what MLflow's
    local repository does, without its staging copy), else through MLflow's repository."""
    folder = local_folder(artifact_uri)
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        for path in paths:
            shutil.copyfile(path, folder / path.name)
        return
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    repository = get_artifact_repository(artifact_uri, tracking_uri=tracking_uri)
    for path in paths:
        retrying(repository.log_artifact, str(path))


def local_folder(artifact_uri: str) -> Path | None:
    """The folder of an artifact location on this machine's file system (a path or a ``file:``
    URI); None for any other (a server's ``mlflow-artifacts:``, an object store)."""
    parsed = urlparse(artifact_uri)
    if parsed.scheme == "file" and parsed.netloc in ("", "localhost"):
        return Path(url2pathname(parsed.path))
    return Path(artifact_uri) if not parsed.scheme and artifact_uri.startswith("/") else None
