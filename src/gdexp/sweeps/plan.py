"""Planning a batched sweep: which jobs train together, as which populations.

A job's overrides of :data:`~gdexp.sweeps.overrides.MEMBER_KEYS` (lr, epochs, seed, init, bias,
...) may differ inside a population; every other override (optimizer, data, engine, ...) is
composed by Hydra once per distinct value. A group is one population when its engine is
``lightning`` or ``autograd`` and its optimizer's step is linear in lr (otherwise the members that
share an lr are one population); ``engine=numpy`` jobs run as ordinary Hydra jobs. Each member's
overrides are applied to its group's config the way Hydra applies them, so its params and config
hash are the per-run job's.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from hydra._internal.config_loader_impl import get_overrides_dirname
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from gdexp.checks import validate
from gdexp.config import ConfigError, config_hash
from gdexp.failures import job_failed
from gdexp.job import Job
from gdexp.sweeps.overrides import SweepJob, apply_overrides
from gdexp.tracking.client import Tracker
from gdexp.tracking.record import SweepInfo, sweep_dir
from gdexp.tracking.uri import Target
from gdexp.training.data import Dataset, load_data
from gdexp.training.population import lr_linear

# Memory for a population's histories (its float32 buffers and their float64 copies).
HISTORY_BYTES = 2 * 1024**3


@dataclass
class Member:
    """A job that trains inside a population, prepared like any other job."""

    sweep_job: SweepJob
    job: Job


@dataclass
class Planned:
    """A population to train: its group's composed config and data, and its members."""

    label: str
    base: DictConfig
    data: Dataset  # in the config's dtype
    members: list[Member]


def compose(context: Any, config: DictConfig, overrides: list[str]) -> DictConfig | None:
    """Hydra's composition of the sweep config with ``overrides``; None when it fails (those jobs
    then run as ordinary jobs, whose error report names the bad value)."""
    try:
        return context.config_loader.load_sweep_config(config, overrides)
    except Exception:
        return None


@dataclass
class GroupPlan:
    """What becomes of a group of jobs: populations to train, jobs skipped as FINISHED already
    (with their run ids), jobs whose own values failed (with their failure, as returned)."""

    populations: list[Planned]
    skipped: list[tuple[SweepJob, str]]
    failed: list[tuple[SweepJob, dict[str, Any]]]


def populations(
    base: DictConfig, group: list[SweepJob], launch_dir: Path, sweep: SweepInfo | None, label: str
) -> GroupPlan | None:
    """The plan of a group of jobs; None when the group cannot be batched."""
    if base.engine.value == "numpy":
        return None
    try:
        validate(base)
        data = load_data(base.data, launch_dir).as_dtype(base.dtype.value)
    except ConfigError:
        return None
    task = copy.deepcopy(base)
    with read_write(task), open_dict(task):
        del task["hydra"]
    finished = _finished_runs(base, launch_dir)
    members, skipped, failed = [], [], []
    for sweep_job, folder in zip(group, output_dirs(base, group)):
        try:
            cfg = apply_overrides(task, sweep_job.member)
            validate(cfg)
        except Exception as err:  # one bad member fails alone, as a per-run job would
            failed.append((sweep_job, job_failed(sweep_job.overrides, err, multirun=True)))
            continue
        done = finished.get(config_hash(cfg)) if finished else None
        if done:
            skipped.append((sweep_job, done))
            continue
        job = Job.prepare(
            cfg,
            overrides=sweep_job.overrides,
            output_dir=folder,
            launch_dir=launch_dir,
            sweep=sweep,
            data=data,
            job_num=sweep_job.number,
        )
        members.append(Member(sweep_job, job))
    if lr_linear(base.optimizer):
        groups = [members] if members else []
    else:
        by_lr: dict[float, list[Member]] = {}
        for member in members:
            by_lr.setdefault(float(member.job.cfg.lr), []).append(member)
        groups = list(by_lr.values())
    # A population keeps every member's whole history in memory until it ends: split the big ones.
    per_epoch = (data.n_targets * (data.n_features + 1) + 1) * (8 if base.dtype.value == "float64" else 4) * 3
    out: list[Planned] = []
    for some in groups:
        size = max(1, HISTORY_BYTES // (per_epoch * (1 + max(m.job.cfg.epochs for m in some))))
        out.extend(Planned(label, base, data, some[i : i + size]) for i in range(0, len(some), size))
    return GroupPlan(out, skipped, failed)


def _finished_runs(base: DictConfig, launch_dir: Path) -> dict[str, str]:
    """For ``tracking.skip_finished``: config hash -> FINISHED run id in the group's experiment,
    from one search (the per-run path asks once per job)."""
    target = Target.of(base.tracking, launch_dir)
    if target is None or not base.tracking.skip_finished:
        return {}
    return Tracker.get(target.uri, target.experiment).finished_runs()


def output_dirs(base: DictConfig, jobs: list[SweepJob]) -> list[Path]:
    """The jobs' directories, as Hydra names them: ``hydra.sweep.subdir`` resolved with each
    job's number (and its override dirname, when the pattern uses it)."""
    hydra_cfg = base.hydra
    folder = sweep_dir(str(hydra_cfg.sweep.dir), str(hydra_cfg.runtime.cwd))
    pattern = str(cast(dict[str, Any], OmegaConf.to_container(hydra_cfg.sweep))["subdir"])  # unresolved
    if pattern == "${hydra.job.num}":  # Hydra's default: no need to resolve it job by job
        return [folder / str(job.number) for job in jobs]
    naming = hydra_cfg.job.config.override_dirname
    parser = OverridesParser.create()
    out = []
    with open_dict(hydra_cfg):
        for job in jobs:
            hydra_cfg.job.num = hydra_cfg.job.id = job.number
            if "override_dirname" in pattern:
                hydra_cfg.job.override_dirname = get_overrides_dirname(
                    parser.parse_overrides(job.overrides),
                    exclude_keys=list(naming.exclude_keys),
                    item_sep=naming.item_sep,
                    kv_sep=naming.kv_sep,
                )
            out.append(folder / str(hydra_cfg.sweep.subdir))
    return out
