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
import functools
import pickle
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from hydra._internal.config_loader_impl import get_overrides_dirname
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from omegaconf import DictConfig, ListConfig, Node, OmegaConf, open_dict, read_write

from gdexp.checks import validate
from gdexp.config import ConfigError, config_hash, resolved
from gdexp.failures import job_failed
from gdexp.job import Job
from gdexp.sweeps.overrides import SweepJob, apply_overrides
from gdexp.tracking.client import Tracker
from gdexp.tracking.describe import dataset_spec
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
    configs = MemberConfigs(task)
    dataset = dataset_spec(data, base.data, launch_dir)  # the group's data: every member's input
    finished = _finished_runs(base, launch_dir)
    members, skipped, failed = [], [], []
    for sweep_job, folder in zip(group, output_dirs(base, group)):
        try:
            cfg, plain = configs.config(sweep_job.member)
        except Exception as err:  # one bad member fails alone, as a per-run job would
            failed.append((sweep_job, job_failed(sweep_job.overrides, err, multirun=True)))
            continue
        done = finished.get(config_hash(plain)) if finished else None
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
            dataset=dataset,
            plain=plain,
            job_num=sweep_job.number,
        )
        members.append(Member(sweep_job, job))
    if lr_linear(base.optimizer):
        groups = [members] if members else []
    else:
        by_lr: dict[float, list[Member]] = {}
        for member in members:
            by_lr.setdefault(float(member.job.plain["lr"]), []).append(member)
        groups = list(by_lr.values())
    # A population keeps every member's whole history in memory until it ends: split the big ones.
    per_epoch = (data.n_targets * (data.n_features + 1) + 1) * (8 if base.dtype.value == "float64" else 4) * 3
    out: list[Planned] = []
    for some in groups:
        size = max(1, HISTORY_BYTES // (per_epoch * (1 + max(m.job.plain["epochs"] for m in some))))
        out.extend(Planned(label, base, data, some[i : i + size]) for i in range(0, len(some), size))
    return GroupPlan(out, skipped, failed)


class MemberConfigs:
    """The configs of a group's members: the group's config with each member's overrides applied
    the way Hydra applies them, checked and resolved, without a per-member copy, check and
    resolution of an OmegaConf config.

    - Each distinct override is checked once, applied alone to the group's config: the checks of
      :func:`gdexp.checks.validate` each read one key, and the group's config passed them all, so
      a member whose every override passed does too. A member with an override that failed alone
      is made and checked whole, so that its error is the one a per-run job would report.
    - Its resolved config is the group's with the resolved value of each key it sets, and each
      value that follows another (``optimizer.lr: ${lr}``) set to the one it follows. A config
      with any other interpolation is resolved whole, member by member.
    - Its :class:`DictConfig` is made only if asked (the population does not ask): unpickled from
      the group's (a sixth of a deep copy's time), its overrides applied.
    """

    def __init__(self, task: DictConfig):
        self.task = task
        self.blob = pickle.dumps(task, protocol=pickle.HIGHEST_PROTOCOL)
        self.plain = resolved(task)
        self.follows = _references(task)  # path -> the path it follows; None: resolve whole
        self.alone: dict[str, tuple[str, Any] | None] = {}  # override -> (key, resolved value); None: failed

    def config(self, overrides: list[Override]) -> tuple[DictConfig | Callable[[], DictConfig], dict[str, Any]]:
        """A member's config (or a function that makes it) and its resolution; raises what Hydra
        or the checks raise for it."""
        alone = [self._alone(o) for o in overrides]
        if self.follows is None or any(a is None for a in alone):
            cfg = self.make(overrides)
            validate(cfg)
            return cfg, resolved(cfg)
        plain = {**self.plain, **dict(cast(list[tuple[str, Any]], alone))}
        for path, source in self.follows.items():
            *parents, last = path
            node = plain
            for key in parents:  # copied on the way down: the group's dicts are shared
                node[key] = node = dict(node[key])
            node[last] = _get(plain, source)
        return functools.partial(self.make, overrides), plain

    def make(self, overrides: list[Override]) -> DictConfig:
        """A member's :class:`DictConfig`: the group's, unpickled, with its overrides applied."""
        return apply_overrides(pickle.loads(self.blob), overrides, in_place=True)

    def _alone(self, override: Override) -> tuple[str, Any] | None:
        text = str(override.input_line)
        if text not in self.alone:
            try:
                cfg = apply_overrides(self.task, [override])
                validate(cfg)
                whole = resolved(cfg)
            except Exception:
                self.alone[text] = None
                return None
            key = override.key_or_group
            self.alone[text] = (key, whole[key])
            if self.follows and any(_typed(_get(whole, p)) != _typed(_get(whole, s)) for p, s in self.follows.items()):
                self.follows = None  # a value that follows another but not as it is (converted): resolve whole
        return self.alone[text]


def _references(cfg: DictConfig) -> dict[tuple[str, ...], tuple[str, ...]] | None:
    """The values of a config that are each exactly another's (``${lr}``), by path, with the path
    they follow; None where there is any other interpolation, or one inside a list."""
    found: dict[tuple[str, ...], tuple[str, ...]] = {}

    def walk(node: Any, prefix: tuple[str, ...]) -> bool:
        if isinstance(node, ListConfig):
            return not node._is_interpolation() and (
                node._is_none() or not any(OmegaConf.is_interpolation(node, i) for i in range(len(node)))
            )
        if not isinstance(node, DictConfig) or node._is_none() or node._is_missing():
            return True
        for key in map(str, node.keys()):
            path, child = (*prefix, key), node._get_node(key)
            if OmegaConf.is_interpolation(node, key):
                match = _REFERENCE.match(str(child._value())) if isinstance(child, Node) else None
                if not match:
                    return False
                found[path] = tuple(match.group(1).split("."))
            elif not walk(child, path):
                return False
        return True

    if not walk(cfg, ()):
        return None
    if any(source[: len(p)] == p or p[: len(source)] == source for source in found.values() for p in found):
        return None  # one that follows another that follows, or inside it: resolved whole
    return found


_REFERENCE = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)\}$")


def _get(plain: dict[str, Any], path: tuple[str, ...]) -> Any:
    node: Any = plain
    for key in path:
        node = node[key]
    return node


def _typed(value: Any) -> tuple[type, Any]:
    return type(value), value


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
