"""gdexp's Hydra plugins: the batched launcher (``hydra/launcher=batched``), the sweeper that
checks a sweep's jobs without composing each one (``hydra/sweeper=gdexp``, gdexp's default), the
search (``hydra/sweeper=optuna``) and gdexp's Slurm launcher.

Installed with gdexp into the environment's ``hydra_plugins`` namespace, so any Hydra app there
can select ``batched`` and ``gdexp``. For an app that is not gdexp's they do exactly what Hydra's
basic launcher and basic sweeper do; :func:`is_gdexp_config` tells them apart.
"""

from typing import Any


def is_gdexp_config(config: Any) -> bool:
    """Whether a composed config is gdexp's (its schema, :class:`gdexp.config.Config`), without
    importing gdexp: Hydra imports plugin packages at every app's start-up."""
    from omegaconf import OmegaConf

    kind = OmegaConf.get_type(config)
    return kind is not None and f"{kind.__module__}.{kind.__qualname__}" == "gdexp.config.Config"
