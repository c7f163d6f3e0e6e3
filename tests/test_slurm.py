"""Sweeps on a real Slurm cluster (``hydra/launcher=slurm``): a single-node cluster with accounting
started by the ``slurm`` fixture (``scripts/slurm_cluster.sh``), jobs submitted through submitit,
cancelled with ``scancel`` and requeued with ``scontrol requeue`` as a user or a preemption would."""

from __future__ import annotations

import os
import signal
import subprocess
from collections import Counter
from pathlib import Path

import pytest
from conftest import all_runs, gdexp, start_gdexp, wait_until
from mlflow import MlflowClient
from test_scaleout import GRID, assert_complete_sweep

# One Slurm cluster for the session: its tests share one xdist worker.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("slurm")]

SLURM = ["-m", "hydra/launcher=slurm", "hydra.launcher.timeout_min=10"]
LONG = 15000  # epochs: about 15 s of training, long enough to stop a job mid-run


def _job_dir(tmp_path: Path, num: int) -> Path | None:
    found = sorted(tmp_path.glob(f"multirun/*/*/{num}/history.csv"))
    return found[-1].parent if found and found[-1].stat().st_size > 2000 else None  # a few flushes in


def _slurm_job(tmp_path: Path, num: int) -> str:
    """The Slurm id of the sweep's job ``num`` (submitit's folder per array task)."""
    (folder,) = [p for p in tmp_path.glob("multirun/*/*/.submitit/*") if p.name.endswith(f"_{num}")]
    return folder.name


def test_twelve_job_sweep_into_mlflow_server_on_postgres(slurm, server, tmp_path, cli_env):
    result = gdexp([*SLURM, *GRID, f"tracking.uri={server.uri}"], tmp_path, cli_env, timeout=600)
    assert result.returncode == 0, result.stderr
    assert_complete_sweep(server.uri, 12)
    children = [r for r in all_runs(server.uri) if "mlflow.parentRunId" in r.data.tags]
    jobs = {r.data.tags["gdexp.slurm_job"] for r in children}  # each ran as its own Slurm array task
    assert len(jobs) == 12 and len({j.split("_")[0] for j in jobs}) == 1
    accounted = subprocess.run(["sacct", "-n", "-X", "-o", "JobID,State"], capture_output=True, text=True)
    assert sum(j in accounted.stdout for j in jobs) == 12 and "COMPLETED" in accounted.stdout


def test_scancel_mid_run_ends_the_job_killed_and_a_resume_reruns_only_it(slurm, tmp_path, cli_env):
    uri = cli_env["MLFLOW_TRACKING_URI"]
    args = [*SLURM, "lr=0.01", f"epochs={LONG},300", "converge_tol=0"]
    sweep = start_gdexp(args, tmp_path, cli_env)
    try:
        assert wait_until(lambda: _job_dir(tmp_path, 0), timeout=180), "job 0 never trained"
        job = _slurm_job(tmp_path, 0)
        subprocess.run(["scancel", job], check=True)
        out, err = sweep.communicate(timeout=240)
    finally:
        sweep.kill()
    assert sweep.returncode == 1, err
    # one line names the job, its Slurm id and state, and how to resume
    (line,) = [x for x in err.splitlines() if x.startswith("gdexp: error:")]
    assert f"[lr=0.01,epochs={LONG},converge_tol=0]" in line and f"Slurm job {job} ended CANCELLED" in line
    assert "tracking.skip_finished=true" in line and "Traceback" not in err
    assert "1 killed" in out  # the summary counts it
    runs = all_runs(uri)
    (parent,) = [r for r in runs if r.data.tags.get("gdexp.role") == "sweep"]
    by_name = {r.info.run_name: r for r in runs if "mlflow.parentRunId" in r.data.tags}
    killed = by_name[f"lr=0.01,epochs={LONG},converge_tol=0"]
    assert parent.info.status == "FAILED"
    assert killed.info.status == "KILLED" and killed.data.tags["gdexp.status"] == "killed"
    trained = len(MlflowClient(uri).get_metric_history(killed.info.run_id, "loss"))
    assert 0 < trained < LONG and killed.data.metrics["epochs_run"] == trained  # its curve so far
    assert by_name["lr=0.01,epochs=300,converge_tol=0"].info.status == "FINISHED"

    resumed = gdexp([*args, "tracking.skip_finished=true"], tmp_path, cli_env, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "2 runs" not in resumed.stdout and "1 skipped as finished already" in resumed.stdout  # the summary
    children = [r for r in all_runs(uri) if "mlflow.parentRunId" in r.data.tags]
    finished = Counter(r.info.run_name for r in children if r.info.status == "FINISHED")
    assert finished == {f"lr=0.01,epochs={LONG},converge_tol=0": 1, "lr=0.01,epochs=300,converge_tol=0": 1}


def test_a_requeued_job_ends_as_exactly_one_finished_run(slurm, tmp_path, cli_env):
    uri = cli_env["MLFLOW_TRACKING_URI"]
    args = [*SLURM, "lr=0.01,0.02", "epochs=8000", "converge_tol=0"]
    sweep = start_gdexp(args, tmp_path, cli_env)
    try:
        assert wait_until(lambda: _job_dir(tmp_path, 1), timeout=180), "job 1 never trained"
        job = _slurm_job(tmp_path, 1)
        subprocess.run(["scontrol", "requeue", job], check=True)  # what a preemption does
        # Slurm holds a requeued job for 120 s before it may start again; let it start now.
        held = wait_until(lambda: "PD" in _squeue(job), timeout=60)
        assert held, _squeue(job)
        subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], check=True)
        out, err = sweep.communicate(timeout=300)
    finally:
        sweep.kill()
    assert sweep.returncode == 0, err
    children = [r for r in all_runs(uri) if "mlflow.parentRunId" in r.data.tags]
    mine = [r for r in children if r.info.run_name == "lr=0.02,epochs=8000,converge_tol=0"]
    finished = [r for r in mine if r.info.status == "FINISHED"]
    assert len(finished) == 1 and finished[0].data.tags["gdexp.slurm_restarts"] == "1"
    assert len(MlflowClient(uri).get_metric_history(finished[0].info.run_id, "loss")) == 8000
    # the first attempt, stopped by the requeue, is KILLED and names the run that replaced it
    (first,) = [r for r in mine if r.info.status != "FINISHED"]
    assert first.info.status == "KILLED" and first.data.tags["gdexp.superseded_by"] == finished[0].info.run_id
    assert Counter(r.info.status for r in children) == {"FINISHED": 2, "KILLED": 1}
    # the comparison table and the sweep's summary count each configuration once
    table = gdexp(["table", "--format", "csv"], tmp_path, cli_env, module="gdexp.compare")
    assert table.returncode == 0, table.stderr
    assert table.stdout.count("lr=0.02") == 1 and "2 max epochs" in out


def _squeue(job: str) -> str:
    return subprocess.run(["squeue", "-h", "-j", job, "-o", "%t %r"], capture_output=True, text=True).stdout


def test_an_interrupted_sweep_cancels_its_slurm_jobs_and_they_end_killed(slurm, tmp_path, cli_env):
    uri = cli_env["MLFLOW_TRACKING_URI"]
    sweep = start_gdexp([*SLURM, "lr=0.01,0.02", f"epochs={LONG}", "converge_tol=0"], tmp_path, cli_env)
    try:
        assert wait_until(lambda: _job_dir(tmp_path, 0) and _job_dir(tmp_path, 1), timeout=180)
        jobs = [_slurm_job(tmp_path, n) for n in (0, 1)]
        sweep.send_signal(signal.SIGINT)
        out, err = sweep.communicate(timeout=120)
    finally:
        sweep.kill()
    assert sweep.returncode == 130, err
    assert "cancelled 2 Slurm job(s)" in out + err
    assert wait_until(lambda: not any(_squeue(j).strip() for j in jobs), timeout=60), "jobs still queued"

    def both_killed():
        runs = [r for r in all_runs(uri) if "mlflow.parentRunId" in r.data.tags]
        return len(runs) == 2 and {r.info.status for r in runs} == {"KILLED"} and runs

    runs = wait_until(both_killed, timeout=60)  # each job records its run as Slurm's SIGTERM stops it
    assert runs, [(r.info.run_name, r.info.status) for r in all_runs(uri)]
    assert all(0 < r.data.metrics["epochs_run"] < LONG for r in runs)


def test_a_cluster_without_accounting_is_named_before_anything_is_submitted(slurm, tmp_path, monkeypatch):
    from gdexp.sweeps.slurm import check_accounting

    assert check_accounting() is None  # the fixture's cluster has slurmdbd
    conf = (slurm / "slurm.conf").read_text().replace("accounting_storage/slurmdbd", "accounting_storage/none")
    (tmp_path / "slurm.conf").write_text(conf)
    monkeypatch.setenv("SLURM_CONF", str(tmp_path / "slurm.conf"))
    said = check_accounting()
    assert said and "accounting" in said.lower(), said


def test_a_study_on_slurm_asks_a_trial_as_each_job_ends(slurm, tmp_path, cli_env):
    """hydra/sweeper=optuna through the Slurm launcher: two trials in flight, each its own Slurm job,
    a new one submitted as one ends; every trial a FINISHED run under the study's parent."""
    args = [
        *SLURM,
        "hydra/sweeper=optuna",
        "hydra.sweeper.n_trials=4",
        "hydra.sweeper.n_jobs=2",
        "hydra.sweeper.sampler=random",
        "hydra.sweeper.seed=0",
        "lr=tag(log,interval(0.01,0.1))",
        "epochs=choice(20,3000)",
        "engine=autograd",
    ]
    done = gdexp(args, tmp_path, cli_env, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "2 trials at a time" in done.stdout and "4/4 done" in done.stdout
    runs = [r for r in all_runs(cli_env["MLFLOW_TRACKING_URI"]) if "gdexp.trial" in r.data.tags]
    assert sorted(int(r.data.tags["gdexp.trial"]) for r in runs) == [0, 1, 2, 3]
    assert all(r.info.status == "FINISHED" for r in runs)
    assert len({r.data.tags["gdexp.slurm_job"] for r in runs}) == 4  # a Slurm job per trial


def test_a_second_cluster_runs_beside_the_first_on_ports_of_its_own(slurm, tmp_path):
    """scripts/slurm_cluster.sh picks free ports: a second cluster starts while the session's runs,
    each takes a job, and stopping the second leaves the first up."""
    script = Path(__file__).resolve().parents[1] / "scripts" / "slurm_cluster.sh"
    second = tmp_path / "second"
    started = subprocess.run(["bash", str(script), "start", str(second)], capture_output=True, text=True, timeout=300)
    try:
        assert started.returncode == 0, started.stderr
        ports = [set((folder / "ports.env").read_text().split()) for folder in (slurm, second)]
        assert ports[0].isdisjoint(ports[1]) and len(ports[1]) == 3
        for folder in (slurm, second):
            env = {**os.environ, "SLURM_CONF": str(folder / "slurm.conf")}
            job = subprocess.run(
                ["sbatch", "--wait", "--parsable", f"--output={tmp_path}/%j.out", "--wrap", "echo side-by-side"],
                capture_output=True,
                text=True,
                env=env,
                timeout=120,
                cwd=tmp_path,
            )
            assert job.returncode == 0, job.stderr
            assert (tmp_path / f"{job.stdout.strip()}.out").read_text().strip() == "side-by-side"
    finally:
        subprocess.run(["bash", str(script), "stop", str(second)], capture_output=True, timeout=120)
    first = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=60)
    assert first.returncode == 0 and "idle" in first.stdout  # SLURM_CONF: the session's cluster
