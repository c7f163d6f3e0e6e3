"""Times for ``scripts/gpu_check.sh``: the same sweeps with ``accelerator=cpu`` and ``accelerator=gpu``
on this machine, and a 100,000-member batched population in-process; writes ``gpu_check.json``
and ``gpu_check.md`` (with the test results of the check) to the folder given.

Usage: python scripts/gpu_timings.py DIR
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
PER_RUN = ["lr=0.01,0.02,0.05,0.1", "optimizer=sgd,adam", "epochs=2000", "data=line_intercept", "bias=true"]
LRS = ",".join(f"{v:.4g}" for v in np.geomspace(1e-3, 0.3, 125))
BATCHED = ["hydra/launcher=batched", f"lr={LRS}", "optimizer=sgd,adam", "bias=true,false", "epochs=1000,2000"]


def sweep(args: list[str], accelerator: str) -> float:
    """Wall seconds of the whole command, tracking off (the device's share, not the store's)."""
    folder = tempfile.mkdtemp(prefix="gdexp-gpu-")
    cmd = [sys.executable, "-m", "gdexp.run", "-m", *args, f"accelerator={accelerator}", "tracking.enabled=false"]
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=folder, capture_output=True, text=True, env={**os.environ, "GDEXP_PROGRESS": "0"})
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-2000:]}")
    return time.perf_counter() - start


def population(members: int, accelerator: str) -> float:
    sys.path.insert(0, str(REPO / "tests"))
    from test_gpu import _population

    lrs = np.geomspace(1e-3, 0.1, members)
    start = time.perf_counter()
    _population(lrs, accelerator)
    return time.perf_counter() - start


def tests(xml: Path) -> str:
    if not xml.is_file():
        return "not run"
    suite = ET.parse(xml).getroot()
    suite = suite if suite.tag == "testsuite" else suite[0]
    failed = int(suite.get("failures", 0)) + int(suite.get("errors", 0))
    total, skipped = int(suite.get("tests", 0)), int(suite.get("skipped", 0))
    return f"{total - failed - skipped} passed, {failed} failed, {skipped} skipped"


def main() -> None:
    import torch

    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    timings = {}
    for name, run in (
        ("per-run sweep: 8 runs x 2000 epochs (basic launcher)", lambda a: sweep(PER_RUN, a)),
        ("batched sweep: 1000 runs x up to 2000 epochs", lambda a: sweep(BATCHED, a)),
        ("population: 100,000 members x 200 epochs, in-process", lambda a: population(100_000, a)),
    ):
        cpu, gpu = run("cpu"), run("gpu")
        timings[name] = {"cpu_s": round(cpu, 2), "gpu_s": round(gpu, 2), "cpu_over_gpu": round(cpu / gpu, 2)}
        print(f"  {name}: cpu {cpu:.2f} s, gpu {gpu:.2f} s, {cpu / gpu:.2f}x", flush=True)
    result = {
        "device": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "suites_on_gpu": tests(out / "suites_on_gpu.xml"),
        "gpu_tests": tests(out / "gpu_tests.xml"),
        "timings": timings,
    }
    (out / "gpu_check.json").write_text(json.dumps(result, indent=2))
    lines = [
        f"# gpu_check: {result['device']} (torch {result['torch']}, CUDA {result['cuda']})",
        "",
        f"- seed tables and engine equivalence, accelerator=gpu: {result['suites_on_gpu']}",
        f"- gpu tests: {result['gpu_tests']}",
        "",
        "| what | cpu s | gpu s | cpu / gpu |",
        "|---|---|---|---|",
        *[f"| {k} | {v['cpu_s']} | {v['gpu_s']} | {v['cpu_over_gpu']} |" for k, v in timings.items()],
    ]
    (out / "gpu_check.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
