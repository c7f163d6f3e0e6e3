"""Search: ``hydra/sweeper=optuna``, an Optuna study whose trials are gdexp jobs.

The search space is written in Hydra's override grammar: ``interval(a,b)`` (``tag(log, ...)`` for a
log scale) is a float, ``range(a,b,step)`` an integer (or a float with a float step), ``choice(...)``
or ``a,b,c`` a category; any other value is fixed. The sweeper asks the study for ``n_jobs`` trials
at a time and hands them to the selected launcher as one batch (the batched launcher trains them as
one population), then tells the study each trial's summary metric. A diverged or failed run is a
FAILED trial, not a number. The study lives in an Optuna storage beside the MLflow store, so the
same command again continues it: ``n_trials`` is the study's total, counted over the trials that
ended by themselves (complete, or failed by divergence); trials cut short by an interrupt are
FAILED and asked again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep
from omegaconf import DictConfig

from gdexp.config import ConfigError
from gdexp.sweeps.overrides import value_text
from gdexp.sweeps.pruners import make_pruner, pruner_args
from gdexp.tracking.store import first_open_lock
from gdexp.tracking.uri import masked, target_of

if TYPE_CHECKING:
    from optuna import Study

SAMPLERS = ("tpe", "random", "gp", "qmc", "grid")
DIRECTIONS = ("minimize", "maximize")
# How a FAILED trial ended: these count toward n_trials (the study learnt something); an
# interrupted one does not, and is asked again.
COUNTED_FAILURES = ("diverged", "failed", "skipped")
OUTCOME = "gdexp.outcome"


class SearchError(ConfigError):
    """A bad search space or sweeper setting: one line, before any trial."""


@dataclass
class Space:
    """The study's search space and the overrides every trial shares."""

    distributions: dict[str, Any] = field(default_factory=dict)  # key -> optuna distribution
    fixed: list[str] = field(default_factory=list)
    written: dict[str, str] = field(default_factory=dict)  # key -> the space as typed, for the parent run

    def overrides(self, params: dict[str, Any]) -> list[str]:
        """A trial's overrides: the fixed ones, then its sampled values in Hydra's grammar."""
        return [*self.fixed, *(f"{key}={value_text(params[key])}" for key in self.distributions)]


def parse_space(arguments: list[str]) -> Space:
    """The search space of ``arguments`` (the command line's overrides and ``hydra.sweeper.params``)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    parser = OverridesParser.create()
    space = Space()
    for text in arguments:
        try:
            (override,) = parser.parse_overrides([text])
        except Exception as err:
            problem = " ".join(str(err).split()).split("ValueError while evaluating")[-1].strip(" ':")
            raise SearchError.said(f"{text}: {problem}; allowed: {_ALLOWED}") from None
        key = override.get_key_element()
        if not override.is_sweep_override():
            space.fixed.append(text)
            continue
        sweep = override.value()
        log = "log" in getattr(sweep, "tags", set())
        if isinstance(sweep, IntervalSweep):
            low, high = float(sweep.start or 0.0), float(sweep.end or 0.0)
            if not (math.isfinite(low) and math.isfinite(high) and low < high):
                raise SearchError.said(f"{text}: an empty interval; allowed: interval(low, high) with low < high")
            if log and low <= 0:
                raise SearchError.said(
                    f"{text}: a log scale from {low:g}; allowed: tag(log, interval(low, high)) with low > 0"
                )
            space.distributions[key] = FloatDistribution(low, high, log=log)
        elif isinstance(sweep, RangeSweep):
            values = list(sweep.range())
            if not values:
                raise SearchError.said(f"{text}: an empty range; allowed: range(start, stop, step) with values in it")
            if all(isinstance(v, int) for v in values) and isinstance(sweep.step, int):
                if log and values[0] <= 0:
                    raise SearchError.said(f"{text}: a log scale from {values[0]}; allowed: values > 0")
                space.distributions[key] = IntDistribution(
                    values[0], values[-1], log=log, step=1 if log else sweep.step
                )
            else:
                space.distributions[key] = FloatDistribution(values[0], values[-1], step=float(sweep.step))
        elif isinstance(sweep, ChoiceSweep):
            space.distributions[key] = CategoricalDistribution([c for c in sweep.list])  # type: ignore[misc]
        else:
            raise SearchError.said(f"{text}: not a search space; allowed: {_ALLOWED}")
        space.written[key] = text.split("=", 1)[1]
    if not space.distributions:
        raise SearchError.said(
            f"hydra/sweeper=optuna: no search space in {' '.join(arguments) or 'the command'}; allowed: {_ALLOWED}"
        )
    return space


_ALLOWED = "interval(low,high), tag(log,interval(low,high)), range(start,stop,step), choice(a,b,...) or a,b,..."


# --------------------------------------------------------------------------- settings


@dataclass
class Settings:
    """``hydra.sweeper.*``, checked."""

    n_trials: int
    n_jobs: int
    objective: str
    direction: str
    sampler: str
    seed: int | None
    study_name: str | None
    storage: str | None
    pruner: str = "none"
    pruner_args: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, sweeper: DictConfig) -> Settings:
        from gdexp.training.metrics import METRICS

        s = cls(
            sweeper.n_trials,
            sweeper.n_jobs,
            str(sweeper.objective),
            str(sweeper.direction),
            str(sweeper.sampler),
            sweeper.seed,
            sweeper.study_name,
            sweeper.storage,
            str(sweeper.get("pruner", "none")),
            pruner_args(sweeper.get("pruner_args")),
        )
        for key, value in (("n_trials", s.n_trials), ("n_jobs", s.n_jobs)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise SearchError(f"hydra.sweeper.{key}", value, "an integer >= 1")
        names = sorted({n for m in METRICS for n in _metric_names(m.name)})
        if s.objective not in names:
            raise SearchError("hydra.sweeper.objective", s.objective, "a summary metric: " + ", ".join(names))
        if s.direction not in DIRECTIONS:
            raise SearchError("hydra.sweeper.direction", s.direction, ", ".join(DIRECTIONS))
        if s.sampler not in SAMPLERS:
            raise SearchError("hydra.sweeper.sampler", s.sampler, ", ".join(SAMPLERS))
        if s.seed is not None and (not isinstance(s.seed, int) or not 0 <= s.seed < 2**32):
            raise SearchError("hydra.sweeper.seed", s.seed, "null or an integer from 0 to 4294967295")
        make_pruner(s.pruner, s.pruner_args)  # a bad name or argument: one line, before any trial
        return s


def _metric_names(name: str) -> list[str]:
    """The summary metrics a registered metric logs (``optimum`` logs ``w_star``, ``b_star``, ...)."""
    spread = {
        "optimum": ["w_star", "b_star"],
        "contraction": ["contraction_observed", "contraction_predicted"],
    }
    return spread.get(name, [name])


def study_name(settings: Settings, space: Space, experiment: str) -> str:
    """The study's name: given, or derived from the sweep's fixed overrides, what it optimises and
    the experiment, so the same command finds the same study again."""
    if settings.study_name:
        return str(settings.study_name)
    fixed = " ".join(sorted(o for o in space.fixed if not o.lstrip("+~").startswith(("tracking.", "hydra"))))
    return f"{experiment}: {fixed or 'default'} | {settings.direction} {settings.objective}"


def study_key(name: str, uid: str = "") -> str:
    """The study as a tag value any MLflow filter can quote: its name, and the ``uid`` a fresh
    study is given (:func:`study_uid`), so that a study made again under the same name (its
    ``optuna.db`` deleted) is another study, with its own parent run."""
    import hashlib

    return hashlib.sha256((name + (f"\n{uid}" if uid else "")).encode()).hexdigest()[:16]


def corners(space: Space) -> list[str]:
    """Overrides that give each axis its ends (every choice of a category): a grid the sweep's
    preflight composes and checks, so a space reaching a bad value fails before any trial."""
    out = []
    for key, dist in space.distributions.items():
        values = list(dist.choices) if hasattr(dist, "choices") else [dist.low, dist.high]
        out.append(f"{key}=" + ",".join(value_text(v) for v in values))
    return out


def storage_url(settings: Settings, tracking_uri: str | None, launch_dir: str | Path) -> str:
    """Where the study lives: ``hydra.sweeper.storage``, else beside the MLflow store
    ``tracking_uri`` (a SQLite file next to ``mlflow.db``; the same PostgreSQL database, in its own
    schema ``optuna``, when the store is one), else ``optuna.db`` in the launch directory."""
    if settings.storage:
        return str(settings.storage)
    uri = tracking_uri or ""
    if uri.startswith("sqlite:///"):
        return f"sqlite:///{Path(uri[len('sqlite:///') :]).parent / 'optuna.db'}"
    if uri.startswith("postgresql"):
        return storage_of_store(uri)
    return f"sqlite:///{Path(launch_dir) / 'optuna.db'}"


def storage_of(settings: Settings, config: DictConfig) -> str:
    """:func:`storage_url` of a sweep's composed config."""
    target = target_of(config)
    return storage_url(settings, target.uri if target else None, str(config.hydra.runtime.cwd))


def storage_of_store(uri: str) -> str:
    """The study storage inside a PostgreSQL tracking store: the same database, schema ``optuna``."""
    return _postgres_schema(uri, "optuna")


def _postgres_schema(uri: str, schema: str) -> str:
    """``uri`` with its own schema: Optuna's tables, and its ``alembic_version``, apart from MLflow's."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(uri)
    try:
        with engine.begin() as conn:
            conn.execute(sqlalchemy.text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
    finally:
        engine.dispose()
    joiner = "&" if "?" in uri else "?"
    return f"{uri}{joiner}options=-csearch_path%3D{schema}"


def make_sampler(settings: Settings, space: Space) -> Any:
    import optuna

    seed = settings.seed
    if settings.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=seed, constant_liar=True)
    if settings.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if settings.sampler == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    if settings.sampler == "qmc":
        return optuna.samplers.QMCSampler(seed=seed, scramble=seed is not None)
    grid: dict[str, list[Any]] = {}
    for key, dist in space.distributions.items():
        if hasattr(dist, "choices"):
            grid[key] = list(dist.choices)
        elif getattr(dist, "step", None):
            n = int(round((dist.high - dist.low) / dist.step)) + 1
            grid[key] = [dist.low + i * dist.step for i in range(n)]
        else:
            raise SearchError(
                "hydra.sweeper.sampler", "grid", "tpe, random, gp or qmc for a continuous interval", f"{key} is one"
            )
    return optuna.samplers.GridSampler(grid, seed=seed)


# --------------------------------------------------------------------------- the study


def open_study(settings: Settings, space: Space, config: DictConfig) -> Study:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = storage_of(settings, config)
    sampler = make_sampler(settings, space)
    try:
        # Two commands making one SQLite storage at once would both create its tables.
        with first_open_lock(storage):
            study = optuna.create_study(
                study_name=study_name(settings, space, str(config.tracking.experiment)),
                storage=storage,
                sampler=sampler,
                pruner=make_pruner(settings.pruner, settings.pruner_args),
                direction=settings.direction,  # type: ignore[arg-type]
                load_if_exists=True,
            )
    except ValueError as err:  # an existing study of that name optimises the other way
        raise SearchError(
            "hydra.sweeper.direction", settings.direction, "the study's own direction", str(err)
        ) from None
    except Exception as err:
        problem = " ".join(str(err).split())[:300]
        raise SearchError(
            "hydra.sweeper.storage", masked(storage), "an Optuna storage URL it can open", problem
        ) from None
    check_space(study, space)
    study.set_user_attr("gdexp.objective", settings.objective)
    if settings.seed is not None and settings.sampler != "qmc":
        # A continued study asks new trials: the sampler's seed moves on with the trials the study
        # holds (the same seed again would ask the first command's trials again). The same
        # commands in the same order still ask the same trials. QMC continues its own sequence.
        held = len(study.get_trials(deepcopy=False))
        if held:
            study.sampler = make_sampler(replace(settings, seed=(settings.seed + 7919 * held) % 2**32), space)
    return study


def check_space(study: Study, space: Space) -> None:
    """A space whose axis changed kind (an interval, then a choice) against the study's trials:
    one line naming the key, before anything is changed (Optuna would raise at the first ask)."""
    from optuna.distributions import check_distribution_compatibility

    held: dict[str, Any] = {}
    for trial in study.get_trials(deepcopy=False):
        for key, dist in trial.distributions.items():
            held.setdefault(key, dist)
    for key, dist in space.distributions.items():
        if key not in held:
            continue
        try:
            check_distribution_compatibility(held[key], dist)
        except ValueError:
            raise SearchError(
                key,
                space.written[key],
                f"{_kind(held[key])} as the study holds it, or another hydra.sweeper.study_name",
                f"study {study.study_name!r} searched {key} as {_kind(held[key])}",
            ) from None


def _kind(dist: Any) -> str:
    from optuna.distributions import CategoricalDistribution, IntDistribution

    if isinstance(dist, CategoricalDistribution):
        return "choice(" + ",".join(value_text(c) for c in dist.choices) + ")"
    scale = "a log " if dist.log else "an "
    kind = "integer range" if isinstance(dist, IntDistribution) else "interval"
    return f"{scale}{kind} from {value_text(dist.low)} to {value_text(dist.high)}"
