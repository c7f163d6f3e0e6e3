"""The MLflow writer process and its typed protocol, against a real SQLite store."""

from __future__ import annotations

import json
import pickle
from dataclasses import fields
from pathlib import Path

import pytest
from mlflow import MlflowClient

from gdexp.tracking import protocol as p
from gdexp.tracking.client import Tracker, WriterPool
from gdexp.tracking.store import local_folder
from gdexp.tracking.uri import TrackingError, masked
from gdexp.tracking.writer import Writer


@pytest.fixture
def store(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = Tracker(uri, "writer-test")
    yield uri, tracker
    tracker.close()


def test_every_operation_has_one_handler_and_pickles():
    ops = [c for c in vars(p).values() if isinstance(c, type) and issubclass(c, p.Op) and c not in (p.Op, p.Close)]
    handled = set(Writer.__init__.__code__.co_names)  # the handler table names each method
    assert ops and all(op.__name__ in handled for op in ops)
    run = p.FinishedRun("n", {"t": "1"}, {"lr": "0.1"}, [("loss", 1.0, 1)], "FINISHED")
    assert pickle.loads(pickle.dumps(p.WriteRuns([run]))) == p.WriteRuns([run])
    assert [f.name for f in fields(p.StartRun)] == ["name", "tags", "params", "start_time", "dataset"]


def test_a_run_is_started_written_in_chunks_and_ended(store):
    uri, tracker = store
    run_id = tracker.start_run("r", {"gdexp.config_hash": "abc"}, {"lr": "0.1"})
    rows = [("loss", 1.0 / s, s) for s in range(1, 2501)]  # 2,500 points: three log_batch calls of 1,000
    for i in range(0, len(rows), 700):
        tracker.log_metrics(run_id, rows[i : i + 700])
    tracker.set_tags(run_id, {"gdexp.status": "converged"})
    tracker.end_run(run_id, "FINISHED")
    client = MlflowClient(uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.params == {"lr": "0.1"}
    assert run.data.tags["gdexp.status"] == "converged"
    assert [m.step for m in client.get_metric_history(run_id, "loss")] == list(range(1, 2501))
    assert tracker.finished_run("abc") == run_id and tracker.finished_run("nope") is None
    assert tracker.finished_runs() == {"abc": run_id}


def test_a_failed_operation_is_answered_and_the_writer_serves_on(store):
    uri, tracker = store
    with pytest.raises(TrackingError, match="EndRun"):
        tracker.end_run("0" * 32, "FINISHED")  # no such run
    tracker.log_metrics("0" * 32, [("loss", 1.0, 1)])  # unanswered: reported with the next reply
    run_id = tracker.start_run("after", {}, {})
    tracker.end_run(run_id, "FINISHED")
    assert MlflowClient(uri).get_run(run_id).info.status == "FINISHED"


@pytest.mark.slow
def test_runs_left_open_are_ended_failed_when_the_writer_closes(store):
    uri, tracker = store
    run_id = tracker.start_run("open", {}, {})
    tracker.close()
    assert MlflowClient(uri).get_run(run_id).info.status == "FAILED"


@pytest.mark.slow
def test_a_pool_writes_finished_runs_and_their_files(store, tmp_path):
    uri, tracker = store
    (tmp_path / "config.yaml").write_text("lr: 0.1\n")
    runs = []
    for i in range(20):
        metrics = [("loss", 1.0 / s, s) for s in range(1, 101)] + [("final_loss", 0.01, 0)]
        run = p.FinishedRun(f"m{i}", {"k": str(i)}, {"lr": str(i)}, metrics, "FINISHED")
        (record := tmp_path / f"job{i}").mkdir()
        (record / "run.json").write_text(json.dumps({"record_id": f"r{i}", "mlflow_run_id": None}))
        files = p.RunFiles(
            f"m{i}", [str(tmp_path / "config.yaml")], [1.0, 0.5, 0.25], str(tmp_path / f"c{i}.png"), record=str(record)
        )
        runs.append((run, files))
    pool = WriterPool(uri, "writer-test", 2)
    ids = [f.result(timeout=120) for f in pool.submit(runs)]
    pool.close()
    client = MlflowClient(uri)
    assert len(set(ids)) == 20 and None not in ids
    for run_id in ids[::7]:
        assert client.get_run(run_id).info.status == "FINISHED"
        assert len(client.get_metric_history(run_id, "loss")) == 100
        assert {a.path for a in client.list_artifacts(run_id)} == {"config.yaml", f"c{ids.index(run_id)}.png"}
        local = Path(client.download_artifacts(run_id, "config.yaml", str(tmp_path / run_id)))
        assert local.read_text() == "lr: 0.1\n"
    # the writer notes each run's id in its record, the rest of it as it was
    records = [json.loads((tmp_path / f"job{i}" / "run.json").read_text()) for i in range(20)]
    assert records == [{"record_id": f"r{i}", "mlflow_run_id": ids[i]} for i in range(20)]


@pytest.mark.parametrize(
    ("artifact_uri", "folder"),
    [
        ("file:///data/mlartifacts/1/abc/artifacts", "/data/mlartifacts/1/abc/artifacts"),
        ("file://localhost/data/a%20b/artifacts", "/data/a b/artifacts"),
        ("/data/mlartifacts/1/abc/artifacts", "/data/mlartifacts/1/abc/artifacts"),
        ("mlflow-artifacts:/1/abc/artifacts", None),
        ("file://otherhost/data/artifacts", None),
        ("s3://bucket/1/abc/artifacts", None),
        ("mlartifacts/1/abc", None),
    ],
)
def test_only_a_local_artifact_location_is_written_directly(artifact_uri, folder):
    """A run's files are copied straight into an artifact location on this machine; any other
    goes through MLflow's artifact repository."""
    assert local_folder(artifact_uri) == (Path(folder) if folder else None)


@pytest.mark.parametrize("uri", ["http://ann:s3cret@127.0.0.1:9", "postgresql+psycopg2://ann:s3cret@127.0.0.1:9/db"])
def test_an_unreachable_store_is_one_line_at_once_with_the_password_masked(uri):
    """Nothing listens on port 9: said in seconds (MLflow itself retries a database for minutes)."""
    tracker = Tracker(uri, "x")
    with pytest.raises(TrackingError) as caught:
        tracker.ready(timeout=30)
    assert "s3cret" not in str(caught.value) and "ann:***@127.0.0.1:9" in str(caught.value)
    assert "\n" not in str(caught.value)
    tracker.close()


def test_an_unusable_store_is_one_line_with_the_password_masked(tmp_path):
    tracker = Tracker("http://ann:s3cret@127.0.0.1:9", "x")  # nothing listens on port 9
    with pytest.raises(TrackingError) as caught:
        tracker.ready()
    assert "s3cret" not in str(caught.value) and "ann:***@127.0.0.1:9" in str(caught.value)
    assert "\n" not in str(caught.value)
    assert masked("http://u:p@h:5000/x") == "http://u:***@h:5000/x" and masked("sqlite:///a.db") == "sqlite:///a.db"
