"""Bad input, said in one line: the value checks of a composed config, one per key.

:func:`validate` checks what the schema's types cannot (ranges, finiteness, combinations); each
dataset's loader checks its own ``data.*`` keys. What Hydra or OmegaConf raise while composing is
explained by :mod:`gdexp.explain`.
"""

from __future__ import annotations

import dataclasses
import difflib
import math

from omegaconf import DictConfig, ListConfig, OmegaConf

from gdexp.config import ConfigError, Engine, plain_sgd


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


# A run keeps every epoch's loss and parameters in memory (and in history.csv).
MAX_EPOCHS = 10_000_000
MAX_SEED = 2**32 - 1  # NumPy's and PyTorch's seeds are 32-bit here
MAX_NAME = 256  # MLflow keeps experiment names in a VARCHAR(256)


def validate(cfg: DictConfig) -> None:
    """Check every value the schema's types cannot; raise :class:`ConfigError` on the first."""
    unknown_keys(cfg)
    _number(cfg, "lr", low=0, allowed="a finite number > 0")
    if not 1 <= cfg.epochs <= MAX_EPOCHS:
        raise ConfigError("epochs", cfg.epochs, f"an integer from 1 to {MAX_EPOCHS:,} (every epoch is kept in memory)")
    if cfg.batch_size is not None and cfg.batch_size < 1:
        raise ConfigError("batch_size", cfg.batch_size, "null (full batch) or an integer >= 1")
    _number(cfg, "init_std", low=0, allowed="a finite number > 0")
    if not 0 <= cfg.seed <= MAX_SEED:
        raise ConfigError("seed", cfg.seed, f"an integer from 0 to {MAX_SEED}")
    _number(cfg, "converge_tol", low=0, low_open=False, allowed="a finite number >= 0")
    _number(cfg, "diverge_above", low=0, allowed="a finite number > 0")
    _number(cfg, "tracking.flush_seconds", low=0, low_open=False, allowed="a finite number >= 0")
    name = str(cfg.tracking.experiment)
    if not name.strip() or len(name) > MAX_NAME:
        shown = name if len(name) <= 40 else f"{name[:37]}..."
        raise ConfigError("tracking.experiment", shown, f"a non-empty name of at most {MAX_NAME} characters")
    for point in cfg.predict_at:
        coords = point if isinstance(point, (list, ListConfig)) else [point]
        for v in coords:
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
                raise ConfigError("predict_at", cfg.predict_at, "a list of finite numbers (or of lists of them)")
    if cfg.print_every is not None and not 1 <= cfg.print_every <= MAX_EPOCHS:
        raise ConfigError("print_every", cfg.print_every, "null (no table) or an integer >= 1")
    _validate_optimizer(cfg)
    if cfg.engine == Engine.numpy:
        opt = cfg.optimizer
        if not plain_sgd(opt):
            raise ConfigError(
                "engine",
                "numpy",
                "lightning or autograd with this optimizer",
                f"the numpy engine does plain gradient descent only (optimizer=sgd, "
                f"no momentum or weight decay), not optimizer={opt.name}",
            )


def unknown_keys(cfg: DictConfig) -> None:
    """A key no schema has (``+foo=1``, ``+tracking.foo=1``) is a :class:`ConfigError` naming the
    nearest known key. A group built without a schema (a user's dataset YAML) may hold any keys."""
    for prefix, node in (("", cfg), ("tracking.", cfg.tracking), ("optimizer.", cfg.optimizer), ("data.", cfg.data)):
        schema = OmegaConf.get_type(node)
        if not isinstance(node, DictConfig) or not dataclasses.is_dataclass(schema):
            continue
        known = [f.name for f in dataclasses.fields(schema)]
        for key in map(str, node.keys()):
            if key in known or (prefix == "" and key == "hydra"):
                continue
            near = difflib.get_close_matches(str(key), known, n=1)
            hint = f"; did you mean {prefix}{near[0]}?" if near else ""
            allowed = ", ".join(f"{prefix}{k}" for k in known if not k.startswith("_"))
            raise ConfigError(f"{prefix}{key}", node[key], allowed, f"no such config key{hint}")


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
