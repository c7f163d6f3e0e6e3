"""What an interrupted sweep leaves behind: no process still running, no run still RUNNING.

When SIGINT or SIGTERM reaches the command (Ctrl-C, ``kill``, a scheduler), jobs that were
training stop at their next batch and record themselves KILLED. What may remain: worker processes
of a parallel launcher (joblib's loky workers, submitit's local jobs) and their writers, and jobs
those workers could not record. :func:`close_sweeps` stops the processes, marks every record still
RUNNING as KILLED (its job is gone: its curves are kept up to the last flush) and replays the
sweep directory into the store, which also ends the sweep's parent run KILLED.
"""

from __future__ import annotations

import sys
from pathlib import Path

from gdexp.tracking.record import SWEEP_FILE, DamagedRecord, RunInfo, SweepInfo, find_records, process_gone
from gdexp.tracking.store import TrackingError
from gdexp.tracking.sync import sync

ACTIVE: list[Path] = []  # the sweep directories this process opened (their callback ran here)


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


def mark_killed(folder: Path) -> int:
    """Every record below ``folder`` still RUNNING whose process is gone becomes KILLED; how many.
    (A job on another machine, a Slurm node, is left to its own end.)"""
    marked = 0
    for path in find_records(folder):
        try:
            info = RunInfo.load(path)
        except DamagedRecord:
            continue  # sync names it
        if info.status == "RUNNING" and process_gone(info.host, info.pid):
            info.status = "KILLED"
            info.tags = {**info.tags, "gdexp.status": "killed"}
            info.save(path.parent)
            marked += 1
    sweep_file = folder / SWEEP_FILE
    if sweep_file.is_file():
        try:
            sweep = SweepInfo.load(sweep_file)
            sweep.status = "KILLED"
            sweep.save(folder)
        except DamagedRecord:
            pass
    return marked


def close_sweeps(stop_workers: bool = True) -> None:
    """After an interrupt: stop the workers (this process's children: the command's, not a
    notebook kernel's), then leave every sweep this process opened complete."""
    if stop_workers:
        stop_children()
    for folder in ACTIVE:
        mark_killed(folder)
        try:
            report = sync(folder)
            print(f"gdexp: sweep {folder} closed: {report.counts()}", file=sys.stderr)
        except TrackingError as err:
            print(f"gdexp: warning: {err}; `python -m gdexp.sync {folder}` ends its runs", file=sys.stderr)
