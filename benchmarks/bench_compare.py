"""How fast gdexp.compare reads a large sweep (on demand, not part of the tests).

Makes (once) a real 1,000-job sweep with the harness, `seed=range(0,1000) init=normal`, in
benchmarks/results/compare-store/, then times reading every run with its summary metrics
(`select_runs`) and every run's full curves (`histories`), median of 5.

Usage: python benchmarks/bench_compare.py [--jobs 1000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    store = HERE / "results" / f"compare-store-{args.jobs}"
    store.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{store / 'mlflow.db'}"
    if not (store / "mlflow.db").exists():
        start = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "gdexp.run",
                "-m",
                f"seed=range(0,{args.jobs})",
                "init=normal",
                "engine=autograd",
                "epochs=100",
                f"tracking.uri={uri}",
                "hydra/job_logging=disabled",
            ],
            cwd=store,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        print(f"made a {args.jobs}-job sweep in {time.perf_counter() - start:.0f} s")

    from gdexp import compare

    select, read = [], []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        runs = compare.select_runs(sweep="latest", uri=uri)
        t1 = time.perf_counter()
        curves = compare.histories(runs, uri=uri)
        t2 = time.perf_counter()
        select.append(t1 - t0)
        read.append(t2 - t1)
    total = [a + b for a, b in zip(select, read)]
    print(f"{len(runs)} runs, {len(curves)} history rows")
    print("| step | median seconds |\n| --- | ---: |")
    print(f"| select_runs (runs, params, summary metrics, tags) | {statistics.median(select):.2f} |")
    print(f"| histories (every run's history.csv) | {statistics.median(read):.2f} |")
    print(f"| both: {len(runs)} runs with their curves | {statistics.median(total):.2f} |")
    (HERE / "results" / "compare.json").write_text(json.dumps({"runs": len(runs), "select": select, "read": read}))


if __name__ == "__main__":
    main()
