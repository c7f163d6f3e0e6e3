"""The pruners ``hydra.sweeper.pruner`` names (Optuna's), built and checked from their settings."""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from gdexp.config import ConfigError

if TYPE_CHECKING:
    from optuna.pruners import BasePruner


PRUNERS = ("none", "median", "successive_halving", "hyperband")


def _kinds() -> dict[str, type]:
    import optuna

    return {
        "median": optuna.pruners.MedianPruner,
        "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
        "hyperband": optuna.pruners.HyperbandPruner,
    }


def make_pruner(name: str, args: Mapping[str, Any]) -> BasePruner:
    """The pruner ``hydra.sweeper.pruner`` names, built with ``pruner_args``: one line naming the
    key, the value and what is allowed when either is wrong."""
    import optuna

    if name not in PRUNERS:
        raise ConfigError("hydra.sweeper.pruner", name, ", ".join(PRUNERS))
    given = dict(args)
    if name == "none":
        if given:
            raise ConfigError(
                "hydra.sweeper.pruner_args", given, "{} with hydra.sweeper.pruner=none (arguments of a pruner)"
            )
        return optuna.pruners.NopPruner()
    kind = _kinds()[name]
    allowed = ", ".join(inspect.signature(kind).parameters)
    unknown = sorted(set(given) - set(inspect.signature(kind).parameters))
    if unknown:
        raise ConfigError(
            "hydra.sweeper.pruner_args", given, f"{name}'s arguments: {allowed}", f"{unknown[0]} is not one"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Optuna's experimental-feature warnings
            if name == "hyperband":  # Hyperband checks its arguments only at its first trial's report
                _check_hyperband(given)
            return kind(**given)
    except (TypeError, ValueError) as err:
        problem = " ".join(str(err).split())[:200]
        raise ConfigError("hydra.sweeper.pruner_args", given, f"{name}'s arguments: {allowed}", problem) from None


def _check_hyperband(given: dict[str, Any]) -> None:
    import optuna

    low = given.get("min_resource", 1)
    rungs = {k: given[k] for k in ("reduction_factor", "bootstrap_count") if k in given}
    optuna.pruners.SuccessiveHalvingPruner(min_resource=low, **rungs)  # each bracket is one
    high = given.get("max_resource", "auto")
    if high != "auto" and not (isinstance(high, int) and isinstance(low, int) and high >= low):
        raise ValueError(f"max_resource must be 'auto' or an integer >= min_resource ({low}), not {high!r}")


def pruner_args(node: Any) -> dict[str, Any]:
    """``hydra.sweeper.pruner_args`` as a plain dict (null: none)."""
    from omegaconf import DictConfig, OmegaConf

    if node is None:
        return {}
    if isinstance(node, DictConfig):
        return dict(OmegaConf.to_container(node, resolve=True))  # type: ignore[arg-type]
    if isinstance(node, dict):
        return dict(node)
    raise ConfigError(
        "hydra.sweeper.pruner_args", node, "a mapping of the pruner's arguments, e.g. {reduction_factor: 3}"
    )
