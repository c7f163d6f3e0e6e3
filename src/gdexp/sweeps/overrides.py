"""A sweep's jobs as override lists: which overrides need Hydra to compose a config, and which only
set a per-run value (lr, epochs, seed, ...) that can be applied to a composed config directly.

This is what lets gdexp check a sweep (:mod:`gdexp.sweeps.callback`, ``hydra/sweeper=gdexp``) and
train it (:mod:`gdexp.sweeps.batched`) composing once per group of jobs instead of once per job.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from omegaconf import DictConfig

# Top-level keys that may differ between the members of one population.
MEMBER_KEYS = frozenset(
    {"lr", "epochs", "seed", "init", "init_std", "bias", "predict_at", "converge_tol", "diverge_above"}
)


_PLAIN = re.compile(r"^[A-Za-z0-9_./:+\-]+$")


def value_text(value: Any) -> str:
    """A Python value in Hydra's override grammar."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return repr(value) if math.isfinite(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, Path):
        value = str(value)
    if isinstance(value, str):
        if _PLAIN.match(value) and value not in ("null", "true", "false"):
            return value
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{k}:{value_text(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple, range)):
        return "[" + ",".join(value_text(v) for v in value) + "]"
    raise TypeError(f"{value!r}: allowed: a number, a string, a bool, None, or a list of them")


def member_override(override: Override) -> bool:
    """Whether a parsed override only sets a per-member key (so needs no composition of its own)."""
    plain = not (override.is_add() or override.is_force_add() or override.is_delete())
    return plain and override.package is None and override.key_or_group in MEMBER_KEYS


def apply_overrides(base: DictConfig, overrides: list[Override], in_place: bool = False) -> DictConfig:
    """``base`` (a copy of it, unless ``in_place``) with parsed ``overrides`` applied, exactly as
    Hydra applies them after composing (type checks and errors included)."""
    cfg = base if in_place else copy.deepcopy(base)
    ConfigLoaderImpl._apply_overrides_to_config(overrides, cfg)
    return cfg


@dataclass
class SweepJob:
    """One job of a sweep, as the launcher was handed it."""

    index: int  # position in the launch call
    number: int  # hydra.job.num
    overrides: list[str]
    member: list[Override] = field(default_factory=list)  # parsed overrides of MEMBER_KEYS
    rest: tuple[str, ...] = ()  # the other overrides: composed once per distinct tuple


def split_jobs(job_overrides: list[list[str]], initial_job_idx: int) -> list[SweepJob]:
    """Parse every job's overrides into per-member ones and the ones that need composing."""
    parser = OverridesParser.create()
    parsed_once: dict[str, Override] = {}  # a grid repeats each value many times; parsing is slow
    jobs = []
    for i, overrides in enumerate(job_overrides):
        job = SweepJob(i, initial_job_idx + i, list(overrides))
        rest = []
        for text in overrides:
            if text not in parsed_once:
                (parsed_once[text],) = parser.parse_overrides([text])
            parsed = parsed_once[text]
            if member_override(parsed):
                job.member.append(parsed)
            else:
                rest.append(text)
        job.rest = tuple(rest)
        jobs.append(job)
    return jobs


def validate_jobs(loader: Any, config: DictConfig, job_overrides: list[list[str]]) -> None:
    """Raise what Hydra's composition of each job would raise, composing each distinct set of
    non-member overrides once and applying each distinct member override to it once."""
    checked: set[tuple[tuple[str, ...], str]] = set()
    bases: dict[tuple[str, ...], DictConfig] = {}
    for job in split_jobs(job_overrides, 0):
        if job.rest not in bases:
            bases[job.rest] = loader.load_sweep_config(config, list(job.rest))
        for override in job.member:
            if (job.rest, str(override.input_line)) not in checked:
                checked.add((job.rest, str(override.input_line)))
                apply_overrides(bases[job.rest], [override])
