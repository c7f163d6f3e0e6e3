"""Finished runs written many to a transaction, through MLflow's own SQLAlchemy models.

MLflow's client writes a run in about nine database sessions and six commits (``create_run``,
``log_batch``'s params, metrics and tags apart, ``latest_metrics`` upserted key by key with a
``SELECT ... FOR UPDATE``, ``log_inputs``, ``set_terminated``): about 44 ms a run on SQLite, where
the database takes its rows in 2-3 ms. MLflow has no write API across runs (mlflow#3010), so a
run that is written whole (a batched sweep's members, a search's trials in a population) goes in
here instead: the same rows MLflow's client would write, many runs to one transaction, through
``mlflow.store.tracking.dbmodels`` (no hand-written DDL or SQL).

What a run gets, exactly as the client path gives it (``tests/test_bulk.py`` compares the two as
MLflow's stock client reads them): the run row (name, user from ``mlflow.user``, status, start
and end time, lifecycle, the artifact URI under the experiment's artifact location), every tag
(``mlflow.runName`` added as ``create_run`` adds it), every param (checked as ``log_batch`` checks
them), the full metric history (NaN and inf sanitized as MLflow does), ``latest_metrics`` (the
greatest ``(step, timestamp, value)`` per key), and the dataset with its input and its
``mlflow.data.context`` tag.

Only where the store's alembic revision is the one the installed MLflow writes: another schema
(a store an older or newer MLflow made) keeps the client path, and :func:`open_bulk` says why.
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass
from typing import Any

from gdexp.tracking import protocol as p
from gdexp.tracking.tags import fit_run_name

CONTEXT_TAG = ("mlflow.data.context", "training")


def _store_of(client: Any) -> Any:
    return client._tracking_client.store


def schema_revisions(store: Any) -> tuple[str | None, str]:
    """The store's alembic revision, and the one the installed MLflow writes."""
    import sqlalchemy
    from alembic.script import ScriptDirectory
    from mlflow.store.db.utils import _get_alembic_config

    head = ScriptDirectory.from_config(_get_alembic_config(store.db_uri)).get_current_head()
    with store.engine.connect() as connection:
        row = connection.execute(sqlalchemy.text("select version_num from alembic_version")).first()
    return (row[0] if row else None), str(head)


def open_bulk(client: Any, uri: str, experiment_id: str) -> tuple[BulkWriter | None, str | None]:
    """The bulk writer for a SQLite or PostgreSQL store, or None and the one line that says why
    finished runs take the client path (None for a tracking server: its client path is the one)."""
    if not uri.startswith(("sqlite:///", "postgresql")) or os.environ.get("GDEXP_BULK") == "0":
        return None, None  # GDEXP_BULK=0: the client path on purpose (benchmarks/bench_scale.py compares)
    store, why = _checked_store(client)
    if store is None:
        return None, f"{why}: finished runs go through MLflow's client, one at a time (slower; the same runs)"
    return BulkWriter(store, experiment_id), None


def sql_store(client: Any) -> Any | None:
    """The client's SQLAlchemy store where its schema is the one the installed MLflow writes
    (the tables this module reads and writes are then MLflow's own), else None."""
    return None if os.environ.get("GDEXP_BULK") == "0" else _checked_store(client)[0]


def _checked_store(client: Any) -> tuple[Any | None, str]:
    """The client's store if it is SQL at the installed MLflow's schema; else None and why not."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    store = _store_of(client)
    if not isinstance(store, SqlAlchemyStore):
        return None, f"the store is a {type(store).__name__}"
    try:
        found, head = schema_revisions(store)
    except Exception as err:  # no alembic_version table: not a store this MLflow made
        return None, f"the store's schema cannot be read ({type(err).__name__})"
    if found != head:
        return None, f"the store's schema is alembic revision {found}, the installed MLflow writes {head}"
    return store, ""


@dataclass
class RunRows:
    """Many runs as their rows: ``runs`` (run id, name, status, start time, artifact URI), and
    ``params``, ``metrics`` (latest values, NaN restored) and ``tags`` as (run id, key, value)."""

    runs: list[tuple[str, str, str, int, str]]
    params: list[tuple[str, str, str]]
    metrics: list[tuple[str, str, float]]
    tags: list[tuple[str, str, str]]


def read_runs(store: Any, experiment_id: str, tag: tuple[str, str] | None) -> RunRows:
    """The experiment's live runs that carry ``tag`` (key, value; None for all of them), in four
    queries through MLflow's models: what ``search_runs`` gives for the filter
    ``tags.key = 'value'``, without its ORM objects (about 2 ms a run; these queries take a few
    microseconds a row)."""
    import sqlalchemy as sa
    from mlflow.store.tracking.dbmodels.models import SqlLatestMetric, SqlParam, SqlRun, SqlTag

    run, tags = SqlRun.__table__.c, SqlTag.__table__.c
    live = sa.select(run.run_uuid).where(run.experiment_id == int(experiment_id), run.lifecycle_stage == "active")
    if tag is not None:
        live = live.join(SqlTag.__table__, tags.run_uuid == run.run_uuid).where(
            tags.key == tag[0], tags.value == tag[1]
        )
    chosen = live.scalar_subquery()

    def rows(model: Any, *names: str) -> list[tuple]:
        table = model.__table__.c
        query = sa.select(*(table[n] for n in names)).where(table.run_uuid.in_(chosen))
        return connection.execute(query).cursor.fetchall()  # the driver's tuples: a third of Row's cost

    with store.engine.connect() as connection:
        found = RunRows(
            runs=rows(SqlRun, "run_uuid", "name", "status", "start_time", "artifact_uri"),
            params=rows(SqlParam, "run_uuid", "key", "value"),
            metrics=[
                (r, k, float("nan") if is_nan else v)
                for r, k, v, is_nan in rows(SqlLatestMetric, "run_uuid", "key", "value", "is_nan")
            ],
            tags=rows(SqlTag, "run_uuid", "key", "value"),
        )
    return found


METRIC_COLUMNS = ("run_uuid", "key", "value", "timestamp", "step", "is_nan")  # a metric row's tuple


def insert(connection: Any, table: Any, rows: list[Any], columns: tuple[str, ...] | None = None) -> None:
    """``rows`` into ``table``: dicts with the same keys, or tuples of ``columns``. The model's own
    INSERT, compiled once; on SQLite the driver's ``executemany`` takes the rows as tuples:
    SQLAlchemy's per-row parameter handling would cost three times the database's own time (2.1
    million metric rows in a 10,000-run sync). Elsewhere SQLAlchemy's batched insert
    (``insertmanyvalues`` on PostgreSQL)."""
    if connection.dialect.name != "sqlite":
        connection.execute(table.insert(), [dict(zip(columns, r)) for r in rows] if columns else rows)
        return
    keys = list(columns or rows[0])
    compiled = table.insert().compile(dialect=connection.dialect, column_keys=keys)
    order = list(compiled.positiontup)
    if columns and order == keys:
        connection.exec_driver_sql(str(compiled), rows)
    elif columns:
        at = [keys.index(k) for k in order]
        connection.exec_driver_sql(str(compiled), [tuple(r[i] for i in at) for r in rows])
    else:
        connection.exec_driver_sql(str(compiled), [tuple(r[k] for k in order) for r in rows])


def count_by_tag(store: Any, experiment_id: str, key: str) -> dict[str, int]:
    """How many of the experiment's live runs hold each value of tag ``key`` (one query): the
    children of each parent, for ``key`` ``mlflow.parentRunId``."""
    import sqlalchemy as sa
    from mlflow.store.tracking.dbmodels.models import SqlRun, SqlTag

    run, tags = SqlRun.__table__.c, SqlTag.__table__.c
    query = (
        sa.select(tags.value, sa.func.count())
        .select_from(SqlTag.__table__.join(SqlRun.__table__, tags.run_uuid == run.run_uuid))
        .where(run.experiment_id == int(experiment_id), run.lifecycle_stage == "active", tags.key == key)
        .group_by(tags.value)
    )
    with store.engine.connect() as connection:
        return {value: count for value, count in connection.execute(query).all()}


@dataclass
class BulkWriter:
    """Writes finished runs into one experiment of a SQL store, a transaction per call."""

    store: Any  # mlflow's SqlAlchemyStore, as the process's MlflowClient opened it
    experiment_id: str

    def check(self, run: p.FinishedRun, now: int) -> tuple[list[Any], list[Any]]:
        """The run's metrics and params as ``log_batch`` would take them: raises what the client
        path would raise. MLflow's checks run on every param and on one point of each metric key
        (the name, the value's and step's types); the other points of a key are checked for their
        types alone (MLflow's per-point check would cost more than the database's write)."""
        from mlflow.entities import Metric, Param
        from mlflow.exceptions import MlflowException
        from mlflow.utils.validation import _validate_batch_log_data, _validate_param_keys_unique

        metrics = [(k, float(v), now, s) for k, v, s in run.metrics]
        params = [Param(k, v) for k, v in run.params.items()]
        firsts = [Metric(*m) for m in {m[0]: m for m in metrics}.values()]
        _, params, _ = _validate_batch_log_data(firsts, params, [])
        _validate_param_keys_unique(params)
        if any(type(s) is not int for _, _, _, s in metrics):
            raise MlflowException(f"[{run.name}] a metric step that is not an integer")
        return metrics, params

    def write(self, runs: list[p.FinishedRun]) -> list[p.Written]:
        """Every run, or none of them (one transaction); where each went. The rows go in as one
        multi-row insert a table (the models' own tables, SQLAlchemy Core): the ORM's unit of
        work would cost about 0.1 ms a row, ten times the database's own time."""
        from mlflow.store.tracking.dbmodels.models import (
            SqlDataset,
            SqlExperiment,
            SqlInput,
            SqlInputTag,
            SqlLatestMetric,
            SqlMetric,
            SqlParam,
            SqlRun,
            SqlTag,
        )
        from mlflow.utils.uri import append_to_uri_path

        now = int(time.time() * 1000)
        checked = [self.check(run, now) for run in runs]
        written: list[p.Written] = []
        tables: dict[Any, list[Any]] = {  # rows: dicts, or tuples of METRIC_COLUMNS
            m: [] for m in (SqlRun, SqlTag, SqlParam, SqlMetric, SqlLatestMetric, SqlInput, SqlInputTag)
        }
        with self.store.ManagedSessionMaker(read_only=False) as session:
            experiment = session.query(SqlExperiment).filter(SqlExperiment.experiment_id == self.experiment_id).one()
            if experiment.lifecycle_stage != "active":
                raise ValueError(f"experiment {self.experiment_id} is {experiment.lifecycle_stage}")
            datasets = self._datasets(session, SqlDataset, runs)
            for run, (metrics, params) in zip(runs, checked):
                run_id = uuid.uuid4().hex
                artifact_uri = append_to_uri_path(experiment.artifact_location, run_id, "artifacts")
                tags = dict(run.tags)
                name = fit_run_name(run.name)
                tags.setdefault("mlflow.runName", name)
                tables[SqlRun].append(
                    {
                        "run_uuid": run_id,
                        "name": name,
                        "artifact_uri": artifact_uri,
                        "experiment_id": int(self.experiment_id),
                        "source_type": "UNKNOWN",
                        "source_name": "",
                        "entry_point_name": "",
                        "user_id": tags.get("mlflow.user", "unknown"),
                        "status": run.status,
                        "start_time": run.start_time or now,
                        "end_time": run.end_time or now,
                        "deleted_time": None,
                        "source_version": "",
                        "lifecycle_stage": "active",
                    }
                )
                tables[SqlTag] += [{"run_uuid": run_id, "key": k, "value": v} for k, v in tags.items()]
                tables[SqlParam] += [{"run_uuid": run_id, "key": q.key, "value": q.value} for q in params]
                history, latest = self._metrics(run_id, metrics)
                tables[SqlMetric] += history
                tables[SqlLatestMetric] += latest
                if run.dataset is not None:
                    input_id = uuid.uuid4().hex
                    tables[SqlInput].append(
                        {
                            "input_uuid": input_id,
                            "source_type": "DATASET",
                            "source_id": datasets[(run.dataset.name, run.dataset.digest)],
                            "destination_type": "RUN",
                            "destination_id": run_id,
                        }
                    )
                    tables[SqlInputTag].append(
                        {"input_uuid": input_id, "name": CONTEXT_TAG[0], "value": CONTEXT_TAG[1]}
                    )
                written.append(p.Written(run_id, artifact_uri))
            for model, rows in tables.items():  # runs first: the others refer to them
                if rows:
                    columns = METRIC_COLUMNS if model in (SqlMetric, SqlLatestMetric) else None
                    insert(session.connection(), model.__table__, rows, columns)
        return written

    def tagged(self, key: str, values: list[str]) -> set[str]:
        """Which of ``values`` the experiment's live runs hold as their tag ``key`` (one query)."""
        from mlflow.store.tracking.dbmodels.models import SqlRun, SqlTag

        with self.store.ManagedSessionMaker() as session:
            rows = (
                session.query(SqlTag.value)
                .join(SqlRun, SqlRun.run_uuid == SqlTag.run_uuid)
                .filter(
                    SqlTag.key == key,
                    SqlTag.value.in_(values),
                    SqlRun.experiment_id == int(self.experiment_id),
                    SqlRun.lifecycle_stage == "active",
                )
                .all()
            )
        return {value for (value,) in rows}

    def _datasets(self, session: Any, SqlDataset: Any, runs: list[p.FinishedRun]) -> dict[tuple[str, str], str]:
        """(name, digest) -> dataset id for every run's dataset: found in the experiment, or made."""
        specs = {(r.dataset.name, r.dataset.digest): r.dataset for r in runs if r.dataset is not None}
        if not specs:
            return {}
        found = (
            session.query(SqlDataset)
            .filter(SqlDataset.experiment_id == self.experiment_id)
            .filter(SqlDataset.name.in_({n for n, _ in specs}))
            .filter(SqlDataset.digest.in_({d for _, d in specs}))
            .all()
        )
        ids = {(d.name, d.digest): d.dataset_uuid for d in found}
        for key, spec in specs.items():
            if key not in ids:
                ids[key] = uuid.uuid4().hex
                session.add(
                    SqlDataset(
                        dataset_uuid=ids[key],
                        experiment_id=self.experiment_id,
                        name=spec.name,
                        digest=spec.digest,
                        dataset_source_type=spec.source_type,
                        dataset_source=spec.source,
                        dataset_schema=spec.schema,
                        dataset_profile=spec.profile,
                    )
                )
        session.flush()  # a dataset another process made meanwhile fails here, not mid-runs
        return ids

    def _metrics(self, run_id: str, metrics: list[Any]) -> tuple[list[tuple], list[tuple]]:
        """The full history (duplicates dropped, as ``log_batch`` drops them) and the latest value
        of each key: the greatest ``(step, timestamp, value)``, as MLflow compares them. Rows are
        tuples of :data:`METRIC_COLUMNS`."""
        history: list[tuple] = []
        latest: dict[str, tuple] = {}
        seen: set[Any] = set()
        sanitize = self.store.sanitize_metric_value
        for metric in metrics:  # (key, value, timestamp, step)
            if metric in seen:
                continue
            seen.add(metric)
            key, raw, timestamp, step = metric
            is_nan, value = sanitize(raw)
            row = (run_id, key, value, timestamp, step, is_nan)
            history.append(row)
            now = latest.get(key)
            # the sanitized value, as MLflow compares them; ties keep the first
            if now is None or (step, timestamp, value) > (now[4], now[3], now[2]):
                latest[key] = row
        return history, list(latest.values())
