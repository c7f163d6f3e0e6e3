"""``hydra.sweeper.pruner``: Optuna's pruners on gdexp's trials.

A trial reports its loss at the steps of a grid, every ``max(1, epochs // 100)`` epochs and its
last one (trials of one length share their steps, which the median pruner compares), and asks its
study's pruner whether to stop:

- a per-run job (:class:`TrialPruning`) at each curve flush, through the study's storage: the
  steps since the last flush in one transaction, then one question;
- a batched population (:class:`PopulationPruning`) at every step of the grid, for every member
  at once: the members report to a copy of the study in memory, where the pruner decides for each
  (a storage round trip per member and step would cost more than the training it saves), and
  their reports reach the storage in one transaction when the population ends.

A pruned trial's run ends FINISHED with ``gdexp.status=pruned`` and its curve up to that epoch;
the sweeper tells the study it was PRUNED.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from gdexp.sweeps.search import Settings, make_pruner, storage_url
from gdexp.sweeps.settings import is_search
from gdexp.sweeps.trial_rows import write_rows

if TYPE_CHECKING:
    from optuna import Study

    from gdexp.tracking.record import SweepInfo


def report_steps(epochs: int) -> int:
    """A trial reports every this many epochs (and at its last)."""
    return max(1, int(epochs) // 100)


def _reported(step: int, epochs: int) -> bool:
    return step % report_steps(epochs) == 0 or step == epochs


def _finite(value: float) -> float:
    """A loss as a report: a diverged one (inf, NaN) as the largest float, which every pruner ranks last."""
    return float(value) if math.isfinite(value) else float(np.finfo(np.float64).max)


def _open(sweeper: Any, sweep: SweepInfo | None, tracking_uri: str | None, launch_dir: Path) -> Study | None:
    """The sweep's study with its pruner, where the sweep is a study with one; else None."""
    if sweeper is None or not is_search(sweeper) or str(sweeper.get("pruner", "none")) == "none":
        return None
    if sweep is None or not sweep.study:
        return None
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    settings = Settings.of(sweeper)
    storage = storage_url(settings, tracking_uri, launch_dir)
    return optuna.load_study(
        study_name=sweep.study, storage=storage, pruner=make_pruner(settings.pruner, settings.pruner_args)
    )


def _trial_id(study: Study, sweep: SweepInfo, job_num: int | None) -> int | None:
    number = sweep.trials.get(str(job_num)) if job_num is not None else None
    if number is None:
        return None
    return study._storage.get_trial_id_from_study_id_trial_number(study._study_id, int(number))


class TrialPruning:
    """A per-run job's trial: its loss reported at each curve flush, the pruner asked."""

    def __init__(self, study: Study, trial_id: int, epochs: int):
        self.study, self.trial_id, self.epochs = study, trial_id, epochs
        self.next_step = 1  # the first epoch not yet looked at

    @classmethod
    def open(
        cls,
        sweeper: Any,
        sweep: SweepInfo | None,
        job_num: int | None,
        tracking_uri: str | None,
        launch_dir: Path,
        epochs: int,
    ) -> TrialPruning | None:
        study = _open(sweeper, sweep, tracking_uri, launch_dir)
        trial_id = _trial_id(study, sweep, job_num) if study is not None and sweep is not None else None
        return None if study is None or trial_id is None else cls(study, trial_id, epochs)

    def __call__(self, loss: list[float], ask: bool) -> bool:
        """Report the grid's steps in ``loss`` not yet reported; whether the pruner stops the trial
        (asked only when ``ask``: not after the last epoch, a divergence or an interrupt)."""
        steps = range(self.next_step, len(loss) + 1)
        values = {s: _finite(loss[s - 1]) for s in steps if _reported(s, self.epochs)}
        self.next_step = len(loss) + 1
        if values:
            write_rows(self.study, values={self.trial_id: values})
        if not (ask and values):
            return False
        return bool(self.study.pruner.prune(self.study, self.study._storage.get_trial(self.trial_id)))


class PopulationPruning:
    """A batched population's trials: every member's loss reported at each step of its grid, the
    pruner asked for each, in a copy of the study held in memory; saved when the population ends."""

    def __init__(self, study: Study, trial_ids: list[int | None], epochs: list[int]):
        import optuna

        self.study, self.trial_ids, self.epochs = study, trial_ids, epochs
        self.mirror = optuna.create_study(
            storage=optuna.storages.InMemoryStorage(),
            study_name=study.study_name,  # Hyperband puts a trial in a bracket by the study's name
            direction=study.direction,
            pruner=study.pruner,
        )
        trials = study.get_trials(deepcopy=False)
        self.mirror.add_trials(trials)
        by_real = {t._trial_id: i for i, t in enumerate(trials)}  # add_trials keeps the order: ids 0..n-1
        self.mine = [by_real.get(t) if t is not None else None for t in trial_ids]
        self.reports: dict[int, dict[int, float]] = {}
        # The epochs some member reports after (not its last: then it has stopped, and is not asked).
        self.steps = {
            s for e, t in zip(epochs, trial_ids) if t is not None for s in range(report_steps(e), e, report_steps(e))
        }

    @classmethod
    def open(
        cls,
        sweeper: Any,
        sweep: SweepInfo | None,
        job_nums: list[int | None],
        tracking_uri: str | None,
        launch_dir: Path,
        epochs: list[int],
    ) -> PopulationPruning | None:
        study = _open(sweeper, sweep, tracking_uri, launch_dir)
        if study is None or sweep is None:
            return None
        ids = [_trial_id(study, sweep, n) for n in job_nums]
        return cls(study, ids, epochs) if any(i is not None for i in ids) else None

    def __call__(self, epoch: int, members: np.ndarray, losses: np.ndarray) -> np.ndarray:
        """After ``epoch``: report the loss of each member still training whose grid has that
        step; which of ``members`` the pruner stops."""
        storage = self.mirror._storage
        stop = np.zeros(len(members), dtype=bool)
        asked = []
        for row, (m, loss) in enumerate(zip(members.tolist(), losses.tolist())):
            mine, real = self.mine[m], self.trial_ids[m]
            if mine is None or real is None or not _reported(epoch, self.epochs[m]):
                continue
            value = self.reports.setdefault(real, {})[epoch] = _finite(loss)
            storage.set_trial_intermediate_value(mine, epoch, value)
            asked.append((row, mine))
        for row, mine in asked:
            stop[row] = self.mirror.pruner.prune(self.mirror, storage.get_trial(mine))
        return stop

    def last(self, member: int, epoch: int, loss: float) -> None:
        """A member's last epoch (it finished, or diverged): reported, not asked."""
        real = self.trial_ids[member]
        if real is not None and epoch > 0:
            self.reports.setdefault(real, {})[epoch] = _finite(loss)

    def save(self) -> None:
        """The members' reports, and what the pruner noted on their trials, into the study."""
        system = {}
        for real, mine in zip(self.trial_ids, self.mine):
            if real is not None and mine is not None:
                noted = self.mirror._storage.get_trial(mine).system_attrs
                if noted:
                    system[real] = dict(noted)
        if self.reports or system:
            write_rows(self.study, values=self.reports, system=system)
