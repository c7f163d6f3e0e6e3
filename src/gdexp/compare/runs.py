"""Reading runs from MLflow into pandas: one row per run, and every run's history.

Reads are bulk: one paged search for the runs (params, metrics and tags come with it) and each
run's ``history.csv`` read straight from a local artifact store, never a request per metric.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import pandas as pd

from gdexp.errors import UserError
from gdexp.tracking.bulk import count_by_tag, read_runs, sql_store
from gdexp.tracking.record import SUPERSEDED_TAG
from gdexp.tracking.store import check_reachable
from gdexp.tracking.uri import masked, resolve_uri


class SelectionError(UserError, ValueError):
    """A selector that names nothing: printed as one line, exit status 2."""


def store_uri(uri: str | None) -> str:
    """The store a ``--tracking-uri`` (or ``uri=``) names, resolved as ``gdexp.run`` resolves it
    from the directory the command runs in: where compare's URIs enter, and the only place."""
    return resolve_uri(uri, Path.cwd())


def _client(uri: str | None) -> Any:
    """A client on the store gdexp uses from here. A missing default store is an error, not an
    empty ``mlflow.db`` made in whatever directory the command runs in."""
    from mlflow import MlflowClient

    resolved = store_uri(uri)
    if resolved.startswith("sqlite:///") and not Path(resolved[len("sqlite:///") :]).is_file():
        raise SelectionError(
            f"--tracking-uri={masked(resolved)}: no MLflow store there; allowed: the directory a sweep ran in, "
            "or --tracking-uri / MLFLOW_TRACKING_URI naming its store"
        )
    check_reachable(resolved, timeout=5, write=False)  # a line now, not MLflow's minutes of retries
    return MlflowClient(resolved)


def sweeps(experiment: str = "gdexp", uri: str | None = None) -> pd.DataFrame:
    """The experiment's sweep parent runs, newest first."""
    client = _client(uri)
    return _parents(client, _experiment(client, experiment))


def _parents(client, exp) -> pd.DataFrame:
    """The sweep parents, newest first, with ``runs``: how many child runs each has in the store
    (a continued study's whole count, not its last command's jobs; the ``gdexp.jobs`` tag where
    the store cannot be counted in one query)."""
    parents = _tagged(client, exp, ("gdexp.role", "sweep"))
    if parents.empty:
        return parents
    store = sql_store(client)
    if store is not None:
        counts = count_by_tag(store, exp.experiment_id, "mlflow.parentRunId")
        parents["runs"] = [counts.get(run_id, 0) for run_id in parents["run_id"]]
    else:
        jobs = parents.get("tags.gdexp.jobs", pd.Series(None, index=parents.index, dtype=object))
        parents["runs"] = pd.to_numeric(jobs, errors="coerce").astype("Int64")
    return parents.sort_values("start_time", ascending=False, ignore_index=True)


def _experiment(client, name: str):
    exp = client.get_experiment_by_name(name)
    if exp is None:
        known = ", ".join(sorted(e.name for e in client.search_experiments())) or "none yet"
        raise SelectionError(f"--experiment={name}: no such experiment; allowed: {known}")
    return exp


def _tagged(client, exp, tag: tuple[str, str] | None) -> pd.DataFrame:
    """The experiment's runs that carry ``tag`` (None: all), as :func:`_search` gives them. On a
    SQL store at the installed MLflow's schema, read as rows in four queries: ``search_runs``
    builds ORM objects at about 2 ms a run, 20 s for a 10,000-run sweep."""
    store = sql_store(client)
    if store is None:
        return _search(client, exp, f"tags.`{tag[0]}` = '{tag[1]}'" if tag else "")
    found = read_runs(store, exp.experiment_id, tag)
    frame = pd.DataFrame(found.runs, columns=["run_id", "run_name", "mlflow_status", "start_time", "artifact_uri"])
    at = {run_id: i for i, run_id in enumerate(frame["run_id"])}
    columns: dict[str, list[Any]] = {}
    for prefix, rows in (("params.", found.params), ("metrics.", found.metrics), ("tags.", found.tags)):
        # (run, key, value) rows into a column a key, in the order the runs hold the keys, NaN where
        # a run lacks one: pandas' pivot and join of the same rows cost five times as long.
        for run_id, key, value in rows:
            i = at.get(run_id)
            if i is not None:  # a run made between two of the queries: not in this selection
                column = columns.get(prefix + key)
                if column is None:
                    column = columns[prefix + key] = [math.nan] * len(at)
                column[i] = value
    return pd.concat([frame, pd.DataFrame(columns, index=frame.index)], axis=1) if columns else frame


def _search(client, exp, filter_string: str) -> pd.DataFrame:
    from mlflow.exceptions import MlflowException

    rows, token = [], None
    while True:
        try:
            page = client.search_runs([exp.experiment_id], filter_string, max_results=50000, page_token=token)
        except MlflowException as err:
            first = str(err).strip().splitlines()[0]
            raise SelectionError(
                f"--filter={filter_string!r}: {first}; allowed: an MLflow search filter, "
                "e.g. \"params.lr = '0.1'\" or 'metrics.final_loss < 1e-3'"
            ) from None
        for run in page:
            row = {
                "run_id": run.info.run_id,
                "run_name": run.info.run_name,
                "mlflow_status": run.info.status,
                "start_time": run.info.start_time,
                "artifact_uri": run.info.artifact_uri,
            }
            row.update({f"params.{k}": v for k, v in run.data.params.items()})
            row.update({f"metrics.{k}": v for k, v in run.data.metrics.items()})
            row.update({f"tags.{k}": v for k, v in run.data.tags.items()})
            rows.append(row)
        token = page.token
        if not token:
            break
    return pd.DataFrame(rows)


def select_runs(
    experiment: str = "gdexp", sweep: str = "latest", filter: str | None = None, uri: str | None = None
) -> pd.DataFrame:
    """One row per run: ``run_id``, ``run_name``, ``mlflow_status``, ``params.*``, ``metrics.*``
    (latest values), ``tags.*``. ``sweep`` is ``latest`` (the newest sweep's jobs), a parent run
    id, or ``all`` (every run that is not a sweep parent); ``filter`` is an MLflow search filter."""
    client = _client(uri)
    exp = _experiment(client, experiment)
    if sweep == "latest":
        parents = _parents(client, exp)
        if parents.empty:
            raise SelectionError(
                f"--sweep=latest: experiment {experiment} has no sweep yet; "
                "allowed: all, or run one with `python -m gdexp.run -m ...`"
            )
        sweep = parents.loc[0, "run_id"]
    tag = None if sweep == "all" else ("mlflow.parentRunId", sweep)
    if filter:  # MLflow's own search grammar
        clauses = [filter, *([f"tags.`{tag[0]}` = '{tag[1]}'"] if tag else [])]
        runs = _search(client, exp, " and ".join(clauses))
    else:
        runs = _tagged(client, exp, tag)
    if sweep == "all" and len(runs) and "tags.gdexp.role" in runs:
        runs = runs[runs["tags.gdexp.role"] != "sweep"]
    if len(runs) and f"tags.{SUPERSEDED_TAG}" in runs:  # a requeued job's stopped first attempt
        runs = runs[runs[f"tags.{SUPERSEDED_TAG}"].isna()]
    if runs.empty:
        what = f"--sweep={sweep}" + (f" --filter={filter!r}" if filter else "")
        raise SelectionError(
            f"{what}: selects no runs in experiment {experiment}; allowed: latest, all, "
            "or the run id of a sweep's parent run (see `gdexp-compare sweeps`)"
        )
    return runs.sort_values("start_time", ignore_index=True)


def parse_param(value: Any) -> Any:
    """A param string back to a number where it is one (MLflow keeps params as text)."""
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
            return parsed if isinstance(parsed, (int, float)) and not isinstance(parsed, bool) else value
        except ValueError:
            return value
    return value


def column(runs: pd.DataFrame, name: str, kind: str) -> pd.Series:
    """A param (as numbers where it is one), metric or tag of ``runs`` by its bare name; ``kind``
    names the option it came from, for the error."""
    for col in (name, f"params.{name}", f"metrics.{name}", f"tags.{name}"):
        if col in runs:
            return runs[col].map(parse_param) if col.startswith("params.") else runs[col]
    known = sorted({c.split(".", 1)[1] for c in runs.columns if c.startswith(("params.", "metrics."))})
    raise SelectionError(f"--{kind}={name}: no such param or metric; allowed: {', '.join(known)}")


def histories(runs: pd.DataFrame, uri: str | None = None) -> pd.DataFrame:
    """Every run's ``history.csv`` (every epoch, every curve) in long form, with ``run_id``.

    A local artifact store is read in place; a remote one through MLflow's artifact download."""
    frames = []
    for run_id, artifact_uri in zip(runs["run_id"], runs["artifact_uri"]):
        try:
            frame = pd.read_csv(artifact_path(run_id, artifact_uri, "history.csv", uri))
        except Exception:  # a run without its history (an older gdexp, a failed upload): no curve
            continue
        frame.insert(0, "run_id", run_id)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def artifact_path(run_id: str, artifact_uri: str, name: str, uri: str | None) -> Path:
    """A local path to a run's artifact: in place for a local store, downloaded otherwise."""
    parsed = urlparse(artifact_uri)
    if parsed.scheme in ("file", ""):
        path = Path(unquote(parsed.path)) / name
        if path.is_file():
            return path
        raise FileNotFoundError(f"{name} of run {run_id}: not in its artifact folder")
    from mlflow.artifacts import download_artifacts

    return Path(download_artifacts(run_id=run_id, artifact_path=name, tracking_uri=store_uri(uri)))


def records_frame(folder: Path) -> pd.DataFrame:
    """The runs recorded below ``folder`` (their ``run.json`` and ``history.csv``), in the shape
    :func:`select_runs` gives: for sweeps run without MLflow, or before a store is synced."""
    from gdexp.tracking.record import DamagedRecord, RunInfo, find_records

    rows = []
    for path in find_records(folder):
        try:
            info = RunInfo.load(path)
        except DamagedRecord:
            continue
        row: dict[str, Any] = {
            "run_id": info.mlflow_run_id or info.record_id,
            "run_name": info.run_name,
            "mlflow_status": info.status,
            "start_time": path.stat().st_mtime,
            "artifact_uri": path.parent.as_uri(),
        }
        row.update({f"params.{k}": v for k, v in info.params.items()})
        try:  # the final parameters, as MLflow's latest value of each curve
            last = pd.read_csv(path.parent / "history.csv").iloc[-1]
            row.update({f"metrics.{k}": float(last[k]) for k in last.index if k.split("_")[0] in ("w", "b")})
        except Exception:
            pass
        row.update({f"metrics.{k}": v for k, v, _ in info.metrics})
        row.update({f"tags.{k}": v for k, v in info.tags.items()})
        rows.append(row)
    if not rows:
        raise SelectionError(f"{folder}: no run records there")
    return pd.DataFrame(rows).sort_values("start_time", ignore_index=True)
