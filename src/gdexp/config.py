"""The configuration: its schema, the one way to flatten it to params, and its hash.

The bottom layer of gdexp. Hydra composes ``conf/`` on top of the dataclasses registered here, so
a wrong *type* is caught by OmegaConf during composition; :mod:`gdexp.checks` then checks the
*values*, one check per key, and each dataset's loader checks its own keys
(:mod:`gdexp.training.data`). Every failure surfaces as a :class:`ConfigError`: one line naming
the key, the value and what is allowed.

Adding an optimizer is one YAML in ``conf/optimizer/`` extending one of the schemas below (a new
schema in :data:`OPTIMIZER_SCHEMAS` only when it has keys none of them has).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, cast

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf

from gdexp.errors import UserError

PACKAGE_DIR = Path(__file__).resolve().parent


class ConfigError(UserError, ValueError):
    """A bad configuration value: printed as one line, exit status 2."""

    def __init__(self, key: str, value: Any, allowed: str, problem: str | None = None):
        self.key, self.value, self.allowed, self.problem = key, value, allowed, problem
        shown = value if isinstance(value, str) else json.dumps(_plain(value))
        detail = f": {problem}" if problem else ""
        super().__init__(f"{key}={shown}{detail}; allowed: {allowed}")

    @classmethod
    def said(cls, line: str) -> ConfigError:
        """An error already said in one line (Hydra's, a failed job's), raised as a ConfigError."""
        err = cls.__new__(cls)
        ValueError.__init__(err, line)
        err.key, err.value, err.allowed, err.problem = "", None, "", None
        return err


def _plain(value: Any) -> Any:
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    return value


def _find_dir(packaged: str, in_repo: str) -> Path:
    """Configs ship inside the wheel; an editable or source checkout uses the repo's folders."""
    candidate = PACKAGE_DIR / packaged
    return candidate if candidate.is_dir() else PACKAGE_DIR.parents[1] / in_repo


CONF_DIR = _find_dir("conf", "conf")
EXPERIMENTS_DIR = _find_dir("experiments", "experiments")


class Init(str, Enum):
    zeros = "zeros"
    default = "default"
    normal = "normal"


class Engine(str, Enum):
    lightning = "lightning"
    autograd = "autograd"
    numpy = "numpy"


class Reduction(str, Enum):
    mean = "mean"
    sum = "sum"


class DType(str, Enum):
    float32 = "float32"
    float64 = "float64"


class Accelerator(str, Enum):
    auto = "auto"
    cpu = "cpu"
    gpu = "gpu"


@dataclass
class TrackingConfig:
    uri: str | None = None
    experiment: str = "gdexp"
    enabled: bool = True
    # Resume: skip a job whose config hash already has a FINISHED run in the experiment.
    skip_finished: bool = False
    # Seconds between metric flushes during a run: what a SIGKILL can lose at most.
    flush_seconds: float = 1.0


@dataclass
class OptimizerBase:
    name: str = MISSING
    _target_: str = MISSING
    _partial_: bool = True
    lr: float = "${lr}"  # type: ignore[assignment]
    weight_decay: float = 0.0


@dataclass
class SGDConfig(OptimizerBase):
    momentum: float = 0.0
    dampening: float = 0.0
    nesterov: bool = False


@dataclass
class AdamConfig(OptimizerBase):
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    amsgrad: bool = False


@dataclass
class RMSpropConfig(OptimizerBase):
    alpha: float = 0.99
    eps: float = 1e-8
    momentum: float = 0.0
    centered: bool = False


@dataclass
class AdagradConfig(OptimizerBase):
    lr_decay: float = 0.0
    initial_accumulator_value: float = 0.0
    eps: float = 1e-10


@dataclass
class DataBase:
    name: str = MISSING


@dataclass
class LineConfig(DataBase):
    intercept: float = 0.0
    slope: float = 2.0
    x: list[float] = field(default_factory=lambda: [1.0, 2.0, 3.0, 4.0])


@dataclass
class SyntheticConfig(DataBase):
    n_samples: int = 100
    n_features: int = 1
    weights: list[float] | None = None
    intercept: float = 0.0
    noise: float = 0.0
    seed: int = 0


@dataclass
class CsvConfig(DataBase):
    path: str = MISSING
    target: Any = MISSING
    features: list[str] | None = None


@dataclass
class Config:
    optimizer: Any = MISSING
    data: Any = MISSING
    lr: float = 0.01
    epochs: int = 100
    bias: bool = False
    init: Init = Init.zeros
    init_std: float = 1.0
    seed: int = 0
    batch_size: int | None = None
    predict_at: list[Any] = field(default_factory=lambda: [5.0])
    engine: Engine = Engine.lightning
    loss_reduction: Reduction = Reduction.mean
    accelerator: Accelerator = Accelerator.auto
    dtype: DType = DType.float32
    converge_tol: float = 1e-6
    diverge_above: float = 1e12
    print_every: int | None = None  # the seeds' table, a row every N epochs
    print_format: str | None = None  # a row's format; null: "epoch {epoch}: w = {w:.3f}, loss = {loss:.3f}"
    tracking: TrackingConfig = field(default_factory=TrackingConfig)


OPTIMIZER_SCHEMAS = {"sgd": SGDConfig, "adam": AdamConfig, "rmsprop": RMSpropConfig, "adagrad": AdagradConfig}
DATA_SCHEMAS = {"line": LineConfig, "synthetic": SyntheticConfig, "csv": CsvConfig}


def plain_sgd(optimizer: Any) -> bool:
    """Plain SGD: no momentum, no weight decay (what the numpy engine does). ``optimizer``: a
    config node or its resolved dict."""
    return optimizer["name"] == "sgd" and not optimizer.get("momentum") and not optimizer.get("weight_decay")


def plain_gradient_descent(cfg: Any) -> bool:
    """Full-batch plain gradient descent: the case the theory's ``lr_optimal`` and
    ``lr_max_stable`` describe exactly. ``cfg``: a config or its resolved dict."""
    return plain_sgd(cfg["optimizer"]) and cfg["batch_size"] is None


# --------------------------------------------------------------------------- the --help page

USAGE = """gdexp: gradient descent on linear models, every run tracked in MLflow.

Usage: python -m gdexp.run [KEY=VALUE ...]        one run
       python -m gdexp.run -m KEY=A,B ...         a sweep: one MLflow child run per job
       python -m gdexp.run +experiment=NAME [-m]  a named experiment

Examples:
  python -m gdexp.run lr=0.1 bias=true data=line_intercept
  python -m gdexp.run -m lr=0.01,0.1 optimizer=sgd,adam bias=true,false
  python -m gdexp.run -m hydra/launcher=batched lr=0.001,0.01,0.1 seed=0,1,2
  python -m gdexp.run +experiment=seed_004       the seed notebook's table
  gdexp-ui                                       MLflow's UI, opened on the runs
"""
LAUNCHERS = ("basic", "batched", "joblib", "slurm", "submitit_local")


def _shown_default(f: Any) -> str:
    if f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        value = f.default
    if isinstance(value, Enum):
        return " | ".join([value.name] + [n for n in type(value).__members__ if n != value.name])
    if value is None:
        return "null"
    if isinstance(value, float):
        return f"{value:g}"
    return json.dumps(value) if not isinstance(value, str) else value


def help_template() -> str:
    """The ``--help`` page: usage, the groups and their options, and every key of the schema with
    its default (enums: every value, the default first), from :class:`Config` itself."""
    groups = [
        f"  optimizer   {', '.join(group_options('optimizer'))}  (each has its own optimizer.* keys)",
        f"  data        {', '.join(group_options('data'))}  (csv needs data.path=FILE)",
        f"  experiment  +experiment={', '.join(group_options('experiment'))}",
        f"  hydra/launcher  {', '.join(LAUNCHERS)}  (basic is the default)",
        "  hydra/sweeper   gdexp (the default: every job of the grid), optuna (a search: docs/search.md)",
    ]
    keys = []
    for f in dataclasses.fields(Config):
        if f.name in ("optimizer", "data"):
            continue
        if f.name == "tracking":
            keys += [f"tracking.{t.name} ({_shown_default(t)})" for t in dataclasses.fields(TrackingConfig)]
        else:
            keys.append(f"{f.name} ({_shown_default(f)})")
    lines = [""]
    for key in keys:  # a key and its default are never split across lines
        if lines[-1] and len(lines[-1]) + len(key) > 96:
            lines.append("")
        lines[-1] += f"{key}, "
    wrapped = "\n".join("  " + line.rstrip(", ") for line in lines)
    return (
        USAGE
        + "\nGroups (KEY=OPTION):\n"
        + "\n".join(groups)
        + "\n\nKeys (default; docs/configuration.md says what each allows):\n"
        + wrapped
        + "\n\nThe configuration with these overrides:\n\n$CONFIG\nHydra's own options: --hydra-help."
    )


def register_configs() -> None:
    """Put the schemas in Hydra's ConfigStore; group files extend them with ``defaults``. The
    ``--help`` page is made here from them (``hydra/help=gdexp``)."""
    cs = ConfigStore.instance()
    cs.store(name="config_schema", node=Config)
    help_node = {"app_name": "gdexp", "header": "", "footer": "", "template": help_template()}
    cs.store(group="hydra/help", name="gdexp", node=help_node, provider="gdexp")
    for name, node in OPTIMIZER_SCHEMAS.items():
        cs.store(group="schema/optimizer", name=name, node=node)
    for name, node in DATA_SCHEMAS.items():
        cs.store(group="schema/data", name=name, node=node)
    for path in sorted(EXPERIMENTS_DIR.glob("*.yaml")):
        # The experiments live in their own top-level folder, not under conf/, so they are
        # registered as the `experiment` group by hand, headers and defaults lists intact.
        cs.store(group="experiment", name=path.stem, node=OmegaConf.load(path), package="_global_")


def group_options(group: str) -> list[str]:
    """The user-facing options of a config group (the schemas are not among them)."""
    if group == "experiment":
        return sorted(p.stem for p in EXPERIMENTS_DIR.glob("*.yaml"))
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


# --------------------------------------------------------------------------- params and hashes


def resolved(cfg: DictConfig | dict[str, Any]) -> dict[str, Any]:
    """The resolved configuration as plain containers, without Hydra's own node (a plain dict is
    taken as resolved already, so a caller that needs several views resolves once)."""
    if isinstance(cfg, dict):
        return cfg
    plain = cast(dict[str, Any], OmegaConf.to_container(cfg, resolve=True, enum_to_str=True))
    plain.pop("hydra", None)
    return plain


def flatten(cfg: DictConfig | dict[str, Any]) -> dict[str, str]:
    """Dotted-key params for MLflow. Keys starting with ``_`` and the tracking URI (it may hold
    credentials) are left out; lists are kept whole, as JSON."""
    out: dict[str, str] = {}

    def walk(node: Any, prefix: str) -> None:
        for key, value in node.items():
            if key.startswith("_") or f"{prefix}{key}" == "tracking.uri":
                continue
            if isinstance(value, dict):
                walk(value, f"{prefix}{key}.")
            else:
                out[f"{prefix}{key}"] = value if isinstance(value, str) else json.dumps(value)

    walk(resolved(cfg), "")
    return out


def config_hash(cfg: DictConfig | dict[str, Any]) -> str:
    """Identifies a run's computation: the resolved config minus the tracking settings."""
    plain = {k: v for k, v in resolved(cfg).items() if k != "tracking"}
    return hashlib.sha256(json.dumps(plain, sort_keys=True).encode()).hexdigest()[:16]
