"""Parallel and cluster sweeps: jobs in other processes nest under the sweep's one parent run."""

from __future__ import annotations

import pytest
from conftest import all_runs, gdexp, gdexp_here
from mlflow import MlflowClient

pytestmark = pytest.mark.slow

GRID = ["lr=0.01,0.05,0.1", "optimizer=sgd,adam", "bias=true,false", "epochs=200"]  # 12 jobs


def assert_complete_sweep(uri: str, jobs: int, epochs: int = 200) -> None:
    """One FINISHED parent and ``jobs`` FINISHED children, each with its whole record."""
    runs = all_runs(uri)
    parents = [r for r in runs if r.data.tags.get("gdexp.role") == "sweep"]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and len(children) == jobs and len(runs) == jobs + 1
    assert parents[0].info.status == "FINISHED"
    client = MlflowClient(uri)
    assert len({r.info.run_name for r in children}) == jobs
    for child in children:
        assert child.info.status == "FINISHED", child.info.run_name
        assert child.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert {"lr", "optimizer.name", "bias", "epochs"} <= set(child.data.params)
        assert {"final_loss", "dist_to_opt", "w"} <= set(child.data.metrics)
        assert len(client.get_metric_history(child.info.run_id, "loss")) == epochs
        assert {a.path for a in client.list_artifacts(child.info.run_id)} >= {"config.yaml", "history.csv"}


def test_joblib_sweep_with_two_workers_into_sqlite(tmp_path, cli_env):
    result = gdexp(["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *GRID], tmp_path, cli_env)
    assert result.returncode == 0, result.stderr
    assert "database is locked" not in result.stderr + result.stdout
    assert_complete_sweep(cli_env["MLFLOW_TRACKING_URI"], 12)


def test_submitit_local_sweep(tmp_path, cli_env):
    # submitit_local: the cluster launcher's code path (pickled jobs, separate processes) on this machine
    # (4 jobs: each is its own process here, as on a cluster; the joblib test runs the 12-job grid)
    grid = ["lr=0.01,0.1", "optimizer=sgd,adam", "epochs=200"]
    args = ["-m", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10", *grid]
    result = gdexp(args, tmp_path, cli_env)
    assert result.returncode == 0, result.stderr
    assert_complete_sweep(cli_env["MLFLOW_TRACKING_URI"], 4)


@pytest.mark.parametrize("launcher", ["basic", "batched"])
def test_resume_trains_only_the_missing_runs(launcher, tmp_path, cli_env):
    uri = cli_env["MLFLOW_TRACKING_URI"]
    using = [f"hydra/launcher={launcher}"]
    # an "interrupted" sweep: only the first half of the grid got done
    # in this process, through gdexp.run's entry point: resuming is about records and the store
    first = gdexp_here(["-m", *using, "lr=0.01,0.05", "optimizer=sgd", "epochs=50"], tmp_path, cli_env)
    assert first.returncode == 0, first.stderr
    again = ["-m", *using, "lr=0.01,0.05,0.1,0.2", "optimizer=sgd", "epochs=50", "tracking.skip_finished=true"]
    resumed = gdexp_here(again, tmp_path, cli_env)
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.count("skipped: finished already") == 2
    assert "gdexp sweep: 2 runs · " in resumed.stdout and "· 2 skipped as finished already" in resumed.stdout
    if launcher == "batched":
        assert "training 2 runs" in resumed.stdout
    children = [r for r in all_runs(uri) if "mlflow.parentRunId" in r.data.tags]
    assert sorted(r.data.params["lr"] for r in children) == ["0.01", "0.05", "0.1", "0.2"]
    assert len({r.data.tags["gdexp.config_hash"] for r in children}) == 4
    assert {r.info.status for r in children} == {"FINISHED"}
    # run once more: nothing left to do, nothing duplicated
    third = gdexp_here(again, tmp_path, cli_env)
    assert third.returncode == 0 and third.stdout.count("skipped: finished already") == 4
    assert "training" not in third.stdout
    assert len([r for r in all_runs(uri) if "mlflow.parentRunId" in r.data.tags]) == 4
