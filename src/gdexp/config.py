"""The configuration schema, its validation, and the one way to flatten a config to params.

Hydra composes ``conf/`` on top of the dataclasses registered here, so a wrong *type* is caught
by OmegaConf during composition; :func:`validate` then checks the *values*, one check per key.
Both kinds of failure surface as a :class:`ConfigError`: one line naming the key, the value and
what is allowed.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf

PACKAGE_DIR = Path(__file__).resolve().parent


class ConfigError(ValueError):
    """A bad configuration value: printed as one line, exit status 2."""

    def __init__(self, key: str, value: Any, allowed: str, problem: str | None = None):
        self.key, self.value, self.allowed, self.problem = key, value, allowed, problem
        shown = value if isinstance(value, str) else json.dumps(_plain(value))
        detail = f": {problem}" if problem else ""
        super().__init__(f"{key}={shown}{detail}; allowed: {allowed}")


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
    tracking: TrackingConfig = field(default_factory=TrackingConfig)


OPTIMIZER_SCHEMAS = {"sgd": SGDConfig, "adam": AdamConfig, "rmsprop": RMSpropConfig, "adagrad": AdagradConfig}
DATA_SCHEMAS = {"line": LineConfig, "synthetic": SyntheticConfig, "csv": CsvConfig}


def register_configs() -> None:
    """Put the schemas in Hydra's ConfigStore; group files extend them with ``defaults``."""
    cs = ConfigStore.instance()
    cs.store(name="config_schema", node=Config)
    for name, node in OPTIMIZER_SCHEMAS.items():
        cs.store(group="optimizer", name=f"{name}_schema", node=node)
    for name, node in DATA_SCHEMAS.items():
        cs.store(group="data", name=f"{name}_schema", node=node)
    for path in sorted(EXPERIMENTS_DIR.glob("*.yaml")):
        # The experiments live in their own top-level folder, not under conf/, so they are
        # registered as the `experiment` group by hand, headers and defaults lists intact.
        cs.store(group="experiment", name=path.stem, node=OmegaConf.load(path), package="_global_")


def group_options(group: str) -> list[str]:
    """The user-facing options of a config group (the schemas are not among them)."""
    if group == "experiment":
        return sorted(p.stem for p in EXPERIMENTS_DIR.glob("*.yaml"))
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


# --------------------------------------------------------------------------- validation


def _number(
    cfg: DictConfig,
    key: str,
    *,
    low: float | None = None,
    low_open: bool = True,
    high: float | None = None,
    high_open: bool = True,
    allowed: str,
) -> None:
    value = OmegaConf.select(cfg, key)
    bad = not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value)
    if not bad and low is not None:
        bad = value <= low if low_open else value < low
    if not bad and high is not None:
        bad = value >= high if high_open else value > high
    if bad:
        raise ConfigError(key, value, allowed)


def validate(cfg: DictConfig) -> None:
    """Check every value the schema's types cannot; raise :class:`ConfigError` on the first."""
    _number(cfg, "lr", low=0, allowed="a finite number > 0")
    if cfg.epochs < 1:
        raise ConfigError("epochs", cfg.epochs, "an integer >= 1")
    if cfg.batch_size is not None and cfg.batch_size < 1:
        raise ConfigError("batch_size", cfg.batch_size, "null (full batch) or an integer >= 1")
    _number(cfg, "init_std", low=0, allowed="a finite number > 0")
    if cfg.seed < 0:
        raise ConfigError("seed", cfg.seed, "an integer >= 0")
    _number(cfg, "converge_tol", low=0, low_open=False, allowed="a finite number >= 0")
    _number(cfg, "diverge_above", low=0, allowed="a finite number > 0")
    _number(cfg, "tracking.flush_seconds", low=0, low_open=False, allowed="a finite number >= 0")
    if not str(cfg.tracking.experiment).strip():
        raise ConfigError("tracking.experiment", cfg.tracking.experiment, "a non-empty name")
    for point in cfg.predict_at:
        coords = point if isinstance(point, (list, ListConfig)) else [point]
        for v in coords:
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
                raise ConfigError("predict_at", cfg.predict_at, "a list of finite numbers (or of lists of them)")
    _validate_optimizer(cfg)
    _validate_data(cfg.data)
    if cfg.engine == Engine.numpy:
        opt = cfg.optimizer
        plain = opt.name == "sgd" and opt.momentum == 0 and opt.weight_decay == 0
        if not plain:
            raise ConfigError(
                "engine",
                "numpy",
                "lightning or autograd with this optimizer",
                f"the numpy engine does plain gradient descent only (optimizer=sgd, "
                f"no momentum or weight decay), not optimizer={opt.name}",
            )


def _validate_optimizer(cfg: DictConfig) -> None:
    opt = cfg.optimizer
    _number(cfg, "optimizer.weight_decay", low=0, low_open=False, allowed="a finite number >= 0")
    if "momentum" in opt:
        _number(cfg, "optimizer.momentum", low=0, low_open=False, high=1, allowed="a number in [0, 1)")
    if "dampening" in opt:
        _number(
            cfg, "optimizer.dampening", low=0, low_open=False, high=1, high_open=False, allowed="a number in [0, 1]"
        )
    if opt.get("nesterov") and (opt.momentum <= 0 or opt.dampening != 0):
        raise ConfigError(
            "optimizer.momentum",
            opt.momentum,
            "a number in (0, 1) with dampening 0",
            "Nesterov momentum needs momentum > 0 and zero dampening",
        )
    if "betas" in opt:
        betas = list(opt.betas)
        if len(betas) != 2 or not all(0 <= b < 1 for b in betas):
            raise ConfigError("optimizer.betas", betas, "two numbers in [0, 1)")
    if "alpha" in opt:
        _number(cfg, "optimizer.alpha", low=0, low_open=False, high=1, high_open=False, allowed="a number in [0, 1]")
    if "eps" in opt:
        _number(cfg, "optimizer.eps", low=0, allowed="a finite number > 0")
    if "lr_decay" in opt:
        _number(cfg, "optimizer.lr_decay", low=0, low_open=False, allowed="a finite number >= 0")
    if "initial_accumulator_value" in opt:
        _number(cfg, "optimizer.initial_accumulator_value", low=0, low_open=False, allowed="a finite number >= 0")


def _validate_data(data: DictConfig) -> None:
    if data.name == "synthetic":
        if data.n_samples < 1:
            raise ConfigError("data.n_samples", data.n_samples, "an integer >= 1")
        if data.n_features < 1:
            raise ConfigError("data.n_features", data.n_features, "an integer >= 1")
        if data.weights is not None and len(data.weights) != data.n_features:
            raise ConfigError(
                "data.weights", data.weights, f"null or a list of data.n_features={data.n_features} numbers"
            )
        if data.noise < 0 or not math.isfinite(data.noise):
            raise ConfigError("data.noise", data.noise, "a finite number >= 0")
    elif data.name == "line" and len(data.x) < 1:
        raise ConfigError("data.x", data.x, "a non-empty list of numbers")


# --------------------------------------------------------------------------- params and hashes


def resolved(cfg: DictConfig | dict[str, Any]) -> dict[str, Any]:
    """The resolved configuration as plain containers, without Hydra's own node (a plain dict is
    taken as resolved already, so a caller that needs several views resolves once)."""
    if isinstance(cfg, dict):
        return cfg
    plain = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
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


def config_yaml(cfg: DictConfig | dict[str, Any]) -> str:
    """The resolved configuration as the ``config.yaml`` every run keeps, in OmegaConf's YAML."""
    import yaml
    from omegaconf._utils import get_omega_conf_dumper

    return yaml.dump(
        resolved(cfg), Dumper=get_omega_conf_dumper(), default_flow_style=False, allow_unicode=True, sort_keys=False
    )
