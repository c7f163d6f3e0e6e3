"""The task Hydra runs for every job, from the command line (:mod:`gdexp.run`) and from Python
(:mod:`gdexp.api`): one configuration trained, recorded and tracked; its failure kept as one line."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from gdexp.failures import job_failed
from gdexp.job import run_job
from gdexp.sweeps.pruning import TrialPruning
from gdexp.tracking.record import read_sweep, sweep_dir
from gdexp.tracking.uri import Target, scrub_credentials


def hydra_task(cfg: DictConfig, quiet: bool = False) -> dict[str, Any] | None:
    """Run the job Hydra composed. A job's error is kept for the caller to report in one line:
    raised here, Hydra would print its own message first (and, in a multirun, the other jobs must
    go on anyway)."""
    hc = HydraConfig.get()
    if hc.output_subdir:  # Hydra saved the command line as typed: no password stays on disk
        scrub_credentials(sorted((Path(hc.runtime.output_dir) / hc.output_subdir).glob("*.yaml")))
    multirun = hc.mode == RunMode.MULTIRUN
    launch_dir = Path(hc.runtime.cwd)
    try:
        sweep = read_sweep(sweep_dir(hc.sweep.dir, hc.runtime.cwd)) if multirun else None
        job_num = int(hc.job.num) if multirun and hc.job.num is not None else None
        target = Target.of(cfg.tracking, launch_dir) if sweep is not None else None
        pruning = TrialPruning.open(
            hc.sweeper, sweep, job_num, target.uri if target else None, launch_dir, int(cfg.epochs)
        )
        outcome = run_job(
            cfg,
            overrides=list(hc.overrides.task),
            output_dir=Path(hc.runtime.output_dir),
            launch_dir=launch_dir,
            sweep=sweep,
            quiet=quiet,
            job_num=job_num,
            prune=pruning,
        )
    except Exception as err:
        failed = job_failed(list(hc.overrides.task), err, multirun)
        if not multirun and failed["bad_input"]:
            drop_unused_run_dir(Path(hc.runtime.output_dir), Path(hc.runtime.cwd))
        return failed
    return {"status": "skipped"} if outcome is None else outcome.returned()


HYDRA_ONLY = {".hydra", "run.log"}  # what Hydra writes into a run's directory before the task starts


def drop_unused_run_dir(folder: Path, launch_dir: Path) -> None:
    """A single run refused for bad input trained nothing: the directory Hydra made for it
    (``outputs/DATE/TIME``, holding only Hydra's own files) goes, and so do the date folders
    it leaves empty. A folder with anything else in it, or the launch directory, is kept."""
    import shutil

    folder, launch_dir = folder.resolve(), launch_dir.resolve()
    if folder == launch_dir or folder in launch_dir.parents or not folder.is_dir():
        return
    if {p.name for p in folder.iterdir()} - HYDRA_ONLY:
        return
    # Hydra's handler on run.log goes with it: left open, the next job's logging would reopen it.
    loggers = [
        logging.getLogger(),
        *(v for v in logging.Logger.manager.loggerDict.values() if isinstance(v, logging.Logger)),
    ]
    for logger in loggers:
        for handler in list(logger.handlers):
            if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename).parent == folder:
                logger.removeHandler(handler)
                handler.close()
    shutil.rmtree(folder, ignore_errors=True)
    for parent in folder.parents:
        if parent == launch_dir or launch_dir not in parent.parents:
            break
        try:
            parent.rmdir()  # only an empty one
        except OSError:
            break
