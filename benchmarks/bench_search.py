"""Search benchmarks (on demand): ``hydra/sweeper=optuna`` on the issue's problem, plain SGD on
``line_intercept`` with a bias, ``lr=tag(log,interval(0.001,0.3))``, 300 epochs, minimising
``final_loss`` (the theory's answer: lr_optimal = 2/17 = 0.1176, divergence past 0.1198).

1. Wall time of a 200-trial study through Hydra's basic launcher (a job at a time, each its own
   Lightning Trainer) and through the batched launcher (a batch of ``n_jobs`` trials trained as one
   population), same sampler, same seed, same batches, each the whole command into a fresh store.
2. How many trials TPE and random sampling need before the best loss so far comes within 1% of the
   best loss there is (from a dense grid of 400 learning rates through the batched launcher), and
   within 2x and 10x of it (the loss spans ten decades over the interval and falls off a cliff at
   the stability bound: 1% is a needle), over several seeds, tracking off.

Usage: python benchmarks/bench_search.py [--trials 200] [--n-jobs 20] [--seeds 5]
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
import optuna

PROBLEM = ["data=line_intercept", "bias=true", "epochs=300"]
SPACE = "lr=tag(log,interval(0.001,0.3))"
RESULTS = Path(__file__).resolve().parent / "results"


def command(folder: Path, args: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "gdexp.run", "-m", *args], cwd=folder, check=True, capture_output=True)
    return time.perf_counter() - start


def study_of(folder: Path) -> optuna.Study:
    storage = f"sqlite:///{folder / 'optuna.db'}"
    (summary,) = optuna.get_all_study_summaries(storage)
    return optuna.load_study(study_name=summary.study_name, storage=storage)


def wall_times(trials: int, n_jobs: int) -> dict[str, float]:
    settings = [
        "hydra/sweeper=optuna",
        f"hydra.sweeper.n_trials={trials}",
        f"hydra.sweeper.n_jobs={n_jobs}",
        "hydra.sweeper.sampler=tpe",
        "hydra.sweeper.seed=0",
        SPACE,
        *PROBLEM,
    ]
    out = {}
    for launcher in ("batched", "basic"):
        folder = Path(tempfile.mkdtemp(prefix=f"gdexp-search-{launcher}-"))
        out[launcher] = command(folder, [*settings, f"hydra/launcher={launcher}"])
        found = study_of(folder)
        assert len(found.trials) == trials, (launcher, len(found.trials))
        out[f"{launcher}_best_lr"] = found.best_params["lr"]
        print(
            f"  {launcher:8s} {trials} trials: {out[launcher]:7.1f} s; best lr {found.best_params['lr']:.4f}",
            flush=True,
        )
    return out


def best_there_is() -> float:
    """The best final loss over a dense log grid of learning rates (tracking off)."""
    folder = Path(tempfile.mkdtemp(prefix="gdexp-search-grid-"))
    lrs = ",".join(f"{v:.6g}" for v in np.geomspace(0.001, 0.3, 400))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "gdexp.run",
            "-m",
            "hydra/launcher=batched",
            f"lr={lrs}",
            *PROBLEM,
            "tracking.enabled=false",
        ],
        cwd=folder,
        check=True,
        capture_output=True,
    )
    losses = []
    for record in folder.rglob("run.json"):
        metrics = {k: v for k, v, _ in json.loads(record.read_text())["metrics"]}
        if not metrics.get("diverged") and np.isfinite(metrics.get("final_loss", np.nan)):
            losses.append(metrics["final_loss"])
    return min(losses)


def trials_to_reach(sampler: str, seed: int, targets: list[float], budget: int, n_jobs: int) -> list[int | None]:
    """For each target, the number of trials after which the best loss so far is within it."""
    folder = Path(tempfile.mkdtemp(prefix=f"gdexp-search-{sampler}-"))
    command(
        folder,
        [
            "hydra/sweeper=optuna",
            "hydra/launcher=batched",
            f"hydra.sweeper.n_trials={budget}",
            f"hydra.sweeper.n_jobs={n_jobs}",
            f"hydra.sweeper.sampler={sampler}",
            f"hydra.sweeper.seed={seed}",
            SPACE,
            *PROBLEM,
            "tracking.enabled=false",
        ],
    )
    reached: list[int | None] = [None] * len(targets)
    best = np.inf
    for trial in sorted(study_of(folder).trials, key=lambda t: t.number):
        if trial.value is not None:
            best = min(best, trial.value)
        for i, target in enumerate(targets):
            if reached[i] is None and best <= target:
                reached[i] = trial.number + 1
    return reached


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--n-jobs", type=int, default=20)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--budget", type=int, default=100)
    args = parser.parse_args()

    print(f"1. {args.trials} trials, {args.n_jobs} a batch, TPE seed 0:", flush=True)
    times = wall_times(args.trials, args.n_jobs)
    ratio = times["basic"] / times["batched"]
    print(f"  basic / batched: {ratio:.1f}x", flush=True)

    reference = best_there_is()
    factors = [1.01, 2.0, 10.0]
    n_jobs = max(1, args.n_jobs // 2)
    print(f"2. trials until the best final loss so far is within a factor of the best there is ({reference:.4g});")
    print(f"   {n_jobs} trials a batch, budget {args.budget}, seeds 0-{args.seeds - 1} ('-': not reached):")
    reached: dict[str, list[list[int | None]]] = {}
    for sampler in ("tpe", "random"):
        reached[sampler] = [
            trials_to_reach(sampler, seed, [reference * f for f in factors], args.budget, n_jobs)
            for seed in range(args.seeds)
        ]
        for i, factor in enumerate(factors):
            per_seed = [r[i] for r in reached[sampler]]
            got = sorted(n if n is not None else args.budget + 1 for n in per_seed)
            median = statistics.median(got)
            shown = ", ".join("-" if n is None else str(n) for n in per_seed)
            median_text = f"{median:g}" if median <= args.budget else f"> {args.budget}"
            print(f"  {sampler:6s} within {factor:g}x: {shown} (median {median_text})", flush=True)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "bench_search.json"
    out.write_text(json.dumps({"times": times, "ratio": ratio, "reference": reference, "reached": reached}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
