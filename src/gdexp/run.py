"""``python -m gdexp.run`` (``gdexp-run``): one run, or a Hydra multirun, tracked in MLflow.

The entry point only: Hydra composes the config, :func:`gdexp.job.run_job` runs the job, and
:func:`main` turns whatever went wrong into one line and an exit status (2 for bad input, 1 for a
failure while running, 128 + N for signal N).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from gdexp.checks import is_config_error, one_line
from gdexp.config import CONF_DIR, register_configs
from gdexp.job import JOB_ERRORS, job_failed, run_job
from gdexp.sweeps.callback import SweepAborted
from gdexp.tracking.client import Tracker
from gdexp.tracking.record import read_sweep, sweep_dir
from gdexp.tracking.tags import run_name
from gdexp.training.history import RunInterrupted

register_configs()
_TASK_STARTED: list[bool] = []  # empty while Hydra is still composing the configuration


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def _hydra_main(cfg: DictConfig) -> dict[str, Any] | None:
    # A job's error is kept for main() to report in one line: raised here, Hydra would print its
    # own message first (and, in a multirun, the other jobs must go on anyway).
    _TASK_STARTED.append(True)
    hc = HydraConfig.get()
    try:
        multirun = hc.mode == RunMode.MULTIRUN
        outcome = run_job(
            cfg,
            overrides=list(hc.overrides.task),
            output_dir=Path(hc.runtime.output_dir),
            launch_dir=Path(hc.runtime.cwd),
            sweep=read_sweep(sweep_dir(hc.sweep.dir, hc.runtime.cwd)) if multirun else None,
        )
    except Exception as err:
        job_failed(list(hc.overrides.task), err, hc.mode == RunMode.MULTIRUN)
        return None
    return {"status": "skipped"} if outcome is None else outcome.returned()


def main() -> None:
    """The console script: Hydra's errors and ours become one line and a non-zero exit."""
    user_wants_trace = os.environ.get("HYDRA_FULL_ERROR") == "1"
    os.environ["HYDRA_FULL_ERROR"] = "1"  # let exceptions reach us instead of Hydra's printer
    try:
        _hydra_main()
        if JOB_ERRORS:
            overrides, first = JOB_ERRORS[0]
            raise (
                first
                if len(JOB_ERRORS) == 1
                else RuntimeError(
                    f"{len(JOB_ERRORS)} jobs failed; the first, [{run_name(overrides)}]: {one_line(first)}"
                )
            )
    except RunInterrupted as err:
        print(f"gdexp: interrupted by {err}; the run so far is recorded as KILLED", file=sys.stderr)
        Tracker.close_all()
        sys.exit(128 + err.signum)
    except (Exception, SweepAborted) as err:  # SweepAborted: a BaseException, see gdexp.sweeps.callback
        if user_wants_trace:
            raise
        cause = err.error if isinstance(err, SweepAborted) else err
        print(f"gdexp: error: {one_line(cause)}", file=sys.stderr)
        Tracker.close_all()
        # Whatever fails before the first job starts is the configuration's fault.
        sys.exit(2 if is_config_error(cause) or not _TASK_STARTED else 1)


if __name__ == "__main__":
    # Run the module's importable twin, so that its classes are the ones other modules see.
    from gdexp.run import main as _main

    _main()
