"""Bad input, said in one line: the value checks of a composed config, one per key, and the
explanation of whatever Hydra or OmegaConf raised while composing it.

:func:`validate` checks what the schema's types cannot (ranges, finiteness, combinations); each
dataset's loader checks its own ``data.*`` keys. :func:`one_line` is the single line a user sees
for any error: ``key=value: problem; allowed: ...``.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import sys
import typing
from enum import Enum

from hydra.errors import ConfigCompositionException, HydraException, MissingConfigException, OverrideParseException
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from gdexp.config import DATA_SCHEMAS, OPTIMIZER_SCHEMAS, Config, ConfigError, Engine, TrackingConfig, group_options
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
        plain = opt.name == "sgd" and opt.momentum == 0 and opt.weight_decay == 0
        if not plain:
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


def one_line(err: BaseException, overrides: list[str] | None = None) -> str:
    """An error as the single line a user sees: key, value, what is allowed. The value a key was
    given is looked up in ``overrides`` (default: the command line)."""
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
        if isinstance(cause, MissingMandatoryValue):
            return f"{key}: not set; allowed: {MISSING_HINTS.get(key, _allowed(key))}"
        if message.startswith("Key '") and "not in" in message:
            return f"{key}: no such config key{_did_you_mean(key)}; allowed: {_allowed(None)}"
        given = _override_value(key, overrides)
        shown = f"{key}={given}" if given is not None else key
        return f"{shown}: {message}; allowed: {_allowed(key)}"
    text = " ".join(str(err).split())
    if isinstance(err, ConfigCompositionException) and "Could not override" in text:
        key = text.split("'")[1] if "'" in text else "?"
        return f"{key}: no such config key{_did_you_mean(key)}; allowed: {_allowed(None)}"
    if isinstance(err, OverrideParseException):
        said = re.search(
            r"Error parsing override '(.*?)' (?:\w+ while evaluating '.*?': )?(.*?)(?: See https://\S+ for details)?$",
            text,
        )
        if said:
            grammar = "Hydra's override grammar (hydra.cc/docs/advanced/override_grammar/basic)"
            return f"{said.group(1)}: {said.group(2)}; allowed: {grammar}"
        return f"override: {text}"
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


# What to give a key that has no default (``data=csv`` alone), by example.
MISSING_HINTS = {
    "data.path": "the path of a CSV file with a header row, e.g. data.path=points.csv",
    "data.target": "the target column, or a list of them, e.g. data.target=y",
}


def _override_value(key: str, overrides: list[str] | None = None) -> str | None:
    """What the command line (or ``overrides``) gave ``key``, for the error line."""
    for arg in sys.argv[1:] if overrides is None else overrides:
        name, sep, value = arg.lstrip("+~").partition("=")
        if sep and name == key:
            return value
    return None


def _schemas(head: str) -> list[type]:
    """The dataclasses a dotted key's first part is typed by."""
    if head == "tracking":
        return [TrackingConfig]
    return list({"optimizer": OPTIMIZER_SCHEMAS, "data": DATA_SCHEMAS}.get(head, {}).values())


def _did_you_mean(key: str) -> str:
    head, _, rest = key.partition(".")
    known = (
        list(typing.get_type_hints(Config))
        if not rest
        else [k for schema in _schemas(head) for k in typing.get_type_hints(schema)]
    )
    near = difflib.get_close_matches(rest or head, known, n=1)
    return f"; did you mean {head + '.' if rest else ''}{near[0]}?" if near else ""


def _allowed(key: str | None) -> str:
    """What a key accepts, from its schema's type; every top-level key when ``key`` is None."""
    bare = (key or "").split("[")[0]  # data.x[1] is an item of data.x
    head, _, rest = bare.partition(".")
    hints = typing.get_type_hints(Config)
    kind = hints.get(head) if key and not rest else None
    for schema in _schemas(head) if rest else []:
        kind = kind or typing.get_type_hints(schema).get(rest)
    if kind is None:
        return ", ".join(hints) + " (and the optimizer.* and data.* keys of the chosen group)"
    if isinstance(kind, type) and issubclass(kind, Enum):
        return ", ".join(kind.__members__)
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    if typing.get_origin(kind) is list or kind is list:
        return "a list of numbers, e.g. [1.0, 2.0]"
    for known, text in names.items():
        if kind is known or known in typing.get_args(kind):
            return text + (" or null" if type(None) in typing.get_args(kind) else "")
    return "a value of the key's type (see README)"


def is_config_error(err: BaseException) -> bool:
    """Bad input (exit 2), as opposed to a failure while running (exit 1)."""
    return isinstance(err, (UserError, HydraException, OmegaConfBaseException))
