"""``python -m gdexp.run`` (``gdexp-run``): one run, or a Hydra multirun, tracked in MLflow.

The entry point only: Hydra composes the config, :func:`gdexp.job.run_job` runs the job, and
:func:`main` turns whatever went wrong into one line and an exit status (2 for bad input, 1 for a
failure while running, 128 + N for signal N).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

import gdexp.session
from gdexp.commandline import say
from gdexp.config import CONF_DIR, register_configs
from gdexp.explain import is_config_error, one_line
from gdexp.session import SESSION
from gdexp.sweeps.callback import SweepAborted
from gdexp.sweeps.interrupt import close_sweeps
from gdexp.task import hydra_task
from gdexp.tracking.uri import mask_text
from gdexp.training.history import RunInterrupted

register_configs()


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def _hydra_main(cfg: DictConfig) -> dict[str, Any] | None:
    # Through the module: launchers pickle this function by value (its name is Hydra's wrapper's),
    # and a module is pickled by name, where the session itself (its lock) could not be.
    gdexp.session.SESSION.task_started = True  # from here on, a failure is the job's
    return hydra_task(cfg)


def _mask_log_records() -> None:
    """Whatever logs a line in this command (Hydra lists each job's overrides), a password in it
    is masked before any handler sees it."""
    make = logging.getLogRecordFactory()
    if getattr(make, "gdexp_masks", False):  # a second command in this process (the tests')
        return

    def masked_record(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make(*args, **kwargs)
        if isinstance(record.msg, str):
            record.msg = mask_text(record.msg)
        return record

    masked_record.gdexp_masks = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(masked_record)


def _interrupt(signum: int, frame: Any) -> None:
    raise RunInterrupted(signum)


def _report_failures() -> None:
    """The failed jobs of the command, in one line; exit 2 when all were bad input, 1 otherwise.
    A sweep's line names the job and says how to rerun only what did not finish."""
    failures = SESSION.failures
    first = failures[0]
    said = f"[{first.name}] {first.message}" if first.swept else first.message
    message = said if len(failures) == 1 else f"{len(failures)} jobs failed; the first, {said}"
    bad_input = all(f.bad_input for f in failures)
    if first.swept and not bad_input:
        message += "; the same command with tracking.skip_finished=true reruns only the jobs that did not finish"
    say("gdexp", message)
    SESSION.close_writers()
    sys.exit(2 if bad_input else 1)


def _report_unstored() -> None:
    """Runs that trained but did not reach MLflow (a full disk, a store gone): one line, exit 1.
    Their records keep every value, and say how to store them once the store takes writes."""
    unstored = SESSION.unstored
    folder = SESSION.sweeps[-1].folder if SESSION.sweeps else Path("outputs")
    what = "1 MLflow write" if len(unstored) == 1 else f"{len(unstored)} MLflow writes"
    say(
        "gdexp",
        f"{what} failed, the first: {unstored[0]}; the runs' records keep everything: "
        f"`gdexp-sync {folder}` stores what is missing once the store takes writes again",
    )
    SESSION.close_writers()
    sys.exit(1)


def main() -> None:
    """The console script: Hydra's errors and ours become one line and a non-zero exit, and SIGINT
    or SIGTERM at any instant ends every run KILLED (exit 128 + N)."""
    user_wants_trace = os.environ.get("HYDRA_FULL_ERROR") == "1"
    os.environ["HYDRA_FULL_ERROR"] = "1"  # let exceptions reach us instead of Hydra's printer
    # Outside training (composing, launching, between jobs) a signal stops the command at once; a
    # job that trains sets its own handlers, which stop it at its next batch, recorded.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _interrupt)
    _mask_log_records()
    SESSION.begin()
    try:
        _hydra_main()
        if SESSION.failures:
            _report_failures()
        if SESSION.unstored:
            _report_unstored()
    except RunInterrupted as err:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean-up short
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        resume = "; the same command with tracking.skip_finished=true runs only what did not finish"
        said = f"gdexp: interrupted by {err}; what ran so far is recorded as KILLED"
        print(said + (resume if SESSION.sweeps else ""), file=sys.stderr)
        SESSION.close_writers()
        close_sweeps()
        # Everything is recorded: leave without the exit hooks of parallel launchers, whose workers
        # are gone and would only complain about it.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(128 + err.signum)
    except (Exception, SweepAborted) as err:  # SweepAborted: a BaseException, see gdexp.sweeps.callback
        if user_wants_trace:
            raise
        cause = err.error if isinstance(err, SweepAborted) else err
        say("gdexp", one_line(cause))
        SESSION.close_writers()
        # Whatever fails before the first job starts is the configuration's fault.
        sys.exit(2 if is_config_error(cause) or not SESSION.task_started else 1)


if __name__ == "__main__":
    # Run the module's importable twin, so that its classes are the ones other modules see.
    from gdexp.run import main as _main

    _main()
