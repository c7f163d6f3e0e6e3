"""A shared tracking server backed by PostgreSQL, and losing it mid-sweep: nothing is lost."""

from __future__ import annotations

import os
import signal
import subprocess

import pytest
from conftest import all_runs, gdexp, start_gdexp, wait_until
from mlflow import MlflowClient
from test_scaleout import GRID, assert_complete_sweep

pytestmark = pytest.mark.slow


def test_parallel_sweep_into_mlflow_server_on_postgres(server, tmp_path, cli_env):
    args = ["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *GRID, f"tracking.uri={server.uri}"]
    result = gdexp(args, tmp_path, cli_env)
    assert result.returncode == 0, result.stderr
    assert_complete_sweep(server.uri, 12)


def test_server_killed_mid_sweep_then_sync_twice(server, tmp_path, cli_env):
    epochs = 600
    args = [
        "-m",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "lr=0.01,0.02,0.03,0.04",
        "optimizer=sgd,adam",
        f"epochs={epochs}",
        "engine=autograd",
        "tracking.flush_seconds=0.2",
        f"tracking.uri={server.uri}",
    ]
    sweep = start_gdexp(args, tmp_path, cli_env)

    def jobs_in_store():  # kill the server once a few jobs are in it
        return len([r for r in all_runs(server.uri) if "mlflow.parentRunId" in r.data.tags]) >= 3

    assert wait_until(jobs_in_store, timeout=180)
    server.kill()
    out, err = sweep.communicate(timeout=600)
    assert sweep.returncode == 0, err[-3000:]
    assert "training goes on" in err  # the jobs noticed, and went on

    server.start()  # back, on the same database
    sweep_dir = next((tmp_path / "multirun").glob("*/*"))
    for attempt in (1, 2):
        result = gdexp([str(sweep_dir)], tmp_path, cli_env, timeout=600, module="gdexp.sync")
        assert result.returncode == 0, result.stderr
        if attempt == 2:
            assert result.stdout.strip().splitlines()[-1] == "0 created, 0 completed, 8 up to date"
    runs = all_runs(server.uri)
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(children) == 8 and len({r.data.tags["gdexp.record_id"] for r in children}) == 8
    assert len([r for r in runs if r.data.tags.get("gdexp.role") == "sweep"]) == 1
    client = MlflowClient(server.uri)
    for child in children:
        assert child.info.status == "FINISHED", child.info.run_name
        assert len(client.get_metric_history(child.info.run_id, "loss")) == epochs
        assert len(client.get_metric_history(child.info.run_id, "w")) == epochs + 1
        assert {"final_loss", "dist_to_opt"} <= set(child.data.metrics)
        assert {a.path for a in client.list_artifacts(child.info.run_id)} >= {"config.yaml", "history.csv"}


def test_sigkilled_job_leaves_a_record_that_sync_pushes_as_failed(tmp_path, cli_env):
    uri = cli_env["MLFLOW_TRACKING_URI"]
    proc = start_gdexp(
        ["epochs=1000000", "engine=autograd", "tracking.flush_seconds=0.2"],
        tmp_path,
        cli_env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def streaming_record():
        found = list((tmp_path / "outputs").rglob("history.csv"))
        return found[0].parent if found and len(found[0].read_text().splitlines()) > 50 else None

    record = wait_until(streaming_record)
    assert record is not None
    os.killpg(proc.pid, signal.SIGKILL)  # the job and its MLflow writer: nothing gets to clean up
    proc.wait()
    rows_on_disk = len((record / "history.csv").read_text().splitlines()) - 1
    result = gdexp([str(record)], tmp_path, cli_env, module="gdexp.sync")
    assert result.returncode == 0, result.stderr
    (run,) = all_runs(uri)
    assert run.info.status == "FAILED"
    client = MlflowClient(uri)
    assert len(client.get_metric_history(run.info.run_id, "loss")) == rows_on_disk - 1  # step 0 has no loss


def test_postgresql_tracking_uri_directly(postgres, tmp_path, cli_env):
    # tracking.uri may name the database itself, no server between: a bare postgresql:// works
    uri = postgres.uri.replace("postgresql+psycopg2://", "postgresql://")
    result = gdexp(["epochs=20", f"tracking.uri={uri}"], tmp_path, cli_env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "Prediction after training: f(5) = 9.612"
    (run,) = [r for r in all_runs(postgres.uri) if r.info.run_name == "epochs=20"]
    assert (
        run.info.status == "FINISHED"
        and len(MlflowClient(postgres.uri).get_metric_history(run.info.run_id, "loss")) == 20
    )


def test_a_batched_sweep_with_a_long_name_into_postgresql_directly(postgres, tmp_path, cli_env):
    """A 60-value grid's parent name is longer than MLflow's runs.name column (250 characters):
    SQLite takes it, PostgreSQL refused it and the sweep failed at its parent. Names are cut to
    250 with an ellipsis; the overrides tag keeps every value; the runs go in by the bulk path."""
    lrs = ",".join(f"{0.001 * k:.4f}" for k in range(1, 61))
    grid = ["-m", "hydra/launcher=batched", f"lr={lrs}", "bias=true,false", "epochs=10", f"tracking.uri={postgres.uri}"]
    result = gdexp(grid, tmp_path, cli_env)
    assert result.returncode == 0, result.stderr[-2000:]
    runs = all_runs(postgres.uri)
    (parent,) = [r for r in runs if r.data.tags.get("gdexp.role") == "sweep" and lrs in r.data.tags["gdexp.overrides"]]
    assert len(parent.info.run_name) == 250 and parent.info.run_name.endswith("\u2026")
    assert parent.data.tags["mlflow.runName"] == parent.info.run_name and parent.info.status == "FINISHED"
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == 120 and {r.info.status for r in children} == {"FINISHED"}


def _log_new_datasets(uri: str) -> int:
    """One process's 20 runs, each logging a dataset the store has not seen: how many failed."""
    from gdexp.tracking import protocol as p
    from gdexp.tracking.store import connect
    from gdexp.tracking.writer import Writer

    client, experiment = connect(uri, "datasets")
    writer = Writer(None, uri, client, experiment)
    failed = 0
    for k in range(20):
        run = client.create_run(experiment)
        writer.failure = None
        writer._log_dataset(run.info.run_id, p.DatasetSpec("line", f"{k:08x}", "code", "{}", "{}", "{}"))
        failed += writer.failure is not None
    return failed


def test_processes_logging_the_same_new_dataset_at_once_all_get_it(postgres, tmp_path):
    """PostgreSQL lets two processes insert the same new dataset at once and fails one of them on
    the unique key (seen failing a joblib sweep's run): the writer tries again and finds it."""
    import multiprocessing

    uri = postgres.uri.rsplit("/", 1)[0] + "/mlflow"
    from gdexp.tracking.store import connect

    connect(uri, "datasets")
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        assert pool.map(_log_new_datasets, [uri] * 4) == [0, 0, 0, 0]
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("datasets").experiment_id], max_results=1000)
    assert len(runs) == 80 and all(len(r.inputs.dataset_inputs) == 1 for r in runs)


def test_a_study_on_a_postgres_store_keeps_its_trials_in_the_same_database(postgres, tmp_path, cli_env):
    """Optuna's tables (and its own alembic_version) go to schema ``optuna`` of the store's database,
    beside MLflow's, which keeps working."""
    name = f"study_{tmp_path.name[-12:].replace('-', '_').lower()}"
    psql = ["psql", "-h", "127.0.0.1", "-p", str(postgres.port), "-U", "postgres", "-tA"]
    subprocess.run([*psql, "-c", f"create database {name}"], check=True, capture_output=True)
    uri = postgres.uri.rsplit("/", 1)[0] + f"/{name}"
    args = ["-m", "hydra/sweeper=optuna", "hydra.sweeper.n_trials=4", "hydra.sweeper.n_jobs=2"]
    args += ["lr=interval(0.01,0.1)", "epochs=50", f"tracking.uri={uri}"]
    for _ in range(2):  # the second finds the study done
        done = gdexp(args, tmp_path, cli_env)
        assert done.returncode == 0, done.stderr
    assert "4 of 4 trials done" in done.stdout and not (tmp_path / "optuna.db").exists()
    count = subprocess.run(
        [*psql, "-d", name, "-c", "select count(*) from optuna.trials"], capture_output=True, text=True
    )
    assert count.stdout.strip() == "4"
    runs = all_runs(uri)
    assert len([r for r in runs if "gdexp.trial" in r.data.tags]) == 4
    assert len([r for r in runs if r.data.tags.get("gdexp.role") == "sweep"]) == 1
