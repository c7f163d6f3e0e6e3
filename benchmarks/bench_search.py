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
3. Pruning inside a population: 64 trials in batches of 16, TPE, batched, with and without
   ``successive_halving`` (``--pruner-args``), same seeds, tracking off: member-epochs trained
   (the sum of every run's ``epochs_run``), wall time, best final loss and its lr.
4. The batch barrier: 20 trials of ``epochs=choice(200,12000)`` (durations 60x apart) through
   joblib with 2 workers, trials asked as workers free up, against the same study through the
   batch loop of an earlier commit (``--barrier-commit``, extracted with ``git archive``): how busy
   the workers were, from the runs' own start and end times in MLflow.

Usage: python benchmarks/bench_search.py [--trials 200] [--n-jobs 20] [--seeds 5] [--only 1,2,3,4]
"""

from __future__ import annotations

import argparse
import json
import os
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


def command(folder: Path, args: list[str], env: dict[str, str] | None = None) -> float:
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "gdexp.run", "-m", *args], cwd=folder, check=True, capture_output=True, env=env
    )
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


def member_epochs(folder: Path) -> tuple[float, float, float | None]:
    """Every run's epochs_run summed; the best final loss of a run that ended by itself, and its lr."""
    total, best, best_lr = 0.0, np.inf, None
    for record in folder.rglob("run.json"):
        run = json.loads(record.read_text())
        metrics = {k: v for k, v, _ in run["metrics"]}
        total += metrics.get("epochs_run", 0.0)
        if run["tags"].get("gdexp.status") in ("converged", "max_epochs") and metrics["final_loss"] < best:
            best, best_lr = metrics["final_loss"], float(run["params"]["lr"])
    return total, best, best_lr


def pruning(seeds: int, pruner_args: str) -> dict[str, list[dict[str, float | None]]]:
    out: dict[str, list[dict[str, float | None]]] = {"none": [], "successive_halving": []}
    for seed in range(seeds):
        for pruner in out:
            folder = Path(tempfile.mkdtemp(prefix=f"gdexp-prune-{pruner}-"))
            extra = (
                []
                if pruner == "none"
                else [f"hydra.sweeper.pruner={pruner}", f"hydra.sweeper.pruner_args={{{pruner_args}}}"]
            )
            wall = command(
                folder,
                [
                    "hydra/sweeper=optuna",
                    "hydra/launcher=batched",
                    "hydra.sweeper.n_trials=64",
                    "hydra.sweeper.n_jobs=16",
                    f"hydra.sweeper.seed={seed}",
                    SPACE,
                    *PROBLEM,
                    "tracking.enabled=false",
                    *extra,
                ],
            )
            epochs, best, lr = member_epochs(folder)
            out[pruner].append(
                {"seed": seed, "member_epochs": epochs, "wall_s": wall, "best_loss": best, "best_lr": lr}
            )
        a, b = out["successive_halving"][-1], out["none"][-1]
        print(
            f"  seed {seed}: member-epochs {a['member_epochs']:.0f} / {b['member_epochs']:.0f} = "
            f"{a['member_epochs'] / b['member_epochs']:.2f}x; wall {a['wall_s']:.1f} / {b['wall_s']:.1f} s; "
            f"best loss {a['best_loss']:.3g} / {b['best_loss']:.3g} = {a['best_loss'] / b['best_loss']:.2f}x; "
            f"best lr {a['best_lr']:.4f} ({abs(a['best_lr'] / LR_OPTIMAL - 1) * 100:.1f}% from lr_optimal) / "
            f"{b['best_lr']:.4f}",
            flush=True,
        )
    return out


LR_OPTIMAL = 2 / 17


def busy(folder: Path, workers: int) -> float:
    """Run time over workers x the study's span, from the trials' MLflow start and end times."""
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    runs = [r for r in client.search_runs(["1"], max_results=1000) if "gdexp.trial" in r.data.tags]
    span = max(r.info.end_time for r in runs) - min(r.info.start_time for r in runs)
    return sum(r.info.end_time - r.info.start_time for r in runs) / (workers * span)


def barrier(commit: str) -> dict[str, float]:
    args = [
        "hydra/sweeper=optuna",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "hydra.sweeper.n_trials=20",
        "hydra.sweeper.n_jobs=2",
        "hydra.sweeper.sampler=random",
        "hydra.sweeper.seed=0",
        "lr=tag(log,interval(0.01,0.1))",
        "epochs=choice(200,12000)",
    ]
    old = Path(tempfile.mkdtemp(prefix="gdexp-barrier-code-"))
    repo = Path(__file__).resolve().parents[1]
    archive = subprocess.run(["git", "archive", commit, "src", "conf"], cwd=repo, check=True, capture_output=True)
    subprocess.run(["tar", "-x", "-C", str(old)], input=archive.stdout, check=True)
    out = {}
    for name, env in (("async", None), ("barrier", {**os.environ, "PYTHONPATH": str(old / "src")})):
        folder = Path(tempfile.mkdtemp(prefix=f"gdexp-barrier-{name}-"))
        out[f"{name}_wall_s"] = command(folder, args, env)
        out[name] = busy(folder, 2)
        print(
            f"  {name:8s} workers busy {out[name] * 100:.0f}% of the study's time; {out[f'{name}_wall_s']:.1f} s",
            flush=True,
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--n-jobs", type=int, default=20)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--budget", type=int, default=100)
    parser.add_argument("--only", default="1,2,3,4")
    parser.add_argument("--pruner-args", default="min_resource:30,reduction_factor:4")
    parser.add_argument("--barrier-commit", default="fbaf9b7")
    args = parser.parse_args()
    only = {int(p) for p in args.only.split(",")}
    results: dict[str, object] = {}
    RESULTS.mkdir(exist_ok=True)
    if 3 in only:
        print(f"3. pruning in a population: successive_halving {{{args.pruner_args}}} against none:", flush=True)
        results["pruning"] = pruning(args.seeds, args.pruner_args)
    if 4 in only:
        print(
            f"4. the batch barrier (joblib, 2 workers, durations 60x apart; barrier: {args.barrier_commit}):",
            flush=True,
        )
        results["barrier"] = barrier(args.barrier_commit)
    if only & {3, 4}:
        (RESULTS / "bench_search_pruning.json").write_text(json.dumps(results, indent=2))
    if not only & {1, 2}:
        return

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
