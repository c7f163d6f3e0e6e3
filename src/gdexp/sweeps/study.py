"""The search loop of ``hydra/sweeper=optuna``: ask a batch of trials, launch them as jobs through
the selected launcher, tell the study how each ended, keep the parent run up to date; until the
study has ``n_trials`` trials that ended by themselves."""

from __future__ import annotations

import json
import math
import os
import socket
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from gdexp.failures import note_failures
from gdexp.sweeps import owner, search
from gdexp.sweeps.parent import SweepRun
from gdexp.tracking.describe import NOTE_TAG
from gdexp.tracking.record import read_sweep, sweep_dir
from gdexp.tracking.uri import masked, target_of

if TYPE_CHECKING:
    from hydra.core.utils import JobReturn
    from hydra.plugins.launcher import Launcher
    from omegaconf import DictConfig
    from optuna import Study
    from optuna.trial import FrozenTrial, Trial

# --------------------------------------------------------------------------- trials


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

    from gdexp.tracking.record import process_gone

    failed = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        host, pid = t.user_attrs.get("gdexp.host", ""), int(t.user_attrs.get("gdexp.pid", 0))
        if process_gone(host, pid):
            study._storage.set_trial_user_attr(t._trial_id, search.OUTCOME, "interrupted")
            study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
            failed += 1
    return failed


def ask(study: Study, space: search.Space) -> Trial:
    trial = study.ask(space.distributions)
    trial.set_user_attr("gdexp.host", socket.gethostname())
    trial.set_user_attr("gdexp.pid", os.getpid())
    return trial


THEORY = ("lr_optimal", "lr_max_stable")  # plain gradient descent's theory, on every run's summary


def tell(study: Study, trial: Trial, value: dict[str, Any] | None, objective: str) -> str:
    """Tell the study how the trial's job ended; its outcome (complete, diverged, failed, ...)."""
    from optuna.trial import TrialState

    status = (value or {}).get("status", "failed")
    number = (value or {}).get(objective)
    if value and value.get("run_id"):
        trial.set_user_attr("gdexp.run_id", value["run_id"])
    for theory in THEORY:  # the search's last line says where its best lr sits against them
        said = (value or {}).get(theory)
        if isinstance(said, (int, float)) and math.isfinite(said):
            trial.set_user_attr(theory, float(said))
    if status in ("converged", "max_epochs") and isinstance(number, (int, float)) and math.isfinite(number):
        study.tell(trial, float(number))
        return "complete"
    # Stopped by a signal: asked again. Skipped (tracking.skip_finished found the configuration
    # done), diverged or failed: an outcome of its own, counted.
    outcome = {"killed": "interrupted", "skipped": "skipped", "diverged": "diverged"}.get(status, "failed")
    trial.set_user_attr(search.OUTCOME, outcome)
    study.tell(trial, state=TrialState.FAIL)
    return outcome


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
    """The parent run's view of the study so far: metrics (``best_<objective>`` and each numeric
    best param, at step = trials counted) and tags (the best trial, its params, its run)."""
    trial = best(study)
    if trial is None:
        return [("trials", float(done), done)], {}
    rows = [(f"best_{objective}", float(trial.value or 0.0), done), ("trials", float(done), done)]
    rows += [(f"best.{k}", float(v), done) for k, v in trial.params.items() if isinstance(v, (int, float))]
    tags = {
        "gdexp.best_trial": str(trial.number),
        "gdexp.best_params": json.dumps(trial.params, sort_keys=True),
    }
    if trial.user_attrs.get("gdexp.run_id"):
        tags["gdexp.best_run"] = str(trial.user_attrs["gdexp.run_id"])
    return rows, tags


# --------------------------------------------------------------------------- the loop


def _say_best(study: Study, objective: str) -> str:
    trial = best(study)
    if trial is None:
        return "no complete trial yet"
    shown = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in trial.params.items())
    said = f"best {objective} {trial.value:.4g} at {shown} (trial {trial.number})"
    optimal, stable = (trial.user_attrs.get(t) for t in THEORY)
    if "lr" in trial.params and optimal and stable:
        said += f"; lr_optimal {optimal:.4g}, diverges above {stable:.4g}"
    return said


def _description(study: Study, space: search.Space, settings: search.Settings) -> str:
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    complete = sum(t.state == TrialState.COMPLETE for t in trials)
    diverged = sum(t.user_attrs.get(search.OUTCOME) == "diverged" for t in trials)
    axes = ", ".join(f"{k} in {v}" for k, v in space.written.items())
    text = (
        f"An Optuna study ({settings.sampler}, {settings.direction} {settings.objective}) over {axes}: "
        f"{complete} complete trials, {diverged} diverged, of {settings.n_trials}."
    )
    trial = best(study)
    if trial is not None:
        run = trial.user_attrs.get("gdexp.run_id")
        text += f" The {_say_best(study, settings.objective)}" + (f", run {run}." if run else ".")
    return text


def run_study(config: DictConfig, launcher: Launcher, arguments: list[str]) -> list[Sequence[JobReturn]]:
    """The sweeper's ``sweep``: every batch's ``JobReturn`` lists, in order."""
    settings = search.Settings.of(config.hydra.sweeper)
    params = [f"{k}={v}" for k, v in (config.hydra.sweeper.get("params") or {}).items()]
    space = search.parse_space(params + list(arguments))
    study = search.open_study(settings, space, config)
    try:
        return _run(study, settings, space, config, launcher)
    finally:
        owner.release(study)


def _run(
    study: Study, settings: search.Settings, space: search.Space, config: DictConfig, launcher: Launcher
) -> list[Sequence[JobReturn]]:
    abandoned = fail_abandoned(study)
    folder = sweep_dir(str(config.hydra.sweep.dir), str(config.hydra.runtime.cwd))
    record = read_sweep(folder)
    parent = SweepRun.found(folder, target_of(config))
    storage = search.storage_url(settings, config)
    done = counted(study)
    note = f", {abandoned} trials of a killed run failed" if abandoned else ""
    print(
        f"gdexp search: study {study.study_name!r} ({masked(storage)}): {done} of {settings.n_trials} trials "
        f"done{note}; {settings.sampler} sampler, {settings.n_jobs} trials a batch",
        flush=True,
    )
    parent.update([], {"gdexp.study": study.study_name, "gdexp.study_storage": masked(storage)})

    batches: list[Sequence[JobReturn]] = []
    job_idx = 0
    while done < settings.n_trials:
        trials = [ask(study, space) for _ in range(min(settings.n_jobs, settings.n_trials - done))]
        batch = [space.overrides(t.params) for t in trials]
        if record is not None:  # each job finds its trial number here, by its hydra.job.num
            record.study = study.study_name
            record.trials.update({str(job_idx + i): t.number for i, t in enumerate(trials)})
            record.save(folder)
        try:
            returns = launcher.launch(batch, initial_job_idx=job_idx)
        except BaseException:
            interrupted(study, trials)
            raise
        job_idx += len(trials)
        batches.append(returns)
        values = [getattr(r, "_return_value", None) for r in returns]
        outcomes = [
            tell(study, t, v if isinstance(v, dict) else None, settings.objective) for t, v in zip(trials, values)
        ]
        done = counted(study)
        rows, tags = best_rows(study, settings.objective, done)
        parent.update(rows, {**tags, NOTE_TAG: _description(study, space, settings)})
        counts = ", ".join(f"{n} {o}" for o, n in Counter(outcomes).items())
        first = trials[0].number
        print(
            f"gdexp search: trials {first}-{trials[-1].number}: {counts}; {done}/{settings.n_trials} done; "
            f"{_say_best(study, settings.objective)}",
            flush=True,
        )
        if "interrupted" in outcomes:  # a job was stopped (a signal to a worker): so is the study
            from gdexp.training.history import RunInterrupted

            raise RunInterrupted(2)
    note_failures(r for returns in batches for r in returns)
    print(f"gdexp search: study {study.study_name!r}: {_say_best(study, settings.objective)}", flush=True)
    return batches
