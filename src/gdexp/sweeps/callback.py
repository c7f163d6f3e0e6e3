"""The sweep's callback: every sweep value checked before any job trains, and the sweep's parent run.

Hydra calls :class:`SweepCallback` when a multirun starts and ends. At the start it composes and
checks one job per value of every sweep axis (:func:`preflight`), opens the parent run, and writes
``gdexp_sweep.json`` in the sweep directory, where every job finds its parent whichever process or
machine the launcher runs it in.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from gdexp.checks import one_line
from gdexp.config import ConfigError
from gdexp.failures import FAILURES, SKIPPED
from gdexp.job import check
from gdexp.sweeps import search
from gdexp.sweeps.interrupt import ACTIVE
from gdexp.sweeps.overrides import apply_overrides, member_override
from gdexp.sweeps.summary import SweepOutcome, print_sweep_summary, sweep_params
from gdexp.tracking.client import Tracker, WriterPool
from gdexp.tracking.describe import NOTE_TAG
from gdexp.tracking.links import run_link, ui_base
from gdexp.tracking.record import SWEEP_FILE, SweepInfo, sweep_dir
from gdexp.tracking.store import TrackingError, masked, resolve_uri
from gdexp.tracking.tags import masked_overrides, shown_overrides, source_tags


class SweepAborted(BaseException):
    """Raised from a Hydra callback, which would swallow an ordinary exception."""

    def __init__(self, error: Exception):
        super().__init__(str(error))
        self.error = error


def check_launcher(config: DictConfig) -> None:
    """The launcher's own settings, checked with the sweep's values (before any run is made)."""
    launcher = config.hydra.launcher
    target = str(launcher.get("_target_", ""))
    if target.endswith("BatchedLauncher"):
        points = launcher.curve_points
        if not isinstance(points, int) or (points != 0 and points < 100):
            raise ConfigError("hydra.launcher.curve_points", points, "0 (every epoch) or an integer >= 100")
        if launcher.writers is not None and (not isinstance(launcher.writers, int) or launcher.writers < 1):
            raise ConfigError("hydra.launcher.writers", launcher.writers, "an integer >= 1, or null (by store)")
    elif target.endswith("JoblibLauncher"):
        n_jobs = launcher.n_jobs
        if not isinstance(n_jobs, int) or n_jobs == 0 or n_jobs < -1024:
            raise ConfigError("hydra.launcher.n_jobs", n_jobs, "a positive number of workers, or -1 for one per core")


def preflight(config: DictConfig, overrides: list[str]) -> int:
    """Compose and :func:`~gdexp.job.check` one job per value of every sweep axis (the other axes
    at their first value), so a bad value anywhere in a sweep stops it before any job trains.
    Returns the number of jobs the sweep will run."""
    parser = OverridesParser.create()
    axes: dict[str, list[str]] = {}
    for o in parser.parse_overrides(overrides):
        key = o.get_key_element()
        if o.is_sweep_override():
            if not o.is_discrete_sweep():
                axes[key] = []  # range/interval sweeps are the sweeper's business
                continue
            axes[key] = [f"{key}={v}" for v in o.sweep_string_iterator()]
        else:
            axes[key] = [f"{key}={o.get_value_element_as_str()}"]

    check_launcher(config)
    loader = GlobalHydra.instance().config_loader()
    launch_dir = Path(config.hydra.runtime.cwd)
    base = [values[0] for values in axes.values() if values]
    composed: dict[tuple[str, ...], DictConfig] = {}
    seen: set[tuple[str, ...]] = set()
    jobs = 1
    for i, values in enumerate(v for v in axes.values() if v):
        jobs *= len(values)
        for value in values:
            job = tuple(base[:i] + [value] + base[i + 1 :])
            if job in seen:
                continue
            seen.add(job)
            try:
                (parsed,) = parser.parse_overrides([value])
                if member_override(parsed):  # a per-run value: set on the composed base, as Hydra sets it
                    if () not in composed:
                        composed[()] = loader.load_sweep_config(config, base)
                    cfg = apply_overrides(composed[()], [parsed])
                else:
                    cfg = loader.load_sweep_config(config, list(job))
            except Exception as err:  # said as the command says it for a single run
                raise ConfigError.said(one_line(err, [value])) from None
            check(cfg, launch_dir)
    if not seen:
        check(config, launch_dir)
    return jobs


class SweepCallback(Callback):
    """Checks every sweep value before any job trains, and opens the sweep's parent run."""

    def __init__(self) -> None:
        # Launchers pickle Hydra's context, callbacks included: keep no process handles here.
        self.store: tuple[str, str] | None = None
        self.parent: str | None = None
        self.study: str | None = None  # hydra/sweeper=optuna: the study's name

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            overrides = list(config.hydra.overrides.task)
            configured = [f"{k}={v}" for k, v in (config.hydra.sweeper.get("params") or {}).items()]
            every = configured + overrides
            study = _study(config, every)
            if study is None:
                jobs = preflight(config, every)
            else:  # a search: its fixed values and each end of every axis, checked the same way
                settings, space, self.study = study
                preflight(config, [*space.fixed, *search.corners(space)])
                jobs = settings.n_trials
            folder = sweep_dir(config.hydra.sweep.dir, config.hydra.runtime.cwd)
            folder.mkdir(parents=True, exist_ok=True)
            ACTIVE.append(folder)
            record = SweepInfo(overrides=masked_overrides(every), jobs=jobs, study=self.study)
            if config.tracking.enabled:
                uri = resolve_uri(config.tracking.uri, Path(config.hydra.runtime.cwd))
                self.store = (uri, config.tracking.experiment)
                self.parent = self._open_parent(Tracker.get(*self.store), every, folder, jobs)
                record.parent_run_id, record.tracking_uri = self.parent, masked(uri)
                record.experiment = config.tracking.experiment
            record.save(folder)
        except Exception as err:  # Hydra would turn any exception here into a warning, and sweep on
            raise SweepAborted(err) from None

    def _open_parent(self, tracker: Tracker, every: list[str], folder: Path, jobs: int) -> str:
        """The sweep's parent run; a study's, made once and continued by every later command."""
        key = search.study_key(self.study) if self.study else None
        if key:
            found = tracker.find_runs(f"tags.`gdexp.study_key` = '{key}' and tags.`gdexp.role` = 'sweep'")
            if found:
                tracker.reopen_run(found[0])
                tracker.set_tags(found[0], {"gdexp.sweep_dir": str(folder)})
                return found[0]
        tags = {
            **source_tags(),
            "gdexp.role": "sweep",
            "gdexp.overrides": " ".join(masked_overrides(every)),
            "gdexp.sweep_dir": str(folder),
            "gdexp.jobs": str(jobs),
        }
        if key and self.study:
            tags.update({"gdexp.study": self.study, "gdexp.study_key": key})
        kind = "study" if key else "sweep"
        name = f"{kind} " + (" ".join(shown_overrides(every)) or "default")
        return tracker.start_run(name, tags, sweep_params(masked_overrides(every)))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        WriterPool.close_all()  # a batched launcher's writers: every launch of the sweep is done
        folder = sweep_dir(config.hydra.sweep.dir, config.hydra.runtime.cwd)
        record = SweepInfo.load(folder / SWEEP_FILE) if (folder / SWEEP_FILE).is_file() else None
        # A sweep with a failed job (an error, a job its cluster ended) is FAILED, as its exit says.
        ended = "FAILED" if FAILURES else "FINISHED"
        if record is not None:  # the sweep's end goes on record first, for gdexp.sync
            record.status = ended
            record.save(folder)
        outcome = SweepOutcome.read(folder)
        link = None
        if self.store is not None and self.parent is not None:
            tracker = Tracker.get(*self.store)
            try:
                if not self.study:  # a study's parent is kept up to date by the study itself
                    axes = sweep_params(record.overrides if record else [])
                    best = outcome.best(n=1)
                    tags = {NOTE_TAG: outcome.description(axes)}
                    if best and best[0].mlflow_run_id:
                        tags["gdexp.best_run"] = best[0].mlflow_run_id
                    tracker.log_metrics(self.parent, [(k, v, 0) for k, v in outcome.metrics().items()])
                    tracker.set_tags(self.parent, tags)
                tracker.end_run(self.parent, ended)
                link = run_link(ui_base(tracker.uri), tracker.ready(), self.parent)
            except TrackingError as err:
                print(f"gdexp: warning: {err}; `python -m gdexp.sync {folder}` ends the sweep's run")
        local = self.store is None or not self.store[0].startswith(("http://", "https://"))
        experiment = self.store[1] if self.store else None
        if outcome.runs or not self.study:
            print_sweep_summary(outcome, folder, self.parent, experiment, link, local, len(SKIPPED))


def _study(config: DictConfig, every: list[str]) -> tuple[search.Settings, search.Space, str] | None:
    """A search's settings, space and study name (``hydra/sweeper=optuna``); None for a grid."""
    if not str(config.hydra.sweeper.get("_target_", "")).endswith("OptunaSweeper"):
        return None
    settings = search.Settings.of(config.hydra.sweeper)
    space = search.parse_space(every)
    search.open_study(settings, space, config)  # its storage, sampler and direction, before any run
    return settings, space, search.study_name(settings, space, str(config.tracking.experiment))
