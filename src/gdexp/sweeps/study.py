"""The search loop of ``hydra/sweeper=optuna``: ask trials, launch them as jobs through the
selected launcher (a batch at a time for the batched launcher, else a new trial as soon as one
ends), tell the study how each ended, keep the parent run up to date; until the study has
``n_trials`` trials that ended by themselves."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from typing import TYPE_CHECKING

from gdexp.failures import note_failures
from gdexp.session import SESSION
from gdexp.sweeps import owner, search
from gdexp.sweeps.parent import SweepRun
from gdexp.sweeps.settings import BatchedSettings
from gdexp.sweeps.trial_rows import write_rows
from gdexp.sweeps.trials import (
    THEORY,
    asks,
    best,
    best_rows,
    counted,
    fail_abandoned,
    interrupted,
    tell,
    trial_attrs,
)
from gdexp.tracking.describe import NOTE_TAG
from gdexp.tracking.files import RECORD_FILE, DamagedRecord
from gdexp.tracking.record import RunInfo, process_gone, read_sweep, sweep_dir
from gdexp.tracking.uri import masked, target_of

if TYPE_CHECKING:
    from hydra.core.utils import JobReturn
    from hydra.plugins.launcher import Launcher
    from omegaconf import DictConfig
    from optuna import Study
    from optuna.trial import Trial

STOP_GRACE = 30.0  # seconds an interrupted study waits for its trials in flight to record themselves


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
    pruned = sum(t.state == TrialState.PRUNED for t in trials)
    axes = ", ".join(f"{k} in {v}" for k, v in space.written.items())
    text = (
        f"An Optuna study ({settings.sampler}, {settings.direction} {settings.objective}) over {axes}: "
        f"{complete} complete trials, {diverged} diverged, of {settings.n_trials}."
    )
    if pruned:
        text = text[:-1] + f"; {pruned} pruned by {settings.pruner}."
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
    loop = _Loop(study, settings, space, config, launcher)
    storage = search.storage_of(settings, config)
    note = f", {abandoned} trials of a killed run failed" if abandoned else ""
    pace = f"{settings.n_jobs} trials a batch" if loop.batched else f"{loop.slots} trials at a time"
    print(
        f"gdexp search: study {study.study_name!r} ({masked(storage)}): {loop.done} of {settings.n_trials} trials "
        f"done{note}; {settings.sampler} sampler, {pace}"
        + (f", {settings.pruner} pruner" if settings.pruner != "none" else ""),
        flush=True,
    )
    loop.parent.update([], {"gdexp.study": study.study_name, "gdexp.study_storage": masked(storage)})
    batches = loop.in_batches() if loop.batched else loop.as_workers_free()
    note_failures(r for returns in batches for r in returns)
    print(f"gdexp search: study {study.study_name!r}: {_say_best(study, settings.objective)}", flush=True)
    return batches


class _Loop:
    """The study's trials through the launcher: in batches of ``n_jobs`` for the batched launcher
    (a batch is one population), else as workers free up: ``n_jobs`` trials in flight, a new one
    asked as soon as one ends (Hydra's basic launcher runs jobs in this process, one at a time)."""

    def __init__(
        self, study: Study, settings: search.Settings, space: search.Space, config: DictConfig, launcher: Launcher
    ):
        from hydra._internal.core_plugins.basic_launcher import BasicLauncher

        self.study, self.settings, self.space, self.launcher = study, settings, space, launcher
        self.folder = sweep_dir(str(config.hydra.sweep.dir), str(config.hydra.runtime.cwd))
        self.record = read_sweep(self.folder)
        self.parent = SweepRun.found(self.folder, target_of(config))
        self.done = counted(study)
        self.job_idx = 0
        self.batched = isinstance(getattr(launcher, "settings", None), BatchedSettings)
        self.slots = 1 if isinstance(launcher, BasicLauncher) else settings.n_jobs

    def _asked(self, n: int) -> list[Trial]:
        """``n`` new trials, each job finding its trial number in the sweep's record by its
        ``hydra.job.num``."""
        trials = asks(self.study, self.space, n)
        if self.record is not None:
            self.record.study = self.study.study_name
            self.record.trials.update({str(self.job_idx + i): t.number for i, t in enumerate(trials)})
            self.record.save(self.folder)
        return trials

    def _told(self, trials: list[Trial], returns: Sequence[JobReturn]) -> list[str]:
        """Tell the study how each trial's job ended; the parent run follows."""
        values = [v if isinstance(v := getattr(r, "_return_value", None), dict) else None for r in returns]
        objective = self.settings.objective
        write_rows(self.study, user={t._trial_id: trial_attrs(v, objective) for t, v in zip(trials, values)})
        outcomes = [tell(self.study, t, v, objective, written=True) for t, v in zip(trials, values)]
        self.done = counted(self.study)
        rows, tags = best_rows(self.study, self.settings.objective, self.done)
        self.parent.update(rows, {**tags, NOTE_TAG: _description(self.study, self.space, self.settings)})
        return outcomes

    def _said(self, which: str, outcomes: list[str]) -> None:
        counts = ", ".join(f"{n} {o}" for o, n in Counter(outcomes).items())
        print(
            f"gdexp search: {which}: {counts}; {self.done}/{self.settings.n_trials} done; "
            f"{_say_best(self.study, self.settings.objective)}",
            flush=True,
        )

    def in_batches(self) -> list[Sequence[JobReturn]]:
        batches: list[Sequence[JobReturn]] = []
        while self.done < self.settings.n_trials:
            trials = self._asked(min(self.settings.n_jobs, self.settings.n_trials - self.done))
            try:
                returns = self.launcher.launch([self.space.overrides(t.params) for t in trials], self.job_idx)
            except BaseException:
                interrupted(self.study, trials)
                raise
            self.job_idx += len(trials)
            batches.append(returns)
            outcomes = self._told(trials, returns)
            self._said(f"trials {trials[0].number}-{trials[-1].number}", outcomes)
            _stop_if_interrupted(outcomes)
        return batches

    def as_workers_free(self) -> list[Sequence[JobReturn]]:
        returns: list[Sequence[JobReturn]] = []
        flying: dict[Future, tuple[Trial, int]] = {}  # a trial in flight, by its job's result; its job number

        def told(future: Future) -> list[str]:
            trial, _ = flying.pop(future)
            ended = future.result()
            returns.append(ended)
            outcomes = self._told([trial], ended)
            self._said(f"trial {trial.number}", outcomes)
            return outcomes

        try:
            while flying or self.done < self.settings.n_trials:
                while len(flying) < self.slots and self.done + len(flying) < self.settings.n_trials:
                    (trial,) = self._asked(1)
                    future: Future = Future()
                    flying[future] = (trial, self.job_idx)  # first: an interrupt as it starts finds it
                    self._start(future, [self.space.overrides(trial.params)])
                for future in _first_done(list(flying)):
                    _stop_if_interrupted(told(future))
        except BaseException:
            # The trials in flight end now, each told as it ended (a stopped job: KILLED, recorded);
            # one not begun is FAILED, interrupted; all are asked again by the next command.
            self._stop_in_flight(flying)
            for future in [f for f in flying if f.done() and f.exception() is None]:
                told(future)
            interrupted(self.study, [t for t, _ in flying.values()])
            raise
        return returns

    def _stop_in_flight(self, flying: dict[Future, tuple[Trial, int]]) -> None:
        """SIGTERM to the processes on this machine that train the trials in flight (a launcher's
        workers, found by their jobs' records: a signal to this command alone does not reach
        them), as each job writes its record, and Slurm's jobs cancelled by the threads that wait
        for them (``SESSION.stopping``); then wait for them, up to ``STOP_GRACE``."""
        SESSION.stopping.set()
        signalled: set[int] = set()
        deadline = time.monotonic() + STOP_GRACE
        while time.monotonic() < deadline and (pending := [f for f in flying if not f.done()]):
            for idx in {flying[f][1] for f in pending} - signalled:
                try:
                    info = RunInfo.load(self.folder / str(idx) / RECORD_FILE)
                except DamagedRecord:  # no record yet: it has not started
                    continue
                if info.pid != os.getpid() and info.host == socket.gethostname() and info.status == "RUNNING":
                    if not process_gone(info.host, info.pid):
                        os.kill(info.pid, signal.SIGTERM)
                    signalled.add(idx)
            wait(pending, timeout=0.2)

    def _start(self, future: Future, overrides: list[list[str]]) -> None:
        """One job through the launcher, its ``JobReturn`` list into ``future``: in this thread
        where the launcher runs jobs in this process, else in a thread of its own that waits for
        the launcher's worker."""
        idx, self.job_idx = self.job_idx, self.job_idx + 1

        def launch() -> None:
            try:
                future.set_result(self.launcher.launch(overrides, initial_job_idx=idx))
            except BaseException as err:  # the caller sees it; a worker thread prints nothing
                future.set_exception(err)

        if self.slots > 1:
            threading.Thread(target=launch, name=f"gdexp-trial-{idx}", daemon=True).start()
            return
        launch()
        if future.exception() is not None:
            raise future.exception()  # type: ignore[misc]


def _first_done(futures: list[Future]) -> set[Future]:
    """The futures that are done, once one is (waiting in slices: a signal is acted on at once)."""
    while not (done := wait(futures, timeout=0.5, return_when=FIRST_COMPLETED)[0]):
        pass
    return done


def _stop_if_interrupted(outcomes: list[str]) -> None:
    """A job stopped by a signal (to a worker): the study stops too."""
    if "interrupted" in outcomes:
        from gdexp.training.history import RunInterrupted

        raise RunInterrupted(2)
