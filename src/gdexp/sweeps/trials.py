"""A study's trials as gdexp asks and tells them: which count toward ``n_trials``, which a killed
command left open, what each carries (its process, its run, the theory's lrs, how it ended), and
the study's best so far as the parent run shows it."""

from __future__ import annotations

import json
import math
import os
import socket
from typing import TYPE_CHECKING, Any

from gdexp.sweeps import search
from gdexp.sweeps.trial_rows import write_rows
from gdexp.tracking.record import process_gone

if TYPE_CHECKING:
    from optuna import Study
    from optuna.trial import FrozenTrial, Trial


def counted(study: Study) -> int:
    """The trials that count toward ``n_trials``: complete, pruned, or failed by the run itself."""
    from optuna.trial import TrialState

    return sum(
        1
        for t in study.get_trials(deepcopy=False)
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
        or (t.state == TrialState.FAIL and t.user_attrs.get(search.OUTCOME) in search.COUNTED_FAILURES)
    )


def fail_abandoned(study: Study) -> int:
    """Trials left RUNNING by a process that is gone (a kill -9): FAILED, to be asked again."""
    from optuna.trial import TrialState

    failed = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        host, pid = t.user_attrs.get("gdexp.host", ""), int(t.user_attrs.get("gdexp.pid", 0))
        if process_gone(host, pid):
            study._storage.set_trial_user_attr(t._trial_id, search.OUTCOME, "interrupted")
            study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
            failed += 1
    return failed


def asks(study: Study, space: search.Space, n: int) -> list[Trial]:
    """``n`` new trials, each tagged with this process (host, pid), in one write."""
    trials = [study.ask(space.distributions) for _ in range(n)]
    here = {"gdexp.host": socket.gethostname(), "gdexp.pid": os.getpid()}
    write_rows(study, user={t._trial_id: here for t in trials})
    return trials


def ask(study: Study, space: search.Space) -> Trial:
    return asks(study, space, 1)[0]


THEORY = ("lr_optimal", "lr_max_stable")  # plain gradient descent's theory, on every run's summary


def outcome(value: dict[str, Any] | None, objective: str) -> str:
    """How a trial's job ended: complete, pruned; interrupted (stopped by a signal: asked again);
    skipped (tracking.skip_finished found it done), diverged or failed (counted)."""
    status = (value or {}).get("status", "failed")
    number = (value or {}).get(objective)
    if status in ("converged", "max_epochs") and isinstance(number, (int, float)) and math.isfinite(number):
        return "complete"
    if status == "pruned":
        return "pruned"
    return {"killed": "interrupted", "skipped": "skipped", "diverged": "diverged"}.get(status, "failed")


def trial_attrs(value: dict[str, Any] | None, objective: str) -> dict[str, Any]:
    """What a told trial carries: its run, the theory's lrs (the search's last line says where its
    best lr sits against them), and how it ended when it is not a number."""
    attrs: dict[str, Any] = {"gdexp.run_id": value["run_id"]} if value and value.get("run_id") else {}
    for theory in THEORY:
        said = (value or {}).get(theory)
        if isinstance(said, (int, float)) and math.isfinite(said):
            attrs[theory] = float(said)
    ended = outcome(value, objective)
    return attrs if ended in ("complete", "pruned") else {**attrs, search.OUTCOME: ended}


def tell(study: Study, trial: Trial, value: dict[str, Any] | None, objective: str, written: bool = False) -> str:
    """Tell the study how the trial's job ended (its :func:`trial_attrs` written first, unless
    ``written``); its :func:`outcome`."""
    from optuna.trial import TrialState

    if not written:
        write_rows(study, user={trial._trial_id: trial_attrs(value, objective)})
    ended = outcome(value, objective)
    if ended == "complete":
        study.tell(trial, float(value[objective]))  # type: ignore[index]
    else:  # a pruned trial's last report is its value, as Optuna keeps it
        study.tell(trial, state=TrialState.PRUNED if ended == "pruned" else TrialState.FAIL)
    return ended


def interrupted(study: Study, trials: list[Trial]) -> None:
    """The batch's trials that were still open when the command was interrupted: FAILED."""
    from optuna.trial import TrialState

    for trial in trials:
        try:
            if study._storage.get_trial(trial._trial_id).state == TrialState.RUNNING:
                trial.set_user_attr(search.OUTCOME, "interrupted")
                study.tell(trial, state=TrialState.FAIL)
        except Exception:
            pass


def best(study: Study) -> FrozenTrial | None:
    from optuna.trial import TrialState

    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return study.best_trial if done else None


def best_rows(study: Study, objective: str, done: int) -> tuple[list[tuple[str, float, int]], dict[str, str]]:
    """The parent run's view of the study so far: metrics (``best_<objective>``, each numeric best
    param, ``trials`` and ``trials_pruned``, at step = trials counted) and tags (the best trial, its
    params, its run)."""
    from optuna.trial import TrialState

    counts = [("trials", float(done), done)]
    pruned = len(study.get_trials(deepcopy=False, states=(TrialState.PRUNED,)))
    counts += [("trials_pruned", float(pruned), done)] if pruned else []
    trial = best(study)
    if trial is None:
        return counts, {}
    rows = [(f"best_{objective}", float(trial.value or 0.0), done), *counts]
    rows += [(f"best.{k}", float(v), done) for k, v in trial.params.items() if isinstance(v, (int, float))]
    tags = {
        "gdexp.best_trial": str(trial.number),
        "gdexp.best_params": json.dumps(trial.params, sort_keys=True),
    }
    if trial.user_attrs.get("gdexp.run_id"):
        tags["gdexp.best_run"] = str(trial.user_attrs["gdexp.run_id"])
    return rows, tags
