"""Where a large batched sweep's time goes, and the store at the database's speed (on demand).

The grid is bench_scale.py's (200 runs per learning rate on ``line_intercept``). For ``--runs``
runs into a fresh store of each kind (``--stores``: ``sqlite``, ``postgres``: a database on a
throwaway PostgreSQL cluster, written directly), the whole command is timed four ways, in one run
of this script so that the ratios compare like with like:

- **no store**: ``tracking.enabled=false``: composing, training, the job directories and records;
- **client path**: ``GDEXP_BULK=0``: finished runs through MLflow's client, one at a time (the
  path before the bulk writer);
- **bulk path**: gdexp's default: finished runs many to a transaction
  (:mod:`gdexp.tracking.bulk`);
- **profile**: the bulk-path command again under cProfile, its main process's time split by
  step (start-up and checks, composing each job, preparing it, training, ending each run, handing
  runs to the writers, the sweep's end).

Beside them, two floors from one process writing copies of a run the sweep wrote: MLflow's own
client (create_run, log_batch, set_terminated a run), and the bulk writer (one transaction per
``--chunk`` runs), with the rows per second each reaches.

Usage: python benchmarks/bench_store.py [--runs 10000] [--stores sqlite,postgres] [--floor-runs 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import pstats
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_scale import check_store, grid, sample_run  # noqa: E402
from servers import Postgres  # noqa: E402  (the tests' throwaway server)

RESULTS = Path(__file__).resolve().parent / "results"
# The main process's time by step: the cumulative time of the functions that do each (a step's
# time includes what it calls; the steps do not overlap).
STEPS = {
    "start-up and checks (imports, the sweep's preflight)": ("gdexp/sweeps/callback.py", "on_multirun_start"),
    "compose each job's config (per-run values applied)": ("gdexp/sweeps/overrides.py", "apply_overrides"),
    "prepare each job (checks, params, hash, names)": ("gdexp/job.py", "prepare"),
    "train the populations": ("gdexp/training/population.py", "train_population"),
    "end each run (summary, config.yaml, records)": ("gdexp/job.py", "ended"),
    "hand runs to the writers and settle their ids": ("gdexp/sweeps/batched.py", "_settle"),
    "the sweep's end (writers finish, parent, summary)": ("gdexp/sweeps/callback.py", "on_multirun_end"),
}


def command(uri: str | None, runs: int, extra_env: dict[str, str], profile: Path | None = None) -> float:
    """The batched sweep, timed from the outside; its output checked."""
    folder = Path(tempfile.mkdtemp(prefix="gdexp-store-"))
    args = ["-m", "hydra/launcher=batched", *grid(runs)]
    args += [f"tracking.uri={uri}"] if uri else ["tracking.enabled=false"]
    python = [sys.executable, "-m", "cProfile", "-o", str(profile)] if profile else [sys.executable]
    start = time.perf_counter()
    done = subprocess.run(
        [*python, "-m", "gdexp.run", *args],
        cwd=folder,
        capture_output=True,
        text=True,
        env={**os.environ, "GDEXP_PROGRESS": "0", **extra_env},
    )
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"sweep failed ({done.returncode}):\n{done.stderr[-3000:]}")
    if uri:
        check_store(uri, runs)
    return round(wall, 1)


def split_profile(path: Path) -> dict[str, float]:
    """The main process's time by step (cumulative seconds under cProfile, which slows Python
    code about 1.5x: compare the steps with each other, not with the wall times)."""
    stats = pstats.Stats(str(path))
    split = {"whole command": 0.0, **dict.fromkeys(STEPS, 0.0)}
    for (filename, _, function), (_, _, _, cumtime, _) in stats.stats.items():  # type: ignore[attr-defined]
        name = filename.replace(os.sep, "/")
        if function == "main" and name.endswith("gdexp/run.py"):
            split["whole command"] = cumtime
        for step, (module, wanted) in STEPS.items():
            if name.endswith(module) and function == wanted:
                split[step] += cumtime
    return {k: round(v, 1) for k, v in split.items()}


def floors(uri: str, runs: int, chunk: int) -> dict:
    """MLflow's client and the bulk writer, each writing ``runs`` copies of a run the sweep wrote."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param

    from gdexp.tracking import protocol as p
    from gdexp.tracking.bulk import open_bulk

    tags, params, rows = sample_run(uri)
    client = MlflowClient(uri)
    out = {"rows_per_run": len(rows) + len(params) + len(tags) + 2}
    for kind in ("client", "bulk"):
        exp = client.create_experiment(f"floor-{kind}-{time.time_ns()}")
        now = int(time.time() * 1000)
        start = time.perf_counter()
        if kind == "client":
            ps, ms = [Param(k, v) for k, v in params.items()], [Metric(k, v, now, s) for k, v, s in rows]
            for i in range(runs):
                run = client.create_run(exp, run_name=f"floor-{i}", tags=tags)
                client.log_batch(run.info.run_id, metrics=ms, params=ps)
                client.set_terminated(run.info.run_id)
        else:
            writer, note = open_bulk(client, uri, exp)
            assert writer is not None, note
            finished = [p.FinishedRun(f"floor-{i}", tags, params, rows, "FINISHED") for i in range(runs)]
            for i in range(0, runs, chunk):
                writer.write(finished[i : i + chunk])
        wall = time.perf_counter() - start
        out[kind] = {
            "ms_per_run": round(1000 * wall / runs, 2),
            "rows_per_s": round(runs * out["rows_per_run"] / wall),
        }
    return out


class Fresh:
    """A fresh store per measurement: a SQLite file, or a database of one PostgreSQL cluster."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="gdexp-store-db-"))
        self.root.chmod(0o755)  # postgres runs as its own user
        self.pg: Postgres | None = None
        self.made = 0

    def new(self, kind: str) -> str:
        self.made += 1
        if kind == "sqlite":
            return f"sqlite:///{self.root / f'mlflow-{self.made}.db'}"
        if self.pg is None:
            self.pg = Postgres(self.root / "pg")
        return self.pg.database(f"store_{self.made}")

    def close(self) -> None:
        if self.pg is not None:
            self.pg.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=10000)
    ap.add_argument("--stores", default="sqlite,postgres")
    ap.add_argument("--floor-runs", type=int, default=1000)
    ap.add_argument("--chunk", type=int, default=64, help="runs per transaction in the bulk floor")
    ap.add_argument("--skip-client", action="store_true", help="leave out the (slow) client-path sweep")
    args = ap.parse_args()
    stores = Fresh()
    results: dict = {"runs": args.runs, "cpus": len(os.sched_getaffinity(0))}
    results["no store"] = command(None, args.runs, {})
    print(json.dumps(results), flush=True)
    for kind in filter(None, args.stores.split(",")):
        row: dict = {}
        if not args.skip_client:
            row["client path"] = command(stores.new(kind), args.runs, {"GDEXP_BULK": "0"})
        uri = stores.new(kind)
        row["bulk path"] = command(uri, args.runs, {})
        profile = stores.root / f"profile-{kind}.out"
        command(stores.new(kind), args.runs, {}, profile)
        row["profile (main process, s)"] = split_profile(profile)
        row["floors"] = floors(uri, args.floor_runs, args.chunk)
        results[kind] = row
        print(json.dumps({kind: row}), flush=True)
    stores.close()
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"store-{args.runs}.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
