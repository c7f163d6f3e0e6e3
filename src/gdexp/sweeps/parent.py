"""The sweep's parent run: one owner, as :class:`gdexp.job.Job` is a single run's.

:class:`SweepRun` opens the parent (a study's is found and reopened by every later command),
writes ``gdexp_sweep.json`` (where every job, in whatever process or machine, finds its parent),
keeps the parent up to date while a study runs, closes it with the sweep's summary, and ends what
an interrupt left open KILLED. The grid's callback, the study's loop and the batched launcher all
go through it; the session lists the sweeps this process opened.
"""

from __future__ import annotations

import contextlib
import io
import sys
from collections.abc import Callable
from pathlib import Path

from gdexp.errors import warn
from gdexp.session import SESSION
from gdexp.sweeps.summary import SweepOutcome, sweep_params
from gdexp.tracking.client import Tracker
from gdexp.tracking.describe import NOTE_TAG
from gdexp.tracking.links import run_link, ui_base
from gdexp.tracking.record import (
    SWEEP_FILE,
    DamagedRecord,
    RunInfo,
    SweepInfo,
    find_records,
    process_gone,
    recorded_curves,
)
from gdexp.tracking.store import first_open_lock
from gdexp.tracking.sync import sync
from gdexp.tracking.tags import masked_overrides, shown_overrides, source_tags
from gdexp.tracking.uri import Target, TrackingError


class SweepRun:
    """A sweep's parent run and its record in the sweep directory ``folder``. ``target`` is None
    with tracking off (the record is still written). Holds no process handle: launchers pickle
    Hydra's callbacks, this one's owner included."""

    def __init__(self, folder: Path, target: Target | None, study: str | None = None):
        self.folder, self.target, self.study = folder, target, study
        self.run_id: str | None = None
        self.reopened = False  # an earlier command's parent, continued

    @property
    def tracker(self) -> Tracker | None:
        return Tracker.get(self.target.uri, self.target.experiment) if self.target else None

    def record(self) -> SweepInfo | None:
        path = self.folder / SWEEP_FILE
        return SweepInfo.load(path) if path.is_file() else None

    # ------------------------------------------------------------------ open

    def open(
        self,
        every: list[str],
        jobs: int,
        study_key: str | None = None,
        resume: bool = False,
        claim: Callable[[], None] | None = None,
    ) -> None:
        """Make the parent run and write the sweep's record; the session ends it KILLED if this
        command is interrupted. A study's parent (found by ``study_key``) is reopened by every
        later command. The same grid run again (same overrides, same experiment) is the same
        sweep: with ``resume`` (``tracking.skip_finished=true``) its parent is reopened, so its
        runs stay one sweep; without, a new parent is made and a warning names the earlier one.
        ``claim`` (a study's: only one command runs it at a time) is called first, under the same
        lock, and may refuse with an error before anything is made."""
        record = SweepInfo(overrides=masked_overrides(every), jobs=jobs, study=self.study)
        tracker = self.tracker
        if tracker is not None and self.target is not None:
            key = study_key or sweep_key(every)
            kind = "study_key" if study_key else "sweep_key"
            # Two commands of one sweep at once on a SQLite store: one finds what the other made.
            with first_open_lock(self.target.uri, "gdexp-sweeps"):
                if claim is not None:
                    claim()
                self.folder.mkdir(parents=True, exist_ok=True)
                SESSION.sweeps.append(self)
                self._find_or_make(tracker, every, jobs, study_key, kind, key, resume)
            record.parent_run_id, record.tracking_uri = self.run_id, self.target.shown
            record.experiment = self.target.experiment
        else:
            if claim is not None:
                claim()
            self.folder.mkdir(parents=True, exist_ok=True)
            SESSION.sweeps.append(self)
        record.save(self.folder)

    def _find_or_make(
        self, tracker: Tracker, every: list[str], jobs: int, study_key: str | None, kind: str, key: str, resume: bool
    ) -> None:
        found = tracker.find_runs(f"tags.`gdexp.{kind}` = '{key}' and tags.`gdexp.role` = 'sweep'")
        if found and (study_key or resume):
            self._close_dead(tracker.run_tags(found[0]).get("gdexp.sweep_dir"))
            self.reopen(found[0])
        else:
            if study_key and self.study:
                self._say_remade(tracker)
            if found:
                earlier = f"{len(found)} times" if len(found) > 1 else "once"
                warn(
                    f"this sweep ran {earlier} before (parent run {found[0]}): its runs are made again "
                    "under a new parent; tracking.skip_finished=true continues that sweep, running only "
                    "the jobs that did not finish"
                )
            name, tags, params = self._new_parent(every, jobs, study_key)
            self.run_id = tracker.start_run(name, {**tags, f"gdexp.{kind}": key}, params)

    def _new_parent(self, every: list[str], jobs: int, study_key: str | None) -> tuple[str, dict, dict]:
        tags = {
            **source_tags(),
            "gdexp.role": "sweep",
            "gdexp.overrides": " ".join(masked_overrides(every)),
            "gdexp.sweep_dir": str(self.folder),
            "gdexp.jobs": str(jobs),
        }
        if study_key and self.study:
            tags.update({"gdexp.study": self.study, "gdexp.study_key": study_key, NAME_KEY: name_key(self.study)})
        kind = "study" if study_key else "sweep"
        name = f"{kind} " + (" ".join(shown_overrides(every)) or "default")
        return name, tags, sweep_params(masked_overrides(every))

    def _say_remade(self, tracker: Tracker) -> None:
        """A study new to its storage whose name an earlier parent carries: its Optuna storage was
        deleted or replaced. Its trials start again from 0 under a parent of their own."""
        assert self.study is not None
        earlier = tracker.find_runs(f"tags.`{NAME_KEY}` = '{name_key(self.study)}' and tags.`gdexp.role` = 'sweep'")
        if earlier:
            warn(
                f"study {self.study!r} is new to its Optuna storage, but parent run {earlier[0]} holds an "
                "earlier study of that name (its storage was deleted or replaced): this one starts from "
                "trial 0 under a new parent run; the earlier runs stay under theirs"
            )

    def _close_dead(self, folder: str | None) -> None:
        """Before a sweep is continued: if the command that ran it last was killed (SIGKILL, a
        lost node) and left it open, end what it left: its records still RUNNING become KILLED
        and the folder is replayed into the store, as ``gdexp-sync`` would (runs it trained and
        did not store are stored, runs it left RUNNING ended). A command still alive is left
        alone, as is a sweep recorded on another machine (nobody here can tell)."""
        if not folder or not (Path(folder) / SWEEP_FILE).is_file():
            return
        try:
            record = SweepInfo.load(Path(folder) / SWEEP_FILE)
        except DamagedRecord:
            return
        if record.status != "RUNNING" or not process_gone(record.host, record.pid):
            return
        mark_killed(Path(folder))
        with contextlib.redirect_stdout(io.StringIO()):  # its line a record: one line here instead
            report = sync(Path(folder))
        print(f"gdexp: closed first what the killed sweep in {folder} left open: {report.counts()}", file=sys.stderr)

    def reopen(self, run_id: str) -> None:
        """Continue an earlier command's parent: RUNNING again, pointing at this sweep directory."""
        tracker = self.tracker
        assert tracker is not None
        tracker.reopen_run(run_id)
        tracker.set_tags(run_id, {"gdexp.sweep_dir": str(self.folder)})
        self.run_id, self.reopened = run_id, True

    @classmethod
    def found(cls, folder: Path, target: Target | None) -> SweepRun:
        """The sweep opened in ``folder`` (by this process's callback), its parent read from the record."""
        sweep = cls(folder, target)
        record = sweep.record()
        if record is not None and target is not None:
            sweep.run_id, sweep.study = record.parent_run_id, record.study
        return sweep

    # ------------------------------------------------------------------ while it runs

    def update(self, metrics: list[tuple[str, float, int]], tags: dict[str, str]) -> None:
        """Metrics and tags on the parent while the sweep runs; a store that fails is warned about,
        and the sweep goes on (its records keep everything for ``gdexp-sync``)."""
        tracker = self.tracker
        if tracker is None or self.run_id is None:
            return
        try:
            if metrics:
                tracker.log_metrics(self.run_id, metrics)
            if tags:
                tracker.set_tags(self.run_id, tags)
        except TrackingError as err:
            warn(f"the sweep's parent run: {err}")

    # ------------------------------------------------------------------ end

    def close(self, failed: bool) -> tuple[SweepOutcome, str | None]:
        """End the sweep: its record first (for ``gdexp-sync``), then the parent FINISHED, or FAILED
        when a job failed, with the sweep's description, best run and summary metrics (a study
        keeps its own up to date). The sweep's outcome and the parent's link in the UI."""
        ended = "FAILED" if failed else "FINISHED"
        record = self.record()
        if record is not None:
            record.status = ended
            record.save(self.folder)
        outcome = SweepOutcome.read(self.folder)
        tracker = self.tracker
        if tracker is None or self.run_id is None:
            return outcome, None
        try:
            # A study keeps its own up to date; a continued sweep that ran nothing keeps its summary.
            if not self.study and not (self.reopened and not outcome.runs):
                best = outcome.best(n=1)
                tags = {NOTE_TAG: outcome.description(sweep_params(record.overrides if record else []))}
                if best and best[0].mlflow_run_id:
                    tags["gdexp.best_run"] = best[0].mlflow_run_id
                tracker.log_metrics(self.run_id, [(k, v, 0) for k, v in outcome.metrics().items()])
                tracker.set_tags(self.run_id, tags)
            tracker.end_run(self.run_id, ended)
            return outcome, run_link(ui_base(tracker.uri), tracker.ready(), self.run_id)
        except TrackingError as err:
            warn(f"{err}; `python -m gdexp.sync {self.folder}` ends the sweep's run")
            return outcome, None

    def interrupted(self) -> None:
        """After an interrupt: every record still RUNNING whose process is gone, and the sweep's
        own, become KILLED; the folder is replayed into the store, which ends the parent KILLED."""
        mark_killed(self.folder)
        try:
            report = sync(self.folder)
            print(f"gdexp: sweep {self.folder} closed: {report.counts()}", file=sys.stderr)
        except TrackingError as err:
            warn(f"{err}; `python -m gdexp.sync {self.folder}` ends its runs")


# Overrides that say where or how a sweep runs, not what it computes: the same sweep whatever they say.
NOT_IDENTITY = ("hydra.sweep.dir=", "hydra.run.dir=", "tracking.skip_finished=", "hydra.launcher.", "hydra/launcher=")


NAME_KEY = "gdexp.study_name_key"  # a study's name alone, hashed: the same name made again is found


def name_key(study: str) -> str:
    import hashlib

    return hashlib.sha256(study.encode()).hexdigest()[:16]


def sweep_key(every: list[str]) -> str:
    """A grid's identity in its experiment: its overrides (credentials masked, in any order),
    without those that say only where or how it runs."""
    import hashlib

    kept = sorted(o for o in masked_overrides(every) if not o.startswith(NOT_IDENTITY))
    return hashlib.sha256("\n".join(kept).encode()).hexdigest()[:16]


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
            if not any(name == "epochs_run" for name, _, _ in info.metrics):
                # A job killed before it could say how far it got: as far as its curve goes.
                ran = recorded_curves(path.parent)
                epochs = max((step for name, _, step in ran if name == "loss"), default=0)
                info.metrics = [*info.metrics, ("epochs_run", float(epochs), 0)]
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
