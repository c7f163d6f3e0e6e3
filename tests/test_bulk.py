"""The bulk write path writes exactly the runs MLflow's client writes.

The same finished runs go into one store through the client path (``Writer.write_each``: create,
``log_batch``, ``log_inputs``, ``set_terminated``) and into another through the bulk path (one
transaction); MLflow's stock client then reads both, and every field must be equal, ids and
wall-clock timestamps aside.
"""

from __future__ import annotations

import json
import math
import sqlite3
import sys

import pytest
from conftest import empty_store
from mlflow import MlflowClient

from gdexp.tracking import bulk
from gdexp.tracking import protocol as p
from gdexp.tracking.store import connect
from gdexp.tracking.writer import Writer

DATASET = p.DatasetSpec(
    name="line_intercept",
    digest="0123abcd",
    source_type="code",
    source=json.dumps({"tags": {"gdexp.data": "line_intercept"}}),
    schema=json.dumps({"mlflow_tensorspec": {"features": "[]", "targets": "[]"}}),
    profile=json.dumps({"num_rows": 4}),
)


def finished(parent: str) -> list[p.FinishedRun]:
    """Three runs as a batched sweep hands them over: a curve each, a diverged one with NaN and
    inf, repeated points, a long history past one log_batch, tags and params of every kind."""
    runs = []
    for i, (lr, status) in enumerate([(0.01, "FINISHED"), (0.1, "FINISHED"), (0.5, "FINISHED")]):
        curve = [("loss", 30.0 * (1 - lr) ** s, s) for s in range(1200)]
        curve += [("w", 2.0 * (1 - (1 - lr) ** s), s) for s in range(0, 1200, 7)]
        if lr == 0.5:
            curve += [("loss", math.nan, 1200), ("loss", math.inf, 1201), ("w", -math.inf, 1201)]
            curve += [("grad_norm", 1.0, 0), ("grad_norm", math.nan, 1)]  # NaN as the latest value
        curve += [("final_loss", curve[-1][1] if lr != 0.5 else math.inf, 0), ("final_loss", 1e-9 * (i + 1), 0)]
        runs.append(
            p.FinishedRun(
                name=f"lr={lr},optimizer=sgd",
                tags={
                    "mlflow.parentRunId": parent,
                    "mlflow.user": "tester",
                    "gdexp.status": "diverged" if lr == 0.5 else "converged",
                    "gdexp.config_hash": f"hash{i}",
                    "mlflow.note.content": "A run of plain gradient descent. " * 20,
                },
                params={"lr": str(lr), "optimizer.name": "sgd", "predict_at": "[5.0]", "tracking.experiment": "gdexp"},
                metrics=curve,
                status=status,
                start_time=1_700_000_000_000 + i,
                end_time=1_700_000_100_000 + i,
                dataset=DATASET,
            )
        )
    return runs


def write_both(tmp_path, store_template):
    """Two stores holding the same runs under a parent each: by the client path, by the bulk path."""
    written = {}
    for path in ("client", "bulk"):
        folder = tmp_path / path
        folder.mkdir()
        uri = empty_store(folder, store_template)
        client, experiment_id = connect(uri, "gdexp")
        parent = client.create_run(experiment_id, run_name="sweep lr=0.01,0.1,0.5", tags={"gdexp.role": "sweep"})
        runs = finished(parent.info.run_id)
        writer = Writer(None, uri, client, experiment_id)  # type: ignore[arg-type]
        if path == "client":
            out = writer.write_each(runs)
        else:
            bulk_writer, note = bulk.open_bulk(client, uri, experiment_id)
            assert bulk_writer is not None and note is None
            out = p.WrittenRuns(bulk_writer.write(runs))
        assert out.failures == [] and all(out.written)
        for w in out.written:  # the same file in each run's artifact location
            from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

            (folder / "config.yaml").write_text("lr: 0.1\n")
            get_artifact_repository(w.artifact_uri, tracking_uri=uri).log_artifact(str(folder / "config.yaml"))
        client.set_terminated(parent.info.run_id, "FINISHED")
        written[path] = (MlflowClient(uri), experiment_id, parent.info.run_id, [w.run_id for w in out.written])
    return written


def view(client, experiment_id, parent, ids) -> dict:
    """Everything MLflow's stock client shows of the runs, ids and wall-clock times aside."""
    shown = {}
    location = client.get_experiment(experiment_id).artifact_location
    for run_id in ids:
        run = client.get_run(run_id)
        name = run.info.run_name
        tags = {k: v for k, v in run.data.tags.items() if k != "mlflow.parentRunId"}
        inputs = [
            (
                d.dataset.name,
                d.dataset.digest,
                d.dataset.source_type,
                d.dataset.source,
                d.dataset.schema,
                d.dataset.profile,
                sorted((t.key, t.value) for t in d.tags),
            )
            for d in run.inputs.dataset_inputs
        ]
        histories = {
            key: [
                (m.step, m.value if not math.isnan(m.value) else "nan") for m in client.get_metric_history(run_id, key)
            ]
            for key in run.data.metrics
        }
        latest = {k: (v if not math.isnan(v) else "nan") for k, v in run.data.metrics.items()}
        shown[name] = {
            "params": run.data.params,
            "tags": tags,
            "metrics": latest,
            "status": run.info.status,
            "times": (run.info.start_time, run.info.end_time),
            "lifecycle": run.info.lifecycle_stage,
            "user": run.info.user_id,
            "inputs": inputs,
            "histories": histories,
            "artifacts": [a.path for a in client.list_artifacts(run_id)],
            # under the experiment's artifact location, as create_run puts it
            "artifact_uri": run.info.artifact_uri.replace(run_id, "RUN").replace(location, "EXPERIMENT"),
            "parent": run.data.tags.get("mlflow.parentRunId") == parent,
        }
    searches = {}
    for order in (["metrics.final_loss ASC"], ["params.lr DESC"], ["metrics.loss DESC", "params.lr ASC"]):
        found = client.search_runs(
            [experiment_id], "metrics.final_loss < 1 and params.optimizer.name = 'sgd'", order_by=order
        )
        searches[" ".join(order)] = [r.info.run_name for r in found]
    children = client.search_runs([experiment_id], f"tags.mlflow.parentRunId = '{parent}'")
    shown["searches"] = searches
    shown["children"] = sorted(r.info.run_name for r in children)
    return shown


def test_the_bulk_path_writes_what_the_client_writes(tmp_path, store_template):
    written = write_both(tmp_path, store_template)
    client_view = view(*written["client"])
    bulk_view = view(*written["bulk"])
    assert client_view["children"] == ["lr=0.01,optimizer=sgd", "lr=0.1,optimizer=sgd", "lr=0.5,optimizer=sgd"]
    assert client_view["lr=0.5,optimizer=sgd"]["metrics"]["loss"] == sys.float_info.max  # inf, as MLflow keeps it
    assert len(client_view["lr=0.01,optimizer=sgd"]["histories"]["loss"]) == 1200
    for key in client_view:
        assert bulk_view[key] == client_view[key], key


def test_runs_read_as_rows_are_what_get_run_shows(tmp_path, store_template):
    """compare's reader (``read_runs``: four queries, no ORM objects) gives each run's name,
    status, start time, artifact URI, params, latest metrics (NaN restored, inf as MLflow keeps
    it) and tags as MLflow's ``get_run`` does, on stores written by either path."""
    for client, experiment_id, parent, ids in write_both(tmp_path, store_template).values():
        store = bulk.sql_store(client)
        assert store is not None
        rows = bulk.read_runs(store, experiment_id, ("mlflow.parentRunId", parent))
        assert sorted(r[0] for r in rows.runs) == sorted(ids)
        everything = bulk.read_runs(store, experiment_id, None)
        assert sorted(r[0] for r in everything.runs) == sorted([*ids, parent])

        def nan(v):
            return "nan" if isinstance(v, float) and math.isnan(v) else v

        for run_id, name, status, start, artifact_uri in rows.runs:
            run = client.get_run(run_id)
            assert (name, status, start, artifact_uri) == (
                run.info.run_name,
                run.info.status,
                run.info.start_time,
                run.info.artifact_uri,
            )
            assert {k: v for r, k, v in rows.params if r == run_id} == run.data.params
            assert {k: nan(v) for r, k, v in rows.metrics if r == run_id} == {
                k: nan(v) for k, v in run.data.metrics.items()
            }
            assert {k: v for r, k, v in rows.tags if r == run_id} == run.data.tags
        diverged = next(r for r, name, *_ in rows.runs if name.startswith("lr=0.5"))
        latest = {k: nan(v) for r, k, v in rows.metrics if r == diverged}
        assert latest["grad_norm"] == "nan" and latest["loss"] == sys.float_info.max


def test_one_transaction_a_call_and_nothing_left_by_a_failed_one(tmp_path, store_template):
    uri = empty_store(tmp_path, store_template)
    client, experiment_id = connect(uri, "gdexp")
    writer, _ = bulk.open_bulk(client, uri, experiment_id)
    assert writer is not None
    runs = finished("p")
    bad = p.FinishedRun(name="bad", tags={}, params={"lr?!": "0.1"}, metrics=[], status="FINISHED")
    with pytest.raises(Exception, match="(?i)param"):
        writer.write(
            [*runs, bad]
        )  # a param name MLflow refuses fails as log_batch fails it: before anything is written
    assert client.search_runs([experiment_id]) == []
    assert len(writer.write(runs)) == 3 and len(client.search_runs([experiment_id])) == 3


def test_another_schema_keeps_the_client_path_and_says_so(tmp_path, store_template, monkeypatch):
    uri = empty_store(tmp_path, store_template)
    client, experiment_id = connect(uri, "gdexp")
    found, head = bulk.schema_revisions(client._tracking_client.store)
    assert found == head  # a store this MLflow made
    monkeypatch.setattr(bulk, "schema_revisions", lambda store: ("0584bdc529eb", head))
    writer, note = bulk.open_bulk(client, uri, experiment_id)
    assert writer is None and "alembic revision 0584bdc529eb" in note and head in note
    # the writer then writes each run through the client: the same runs
    out = Writer(None, uri, client, experiment_id, writer).write_runs(p.WriteRuns(finished("p")))  # type: ignore[arg-type]
    assert all(out.written) and len(client.search_runs([experiment_id])) == 3
    assert bulk.open_bulk(client, "http://127.0.0.1:5000", experiment_id) == (None, None)  # a server: its client


def test_a_store_without_alembic_history_keeps_the_client_path(tmp_path, store_template):
    uri = empty_store(tmp_path, store_template)
    client, experiment_id = connect(uri, "gdexp")
    with sqlite3.connect(tmp_path / "mlflow.db") as db:
        db.execute("drop table alembic_version")
    writer, note = bulk.open_bulk(client, uri, experiment_id)
    assert writer is None and "schema cannot be read" in note


def test_a_sync_creates_in_bulk_the_runs_the_run_by_run_sync_creates(tmp_path, store_template, cli_env):
    """``gdexp-sync`` of a sweep's records into a store that lacks them: the runs it creates many
    to a transaction are the ones it creates one by one (``GDEXP_BULK=0``), as MLflow reads them,
    their files included; and a second sync finds every run up to date."""
    from conftest import gdexp_here

    sweep = tmp_path / "sweep"
    args = ["-m", "hydra/launcher=batched", "lr=0.01,0.1,0.5", "bias=true,false", "epochs=30"]
    made = gdexp_here([*args, "data=line_intercept", f"hydra.sweep.dir={sweep}"], tmp_path, cli_env)
    assert made.returncode == 0, made.stderr
    views, outs = {}, {}
    for path in ("client", "bulk"):
        (folder := tmp_path / path).mkdir()
        uri = empty_store(folder, store_template)
        env = {**cli_env, **({"GDEXP_BULK": "0"} if path == "client" else {})}
        synced = gdexp_here([str(sweep), "--tracking-uri", uri], tmp_path, env, module="gdexp.sync")
        assert synced.returncode == 0, synced.stderr
        outs[path] = synced.stdout
        client = MlflowClient(uri)
        experiment_id = client.get_experiment_by_name("gdexp").experiment_id
        runs = client.search_runs([experiment_id])
        (parent,) = [r.info.run_id for r in runs if r.data.tags.get("gdexp.role") == "sweep"]
        children = [r.info.run_id for r in runs if r.data.tags.get("mlflow.parentRunId") == parent]
        assert len(children) == 6
        views[path] = view(client, experiment_id, parent, children)
        for shown in views[path].values():
            if isinstance(shown, dict) and "times" in shown:
                del shown["times"]  # a sync's end time is its own clock's
                assert shown["tags"].pop("gdexp.sweep") == parent  # the parent this sync made in its store
        again = gdexp_here([str(sweep), "--tracking-uri", uri], tmp_path, env, module="gdexp.sync")
        assert again.stdout.endswith("0 created, 0 completed, 6 up to date\n"), again.stdout
    assert outs["bulk"].count("created    lr=") == 6 == outs["client"].count("created    lr=")
    assert views["client"]["children"] == sorted(views["client"]["children"]) and len(views["client"]["children"]) == 6
    for key in views["client"]:
        assert views["bulk"][key] == views["client"][key], key
    one = views["bulk"][views["bulk"]["children"][0]]
    assert one["artifacts"] == ["config.yaml", "history.csv"] and len(one["histories"]["loss"]) == 30
