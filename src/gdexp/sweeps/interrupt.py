"""What an interrupted sweep leaves behind: no process still running, no run still RUNNING.

When SIGINT or SIGTERM reaches the command (Ctrl-C, ``kill``, a scheduler), jobs that were
training stop at their next batch and record themselves KILLED. What may remain: worker processes
of a parallel launcher (joblib's loky workers, submitit's local jobs) and their writers, and jobs
those workers could not record. :func:`close_sweeps` stops the processes, then has every sweep the
session opened (:meth:`gdexp.sweeps.parent.SweepRun.interrupted`) mark every record still RUNNING
as KILLED (its job is gone: its curves are kept up to the last flush) and replay the sweep
directory into the store, which also ends the sweep's parent run KILLED.
"""

from __future__ import annotations

from gdexp.session import SESSION


def stop_children(grace: float = 5.0) -> int:
    """Terminate this process's descendants, then kill what is left after ``grace`` seconds; how
    many there were. The process's own MLflow writers are closed before this is called."""
    import psutil  # only an interrupted command pays for it

    children = [c for c in psutil.Process().children(recursive=True) if not _resource_tracker(c)]
    for child in children:
        try:
            child.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(children, timeout=grace)
    for child in alive:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass
    return len(children)


def _resource_tracker(process: object) -> bool:
    """joblib's resource tracker cleans up after its parent exits: it is left to do so."""
    try:
        return "resource_tracker" in " ".join(process.cmdline())  # type: ignore[attr-defined]
    except Exception:
        return False


def close_sweeps(stop_workers: bool = True) -> None:
    """After an interrupt: stop the workers (this process's children: the command's, not a
    notebook kernel's), then leave every sweep this process opened complete."""
    if stop_workers:
        stop_children()
    for sweep in SESSION.sweeps:
        sweep.interrupted()
