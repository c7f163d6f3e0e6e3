"""``hydra/sweeper=optuna``: gdexp's search on Optuna 5 (Hydra's own optuna sweeper pins optuna<3).

The search space is written in Hydra's override grammar; batches of ``n_jobs`` trials go through the
selected launcher. The logic is :mod:`gdexp.sweeps.search` (space, settings, storage) and
:mod:`gdexp.sweeps.study` (trials, the loop).

No ``from __future__ import annotations``: Hydra executes plugin modules outside ``sys.modules``.
"""

from dataclasses import dataclass
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.plugins import Plugins
from hydra.plugins.launcher import Launcher
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

from gdexp.sweeps.settings import SearchSettings


@dataclass
class OptunaSweeperConf(SearchSettings):
    _target_: str = "hydra_plugins.gdexp_plugins.optuna_sweeper.OptunaSweeper"


ConfigStore.instance().store(group="hydra/sweeper", name="optuna", node=OptunaSweeperConf, provider="gdexp")


class OptunaSweeper(Sweeper):
    def __init__(self, **settings: Any) -> None:
        self.settings = SearchSettings(**settings)
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.launcher: Launcher | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context = config, hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> Any:
        from gdexp.sweeps.study import run_study

        assert self.config is not None and self.launcher is not None  # set by setup()
        return run_study(self.config, self.launcher, list(arguments))
