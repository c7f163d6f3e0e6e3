"""Bad input, said in one line: the value checks of a composed config, one per key, and the
explanation of whatever Hydra or OmegaConf raised while composing it.

:func:`validate` checks what the schema's types cannot (ranges, finiteness, combinations); each
dataset's loader checks its own ``data.*`` keys. :func:`one_line` is the single line a user sees
for any error: ``key=value: problem; allowed: ...``.
"""

from __future__ import annotations

import math
import sys
import typing
from enum import Enum

from hydra.errors import ConfigCompositionException, HydraException, MissingConfigException, OverrideParseException
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from gdexp.config import Config, ConfigError, Engine, group_options
from gdexp.errors import UserError


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


def one_line(err: BaseException) -> str:
    """An error as the single line a user sees: key, value, what is allowed."""
    if isinstance(err, UserError):
        return str(err)
    if isinstance(err, MissingConfigException) and err.missing_cfg_file:
        group, _, value = str(err.missing_cfg_file).rpartition("/")
        if group:
            return f"{group}={value}: no such option; allowed: {', '.join(group_options(group))}"
    cause = err.__cause__ if isinstance(err, ConfigCompositionException) else err
    if isinstance(cause, OmegaConfBaseException) and getattr(cause, "full_key", None):
        message = str(cause).strip().splitlines()[0]
        key = str(cause.full_key)
        if message.startswith("Key '") and "not in" in message:
            return f"{key}: no such config key; allowed: {_allowed(None)}"
        given = _override_value(key)
        shown = f"{key}={given}" if given is not None else key
        return f"{shown}: {message}; allowed: {_allowed(key)}"
    text = " ".join(str(err).split())
    if isinstance(err, ConfigCompositionException) and "Could not override" in text:
        key = text.split("'")[1] if "'" in text else "?"
        return f"{key}: no such config key; allowed: {_allowed(None)}"
    if isinstance(err, OverrideParseException):
        return f"override: {text}"
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _override_value(key: str) -> str | None:
    """What the command line gave ``key``, for the error line."""
    for arg in sys.argv[1:]:
        name, sep, value = arg.lstrip("+~").partition("=")
        if sep and name == key:
            return value
    return None


def _allowed(key: str | None) -> str:
    """What a top-level key accepts, from the schema's type; every key when ``key`` is None."""
    hints = typing.get_type_hints(Config)
    if key not in hints:
        return ", ".join(hints) + " (and the optimizer.* and data.* keys of the chosen group)"
    kind = hints[key]
    if isinstance(kind, type) and issubclass(kind, Enum):
        return ", ".join(kind.__members__)
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    for known, text in names.items():
        if kind is known or known in typing.get_args(kind):
            return text + (" or null" if type(None) in typing.get_args(kind) else "")
    return "a value of the key's type (see README)"


def is_config_error(err: BaseException) -> bool:
    """Bad input (exit 2), as opposed to a failure while running (exit 1)."""
    return isinstance(err, (UserError, HydraException, OmegaConfBaseException))
