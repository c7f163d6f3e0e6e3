"""What MLflow holds for a run and a sweep, read back as a user's own client would."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import all_runs, gdexp_here, run, start_gdexp, wait_until
from mlflow import MlflowClient


def test_run_records_params_curves_summary_tags_and_artifacts(tmp_path):
    out = run(["epochs=20", "bias=true", "data=line_intercept", "lr=0.05"], tmp_path, tracking=True)
    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    record = client.get_run(out.run_id)
    assert record.info.status == "FINISHED"
    assert record.info.run_name == "epochs=20,bias=true,data=line_intercept,lr=0.05"
    params = record.data.params
    for key, value in {
        "lr": "0.05",
        "epochs": "20",
        "optimizer.name": "sgd",
        "optimizer.momentum": "0.0",
        "bias": "true",
        "init": "zeros",
        "seed": "0",
        "data.name": "line_intercept",
        "engine": "lightning",
        "loss_reduction": "mean",
        "batch_size": "null",
    }.items():
        assert params[key] == value, key
    assert "tracking.uri" not in params  # may hold credentials

    loss = client.get_metric_history(out.run_id, "loss")
    assert [m.step for m in loss] == list(range(1, 21))
    assert [m.value for m in loss] == pytest.approx(out.history.loss)
    for i, name in enumerate(["w", "b"]):
        curve = client.get_metric_history(out.run_id, name)
        assert [m.step for m in curve] == list(range(0, 21))
        assert [m.value for m in curve] == pytest.approx([row[i] for row in out.history.params])
    assert sorted((m.step, round(m.value, 6)) for m in client.get_metric_history(out.run_id, "pred_5")) == [
        (0, 0.0),
        (20, round(out.pred_after["pred_5"], 6)),
    ]

    metrics = record.data.metrics
    assert metrics["final_loss"] == pytest.approx(out.summary["final_loss"])
    assert metrics["diverged"] == 0.0
    assert metrics["lr_max_stable"] == pytest.approx(0.119757, abs=1e-6)
    assert (metrics["w_star"], metrics["b_star"]) == (pytest.approx(2.0), pytest.approx(3.0))
    assert metrics["dist_to_opt"] == pytest.approx(out.summary["dist_to_opt"])
    assert "epochs_to_converge" not in metrics  # 20 epochs do not reach 1e-6

    tags = record.data.tags
    assert tags["gdexp.engine"] == "lightning" and tags["gdexp.status"] == "max_epochs"
    assert len(tags["gdexp.config_hash"]) == 16
    assert tags["gdexp.overrides"] == "epochs=20 bias=true data=line_intercept lr=0.05"
    assert "gdexp.sweep" not in tags and "mlflow.parentRunId" not in tags

    assert {a.path for a in client.list_artifacts(out.run_id)} >= {"config.yaml", "history.csv"}
    with open(client.download_artifacts(out.run_id, "history.csv", str(tmp_path))) as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 21 and rows[0]["loss"] == "" and float(rows[20]["loss"]) == out.history.loss[-1]
    assert set(rows[0]) == {"epoch", "loss", "w", "b", "pred_5"}


@pytest.mark.slow
def test_curves_arrive_in_chunks_and_are_complete(tmp_path):
    out = run(["epochs=20000", "engine=autograd", "tracking.flush_seconds=0.05"], tmp_path, tracking=True)
    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    loss = client.get_metric_history(out.run_id, "loss")
    assert [m.step for m in loss] == list(range(1, 20001))
    assert len(client.get_metric_history(out.run_id, "w")) == 20001
    # Each flush is one log_batch stamped with its own time: the curve came in several chunks.
    assert len({m.timestamp for m in loss}) >= 3


@pytest.mark.slow
def test_same_config_same_numbers_and_hash(tmp_path):
    a = run(["epochs=30", "init=normal", "seed=5", "optimizer=adam"], tmp_path, tracking=True)
    b = run(["epochs=30", "init=normal", "seed=5", "optimizer=adam"], tmp_path, tracking=True)
    assert a.history.loss == b.history.loss
    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    hashes = {client.get_run(r).data.tags["gdexp.config_hash"] for r in (a.run_id, b.run_id)}
    assert len(hashes) == 1


@pytest.mark.slow
@pytest.mark.fresh_store
def test_sweep_gives_one_parent_and_eight_finished_children(tmp_path, cli_env):
    cli_env.pop("MLFLOW_TRACKING_URI")  # the embedded default: mlflow.db in the launch directory
    result = gdexp_here(["-m", "lr=0.01,0.1", "optimizer=sgd,adam", "bias=true,false"], tmp_path, cli_env)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "mlflow.db").is_file()
    runs = all_runs(f"sqlite:///{tmp_path / 'mlflow.db'}")
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and len(children) == 8
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["gdexp.overrides"] == "lr=0.01,0.1 optimizer=sgd,adam bias=true,false"
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    names = set()
    for child in children:
        assert child.info.status == "FINISHED"
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert child.data.tags["gdexp.sweep"] == parent.info.run_id
        assert child.data.tags["gdexp.status"] in {"converged", "max_epochs", "diverged"}
        assert {"lr", "optimizer.name", "bias", "epochs", "data.name", "engine"} <= set(child.data.params)
        assert len(client.get_metric_history(child.info.run_id, "loss")) == 100
        assert {"final_loss", "dist_to_opt", "lr_max_stable", "w", "pred_5"} <= set(child.data.metrics)
        assert {a.path for a in client.list_artifacts(child.info.run_id)} >= {"config.yaml", "history.csv"}
        names.add(child.info.run_name)
    assert "lr=0.1,optimizer=adam,bias=true" in names and len(names) == 8


@pytest.mark.slow
def test_diverging_job_finishes_and_the_sweep_goes_on(tmp_path, cli_env):
    result = gdexp_here(["-m", "lr=0.2,0.1,0.05", "epochs=200"], tmp_path, cli_env)
    assert result.returncode == 0, result.stderr
    runs = [r for r in all_runs(cli_env["MLFLOW_TRACKING_URI"]) if "mlflow.parentRunId" in r.data.tags]
    status = {
        r.data.params["lr"]: (r.info.status, r.data.tags["gdexp.status"], r.data.metrics["diverged"]) for r in runs
    }
    assert status == {
        "0.2": ("FINISHED", "diverged", 1.0),
        "0.1": ("FINISHED", "converged", 0.0),
        "0.05": ("FINISHED", "converged", 0.0),
    }


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "engine"), [(signal.SIGTERM, "lightning"), (signal.SIGINT, "autograd")])
def test_signal_mid_run_leaves_it_killed_with_its_history(sig, engine, tmp_path, cli_env):
    uri = cli_env["MLFLOW_TRACKING_URI"]
    proc = start_gdexp(["epochs=1000000", f"engine={engine}", "tracking.flush_seconds=0.2"], tmp_path, cli_env)

    def streaming_run():  # curves are arriving in the store
        # The store is only opened here once the run's record names its MLflow run: a second
        # process creating a fresh store's tables at the same instant is another test's business.
        records = [json.loads(p.read_text()) for p in tmp_path.glob("outputs/*/*/run.json")]
        run_id = records[0]["mlflow_run_id"] if records else None
        if run_id and MlflowClient(uri).get_metric_history(run_id, "loss"):
            return run_id
        return None

    run_id = wait_until(streaming_run)
    assert run_id, "the run never started streaming"
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, err
    assert "Traceback" not in err
    client = MlflowClient(uri)
    record = client.get_run(run_id)
    assert record.info.status == "KILLED"
    assert record.data.tags["gdexp.status"] == "killed"
    losses = client.get_metric_history(run_id, "loss")
    assert len(losses) > 10 and [m.step for m in losses] == list(range(1, len(losses) + 1))
    with open(client.download_artifacts(run_id, "history.csv", str(tmp_path))) as fh:
        assert len(list(csv.DictReader(fh))) == int(record.data.metrics["epochs_run"]) + 1 >= len(losses) + 1


@pytest.mark.slow
def test_console_script_from_another_directory_and_seed_experiment(tmp_path, cli_env):
    cli_env.pop("MLFLOW_TRACKING_URI")
    script = Path(sys.executable).parent / "gdexp-run"
    assert script.exists(), "the package is installed with its console script"
    result = subprocess.run(
        [str(script), "+experiment=seed_004"], cwd=tmp_path, env=cli_env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "Prediction after training: f(5) = 9.612"
    runs = all_runs(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert [r.info.run_name for r in runs] == ["+experiment=seed_004".lstrip("+")]
