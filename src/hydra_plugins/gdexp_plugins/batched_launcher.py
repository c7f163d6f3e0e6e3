"""``hydra/launcher=batched``: trains a multirun's jobs as populations (see :mod:`gdexp.sweeps.batched`).

Hydra imports every module under ``hydra_plugins`` at start-up, so this one stays light: the
config node and a Launcher that hands its jobs to gdexp. For any other Hydra app it is Hydra's
basic launcher: the same job directories, ``.hydra/`` files, ``hydra.job`` and ``hydra.runtime``
values and return values.

No ``from __future__ import annotations`` here: Hydra executes plugin modules outside
``sys.modules``, where dataclasses cannot resolve string annotations.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hydra._internal.core_plugins.basic_launcher import BasicLauncher
from hydra.core.config_store import ConfigStore
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

from gdexp.sweeps.settings import BatchedSettings
from hydra_plugins.gdexp_plugins import is_gdexp_config


@dataclass
class BatchedLauncherConf(BatchedSettings):
    _target_: str = "hydra_plugins.gdexp_plugins.batched_launcher.BatchedLauncher"


ConfigStore.instance().store(group="hydra/launcher", name="batched", node=BatchedLauncherConf, provider="gdexp")


class BatchedLauncher(BasicLauncher):
    """Groups the jobs that can share one computation and trains each group as one population."""

    def __init__(self, **settings: int | None) -> None:
        super().__init__()
        self.settings = BatchedSettings(**settings)  # type: ignore[arg-type]
        self.gdexp = False  # whether the app is gdexp (else: the basic launcher)
        self._pools: dict = {}

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
        self.gdexp = is_gdexp_config(config)
        if self.gdexp:
            from gdexp.sweeps.batched import start_early

            self._pools = start_early(config, self.settings.writers)

    def take_writer_pools(self) -> dict:
        """The writer pools started in ``setup``: every launch uses them (a search launches one
        batch of trials at a time); they close when the process ends."""
        return self._pools

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[Any]:
        if not self.gdexp:
            return super().launch(job_overrides, initial_job_idx)
        from gdexp.sweeps.batched import launch

        return launch(self, [list(o) for o in job_overrides], initial_job_idx)
