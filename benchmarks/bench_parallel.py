"""Runs per second of a 12-job sweep with the joblib launcher, 1 and 2 workers (on demand).

Whole command, from start to exit, into a fresh embedded SQLite store each time; median of 3.
Usage: python benchmarks/bench_parallel.py [--repeat 3] [--epochs 200]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GRID = ["lr=0.01,0.05,0.1", "optimizer=sgd,adam", "bias=true,false"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=200)
    args = parser.parse_args()
    times: dict[str, list[float]] = {}
    launchers = {
        "basic (in-process)": [],
        "joblib, 1 worker": ["hydra/launcher=joblib", "hydra.launcher.n_jobs=1"],
        "joblib, 2 workers": ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
    }
    for _ in range(args.repeat):
        for name, extra in launchers.items():
            folder = Path(tempfile.mkdtemp(prefix="gdexp-par-"))
            start = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "gdexp.run", "-m", *extra, *GRID, f"epochs={args.epochs}"],
                cwd=folder,
                check=True,
                capture_output=True,
            )
            times.setdefault(name, []).append(time.perf_counter() - start)
    print(f"12 jobs x {args.epochs} epochs into a fresh SQLite store, median of {args.repeat}:\n")
    print("| launcher | seconds | runs / second |\n| --- | ---: | ---: |")
    for name, samples in times.items():
        m = statistics.median(samples)
        print(f"| {name} | {m:.1f} | {12 / m:.2f} |")


if __name__ == "__main__":
    main()
