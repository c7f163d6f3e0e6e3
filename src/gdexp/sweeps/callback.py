"""The sweep's callback: every sweep value checked before any job trains, and the sweep's parent run.

Hydra calls :class:`SweepCallback` when a multirun starts and ends. At the start it composes and
checks one job per value of every sweep axis (:func:`preflight`), opens the parent run, and writes
``gdexp_sweep.json`` in the sweep directory, where every job finds its parent whichever process or
machine the launcher runs it in.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from gdexp.config import ConfigError
from gdexp.explain import one_line
from gdexp.job import check
from gdexp.session import SESSION
from gdexp.sweeps import owner, search
from gdexp.sweeps.overrides import apply_overrides, member_override
from gdexp.sweeps.parent import SweepRun
from gdexp.sweeps.settings import check_launcher, draws_loss_curves, is_search
from gdexp.sweeps.summary import print_sweep_summary
from gdexp.tracking.record import sweep_dir
from gdexp.tracking.uri import target_of

if TYPE_CHECKING:
    from optuna import Study


class SweepAborted(BaseException):
    """Raised from a Hydra callback, which would swallow an ordinary exception."""

    def __init__(self, error: Exception):
        super().__init__(str(error))
        self.error = error


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

    check_launcher(config.hydra.launcher)
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
        # Launchers pickle Hydra's context, callbacks included: SweepRun keeps no process handle.
        self.sweep: SweepRun | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            overrides = list(config.hydra.overrides.task)
            configured = [f"{k}={v}" for k, v in (config.hydra.sweeper.get("params") or {}).items()]
            every = configured + overrides
            study = _study(config, every)
            name = key = claim = None
            if study is None:
                jobs = preflight(config, every)
            else:  # a search: its fixed values and each end of every axis, checked the same way
                settings, space, found = study
                name = found.study_name
                preflight(config, [*space.fixed, *search.corners(space)])
                jobs = settings.n_trials
                key = search.study_key(name, owner.study_uid(found))
                claim = lambda: owner.claim(found)  # noqa: E731
            folder = sweep_dir(config.hydra.sweep.dir, config.hydra.runtime.cwd)
            SESSION.hold_folder(folder)
            self.sweep = SweepRun(folder, target_of(config), study=name)
            resume = bool(config.tracking.skip_finished)
            self.sweep.open(every, jobs, key, resume=resume, claim=claim)
        except Exception as err:  # Hydra would turn any exception here into a warning, and sweep on
            raise SweepAborted(err) from None

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        SESSION.close_pools()  # a batched launcher's writers: every launch of the sweep is done
        folder = sweep_dir(config.hydra.sweep.dir, config.hydra.runtime.cwd)
        sweep = self.sweep or SweepRun.found(folder, target_of(config))
        # A sweep with a failed job (an error, a job its cluster ended) is FAILED, as its exit says.
        outcome, link = sweep.close(failed=bool(SESSION.failures))
        target = sweep.target
        if outcome.runs or not sweep.study:
            local = target is None or not target.remote
            experiment = target.experiment if target else None
            curves = draws_loss_curves(config.hydra.launcher)
            print_sweep_summary(outcome, folder, sweep.run_id, experiment, link, local, len(SESSION.skipped), curves)
        SESSION.release_folders()


def _study(config: DictConfig, every: list[str]) -> tuple[search.Settings, search.Space, Study] | None:
    """A search's settings, space and study (``hydra/sweeper=optuna``), its storage, sampler,
    direction and space checked before any run; None for a grid."""
    if not is_search(config.hydra.sweeper):
        return None
    settings = search.Settings.of(config.hydra.sweeper)
    space = search.parse_space(every)
    return settings, space, search.open_study(settings, space, config)
