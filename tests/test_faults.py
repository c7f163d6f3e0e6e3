"""Fault injection: the harness under signals at any instant, SIGKILL between two writes, parallel
launchers that fail or are stopped, two processes on one store, damaged records, and secrets.

Every case runs real processes against a real store and asserts the promise of the contract: one
line and a non-zero exit, no traceback, no run left RUNNING, nothing lost, nothing doubled, no
process left behind, no secret stored or printed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import psutil
import pytest
from conftest import all_runs, gdexp, gdexp_here, start_gdexp, wait_until
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mlflow import MlflowClient

from gdexp.tracking.record import RunInfo

pytestmark = pytest.mark.slow


@pytest.fixture
def tagged_env(cli_env):
    """The test's environment with a tag that every process it starts inherits: what is still
    alive afterwards can be found."""
    cli_env["GDEXP_TEST_TAG"] = uuid.uuid4().hex
    return cli_env


def leftovers(tag: str) -> list[str]:
    """Processes still alive that a test started (by the environment tag), with their command lines."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            if proc.environ().get("GDEXP_TEST_TAG") == tag and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(" ".join(proc.info["cmdline"] or [])[:120])
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def assert_no_leftovers(tag: str, within: float = 30) -> None:
    assert wait_until(lambda: not leftovers(tag), timeout=within, interval=0.5), leftovers(tag)


def statuses(uri: str) -> Counter:
    return Counter(r.info.status for r in all_runs(uri))


def records(folder: Path) -> list[RunInfo]:
    return [RunInfo.load(p) for p in sorted(folder.rglob("run.json"))]


def wait_for_line(proc: subprocess.Popen, text: str, timeout: float = 120) -> list[str]:
    """Read ``proc``'s stdout until a line holds ``text``; the lines read."""
    lines: list[str] = []
    deadline = time.time() + timeout
    while time.time() < deadline:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            break
        lines.append(line)
        if text in line:
            return lines
    raise AssertionError(f"no line with {text!r} in {timeout} s: {''.join(lines)[-2000:]}")


# --------------------------------------------------------------------------- signals


@pytest.mark.parametrize("delay", [0.2, 3.0, 7.0])
def test_sigterm_to_a_lightning_run_at_any_instant_ends_it_killed_never_finished(delay, tmp_path, tagged_env):
    """Before the handlers exist (imports), while the store opens, while training: never a silent
    success, never a run left RUNNING; a run that started ends KILLED with its curve so far."""
    uri = tagged_env["MLFLOW_TRACKING_URI"]
    proc = start_gdexp(["epochs=1000000", "engine=lightning", "tracking.flush_seconds=0.2"], tmp_path, tagged_env)
    time.sleep(delay)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode in (143, -signal.SIGTERM), (proc.returncode, err[-2000:])  # a shell shows 143 for both
    assert "Traceback" not in out + err
    runs = all_runs(uri)
    assert {r.info.status for r in runs} <= {"KILLED"}, err[-2000:]
    for run in runs:
        loss = MlflowClient(uri).get_metric_history(run.info.run_id, "loss")
        assert [m.step for m in loss] == list(range(1, len(loss) + 1))
        assert run.data.tags["gdexp.status"] == "killed"
    assert_no_leftovers(tagged_env["GDEXP_TEST_TAG"])


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_mid_population_records_every_member_killed_with_its_curve(sig, tmp_path, tagged_env):
    uri = tagged_env["MLFLOW_TRACKING_URI"]
    args = ["-m", "hydra/launcher=batched", "lr=0.001,0.002,0.005,0.01", "seed=0,1", "optimizer=sgd,adam"]
    proc = start_gdexp([*args, "epochs=3000000", "hydra.launcher.curve_points=0"], tmp_path, tagged_env)
    wait_for_line(proc, "training 8 runs")
    time.sleep(4)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 128 + sig, err[-2000:]
    assert "Traceback" not in out + err
    assert "the same command with tracking.skip_finished=true runs only what did not finish" in err
    runs = all_runs(uri)
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    parents = [r for r in runs if r.data.tags.get("gdexp.role") == "sweep"]
    # The first population (one optimizer, 8 runs) was training: every member is KILLED with its
    # curve so far. The second never started: it has no runs (a resume trains it).
    assert len(children) == 8 and len(parents) == 1
    assert {r.info.status for r in children} == {"KILLED"} and parents[0].info.status == "KILLED"
    client = MlflowClient(uri)
    for child in children[::5]:
        loss = client.get_metric_history(child.info.run_id, "loss")
        assert len(loss) == int(child.data.metrics["epochs_run"]) > 0
    assert_no_leftovers(tagged_env["GDEXP_TEST_TAG"])


# --------------------------------------------------------------------------- parallel launchers


def test_failing_jobs_of_a_joblib_sweep_fail_the_sweep(tmp_path, tagged_env):
    # (adam, numpy) is the one bad pair: each axis value alone is fine, so it fails in its worker.
    args = ["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "optimizer=sgd,adam", "engine=lightning,numpy"]
    result = gdexp([*args, "epochs=5"], tmp_path, tagged_env)
    assert result.returncode == 2, result.stderr
    # the last line names the job, then says why as the job said it
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith("gdexp: error: [optimizer=adam,engine=numpy,epochs=5] engine=numpy")
    )
    assert "Traceback" not in result.stderr
    # 3 jobs ran; the bad one made no run; the sweep's parent ends FAILED, as the exit says
    assert statuses(tagged_env["MLFLOW_TRACKING_URI"]) == {"FINISHED": 3, "FAILED": 1}


@pytest.mark.parametrize("how", ["sigterm to the main process", "ctrl-c to the process group"])
def test_a_stopped_joblib_sweep_leaves_no_process_and_no_running_run(how, tmp_path, tagged_env):
    uri = tagged_env["MLFLOW_TRACKING_URI"]
    args = ["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "lr=0.01,0.02,0.03,0.04", "engine=autograd"]
    proc = start_gdexp(
        [*args, "epochs=5000000", "tracking.flush_seconds=0.2"], tmp_path, tagged_env, start_new_session=True
    )

    def two_streaming():
        runs = [r for r in all_runs(uri) if "mlflow.parentRunId" in r.data.tags]
        client = MlflowClient(uri)
        return len([r for r in runs if client.get_metric_history(r.info.run_id, "loss")]) >= 2

    assert wait_until(two_streaming, timeout=180)
    if how.startswith("sigterm"):
        proc.send_signal(signal.SIGTERM)
    else:
        os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=180)
    wanted = 143 if how.startswith("sigterm") else 130
    assert proc.returncode == wanted, err[-3000:]
    assert "Traceback" not in out + err
    assert_no_leftovers(tagged_env["GDEXP_TEST_TAG"])
    runs = all_runs(uri)
    assert "RUNNING" not in {r.info.status for r in runs}, Counter(r.info.status for r in runs)
    started = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(started) >= 2 and {r.info.status for r in started} == {"KILLED"}
    assert [r.info.status for r in runs if r.data.tags.get("gdexp.role") == "sweep"] == ["KILLED"]
    client = MlflowClient(uri)
    assert all(client.get_metric_history(r.info.run_id, "loss") for r in started)


# --------------------------------------------------------------------------- SIGKILL, resume, sync

KILL_GRID = ["lr=0.001,0.005,0.01,0.05,0.1,0.2", "seed=0,1,2,3", "optimizer=sgd,adam,rmsprop", "epochs=500"]


def complete(folder: Path) -> None:
    """A FINISHED or KILLED record has its whole history and its config: never torn."""
    for info in records(folder):
        assert info.status in ("FINISHED", "KILLED")  # batched records are written once, final
        job = Path(info.tags["gdexp.output_dir"])
        rows = (job / "history.csv").read_text().strip().splitlines()
        epochs_run = int(dict((k, v) for k, v, _ in info.metrics)["epochs_run"])
        assert len(rows) == 1 + epochs_run + 1, job  # header, step 0, every epoch
        assert (job / "config.yaml").is_file()


@settings(max_examples=3, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(delay=st.floats(0.0, 2.0), sync_first=st.booleans())
def test_sigkill_at_any_instant_never_tears_a_record_and_resume_and_sync_agree(tmp_path_factory, delay, sync_first):
    tmp = tmp_path_factory.mktemp("kill")
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp / 'mlflow.db'}", "PYTHONUNBUFFERED": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    uri = env["MLFLOW_TRACKING_URI"]
    first = start_gdexp(
        ["-m", "hydra/launcher=batched", *KILL_GRID, f"hydra.sweep.dir={tmp / 'killed'}"],
        tmp,
        env,
        start_new_session=True,
    )
    wait_for_line(first, "trained in")
    time.sleep(delay)
    os.killpg(first.pid, signal.SIGKILL)  # the sweep, its writers, everything, between any two writes
    first.communicate(timeout=60)
    complete(tmp / "killed")

    def resume() -> None:
        again = ["-m", "hydra/launcher=batched", *KILL_GRID, "tracking.skip_finished=true"]
        result = gdexp([*again, f"hydra.sweep.dir={tmp / 'resumed'}"], tmp, env)
        assert result.returncode == 0, result.stderr[-2000:]

    def sync() -> None:
        result = gdexp([str(tmp / "killed")], tmp, env, module="gdexp.sync")
        assert result.returncode == 0, result.stderr[-2000:]

    for step in (sync, resume) if sync_first else (resume, sync):
        step()
    runs = all_runs(uri)
    finished = Counter(
        r.data.tags["gdexp.config_hash"]
        for r in runs
        if r.info.status == "FINISHED" and "gdexp.config_hash" in r.data.tags
    )
    assert len(finished) == 6 * 4 * 3 and set(finished.values()) == {1}  # every config once, none twice
    assert "RUNNING" not in {r.info.status for r in runs}
    parents = {r.info.status for r in runs if r.data.tags.get("gdexp.role") == "sweep"}
    assert parents <= {"FINISHED", "KILLED"}


def test_the_resume_of_a_sigkilled_sweep_ends_what_it_left_running_without_a_sync(tmp_path, cli_env):
    """A joblib sweep (its runs are RUNNING in MLflow while they train) is SIGKILLed, workers and
    all; the same command with tracking.skip_finished=true, and no gdexp-sync, first ends what
    the dead sweep left open (it says so in one line), then runs what did not finish: every
    configuration one FINISHED run, nothing RUNNING, the one parent FINISHED."""
    uri = cli_env["MLFLOW_TRACKING_URI"]
    grid = ["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "lr=0.01,0.02,0.03", "optimizer=sgd,adam"]
    grid += ["epochs=3000", "engine=autograd", "tracking.flush_seconds=0.2"]
    sweep = start_gdexp([*grid, f"hydra.sweep.dir={tmp_path / 'killed'}"], tmp_path, cli_env, start_new_session=True)
    try:
        assert wait_until(lambda: Counter(r.info.status for r in all_runs(uri))["RUNNING"] >= 3, timeout=180)
        os.killpg(sweep.pid, signal.SIGKILL)  # a lost node: nothing runs a clean-up
        sweep.communicate(timeout=60)
    finally:
        sweep.kill()
    assert Counter(r.info.status for r in all_runs(uri))["RUNNING"] >= 3  # the parent and runs in flight
    resumed = gdexp(
        [*grid, "tracking.skip_finished=true", f"hydra.sweep.dir={tmp_path / 'resumed'}"], tmp_path, cli_env
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"gdexp: closed first what the killed sweep in {tmp_path / 'killed'} left open: " in resumed.stderr
    runs = all_runs(uri)
    assert "RUNNING" not in {r.info.status for r in runs}, Counter(r.info.status for r in runs)
    finished = Counter(
        r.data.tags["gdexp.config_hash"]
        for r in runs
        if r.info.status == "FINISHED" and "gdexp.config_hash" in r.data.tags
    )
    assert len(finished) == 6 and set(finished.values()) == {1}
    parents = [r for r in runs if r.data.tags.get("gdexp.role") == "sweep"]
    assert [p.info.status for p in parents] == ["FINISHED"]


KILLED_AS_ITS_RUN_IS_MADE = """
import os, signal, sys
from gdexp.tracking.client import Tracker
from gdexp.run import main

made = Tracker.start_run

def start_run(self, name, tags, *args, **kwargs):
    run_id = made(self, name, tags, *args, **kwargs)
    if "gdexp.record_id" in tags:  # a job's run (not the sweep's parent): stored, not yet told
        os.killpg(0, signal.SIGKILL)
    return run_id

Tracker.start_run = start_run
sys.argv[0] = "gdexp.run"
main()
"""


@pytest.mark.parametrize("then", ["resume", "sync"])
def test_a_sigkill_just_after_a_jobs_run_is_made_leaves_no_run_running(then, tmp_path, cli_env):
    """The narrowest window of a lost node: a job's MLflow run is made and the process group is
    SIGKILLed before the job does anything else. Its record, written before the run, names it:
    the resume (no gdexp-sync) or gdexp-sync ends it, and nothing is left RUNNING or doubled."""
    uri = cli_env["MLFLOW_TRACKING_URI"]
    script = tmp_path / "killed_as_its_run_is_made.py"
    script.write_text(KILLED_AS_ITS_RUN_IS_MADE)
    grid = ["-m", "lr=0.01,0.02", "epochs=50", "engine=autograd"]
    killed = subprocess.run(
        [sys.executable, str(script), *grid, f"hydra.sweep.dir={tmp_path / 'killed'}"],
        cwd=tmp_path,
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=300,
        start_new_session=True,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert statuses(uri) == Counter({"RUNNING": 2})  # the parent, and the first job's run
    [record] = records(tmp_path / "killed")
    assert record.status == "RUNNING" and record.mlflow_run_id is None
    if then == "sync":
        synced = gdexp([str(tmp_path / "killed")], tmp_path, cli_env, module="gdexp.sync")
        assert synced.returncode == 0, synced.stdout + synced.stderr
        assert statuses(uri) == Counter({"FAILED": 1, "KILLED": 1}), synced.stdout  # the job died, the sweep ended
        return
    resumed = gdexp([*grid, "tracking.skip_finished=true", f"hydra.sweep.dir={tmp_path / 'killed'}"], tmp_path, cli_env)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "gdexp: closed first what the killed sweep in" in resumed.stderr
    runs = all_runs(uri)
    assert Counter(r.info.status for r in runs) == Counter({"FINISHED": 3, "KILLED": 1})
    finished = [r.data.tags.get("gdexp.config_hash") for r in runs if r.info.status == "FINISHED"]
    assert len(set(finished) - {None}) == 2  # each configuration once, beside the parent


# --------------------------------------------------------------------------- two processes, one store


def test_a_batched_sweep_waits_out_another_process_holding_the_stores_write_lock(tmp_path, cli_env):
    """Another process holds SQLite's write lock for 30 s while a batched sweep trains and
    writes: the sweep's writes wait, then land. Every run once, FINISHED, under one parent."""
    import sqlite3

    uri = cli_env["MLFLOW_TRACKING_URI"]
    grid = ["-m", "hydra/launcher=batched", "lr=0.001,0.01,0.1", "seed=0,1,2,3", "epochs=50"]
    sweep = start_gdexp([*grid, "data=line_intercept"], tmp_path, cli_env)
    try:
        wait_for_line(sweep, "training 12 runs")  # the parent is made; the runs are yet to be written
        holder = sqlite3.connect(uri[len("sqlite:///") :], timeout=60, isolation_level=None)
        holder.execute("begin exclusive")  # what another writer mid-transaction holds
        held = time.monotonic()
        time.sleep(30)
        assert sweep.poll() is None, "the sweep ended while the store was locked"
        holder.execute("rollback")
        holder.close()
        out, err = sweep.communicate(timeout=240)
    finally:
        sweep.kill()
    assert sweep.returncode == 0, err[-3000:]
    assert time.monotonic() - held >= 30 and "Traceback" not in err
    runs = all_runs(uri)
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(children) == 12 and {r.info.status for r in children} == {"FINISHED"}
    assert len({r.data.tags["gdexp.config_hash"] for r in children}) == 12  # none doubled
    (parent,) = [r for r in runs if r.data.tags.get("gdexp.role") == "sweep"]
    assert parent.info.status == "FINISHED" and {r.data.tags["mlflow.parentRunId"] for r in children} == {
        parent.info.run_id
    }


def test_sigkill_inside_a_bulk_transaction_rolls_it_back_and_the_resume_writes_each_run_once(tmp_path, cli_env):
    """A reader keeps SQLite from committing, so the sweep's writer is caught inside its bulk
    transaction (its rows in the journal, not committed) when the whole sweep is SIGKILLed. The
    next open rolls the transaction back; the resume and a sync then leave each configuration
    exactly one FINISHED run, and no run RUNNING."""
    import sqlite3

    uri = cli_env["MLFLOW_TRACKING_URI"]
    db = Path(uri[len("sqlite:///") :])
    grid = ["-m", "hydra/launcher=batched", "lr=0.001,0.01,0.1", "seed=0,1,2,3", "epochs=50", "data=line_intercept"]
    sweep = start_gdexp([*grid, f"hydra.sweep.dir={tmp_path / 'killed'}"], tmp_path, cli_env, start_new_session=True)
    reader = None
    try:
        wait_for_line(sweep, "training 12 runs")
        reader = sqlite3.connect(db, timeout=60, isolation_level=None)
        reader.execute("begin")
        reader.execute("select count(*) from runs").fetchone()  # a shared lock: no commit gets past it
        journal = db.with_name(db.name + "-journal")
        assert wait_until(lambda: journal.is_file() and journal.stat().st_size > 0, timeout=60), "no write began"
        time.sleep(1)
        os.killpg(sweep.pid, signal.SIGKILL)  # the sweep and its writers, mid-transaction
        sweep.communicate(timeout=60)
    finally:
        if reader is not None:
            reader.execute("rollback")
            reader.close()
        sweep.kill()
    client = MlflowClient(uri)  # opening the store rolls the hot journal back
    stored = client.search_runs([client.get_experiment_by_name("gdexp").experiment_id])
    assert [r for r in stored if "mlflow.parentRunId" in r.data.tags] == []  # nothing half-written
    resumed = gdexp(
        [*grid, "tracking.skip_finished=true", f"hydra.sweep.dir={tmp_path / 'resumed'}"], tmp_path, cli_env
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    synced = gdexp([str(tmp_path / "killed")], tmp_path, cli_env, module="gdexp.sync")
    assert synced.returncode == 0, synced.stderr[-2000:]
    runs = all_runs(uri)
    finished = Counter(
        r.data.tags["gdexp.config_hash"]
        for r in runs
        if r.info.status == "FINISHED" and "gdexp.config_hash" in r.data.tags
    )
    assert len(finished) == 12 and set(finished.values()) == {1}
    assert "RUNNING" not in {r.info.status for r in runs}


FULL_DISK_CHECK = """
import json, sys
from collections import Counter
from mlflow import MlflowClient

client = MlflowClient(sys.argv[1])
runs = client.search_runs([client.get_experiment_by_name("gdexp").experiment_id], max_results=5000)
children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
files = Counter(a.path for r in children for a in client.list_artifacts(r.info.run_id))
print(json.dumps({
    "statuses": dict(Counter(r.info.status for r in runs)),
    "children": len(children),
    "configs": dict(Counter(Counter(r.data.tags["gdexp.config_hash"] for r in children).values())),
    "config_files": files["config.yaml"],
    "history_files": files["history.csv"],
}))
"""


def test_a_disk_that_fills_mid_sweep_is_one_line_exit_1_and_a_sync_stores_the_rest(tmp_path, cli_env, store_template):
    """The store on a 3 MB file system (a tmpfs in a mount namespace of the test's own) fills up
    while a 199-run batched sweep writes: a bulk transaction that hits the full disk is rolled
    back whole and not retried run by run (which would leave runs half-written); MLflow's logged
    tracebacks are dropped; the sweep says one warning a kind and one error line, and exits 1.
    Once there is room, gdexp-sync stores every run the store lacks: a FINISHED child for each
    configuration, once, with its files, none RUNNING."""
    small = tmp_path / "small"
    small.mkdir()
    (tmp_path / "check.py").write_text(FULL_DISK_CHECK)
    uri = f"sqlite:///{small / 'mlflow.db'}"
    grid = ["-m", "hydra/launcher=batched", "lr=range(0.001,0.2,0.001)", "epochs=40", "data=line_intercept"]
    sweep = [sys.executable, "-m", "gdexp.run", *grid, f"tracking.uri={uri}", f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    py = sys.executable
    script = f"""
set -u
mount -t tmpfs -o size=3m tmpfs {small} || exit 90
cp {store_template} {small / "mlflow.db"}
{" ".join(map(repr, sweep))} > {tmp_path / "out.txt"} 2> {tmp_path / "err.txt"}
echo $? > {tmp_path / "rc.txt"}
{py} {tmp_path / "check.py"} {uri} > {tmp_path / "before.json"} || exit 91
mount -o remount,size=256m {small} || exit 92
{py} -m gdexp.sync {tmp_path / "sweep"} > {tmp_path / "sync.txt"} 2>&1 || exit 93
{py} {tmp_path / "check.py"} {uri} > {tmp_path / "after.json"} || exit 94
"""
    done = subprocess.run(["unshare", "-m", "sh", "-c", script], cwd=tmp_path, env=cli_env, timeout=600)
    assert done.returncode == 0, (done.returncode, (tmp_path / "sync.txt").read_text() if done.returncode == 93 else "")
    err = (tmp_path / "err.txt").read_text()
    assert (tmp_path / "rc.txt").read_text().strip() == "1", err[-3000:]
    lines = err.splitlines()
    assert "Traceback" not in err and all(line.startswith("gdexp: ") for line in lines), err[-3000:]
    assert len(lines) <= 3 and lines[-1].startswith("gdexp: error: "), lines
    assert "disk is full" in lines[-1] or "No space left" in lines[-1], lines[-1]
    assert f"`gdexp-sync {tmp_path / 'sweep'}`" in lines[-1]
    n = int(re.search(r"training (\d+) runs", (tmp_path / "out.txt").read_text()).group(1))
    assert n >= 199
    before = json.loads((tmp_path / "before.json").read_text())
    assert before["children"] < n and set(before["statuses"]) <= {"FINISHED"}, before  # nothing half-written
    after = json.loads((tmp_path / "after.json").read_text())
    assert after["statuses"] == {"FINISHED": n + 1}, after  # the parent and every child
    assert after["children"] == n and after["configs"] == {"1": n}, after
    assert after["config_files"] == after["history_files"] == n, after


@pytest.mark.parametrize("first", ["batched", "basic"])
def test_two_sweeps_into_one_sqlite_store_at_once_while_a_reader_reads(first, tmp_path, cli_env):
    """Two sweeps write into one SQLite store at the same time (two batched ones, whose runs go in
    by bulk transactions; or a basic one, each run through its job's writer, beside a batched
    one) while gdexp-compare's reader reads it over and over: every run of each lands once, under
    its own parent, and every read gets an answer."""
    from gdexp.compare.runs import select_runs

    uri = cli_env["MLFLOW_TRACKING_URI"]
    seeds = "seed=range(0,6)" if first == "batched" else "seed=range(0,2)"  # a basic sweep's runs take seconds
    grids = [["lr=0.001,0.002,0.005,0.01", seeds], ["lr=0.02,0.05,0.1,0.2", "seed=range(0,6)"]]
    sweeps = [
        start_gdexp(
            [
                "-m",
                f"hydra/launcher={launcher}",
                *g,
                "epochs=60",
                "data=line_intercept",
                f"hydra.sweep.dir={tmp_path / d}",
            ],
            tmp_path,
            cli_env,
        )
        for g, d, launcher in zip(grids, "ab", [first, "batched"])
    ]
    answers, errors = [], []
    try:
        while any(s.poll() is None for s in sweeps):
            try:
                answers.append(len(select_runs(sweep="all", uri=uri)))
            except Exception as err:  # noqa: BLE001 - a store with no run yet selects none: say so
                errors.append(f"{type(err).__name__}: {err}")
            time.sleep(0.5)
        outs = [s.communicate(timeout=240) for s in sweeps]
    finally:
        for s in sweeps:
            s.kill()
    assert [s.returncode for s in sweeps] == [0, 0], [o[1][-2000:] for o in outs]
    assert answers and answers == sorted(answers), answers  # the readers saw the runs arrive
    before = ("no such experiment", "selects no runs")  # before the sweeps made theirs: said in one line
    assert all(any(b in e for b in before) for e in errors), errors
    runs = all_runs(uri)
    parents = [r for r in runs if r.data.tags.get("gdexp.role") == "sweep"]
    assert len(parents) == 2 and {p.info.status for p in parents} == {"FINISHED"}
    sizes = []
    for parent in parents:
        children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
        assert {r.info.status for r in children} == {"FINISHED"}
        assert len({r.data.tags["gdexp.config_hash"] for r in children}) == len(children)
        sizes.append(len(children))
    expected = [24, 24] if first == "batched" else [8, 24]
    assert sorted(sizes) == expected and len(select_runs(sweep="all", uri=uri)) == sum(expected)


def test_a_second_sweep_into_a_sweep_directory_in_use_is_one_line_and_makes_no_run(tmp_path, cli_env):
    """Two sweeps started in the same second from one directory share Hydra's default
    ``multirun/DATE/TIME``: the second to arrive is refused in one line, before any run, and the
    first's runs and records stay its own."""
    uri = cli_env["MLFLOW_TRACKING_URI"]
    shared = f"hydra.sweep.dir={tmp_path / 'multirun' / 'same-second'}"
    # about 15 s of training: the second command starts and is refused while the first trains
    grid = ["-m", "hydra/launcher=batched", "lr=0.01,0.1", "seed=range(0,6)", "epochs=15000", "converge_tol=0"]
    first = start_gdexp([*grid, shared], tmp_path, cli_env)
    try:
        wait_for_line(first, "training 12 runs")
        second = gdexp(["-m", "lr=0.5,0.6", shared], tmp_path, cli_env)
        out, err = first.communicate(timeout=240)
    finally:
        first.kill()
    assert second.returncode == 2 and "Traceback" not in second.stderr, second.stderr
    (line,) = [x for x in second.stderr.splitlines() if x.strip()]
    assert f"another sweep (process {first.pid}) is writing there" in line and "same-second-2" in line
    assert first.returncode == 0, err[-2000:]
    runs = all_runs(uri)
    assert len([r for r in runs if r.data.tags.get("gdexp.role") == "sweep"]) == 1
    assert (
        sorted(r.data.params["lr"] for r in runs if "mlflow.parentRunId" in r.data.tags) == ["0.01"] * 6 + ["0.1"] * 6
    )
    # the lock dies with its process: the same directory takes a resume at once
    again = gdexp(["-m", *grid[2:], shared, "tracking.skip_finished=true"], tmp_path, cli_env)
    assert again.returncode == 0 and "12 skipped as finished already" in again.stdout, again.stderr


def test_many_processes_opening_a_fresh_store_at_once_leave_it_usable(tmp_path):
    code = "import sys; from gdexp.tracking.store import connect; connect(sys.argv[1], 'gdexp')"
    for attempt in range(3):
        uri = f"sqlite:///{tmp_path / f'fresh{attempt}.db'}"
        procs = [
            subprocess.Popen([sys.executable, "-c", code, uri], stderr=subprocess.PIPE, text=True) for _ in range(6)
        ]
        errors = [p.communicate(timeout=120)[1] for p in procs]
        assert [p.returncode for p in procs] == [0] * 6, errors
        assert MlflowClient(uri).get_experiment_by_name("gdexp") is not None


def test_a_store_left_half_migrated_by_another_tool_is_repaired(tmp_path):
    """Plain MLflow clients racing on a fresh store break it for good (``table _alembic_tmp_...
    already exists``) about one time in two here; gdexp's first open repairs it."""
    raw = "import sys; from mlflow import MlflowClient; MlflowClient(sys.argv[1]).search_experiments()"
    for attempt in range(12):
        uri = f"sqlite:///{tmp_path / f'raced{attempt}.db'}"
        procs = [
            subprocess.Popen([sys.executable, "-c", raw, uri], stderr=subprocess.PIPE, text=True) for _ in range(4)
        ]
        if any("_alembic_tmp_" in p.communicate(timeout=120)[1] for p in procs):
            broken = subprocess.run([sys.executable, "-c", raw, uri], capture_output=True, text=True)
            if broken.returncode != 0:
                break
    else:
        raise AssertionError("12 races never left a store half-migrated: the repair went untested")
    fixed = subprocess.run(
        [sys.executable, "-c", "import sys; from gdexp.tracking.store import connect; connect(sys.argv[1], 'g')", uri],
        capture_output=True,
        text=True,
    )
    assert fixed.returncode == 0, fixed.stderr[-2000:]
    assert subprocess.run([sys.executable, "-c", raw, uri], capture_output=True).returncode == 0


def test_two_syncs_of_one_sweep_at_once_create_each_run_once(tmp_path, cli_env):
    result = gdexp(["-m", "lr=0.01,0.02,0.03,0.04", "optimizer=sgd,adam", "epochs=20"], tmp_path, cli_env)
    assert result.returncode == 0, result.stderr
    sweep = next((tmp_path / "multirun").glob("*/*"))
    other = f"sqlite:///{tmp_path / 'other.db'}"
    syncs = [
        subprocess.Popen(
            [sys.executable, "-m", "gdexp.sync", str(sweep), "--tracking-uri", other],
            cwd=tmp_path,
            env=cli_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outs = [s.communicate(timeout=300) for s in syncs]
    assert [s.returncode for s in syncs] == [0, 0], outs
    names = Counter(r.info.run_name for r in all_runs(other))
    assert len(names) == 9 and set(names.values()) == {1}  # the 8 runs and their sweep, each once
    parents = [r for r in all_runs(other) if r.data.tags.get("gdexp.role") == "sweep"]
    children = [r for r in all_runs(other) if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(children) == 8 and parents[0].info.status == "FINISHED"


# --------------------------------------------------------------------------- damaged records


def test_sync_of_damaged_records_syncs_the_rest_and_names_each_in_one_line(tmp_path, cli_env):
    result = gdexp(["-m", "lr=0.01,0.02,0.03,0.04,0.05", "epochs=30"], tmp_path, cli_env)
    assert result.returncode == 0, result.stderr
    sweep = next((tmp_path / "multirun").glob("*/*"))
    jobs = sorted(p for p in sweep.iterdir() if (p / "run.json").is_file())
    (jobs[0] / "run.json").write_text("{not json")
    (jobs[1] / "run.json").write_text("{}")
    broken = json.loads((jobs[2] / "run.json").read_text())
    (jobs[2] / "run.json").write_text(json.dumps({**broken, "params": [1, 2], "status": 7}))
    with (jobs[3] / "history.csv").open("a") as fh:
        fh.write("31,3.6\n")  # a line torn by a kill mid-write
    (sweep / "gdexp_sweep.json").write_text('{"overrides": 3')
    other = f"sqlite:///{tmp_path / 'other.db'}"
    synced = gdexp([str(sweep), "--tracking-uri", other], tmp_path, cli_env, module="gdexp.sync")
    assert synced.returncode == 0, synced.stderr
    assert "Traceback" not in synced.stdout + synced.stderr
    skipped = [line for line in synced.stdout.splitlines() if line.startswith("skipped")]
    assert len(skipped) == 5, synced.stdout  # three records, one torn line, the sweep record
    assert synced.stdout.strip().splitlines()[-1] == "2 created, 0 completed, 0 up to date, 5 skipped"
    client = MlflowClient(other)
    runs = all_runs(other)
    assert sorted(r.info.run_name for r in runs) == ["lr=0.04,epochs=30", "lr=0.05,epochs=30"]
    torn = next(r for r in runs if r.info.run_name == "lr=0.04,epochs=30")
    assert len(client.get_metric_history(torn.info.run_id, "loss")) == 30  # every intact line, not the torn one


# --------------------------------------------------------------------------- stores that are not


def test_a_default_store_that_is_a_folder_is_one_line_at_once(tmp_path, cli_env):
    cli_env.pop("MLFLOW_TRACKING_URI")
    (tmp_path / "mlflow.db").unlink()
    (tmp_path / "mlflow.db").mkdir()
    started = time.monotonic()
    result = gdexp(["epochs=5"], tmp_path, cli_env)
    assert time.monotonic() - started < 60
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert lines[0].startswith("gdexp: error: tracking.uri=sqlite:///") and "is a folder" in lines[0]


def test_gdexp_compare_where_there_is_no_store_makes_none(tmp_path, cli_env):
    cli_env.pop("MLFLOW_TRACKING_URI")
    empty = tmp_path / "empty"
    empty.mkdir()
    result = gdexp(["table"], empty, cli_env, module="gdexp.compare")
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and "no MLflow store there" in lines[0], result.stderr
    assert list(empty.iterdir()) == []


@pytest.mark.parametrize("store", ["not a database", "refused port", "no such database"])
def test_gdexp_compare_on_a_store_it_cannot_read_is_one_line_at_once(store, tmp_path, cli_env, request):
    """An ``mlflow.db`` that is not SQLite, a PostgreSQL port nobody listens on, a database that
    does not exist: one line naming the store, exit 2, within seconds (MLflow's client retries
    an unreachable database for minutes, then prints a traceback)."""
    from servers import free_port

    if store == "not a database":
        (tmp_path / "mlflow.db").write_text("id,loss\n1,0.5\n")
        uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    elif store == "refused port":
        uri = f"postgresql://gdexp:pw@127.0.0.1:{free_port()}/mlflow"
    else:
        postgres = request.getfixturevalue("postgres")
        uri = f"postgresql+psycopg2://postgres@127.0.0.1:{postgres.port}/no_such_database"
    start = time.monotonic()
    result = gdexp(["table", "--tracking-uri", uri], tmp_path, cli_env, module="gdexp.compare")
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr[-2000:]
    assert lines[0].startswith("gdexp-compare: error: tracking.uri=") and "pw@" not in lines[0], lines
    assert time.monotonic() - start < 60
    if store == "not a database":
        assert "is not a SQLite database" in lines[0]
        assert (tmp_path / "mlflow.db").read_text() == "id,loss\n1,0.5\n"  # no tables made in it


# --------------------------------------------------------------------------- secrets


SECRET = "Sup3r-s3cret-pw"


def assert_secret_nowhere(secret: str, uri: str, folders: list[Path], *texts: str) -> None:
    """Not in any run name, tag or param of the store, any file under ``folders`` (records,
    artifacts, Hydra's files, reports), nor in the terminal output."""
    for run in all_runs(uri):
        held = [run.info.run_name, *run.data.tags.values(), *run.data.params.values()]
        assert not [h for h in held if secret in str(h)], run.info.run_name
    for folder in folders:
        for path in folder.rglob("*"):
            if path.is_file() and path.suffix != ".db":
                assert secret.encode() not in path.read_bytes(), path
    for text in texts:
        assert secret not in text


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory):
    """``mlflow server`` with MLflow's basic-auth app: every API call needs a login."""
    from servers import MlflowServer

    folder = tmp_path_factory.mktemp("auth-server")
    server = MlflowServer(f"sqlite:///{folder / 'mlflow.db'}", folder / "artifacts", folder / "server.log", SECRET)
    yield server
    server.stop()


def test_a_server_that_requires_a_login_with_credentials_in_the_uri_or_the_environment(auth_server, tmp_path, cli_env):
    cli_env.pop("MLFLOW_TRACKING_URI")
    host = auth_server.uri.split("://", 1)[1]
    in_uri = f"tracking.uri=http://admin:{SECRET}@{host}"
    sweep = gdexp(["-m", "lr=0.01,0.1", "epochs=20", in_uri, "tracking.experiment=secrets"], tmp_path, cli_env)
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    assert "admin:***@" in sweep.stdout
    single = gdexp(
        ["epochs=20", f"tracking.uri={auth_server.uri}", "tracking.experiment=secrets"],
        tmp_path,
        {**cli_env, "MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD": SECRET},
    )
    assert single.returncode == 0, single.stderr[-3000:]
    denied = gdexp(["epochs=20", f"tracking.uri={auth_server.uri}", "tracking.experiment=secrets"], tmp_path, cli_env)
    lines = denied.stderr.strip().splitlines()
    assert denied.returncode == 2 and len(lines) == 1 and lines[0].startswith("gdexp: error: tracking.uri="), (
        denied.stderr
    )

    env = {**cli_env, "MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD": SECRET}
    report = gdexp(
        ["report", "--experiment", "secrets", "--tracking-uri", auth_server.uri, "--out", str(tmp_path / "r.html")],
        tmp_path,
        env,
        module="gdexp.compare",
    )
    listed = gdexp(
        ["sweeps", "--experiment", "secrets", "--tracking-uri", auth_server.uri], tmp_path, env, module="gdexp.compare"
    )
    assert report.returncode == 0 and listed.returncode == 0, report.stderr + listed.stderr
    client_env = {"MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD": SECRET}
    os.environ.update(client_env)
    try:
        runs = all_runs(auth_server.uri)
        assert len(runs) == 4 and {r.info.status for r in runs} == {"FINISHED"}  # parent, 2 jobs, 1 run
        assert_secret_nowhere(
            SECRET,
            auth_server.uri,
            [tmp_path, auth_server.artifacts],
            sweep.stdout,
            sweep.stderr,
            single.stdout,
            single.stderr,
            denied.stderr,
            report.stdout,
            listed.stdout,
        )
    finally:
        for key in client_env:
            os.environ.pop(key)


# --------------------------------------------------------------------------- names and old runs


def test_a_dollar_in_a_run_name_is_drawn_as_text_everywhere(tmp_path, cli_env):
    """A run name comes from the overrides, a CSV path among them: ``$x^$`` would be mathtext."""
    (tmp_path / "$x^$.csv").write_text("x,y\n1,2\n2,4\n3,6\n")
    result = gdexp(["-m", "data=csv", "data.path='$x^$.csv'", "lr=0.01,0.05", "epochs=20"], tmp_path, cli_env)
    assert result.returncode == 0, result.stderr[-2000:]
    uri = cli_env["MLFLOW_TRACKING_URI"]
    children = [r for r in all_runs(uri) if "mlflow.parentRunId" in r.data.tags]
    client = MlflowClient(uri)

    def drawn():
        return all("loss_curve.png" in {a.path for a in client.list_artifacts(r.info.run_id)} for r in children)

    assert len(children) == 2 and wait_until(drawn, timeout=60)
    for args in (
        ["plot", "--kind", "curves", "--out", "png"],
        ["plot", "--kind", "weights", "--out", "png"],
        ["report"],
    ):
        shown = gdexp(args, tmp_path, cli_env, module="gdexp.compare")
        assert shown.returncode == 0 and "Traceback" not in shown.stderr, shown.stderr[-2000:]


def test_a_report_on_runs_of_an_older_schema(tmp_path, cli_env):
    """Runs without gdexp's tags, summary metrics, config or history (an older version): reported."""
    uri = cli_env["MLFLOW_TRACKING_URI"]
    client = MlflowClient(uri)
    # its artifacts beside its store (MLflow's default, ./mlruns, is the directory pytest runs in)
    experiment = client.create_experiment("gdexp", artifact_location=(tmp_path / "mlartifacts").as_uri())
    parent = client.create_run(experiment, run_name="sweep lr=0.1,0.2", tags={"gdexp.role": "sweep"}).info.run_id
    for lr in ("0.1", "0.2"):
        run = client.create_run(experiment, run_name=f"lr={lr}", tags={"mlflow.parentRunId": parent})
        client.log_param(run.info.run_id, "lr", lr)
        client.log_metric(run.info.run_id, "loss", 1.0, step=1)
        client.set_terminated(run.info.run_id)
    for args in (["report"], ["table"], ["sweeps"]):
        shown = gdexp(args, tmp_path, cli_env, module="gdexp.compare")
        assert shown.returncode == 0 and "Traceback" not in shown.stderr, (args, shown.stderr[-2000:])
    assert "lr=0.2" in (tmp_path / "outputs" / f"report-{parent[:8]}.html").read_text()


def test_a_symlinked_sweep_directory_synced_by_both_paths_stores_each_run_once(tmp_path, cli_env):
    """multirun/ a symlink to another disk (a scratch or shared file system): a sweep recorded
    there, then synced into another store once through the link and once through the real path,
    is stored there once, under one parent."""
    real = tmp_path / "scratch" / "runs"
    real.mkdir(parents=True)
    launch = tmp_path / "launch"
    launch.mkdir()
    (launch / "multirun").symlink_to(real, target_is_directory=True)
    done = gdexp_here(
        ["-m", "lr=0.01,0.1", "optimizer=sgd,adam", "epochs=5", "hydra.sweep.dir=multirun/s"],
        launch,
        cli_env,
    )
    assert done.returncode == 0, done.stderr
    assert len(list(real.glob("s/*/run.json"))) == 4  # the records are on the link's far side
    uri = f"sqlite:///{tmp_path / 'other.db'}"
    first = gdexp_here([str(launch / "multirun" / "s"), "--tracking-uri", uri], launch, cli_env, module="gdexp.sync")
    second = gdexp_here([str(real / "s"), "--tracking-uri", uri], launch, cli_env, module="gdexp.sync")
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    assert first.stdout.strip().splitlines()[-1] == "4 created, 0 completed, 0 up to date", first.stdout
    assert second.stdout.strip().splitlines()[-1] == "0 created, 0 completed, 4 up to date", second.stdout
    runs = all_runs(uri)
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(children) == 4 and len([r for r in runs if r.data.tags.get("gdexp.role") == "sweep"]) == 1


def test_the_launch_directory_deleted_mid_run_fails_the_run_in_one_line(tmp_path, cli_env):
    """The directory a run was launched from (its outputs/ with it) removed while it trains, the
    store elsewhere: one line and exit 1, the MLflow run FAILED with its curve so far, not left
    RUNNING, and no process of it left behind."""
    launch = tmp_path / "launch"
    launch.mkdir()
    uri = cli_env["MLFLOW_TRACKING_URI"]
    run = start_gdexp(["epochs=300000", "engine=autograd", "tracking.flush_seconds=0.2"], launch, cli_env)
    client = MlflowClient(uri)
    assert wait_until(lambda: any(r.data.metrics for r in all_runs(uri)), timeout=180), "the run never logged"
    children = psutil.Process(run.pid).children(recursive=True)  # its writer
    shutil.rmtree(launch)
    out, err = run.communicate(timeout=120)
    assert run.returncode == 1, err
    assert err.startswith("gdexp: error: the run's directory ") and err.count("\n") == 1, err
    assert "was deleted while it trained" in err and "Traceback" not in err
    (stored,) = all_runs(uri)
    assert stored.info.status == "FAILED" and stored.data.tags["gdexp.status"] == "failed"
    assert client.get_metric_history(stored.info.run_id, "loss")  # its curve so far
    assert wait_until(lambda: not [c for c in children if c.is_running()], timeout=30)
