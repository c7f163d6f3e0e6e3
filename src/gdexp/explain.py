"""The explanation of whatever went wrong, as the one line a user sees: ``key=value: problem;
allowed: ...``. Hydra's and OmegaConf's composition errors are read back to the key and value
given, and what the key's schema allows; gdexp's own errors (:class:`~gdexp.errors.UserError`) are
said as they are. :func:`is_config_error` tells bad input (exit 2) from a failure (exit 1).
"""

from __future__ import annotations

import difflib
import re
import sys
import typing
from enum import Enum

from hydra.errors import ConfigCompositionException, HydraException, MissingConfigException, OverrideParseException
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from gdexp.config import DATA_SCHEMAS, OPTIMIZER_SCHEMAS, Config, TrackingConfig, group_options
from gdexp.errors import UserError


def one_line(err: BaseException, overrides: list[str] | None = None) -> str:
    """An error as the single line a user sees: key, value, what is allowed. The value a key was
    given is looked up in ``overrides`` (default: the command line)."""
    if isinstance(err, UserError):
        return str(err)
    if isinstance(err, MissingConfigException) and err.missing_cfg_file:
        group, _, value = str(err.missing_cfg_file).rpartition("/")
        if group:
            options = group_options(group)
            near = difflib.get_close_matches(value, options, n=1)
            hint = f"; did you mean {near[0]}?" if near else ""
            return f"{group}={value}: no such option{hint}; allowed: {', '.join(options)}"
    cause = err.__cause__ if isinstance(err, ConfigCompositionException) else err
    if isinstance(cause, OmegaConfBaseException) and getattr(cause, "full_key", None):
        message = str(cause).strip().splitlines()[0]
        key = str(cause.full_key)
        if isinstance(cause, MissingMandatoryValue):
            return f"{key}: not set; allowed: {MISSING_HINTS.get(key, _allowed(key))}"
        if message.startswith("Key '") and "not in" in message:
            return _no_such_key(key)
        given = _override_value(key, overrides)
        shown = f"{key}={given}" if given is not None else key
        return f"{shown}: {_in_our_words(message)}; allowed: {_allowed(key)}"
    text = " ".join(str(err).split())
    if isinstance(err, ConfigCompositionException) and "Could not override" in text:
        key = text.split("'")[1] if "'" in text else "?"
        return _no_such_key(key)
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


PRUNER_ARGS = "hydra.sweeper.pruner_args"


def _no_such_key(key: str) -> str:
    if key.startswith(PRUNER_ARGS + "."):  # a pruner's argument, added to an empty node
        name = key[len(PRUNER_ARGS) + 1 :]
        return f"{key}: not set this way; allowed: {PRUNER_ARGS}={{{name}: VALUE, ...}} or +{PRUNER_ARGS}.{name}=VALUE"
    return f"{key}: no such config key{_did_you_mean(key)}; allowed: {_allowed(None)}"


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
    return "a value of the key's type (see docs/configuration.md)"


# OmegaConf's conversion errors, said in gdexp's words: "Value 'abc' of type 'str' could not be
# converted to Float" is "not a number".
_KINDS = {"Float": "a number", "Integer": "an integer", "Boolean": "a boolean"}


def _in_our_words(message: str) -> str:
    converted = re.match(r"Value '.*' of type '\w+' could not be converted to (\w+)", message)
    if converted:
        return f"not {_KINDS.get(converted.group(1), converted.group(1).lower())}"
    if re.match(r"Value '.*' is not a valid bool", message):
        return "not a boolean"
    return message


def is_config_error(err: BaseException) -> bool:
    """Bad input (exit 2), as opposed to a failure while running (exit 1)."""
    if isinstance(err, UserError):
        return err.status == 2
    return isinstance(err, (HydraException, OmegaConfBaseException))
