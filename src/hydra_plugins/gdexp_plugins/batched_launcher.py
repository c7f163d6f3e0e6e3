"""``hydra/launcher=batched``: trains a multirun's jobs as populations (see :mod:`gdexp.sweeps.batched`).

Hydra imports every module under ``hydra_plugins`` at start-up, so this one stays light: the
config node and a Launcher that hands its jobs to gdexp.

No ``from __future__ import annotations`` here: Hydra executes plugin modules outside
``sys.modules``, where dataclasses cannot resolve string annotations.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.plugins.launcher import Launcher
from omegaconf import DictConfig


@dataclass
class BatchedLauncherConf:
    _target_: str = "hydra_plugins.gdexp_plugins.batched_launcher.BatchedLauncher"
    # Steps per metric curve in MLflow: an even grid with the first and last epoch (0: every
    # epoch). Each run's history.csv keeps every epoch whatever this says.
    curve_points: int = 100
    # Writer processes that write finished runs to MLflow in parallel with training.
    writers: int = 2


ConfigStore.instance().store(group="hydra/launcher", name="batched", node=BatchedLauncherConf, provider="gdexp")


class BatchedLauncher(Launcher):
    """Groups the jobs that can share one computation and trains each group as one population."""

    def __init__(self, curve_points: int = 100, writers: int = 2) -> None:
        self.curve_points, self.writers = curve_points, writers
        self.config: DictConfig | None = None
        self.hydra_context: Any = None
        self.task_function: Any = None
        self._pools: dict = {}

    def setup(self, *, hydra_context: Any, task_function: Any, config: DictConfig) -> None:
        from gdexp.sweeps.batched import start_early

        self.hydra_context, self.task_function, self.config = hydra_context, task_function, config
        self._pools = start_early(config, self.writers)

    def take_writer_pools(self) -> dict:
        """The writer pools started in ``setup``: every launch uses them (a search launches one
        batch of trials at a time); they close when the process ends."""
        return self._pools

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[Any]:
        from gdexp.sweeps.batched import launch

        return launch(self, [list(o) for o in job_overrides], initial_job_idx)
