"""The README's screenshots of MLflow's UI, taken the way a user gets there.

    python scripts/screenshots.py [--out docs]

In a fresh directory: a batched sweep (``python -m gdexp.run -m ...``), then ``gdexp-ui`` on a free
port, then headless Chromium on the links it prints: the sweep's parent run (``ui-sweep.png``) and
the best run's metric charts (``ui-run-curves.png``). Needs Debian's ``chromium`` and
``chromium-driver`` (``bash scripts/setup.sh --test`` installs them).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SWEEP = ["-m", "hydra/launcher=batched", "lr=0.01,0.03,0.1,0.12", "optimizer=sgd,momentum", "epochs=120"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _browser():  # the test suite's WebDriver client: tests/browser.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    import browser

    why = browser.available()
    if why:
        sys.exit(f"screenshots: {why}")
    return browser.Browser(width=1700, height=1150)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "docs")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="gdexp-screens-"))
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["PYTHONUNBUFFERED"] = "1"
    sweep = subprocess.run(
        [sys.executable, "-m", "gdexp.run", *SWEEP], cwd=work, env=env, capture_output=True, text=True
    )
    if sweep.returncode != 0:
        sys.exit(f"screenshots: the sweep failed: {sweep.stderr.strip().splitlines()[-1:]}")
    ui = subprocess.Popen(
        [sys.executable, "-m", "gdexp.ui", "--port", str(free_port())],
        cwd=work,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        lines: list[str] = []
        deadline = time.monotonic() + 180
        assert ui.stdout is not None
        while time.monotonic() < deadline and not any("latest sweep" in line for line in lines):
            line = ui.stdout.readline()
            if not line:
                sys.exit(f"screenshots: gdexp-ui ended: {''.join(lines)}")
            lines.append(line)
        sweep_link = re.search(r"latest sweep \(.*\): (\S+)", "".join(lines))
        if sweep_link is None:
            sys.exit(f"screenshots: no sweep link from gdexp-ui: {''.join(lines)}")
        best = re.search(r"^\s+lr=\S+\s+converged\s+\S+\s+\S+\s+([0-9a-f]{32})$", sweep.stdout, re.M)
        if best is None:
            sys.exit("screenshots: no converged run in the sweep's summary")
        base = sweep_link.group(1).split("/#/")[0]
        experiment = re.search(r"/experiments/(\d+)/", sweep_link.group(1))
        assert experiment is not None
        run_page = f"{base}/#/experiments/{experiment.group(1)}/runs/{best.group(1)}"
        curves = f"{run_page}/model-metrics?workflowType=machine_learning"
        args.out.mkdir(parents=True, exist_ok=True)
        with _browser() as page:
            page.open(sweep_link.group(1))
            page.wait_for("MLflow Assistant")
            page.click("button[aria-label*='Close' i], button[aria-label*='close' i]")  # the assistant's panel
            page.wait_for("Description", "A sweep of 8 runs", "Child runs", "runs_converged")
            page.screenshot(args.out / "ui-sweep.png")
            page.resize(1500, 820)
            page.open(curves)
            page.wait_for("Model metrics", "epochs_run")
            page.type("input[placeholder='Search metric charts']", "^(loss|w)$")  # the curves, not the scalars
            page.wait_until("return document.querySelectorAll('.js-plotly-plot .main-svg').length >= 2")
            time.sleep(2)
            page.screenshot(args.out / "ui-run-curves.png")
        print(f"wrote {args.out / 'ui-sweep.png'} and {args.out / 'ui-run-curves.png'}")
    finally:
        ui.terminate()
        ui.wait(30)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
