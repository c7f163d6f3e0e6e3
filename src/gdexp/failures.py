"""A job's failure: the one line that says why, carried to the command's exit status from whatever
process the launcher ran the job in (a joblib worker's errors would stay in the worker).

A job that fails returns :meth:`JobFailure.returned` as its value; the gdexp sweeper hands every
launcher's returns to :func:`note_failures` in the main process, and ``gdexp.run`` exits non-zero
when the session (:data:`gdexp.session.SESSION`) holds any (2 when all were bad input, 1 otherwise).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gdexp.errors import UserError
from gdexp.explain import is_config_error, one_line
from gdexp.session import SESSION, JobFailure
from gdexp.tracking.tags import run_name
from gdexp.tracking.uri import TrackingError

if TYPE_CHECKING:
    from gdexp.tracking.client import Tracker


def job_failed(overrides: list[str], err: BaseException, multirun: bool) -> dict[str, Any]:
    """A job's error as one line. A single run's is kept for the command's report; a sweep's is said
    at once, and its return value (see :func:`note_failures`) carries it to the main process."""
    failure = JobFailure(run_name(overrides), one_line(err), is_config_error(err))
    if multirun:
        print(f"gdexp: job [{failure.name}] failed: {failure.message}", file=sys.stderr, flush=True)
    else:
        SESSION.failures.append(failure)
    return failure.returned()


def note_failures(returns: Any) -> None:
    """Keep the failed and the skipped jobs among a launcher's ``JobReturn`` objects, whatever
    process ran them (a Slurm job says that it skipped in its own log)."""
    for ret in returns:
        value = getattr(ret, "_return_value", None)
        if isinstance(value, dict) and value.get("status") == "skipped":
            SESSION.skipped.append(run_name(list(getattr(ret, "overrides", None) or [])))
        elif isinstance(value, dict) and value.get("status") == "failed":
            name, error, bad = str(value.get("name", "?")), str(value["error"]), bool(value["bad_input"])
            SESSION.failures.append(JobFailure(name, error, bad, swept=True))
        elif isinstance(value, BaseException):  # raised past the task function (Hydra kept it)
            name = run_name(list(getattr(ret, "overrides", None) or []))
            SESSION.failures.append(JobFailure(name, one_line(value), is_config_error(value), swept=True))


def fail_if_gone(output_dir: Path, tracker: Tracker | None, run_id: str | None) -> None:
    """If the run's directory was deleted while it trained (its launch directory removed, a
    scratch disk wiped), its record cannot be kept: the MLflow run ends FAILED with its curve so
    far, and the job fails in one line (exit 1), never as a traceback or a run left RUNNING."""
    if output_dir.is_dir():
        return
    if tracker is not None and run_id is not None:
        try:
            tracker.set_tags(run_id, {"gdexp.status": "failed"})
            tracker.end_run(run_id, "FAILED")
        except TrackingError:
            pass  # the store went with it: nothing is left RUNNING there either
    raise UserError(
        f"the run's directory {output_dir} was deleted while it trained; its record is lost"
        + (f", its MLflow run {run_id} ended FAILED with its curve so far" if run_id else ""),
        status=1,
    ) from None
