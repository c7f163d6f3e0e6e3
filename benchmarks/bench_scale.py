"""10,000-run sweeps through ``hydra/launcher=batched``, against the store's own floor (on demand).

The grid: 50 learning rates x sgd, momentum, adam, rmsprop x bias on/off x 20..100 epochs x 5
seeds on ``line_intercept`` = 10,000 runs. Each sweep is the whole command into a fresh store,
checked afterwards (every run FINISHED in MLflow under one parent); its peak memory is the sum of
the resident memory of the command and every process it starts, sampled every 0.2 s.

**The floor** is MLflow's own client writing the same runs from one process: for each run,
``create_run`` with its tags, one ``log_batch`` with its params and metrics, ``set_terminated``.
The runs are copies of one the sweep wrote (same tags, params, metric rows). gdexp writes more
than that (each run's dataset input, its config.yaml, history.csv and loss_curve.png artifacts),
so matching the floor means the training, the records and the artifacts all hide behind the store.

The full sweep runs on SQLite, on PostgreSQL directly (``postgresql://``: the bulk path) and on
``mlflow server`` backed by PostgreSQL (the client path), each against its own floor;
``--floor-runs N`` writes N of the floor's runs and scales the time (a client's time a run does
not grow with the store). After the SQLite sweep come its readers: ``gdexp-compare table`` over
it, ``gdexp-sync`` of its 10,000 records into an empty store, and MLflow's UI listing its runs
in headless Chromium (``--no-readers`` skips them).

**The writers table**: the same grid at ``--table-runs`` runs (fewer learning rates; on the
server ``--server-table-runs``) with 1, 2 and 4 writer processes (``hydra.launcher.writers``), on
SQLite and on ``mlflow server`` backed by PostgreSQL (a throwaway cluster, as the tests start it),
each beside its own floor.

Usage: python benchmarks/bench_scale.py [--runs 10000] [--full-stores sqlite,postgres,server]
       [--floor-runs N] [--no-readers]
       [--table-runs 2000] [--server-table-runs 1000] [--writers 1,2,4] [--table-stores sqlite,server]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from servers import MlflowServer, Postgres, free_port  # noqa: E402  (the tests' throwaway servers)

OPTIMIZERS = ["sgd", "momentum", "adam", "rmsprop"]
EPOCHS = [20, 40, 60, 80, 100]
SEEDS = 5
RESULTS = Path(__file__).resolve().parent / "results"


def grid(runs: int) -> list[str]:
    """The grid of ``runs`` runs: 200 per learning rate (4 optimizers x 2 x 5 epochs x 5 seeds)."""
    lrs = [f"{v:.4g}" for v in np.geomspace(1e-3, 0.3, max(1, runs // 200))]
    return [
        f"lr={','.join(lrs)}",
        f"optimizer={','.join(OPTIMIZERS)}",
        "bias=true,false",
        f"epochs={','.join(map(str, EPOCHS))}",
        f"seed=range(0,{SEEDS})",
        "data=line_intercept",
    ]


class Peak:
    """The peak of the summed RSS of a process and its descendants, sampled in a thread."""

    def __init__(self, pid: int):
        self.root, self.peak, self.done = psutil.Process(pid), 0, threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()

    def _sample(self) -> None:
        while not self.done.is_set():
            try:
                procs = [self.root, *self.root.children(recursive=True)]
                total = 0
                for p in procs:
                    try:
                        total += p.memory_info().rss
                    except psutil.Error:
                        pass
                self.peak = max(self.peak, total)
            except psutil.Error:
                pass
            self.done.wait(0.2)

    def stop(self) -> int:
        self.done.set()
        self.thread.join()
        return self.peak


def sweep(uri: str, runs: int, writers: int | None, folder: Path | None = None) -> dict:
    """The batched sweep of ``runs`` runs into ``uri`` (``writers``: None for gdexp's default),
    run in ``folder`` (a fresh one by default): wall seconds, peak MiB, checked."""
    folder = folder or Path(tempfile.mkdtemp(prefix="gdexp-scale-"))
    using = [f"hydra.launcher.writers={writers}"] if writers else []
    args = ["-m", "hydra/launcher=batched", *using, f"tracking.uri={uri}", *grid(runs)]
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "gdexp.run", *args],
        cwd=folder,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "GDEXP_PROGRESS": "0"},
    )
    peak = Peak(proc.pid)
    out, _ = proc.communicate()
    wall = time.perf_counter() - start
    peak_mib = peak.stop() / 2**20
    if proc.returncode != 0:
        raise SystemExit(f"sweep failed ({proc.returncode}):\n{out[-3000:]}")
    children = check_store(uri, runs)
    return {"wall_s": round(wall, 1), "runs_per_s": round(runs / wall, 1), "peak_mib": round(peak_mib), **children}


def timed(args: list[str], cwd: Path) -> float:
    """Wall seconds of a gdexp command, which must succeed."""
    start = time.perf_counter()
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True, env={**os.environ, "GDEXP_PROGRESS": "0"})
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args[:3])} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return round(wall, 1)


def readers(uri: str, folder: Path, empty: str) -> dict:
    """What reads or replays the sweep: ``gdexp-compare table`` over it, ``gdexp-sync`` of its
    records into the empty store ``empty``, and MLflow's UI listing its runs in headless
    Chromium (from the page's request to the first child row shown)."""
    bin_ = Path(sys.executable).parent
    out = {
        "compare_table_s": timed([str(bin_ / "gdexp-compare"), "table", "--tracking-uri", uri], folder),
        "sync_s": timed([str(bin_ / "gdexp-sync"), str(folder / "multirun"), "--tracking-uri", empty], folder),
    }
    import browser  # the tests' headless Chromium over WebDriver

    if browser.available():
        out["ui_list_s"] = "n/a: " + browser.available()
        return out
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("gdexp")
    parent = client.search_runs([exp.experiment_id], "tags.`gdexp.role` = 'sweep'")[0]
    port = free_port()
    ui = subprocess.Popen(
        [str(bin_ / "gdexp-ui"), "--port", str(port), "--tracking-uri", uri],
        cwd=folder,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        while "latest sweep" not in (line := ui.stdout.readline()):
            if not line:
                raise SystemExit("gdexp-ui ended before serving")
        query = urllib.parse.quote(f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
        url = (
            f"http://127.0.0.1:{port}/#/experiments/{exp.experiment_id}/runs"
            f"?workflowType=machine_learning&searchFilter={query}"
        )
        with browser.Browser() as page:
            start = time.perf_counter()
            page.open(url)
            page.wait_for("Run Name", "data=line_intercept", timeout=600)
            out["ui_list_s"] = round(time.perf_counter() - start, 1)
    finally:
        ui.send_signal(signal.SIGINT)
        ui.wait(60)
    return out


def check_store(uri: str, runs: int) -> dict:
    """Every run in MLflow, FINISHED, under one parent: counted in the store's tables (one query
    each), so that a 100,000-run check does not build 100,000 run objects."""
    import sqlalchemy as sa
    from mlflow import MlflowClient
    from mlflow.store.tracking.dbmodels.models import SqlRun

    from gdexp.tracking.bulk import count_by_tag, sql_store

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("gdexp")
    store = sql_store(client)
    if store is None:  # a tracking server: its runs through its API
        found = client.search_runs([exp.experiment_id], max_results=50000)
        parents = [r for r in found if r.data.tags.get("gdexp.role") == "sweep"]
        children = [r for r in found if r.data.tags.get("mlflow.parentRunId")]
        assert len(parents) == 1 and len(children) == runs, (len(parents), len(children))
        assert {r.info.status for r in found} == {"FINISHED"}, {r.info.status for r in found}
        return {"checked_runs": len(children)}
    run = SqlRun.__table__.c
    query = sa.select(run.status, sa.func.count()).where(run.experiment_id == int(exp.experiment_id))
    with store.engine.connect() as db:
        statuses = dict(db.execute(query.group_by(run.status)).all())
    parents = count_by_tag(store, exp.experiment_id, "gdexp.role").get("sweep", 0)
    children = sum(count_by_tag(store, exp.experiment_id, "mlflow.parentRunId").values())
    assert parents == 1 and children == runs, (parents, children)
    assert set(statuses) == {"FINISHED"}, statuses
    return {"checked_runs": children}


def sample_run(uri: str) -> tuple[dict, dict, list]:
    """One child run the sweep wrote: its tags, params and every metric row."""
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("gdexp")
    run = client.search_runs([exp.experiment_id], "tags.`mlflow.parentRunId` != ''", max_results=1)[0]
    tags = {k: v for k, v in run.data.tags.items() if k not in ("mlflow.parentRunId", "mlflow.runName")}
    rows = [
        (m.key, m.value, m.step) for key in run.data.metrics for m in client.get_metric_history(run.info.run_id, key)
    ]
    return tags, dict(run.data.params), rows


def floor(uri: str, runs: int, sample: tuple[dict, dict, list], measured: int | None = None) -> dict:
    """MLflow's client writing ``runs`` copies of ``sample`` from one process: all of them, or
    ``measured`` of them, the time scaled to ``runs`` (a client's time a run does not grow with
    the store: a 10,000-run floor on PostgreSQL alone would take ten minutes)."""
    measured = min(runs, measured or runs)
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param, RunTag

    tags, params, rows = sample
    client = MlflowClient(uri)
    exp = client.create_experiment(f"floor-{time.time_ns()}")
    now = int(time.time() * 1000)
    param_list = [Param(k, v) for k, v in params.items()]
    metric_list = [Metric(k, v, now, s) for k, v, s in rows]
    start = time.perf_counter()
    for i in range(measured):
        run = client.create_run(exp, run_name=f"floor-{i}", tags=tags)
        client.log_batch(run.info.run_id, metrics=metric_list, params=param_list, tags=[RunTag("i", str(i))])
        client.set_terminated(run.info.run_id)
    wall = (time.perf_counter() - start) * runs / measured
    return {
        "measured_runs": measured,
        "wall_s": round(wall, 1),
        "runs_per_s": round(runs / wall, 1),
        "ms_per_run": round(1000 * wall / runs, 1),
        "metric_rows": len(rows),
        "params": len(params),
        "tags": len(tags),
    }


class Stores:
    """A fresh store per measurement: a SQLite file, or a database on one PostgreSQL cluster
    behind its own ``mlflow server``."""

    def __init__(self):
        self.pg: Postgres | None = None
        self.servers: list[MlflowServer] = []
        self.root = Path(tempfile.mkdtemp(prefix="gdexp-scale-stores-"))
        self.root.chmod(0o755)

    def fresh(self, kind: str) -> str:
        n = len(list(self.root.iterdir()))
        if kind == "sqlite":
            return f"sqlite:///{self.root / f'mlflow-{n}.db'}"
        if self.pg is None:
            self.pg = Postgres(self.root / "pg")
        database = self.pg.database(f"mlflow_{n}")
        if kind == "postgres":  # the database itself, no server between
            (self.root / f"pg-{n}").mkdir()
            return database
        (self.root / f"server-{n}").mkdir()
        srv = MlflowServer(database, self.root / f"server-{n}" / "artifacts", self.root / f"s{n}.log")
        self.servers.append(srv)
        return srv.uri

    def close(self) -> None:
        for srv in self.servers:
            srv.stop()
        if self.pg:
            self.pg.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=10000)
    ap.add_argument("--table-runs", type=int, default=2000)
    ap.add_argument("--server-table-runs", type=int, default=1000)
    ap.add_argument("--writers", default="1,2,4")
    ap.add_argument("--full-writers", type=int, default=None, help="writers for the full sweep (default: gdexp's)")
    ap.add_argument("--full-stores", default="sqlite,postgres,server", help="stores of the full sweep ('' for none)")
    ap.add_argument("--floor-runs", type=int, default=None, help="runs the floor writes, scaled (default: all)")
    ap.add_argument("--no-readers", action="store_true", help="skip compare, sync and the UI after the SQLite sweep")
    ap.add_argument("--table-stores", default="sqlite,server", help="stores of the writers table ('' for none)")
    args = ap.parse_args()
    os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"  # the floor's client: no link per run
    from gdexp.sweeps.batched import writers_for

    stores = Stores()
    results: dict = {"machine": f"{psutil.cpu_count()} CPUs, {psutil.virtual_memory().total / 2**30:.0f} GiB"}
    try:
        for kind in ["sqlite", "postgres", "server"]:
            if kind in args.full_stores.split(","):
                uri = stores.fresh(kind)
                default_writers = writers_for(uri, args.full_writers)
                print(f"[{kind}] {args.runs} runs, batched, {default_writers} writers ...", flush=True)
                folder = Path(tempfile.mkdtemp(prefix="gdexp-scale-"))
                full = sweep(uri, args.runs, args.full_writers, folder)
                print(f"[{kind}]   {full}", flush=True)
                if kind == "sqlite" and not args.no_readers:
                    full["readers"] = readers(uri, folder, stores.fresh("sqlite"))
                    print(f"[{kind}]   readers {full['readers']}", flush=True)
                base = floor(stores.fresh(kind), args.runs, sample_run(uri), args.floor_runs)
                print(f"[{kind}]   floor {base}", flush=True)
                full["floor"] = base
                full["ratio_to_floor"] = round(full["wall_s"] / base["wall_s"], 2)
                results[f"full_{kind}"] = {"runs": args.runs, "writers": default_writers, **full}
            if kind in args.table_stores.split(","):
                table, runs = {}, args.table_runs if kind == "sqlite" else args.server_table_runs
                for w in [int(x) for x in args.writers.split(",")]:
                    uri = stores.fresh(kind)
                    print(f"[{kind}] {runs} runs, {w} writer(s) ...", flush=True)
                    table[w] = sweep(uri, runs, w)
                    print(f"[{kind}]   {table[w]}", flush=True)
                base = floor(stores.fresh(kind), runs, sample_run(uri), args.floor_runs)
                print(f"[{kind}]   floor {base}", flush=True)
                for w in table:
                    table[w]["ratio_to_floor"] = round(table[w]["wall_s"] / base["wall_s"], 2)
                results[f"writers_{kind}"] = {"runs": runs, "by_writers": table, "floor": base}
    finally:
        stores.close()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bench_scale.json").write_text(json.dumps(results, indent=2))
    report(results)


def report(results: dict) -> None:
    print(f"\nbench_scale ({results['machine']})")
    head = ("store", "runs", "writers", "wall s", "runs/s", "floor s", "ratio", "peak MiB")
    print("{:8} {:>6} {:>7} {:>8} {:>7} {:>8} {:>6} {:>8}".format(*head))
    for key, r in results.items():
        if key.startswith("full_"):
            rows = [(r["writers"], r)]
            fl = r["floor"]
        elif key.startswith("writers_"):
            rows = list(r["by_writers"].items())
            fl = r["floor"]
        else:
            continue
        kind = key.split("_", 1)[1]
        for w, row in rows:
            print(
                f"{kind:8} {r['runs']:>6} {w!s:>7} {row['wall_s']:>8} {row['runs_per_s']:>7} "
                f"{fl['wall_s']:>8} {row['ratio_to_floor']:>6} {row['peak_mib']:>8}"
            )
        print(f"{kind:8} {r['runs']:>6} {'floor':>7} {fl['wall_s']:>8} {fl['runs_per_s']:>7}   (MLflow's client)")
        for what, seconds in r.get("readers", {}).items():
            print(f"{kind:8} {r['runs']:>6} {what}: {seconds}")


if __name__ == "__main__":
    main()
