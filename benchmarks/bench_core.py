"""The core harness's benchmark (on demand, not part of the tests).

1. Per-epoch time, in one process: a raw PyTorch loop (the seeds' loop on nn.Linear) against each
   gdexp engine with tracking off, on the seeds' problem.
2. Whole-process time of a 3000-epoch run: gdexp with tracking on (a warm SQLite store), with
   ``tracking.enabled=false``, and the same training logged with Lightning's stock MLFlowLogger.

Medians over repeats, runs of the three kinds interleaved so that machine noise hits all alike.
Usage: python benchmarks/bench_core.py [--repeat 5] [--stock-repeat 3] [--epochs 3000]
Writes benchmarks/results/core.json and prints a markdown table for the README.
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

HERE = Path(__file__).resolve().parent


def raw_loop(epochs: int) -> float:
    import torch
    import torch.nn.functional as F

    X = torch.tensor([[1.0], [2.0], [3.0], [4.0]])
    Y = 2 * X
    linear = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.zeros_(linear.weight)
    opt = torch.optim.SGD(linear.parameters(), lr=0.01)
    start = time.perf_counter()
    for _ in range(epochs):
        loss = F.mse_loss(linear(X), Y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return time.perf_counter() - start


def engine_loop(engine: str, epochs: int, folder: Path) -> float:
    from hydra import compose, initialize_config_dir

    from gdexp.config import CONF_DIR, register_configs
    from gdexp.job import run_job

    register_configs()
    overrides = [f"engine={engine}", f"epochs={epochs}", "tracking.enabled=false"]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    start = time.perf_counter()
    run_job(cfg, overrides=overrides, output_dir=folder, launch_dir=folder, quiet=True)
    return time.perf_counter() - start


def whole_process(cmd: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--stock-repeat", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3000)
    args = parser.parse_args()
    E = args.epochs
    folder = Path(tempfile.mkdtemp(prefix="gdexp-bench-"))
    results: dict[str, list[float]] = {}

    kinds = {"raw PyTorch loop": lambda: raw_loop(E)}
    kinds.update({f"engine={e}": (lambda e=e: engine_loop(e, E, folder)) for e in ("lightning", "autograd", "numpy")})
    for name in kinds:
        kinds[name]()  # warm-up: first-call costs (imports, Trainer set-up) are not per-epoch time
    for _ in range(args.repeat):
        for name, fn in kinds.items():
            results.setdefault(name, []).append(fn() / E * 1e3)

    uri = f"sqlite:///{folder / 'mlflow.db'}"
    gdexp = [sys.executable, "-m", "gdexp.run", f"epochs={E}", f"tracking.uri={uri}"]
    stock = [sys.executable, str(HERE / "stock_mlflow_logger.py"), f"sqlite:///{folder / 'stock.db'}", str(E)]
    whole_process(gdexp, folder)  # warm stores: schema creation is a one-off, not per run
    whole_process([*stock[:3], "1"], folder)
    processes = {
        "gdexp, tracking on": gdexp,
        "gdexp, tracking.enabled=false": [*gdexp[:4], "tracking.enabled=false"],
        "Lightning MLFlowLogger (stock)": stock,
    }
    for i in range(args.repeat):
        for name, cmd in processes.items():
            if name.endswith("(stock)") and i >= args.stock_repeat:
                continue
            results.setdefault(name, []).append(whole_process(cmd, folder))

    median = {k: statistics.median(v) for k, v in results.items()}
    raw = median["raw PyTorch loop"]
    tracked, untracked = median["gdexp, tracking on"], median["gdexp, tracking.enabled=false"]
    stock_s = median["Lightning MLFlowLogger (stock)"]
    print(f"\nPer-epoch time, {E} epochs, median of {args.repeat}:\n")
    print("| loop | ms / epoch | vs raw loop |\n| --- | ---: | ---: |")
    for name in kinds:
        print(f"| {name} | {median[name]:.4f} | {median[name] / raw:.1f}x |")
    print(
        f"\nWhole process, {E}-epoch run (python start to exit), median of {args.repeat} ({args.stock_repeat} stock):\n"
    )
    print("| command | seconds | vs untracked |\n| --- | ---: | ---: |")
    for name in processes:
        print(f"| {name} | {median[name]:.2f} | {median[name] / untracked:.2f}x |")
    print(
        f"\ntracking overhead: {tracked / untracked:.2f}x the untracked run (target <= 1.3x); "
        f"stock MLFlowLogger / gdexp tracked: {stock_s / tracked:.1f}x (target >= 3x)"
    )
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "core.json").write_text(json.dumps({"epochs": E, "samples": results, "median": median}, indent=2))


if __name__ == "__main__":
    main()
