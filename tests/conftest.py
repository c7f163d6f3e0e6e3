"""Shared helpers: compose configs with Hydra's compose API and run jobs in-process."""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hypothesis.configuration import set_hypothesis_home_dir
from omegaconf import DictConfig
from servers import MlflowServer, Postgres

from gdexp.config import CONF_DIR, group_options, register_configs

REPO = Path(__file__).resolve().parents[1]
SEEDS = REPO / "tests" / "seeds"  # copies of ../shared/seeds/: the notebooks whose tables gdexp prints
ACCELERATOR = os.environ.get("GDEXP_TEST_ACCELERATOR")  # e.g. gpu: in-process jobs train there
OPTIMIZERS = group_options("optimizer")  # every shipped optimizer, as the config group lists them


# Hypothesis keeps its files (its example database, its caches) in a temporary folder that goes
# with the process, not in .hypothesis/ in the checkout, which the tests never write into
# (pytest_sessionfinish checks).
HYPOTHESIS_HOME = tempfile.mkdtemp(prefix="gdexp-hypothesis-")
set_hypothesis_home_dir(HYPOTHESIS_HOME)
atexit.register(shutil.rmtree, HYPOTHESIS_HOME, ignore_errors=True)
CHECKOUT_ENTRIES = {p.name for p in REPO.iterdir()}
PYTESTS_OWN = {".pytest_cache"}  # pytest's cache (-p no:cacheprovider turns it off)


def pytest_sessionfinish(session, exitstatus):
    """The suite wrote nothing into the checkout: a run's store, artifacts or outputs made
    there (a relative path resolved against the directory pytest runs in) fail the session."""
    if hasattr(session.config, "workerinput"):
        return  # a worker: the controller checks once, at the end
    made = sorted({p.name for p in REPO.iterdir()} - CHECKOUT_ENTRIES - PYTESTS_OWN)
    if made:
        session.config.get_terminal_writer().line(f"the tests wrote into the checkout: {made}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_xdist_auto_num_workers(config):
    """``-n auto``: a worker per core and one more, at most 4. Many slow tests wait on a process,
    a server or Slurm: on 2 cores the whole suite took 23 min 50 s with 3 workers, 26 min 26 s
    with 2."""
    return max(1, min(4, len(os.sched_getaffinity(0)) + 1))


def pytest_collection_modifyitems(config, items):
    """The slow tests first, the Slurm group first of all (one worker runs it whole), so that
    the workers end together rather than behind the longest test started last; and tests marked
    ``gpu`` skip, saying why, where torch sees no CUDA device."""

    def order(item):
        group = item.get_closest_marker("xdist_group")
        return (group is None, item.get_closest_marker("slow") is None)

    items.sort(key=order)  # stable: the file order within each kind
    if not any(item.get_closest_marker("gpu") for item in items):
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason=f"no CUDA device (torch {torch.__version__}); scripts/gpu_check.sh runs these")
    for item in items:
        if item.get_closest_marker("gpu"):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def store_template(tmp_path_factory) -> Path:
    """An empty MLflow store with every table made: creating one runs all of MLflow's
    migrations (about 1.7 s here), copying it takes milliseconds."""
    from mlflow import MlflowClient

    path = tmp_path_factory.mktemp("template") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


def empty_store(folder: Path, template: Path) -> str:
    """A copy of the empty store as ``folder/mlflow.db``; its URI."""
    shutil.copyfile(template, folder / "mlflow.db")
    return f"sqlite:///{folder / 'mlflow.db'}"


@pytest.fixture(autouse=True)
def _no_user_store(request, monkeypatch, tmp_path, store_template):
    """No test may touch the user's mlflow.db: the default store is redirected into tmp_path, an
    empty store already there unless the test is marked ``fresh_store`` (it sees gdexp create one)."""
    if request.node.get_closest_marker("fresh_store") is None:
        empty_store(tmp_path, store_template)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")


def make_config(overrides: list[str] | None = None) -> DictConfig:
    """The config ``python -m gdexp.run OVERRIDES`` would run (without Hydra's runtime node)."""
    register_configs()
    overrides = list(overrides or [])
    if ACCELERATOR and not any(o.startswith("accelerator=") for o in overrides):
        overrides.append(f"accelerator={ACCELERATOR}")  # scripts/gpu_check.sh: the suites on the GPU
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def run(overrides: list[str], tmp_path: Path, *, tracking: bool = False):
    """Run a job in-process the way ``gdexp.run`` does; tracking off unless asked for."""
    from gdexp.job import run_job

    overrides = list(overrides) + ([] if tracking else ["tracking.enabled=false"])
    cfg = make_config(overrides)
    return run_job(cfg, overrides=overrides, output_dir=tmp_path / "out", launch_dir=tmp_path, quiet=True)


@pytest.fixture
def cli_env(tmp_path) -> dict[str, str]:
    """Environment for gdexp subprocesses: the tmp store, unbuffered output."""
    env = dict(os.environ, MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}", PYTHONUNBUFFERED="1")
    env.pop("HYDRA_FULL_ERROR", None)
    return env


@pytest.fixture(autouse=True)
def _close_writers():
    """Each test's MLflow writer processes end with it."""
    yield
    from gdexp.session import SESSION

    SESSION.close_writers()


def gdexp(args: list[str], cwd: Path, env: dict[str, str], timeout: float = 300, module: str = "gdexp.run", **kw):
    """Run ``python -m MODULE ARGS`` (gdexp.run unless told) as a user would, in ``cwd``."""
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        **kw,
    )


def gdexp_here(args: list[str], cwd: Path, env: dict[str, str], module: str = "gdexp.run"):
    """``gdexp`` in this process: the same entry point (``main``), argv, directory and
    environment, its exit status and its output, for tests that are not about processes
    (starting Python, torch and MLflow costs seconds a command). Writers are closed at the end,
    as a process's exit closes them."""
    import contextlib
    import io
    import signal
    import subprocess
    import sys

    from hydra.core.global_hydra import GlobalHydra

    from gdexp.session import SESSION

    programs = {"gdexp.run": "gdexp-run", "gdexp.sync": "gdexp-sync", "gdexp.compare": "gdexp-compare"}
    saved_env, saved_cwd, saved_argv = dict(os.environ), Path.cwd(), sys.argv
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    out, err = io.StringIO(), io.StringIO()
    code = 0
    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)
    sys.argv = [programs[module], *args]
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                if module == "gdexp.run":
                    from gdexp.run import main

                    main()
                elif module == "gdexp.sync":
                    from gdexp.sync import main as sync_main

                    sync_main(list(args))
                else:
                    from gdexp.compare.cli import main as compare_main

                    compare_main(list(args))
            except SystemExit as exit_:
                code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
            finally:
                SESSION.close_writers()
    finally:
        GlobalHydra.instance().clear()
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        sys.argv = saved_argv
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
    return subprocess.CompletedProcess([programs[module], *args], code, out.getvalue(), err.getvalue())


def start_gdexp(args: list[str], cwd: Path, env: dict[str, str], **kw):
    """Start ``python -m gdexp.run ARGS`` in ``cwd`` without waiting: a process to signal or kill.
    Its output is piped as text unless ``kw`` says otherwise."""
    import subprocess
    import sys

    kw = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True, **kw}
    return subprocess.Popen([sys.executable, "-m", "gdexp.run", *args], cwd=cwd, env=env, **kw)


def all_runs(uri: str):
    """Every run of every experiment in the store at ``uri``."""
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    ids = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(ids, max_results=5000) if ids else []


class Recorded:
    """A run as MLflow holds it, read back with MlflowClient the way a user's own client would."""

    def __init__(self, run_id: str):
        from mlflow import MlflowClient

        self.client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
        self.run = self.client.get_run(run_id)
        self.metrics = self.run.data.metrics
        self.tags = self.run.data.tags

    def curve(self, key: str) -> dict[int, float]:
        """step -> value of one metric's full history."""
        return {m.step: m.value for m in self.client.get_metric_history(self.run.info.run_id, key)}


def run_recorded(overrides: list[str], tmp_path: Path) -> Recorded:
    """Run tracked into the test's own store and read the run back from MLflow."""
    return Recorded(run(overrides, tmp_path, tracking=True).run_id)


@pytest.fixture(scope="session")
def postgres():
    """A PostgreSQL cluster for the session's tests, on 127.0.0.1."""
    # Not under pytest's tmp tree: that is private to the test user, and postgres runs as its own.
    folder = Path(tempfile.mkdtemp(prefix="gdexp-pg-"))
    folder.chmod(0o755)
    db = Postgres(folder / "cluster")
    yield db
    db.stop()
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def server(postgres, tmp_path):
    """`mlflow server` on a fresh PostgreSQL database of its own."""
    # a fresh database per test, so each test counts only its own runs
    database = postgres.database(f"mlflow_{tmp_path.name[-12:].replace('-', '_').lower()}")
    srv = MlflowServer(database, tmp_path / "artifacts", tmp_path / "server.log")
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def slurm(request):
    """A single-node Slurm cluster with accounting (``scripts/slurm_cluster.sh``), installed with
    apt where it is missing and this is root; the tests that use it skip, saying why, where it
    cannot be installed. Its ``slurm.conf`` path is in ``SLURM_CONF`` while the session runs."""
    first = getattr(request, "_pyfuncitem", request.node).nodeid  # the test that asked first
    if os.environ.get("PYTEST_XDIST_WORKER") and not first.endswith("@slurm"):
        # Two workers would each start a cluster (on ports of their own) and share one machine's munged.
        pytest.fail(
            f"xdist's --dist loadgroup did not group {first} (pytest {pytest.__version__}): "
            "the Slurm tests must share one worker; install the pytest pyproject.toml names"
        )
    missing = [b for b in ("sbatch", "slurmctld", "slurmdbd", "munged", "mariadbd") if not _on_path(b)]
    if missing and (os.geteuid() != 0 or not shutil.which("apt-get")):
        pytest.skip(f"Slurm is not installed ({', '.join(missing)} missing) and this is not root with apt-get")
    folder = Path(tempfile.mkdtemp(prefix="gdexp-slurm-"))
    script = REPO / "scripts" / "slurm_cluster.sh"
    started = subprocess.run(["bash", str(script), "start", str(folder)], capture_output=True, text=True, timeout=600)
    if started.returncode != 0 and "apt-get install failed" in started.stderr:
        pytest.skip(f"Slurm could not be installed: {started.stderr.strip().splitlines()[-1]}")
    assert started.returncode == 0, started.stderr
    before = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(folder / "slurm.conf")
    yield folder
    subprocess.run(["bash", str(script), "stop", str(folder)], capture_output=True, timeout=120)
    if before is None:
        os.environ.pop("SLURM_CONF", None)
    else:
        os.environ["SLURM_CONF"] = before
    shutil.rmtree(folder, ignore_errors=True)


def _on_path(name: str) -> bool:
    return bool(shutil.which(name) or Path("/usr/sbin", name).exists())


def wait_until(probe, timeout: float = 120, interval: float = 0.5):
    """Poll ``probe()`` until it returns something truthy (its value) or ``timeout`` passes (None).
    A probe that raises counts as not yet: a store may still be creating its tables."""
    import time

    deadline = time.time() + timeout
    while time.time() < deadline:
        time.sleep(interval)
        try:
            value = probe()
        except Exception:
            continue
        if value:
            return value
    return None
