"""A sweep's jobs on Slurm (``hydra/launcher=slurm``): submitted as one job array through
submitit, waited for to the last, each job Slurm ended (cancelled, timed out, killed, failed on
a node) turned into a failed job that names its Slurm job and state.

What gdexp needs of the cluster: accounting (``sacct``, through which submitit sees a job end
without a result), a file system the nodes share for the sweep directory (the jobs' records and
submitit's pickles), and a tracking server the nodes reach (``tracking.uri=http://...``). A job
that Slurm requeues (``scontrol requeue``, preemption) runs again from the start in the same job
directory; its first attempt's run is KILLED and tagged as superseded by the run that finishes.
"""

from __future__ import annotations

import logging
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from omegaconf import OmegaConf

from gdexp.errors import warn
from gdexp.session import SESSION, JobFailure
from gdexp.tracking.tags import run_name
from gdexp.training.history import RunInterrupted

if TYPE_CHECKING:
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import BaseSubmititLauncher

log = logging.getLogger(__name__)


def _executor(launcher: BaseSubmititLauncher) -> Any:
    """A submitit executor with the launcher's parameters, as hydra-submitit-launcher builds it."""
    import submitit
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

    params = dict(launcher.params)
    init = {"folder": params.pop("submitit_folder")}
    if "max_num_timeout" in params:
        init["slurm_max_num_timeout"] = params.pop("max_num_timeout")
    executor = submitit.AutoExecutor(cluster="slurm", **init)
    common = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(**{k if k in common else f"slurm_{k}": v for k, v in params.items()})
    return executor


def check_accounting() -> str | None:
    """Why ``sacct`` does not answer here (None when it does): without accounting, submitit cannot
    see a job that Slurm ended without a result, and waits for it for ever."""
    import subprocess

    try:
        done = subprocess.run(["sacct", "-n", "-X", "-o", "JobID"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as err:
        return str(err)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    return None if done.returncode == 0 else (lines[-1] if lines else f"exit {done.returncode}")


def launch(launcher: BaseSubmititLauncher, job_overrides: list[list[str]], initial_job_idx: int) -> list[JobReturn]:
    """Submit the jobs as one array, then wait for each: one ``JobReturn`` per job, in order."""
    config = launcher.config
    why = check_accounting()
    if why:
        warn(
            f"sacct fails here ({why}): without Slurm accounting a job that is "
            "cancelled or killed looks pending for ever, and this sweep would wait for it"
        )
    executor = _executor(launcher)
    sweep_dir = Path(str(config.hydra.sweep.dir))
    sweep_dir.mkdir(parents=True, exist_ok=True)
    log.info(f"Submitit 'slurm' sweep output dir : {sweep_dir}")
    params = []
    for i, overrides in enumerate(job_overrides):
        log.info(f"\t#{initial_job_idx + i} : {' '.join(filter_overrides(overrides))}")
        params.append((overrides, "hydra.sweep.dir", initial_job_idx + i, f"job_id_for_{initial_job_idx + i}"))
    state = Singleton.get_state()
    jobs = executor.map_array(launcher, *zip(*[(*p, state) for p in params]))
    returns = []
    try:
        while not SESSION.stopping.wait(1.0) and not all(job.done() for job in jobs):
            pass  # a study's thread waits here, ready to cancel its jobs when the study stops
        if SESSION.stopping.is_set():
            raise RunInterrupted(signal.SIGTERM)
        for job, overrides in zip(jobs, job_overrides):
            returns.append(_returned(job, overrides, sweep_dir))
    except (RunInterrupted, KeyboardInterrupt):
        _cancel([job for job in jobs if not job.done()])
        raise
    return returns


def _returned(job: Any, overrides: list[str], sweep_dir: Path) -> JobReturn:
    """The job's own return, or, when Slurm ended it without one, a failure that says how."""
    from submitit.core.utils import UncompletedJobError

    try:
        return job.results()[0]
    except UncompletedJobError as err:
        failure = JobFailure(run_name(overrides), _why(job, err), bad_input=False)
    ret = JobReturn(overrides=overrides, working_dir=str(sweep_dir), task_name="slurm", status=JobStatus.COMPLETED)
    ret.return_value = failure.returned()
    print(f"gdexp: job [{failure.name}] failed: {failure.message}", flush=True)
    return ret


def _why(job: Any, err: Exception) -> str:
    """One line: the Slurm job, its state, the last line of its error, where its log is."""
    try:
        state = job.state
    except Exception:  # sacct unreachable: say what submitit said
        state = "UNKNOWN"
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    error = next((line for line in reversed(lines) if "Error" in line or "error:" in line), lines[-1] if lines else "")
    said = f"Slurm job {job.job_id} ended {(state.split() or ['UNKNOWN'])[0]} without a result"
    if "has not produced any output" not in error and error:
        said += f" ({error[:200]})"
    return f"{said}; its log: {job.paths.stderr}"


def _cancel(jobs: list[Any]) -> None:
    """Cancel what the interrupted sweep still waits for: Slurm sends SIGTERM, runs end KILLED."""
    for job in jobs:
        try:
            job.cancel(check=False)
        except OSError:
            pass
    if jobs:
        print(f"gdexp: cancelled {len(jobs)} Slurm job(s) of the interrupted sweep", flush=True)
