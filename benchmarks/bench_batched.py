"""A 1,000-run grid through ``hydra/launcher=batched``, against the per-run path (on demand).

The grid: 25 learning rates x sgd, momentum, adam, rmsprop x bias on/off x 100, 250, 500, 750 and
1000 epochs on ``line_intercept``. Each repeat runs the whole command into a fresh embedded SQLite
store and then checks that the store holds all 1,000 runs, FINISHED, under one parent, with their
curves and artifacts. The per-run path (Hydra's basic launcher, a Lightning Trainer per job) runs
an even sample of the same grid; its seconds per run give the ratio.
Usage: python benchmarks/bench_batched.py [--repeat 3] [--sample 40]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

LRS = [f"{v:.4g}" for v in np.geomspace(1e-3, 0.3, 25)]
OPTIMIZERS = ["sgd", "momentum", "adam", "rmsprop"]
EPOCHS = [100, 250, 500, 750, 1000]
GRID = [
    f"lr={','.join(LRS)}",
    f"optimizer={','.join(OPTIMIZERS)}",
    "bias=true,false",
    f"epochs={','.join(map(str, EPOCHS))}",
    "data=line_intercept",
]
RESULTS = Path(__file__).resolve().parent / "results"


def sweep(args: list[str]) -> tuple[float, Path]:
    folder = Path(tempfile.mkdtemp(prefix="gdexp-batched-"))
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "gdexp.run", "-m", *args], cwd=folder, check=True, capture_output=True)
    return time.perf_counter() - start, folder


def check_store(folder: Path, runs: int, thinned: bool = True) -> dict[str, int]:
    """Every run in MLflow, FINISHED, under one parent, with its curves and artifacts."""
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("gdexp")
    found = client.search_runs([experiment.experiment_id], max_results=5000)
    parents = [r for r in found if r.data.tags.get("gdexp.role") == "sweep"]
    children = [r for r in found if r.data.tags.get("mlflow.parentRunId")]
    assert len(parents) == 1 and len(children) == runs, (len(parents), len(children))
    assert {r.info.status for r in found} == {"FINISHED"}
    for child in children:
        wanted = {"final_loss", "dist_to_opt", "loss", "w"} | ({"b"} if child.data.params["bias"] == "true" else set())
        assert wanted <= set(child.data.metrics), child.info.run_name
    for child in children[:: max(1, runs // 25)]:  # curves and artifacts, on a sample
        epochs = int(child.data.metrics["epochs_run"])
        steps = [m.step for m in client.get_metric_history(child.info.run_id, "loss")]
        assert steps[0] == 1 and steps[-1] == epochs and len(steps) == (min(epochs, 100) if thinned else epochs)
        assert {a.path for a in client.list_artifacts(child.info.run_id)} == {
            "config.yaml",
            "history.csv",
            "loss_curve.png",
        }
    return {s: sum(r.data.tags.get("gdexp.status") == s for r in children) for s in ("converged", "diverged")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--sample-lrs", type=int, default=3, help="learning rates of the per-run sample")
    parser.add_argument("--repeat-sample", type=int, default=1)
    args = parser.parse_args()

    batched = []
    for i in range(args.repeat):
        seconds, folder = sweep(["hydra/launcher=batched", *GRID])
        statuses = check_store(folder, 1000)
        batched.append(seconds)
        print(f"batched, repeat {i + 1}: {seconds:.1f} s, 1000 runs in MLflow ({statuses})", flush=True)

    # The per-run path on a sample of the same grid: every optimizer, bias and epochs value, with
    # a few of the learning rates, through Hydra's basic launcher (one Trainer per job).
    lrs = LRS[:: len(LRS) // (args.sample_lrs - 1)][: args.sample_lrs]
    n_sample = len(lrs) * len(OPTIMIZERS) * 2 * len(EPOCHS)
    per_run = []
    for _ in range(args.repeat_sample):
        seconds, folder = sweep([f"lr={','.join(lrs)}", *GRID[1:]])
        check_store(folder, n_sample, thinned=False)
        per_run.append(seconds / n_sample)

    b, per_job = statistics.median(batched), statistics.median(per_run)
    result = {
        "batched_seconds": batched,
        "batched_median": b,
        "per_run_sample_jobs": n_sample,
        "per_run_seconds_per_job": per_run,
        "per_run_seconds_per_job_median": per_job,
        "per_run_1000_extrapolated": per_job * 1000,
        "ratio": per_job * 1000 / b,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bench_batched.json").write_text(json.dumps(result, indent=2))
    print("\n1,000-run grid (25 lr x 4 optimizers x bias x 5 epochs) on line_intercept:\n")
    print("| path | seconds | runs / second |\n| --- | ---: | ---: |")
    print(f"| `hydra/launcher=batched`, 1,000 runs, median of {len(batched)} | {b:.1f} | {1000 / b:.1f} |")
    print(f"| per-run path (basic launcher), {n_sample}-job sample, per run | {per_job:.3f} | {1 / per_job:.2f} |")
    print(f"| per-run path, extrapolated to 1,000 runs | {per_job * 1000:.0f} | {1 / per_job:.2f} |")
    print(f"\nbatched / per-run: {result['ratio']:.1f}x faster")


if __name__ == "__main__":
    main()
