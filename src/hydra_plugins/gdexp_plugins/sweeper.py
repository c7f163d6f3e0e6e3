"""``hydra/sweeper=gdexp``: Hydra's basic sweeper, minus its cost per job.

Before launching, the basic sweeper composes every job's config to check it can be composed:
about 0.06 s a job, a minute for a 1,000-job grid, whatever the launcher. This one composes each
distinct set of the jobs' other overrides once and applies each per-run value (lr, epochs, seed,
...) to it the way Hydra applies overrides, so the same errors surface (see
:func:`gdexp.sweeps.overrides.validate_jobs`). Everything else is the basic sweeper's, and for an
app that is not gdexp's it is the basic sweeper.

No ``from __future__ import annotations``: Hydra executes plugin modules outside ``sys.modules``.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper, BasicSweeperConf
from hydra.core.config_store import ConfigStore
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

from hydra_plugins.gdexp_plugins import is_gdexp_config


@dataclass
class GdexpSweeperConf(BasicSweeperConf):
    _target_: str = "hydra_plugins.gdexp_plugins.sweeper.GdexpSweeper"


ConfigStore.instance().store(group="hydra/sweeper", name="gdexp", node=GdexpSweeperConf, provider="gdexp")


class GdexpSweeper(BasicSweeper):
    """The basic sweeper with a check of the job batch that composes once per group of jobs, and
    the failed jobs of every batch noted in the main process (a parallel launcher's workers keep
    their errors to themselves otherwise)."""

    gdexp = False  # whether the app is gdexp (else: the basic sweeper)

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
        self.gdexp = is_gdexp_config(config)

    def sweep(self, arguments: list[str]) -> Any:
        if not self.gdexp:
            return super().sweep(arguments)
        from pathlib import Path

        from gdexp.failures import note_failures
        from gdexp.tracking.uri import scrub_credentials

        try:
            returns = super().sweep(arguments)
        finally:  # the basic sweeper saved the command line as typed
            assert self.config is not None
            scrub_credentials([Path(self.config.hydra.sweep.dir) / "multirun.yaml"])
        note_failures(ret for batch in returns for ret in batch)
        return returns

    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        if not self.gdexp:
            return super().validate_batch_is_legal(batch)
        from gdexp.sweeps.overrides import validate_jobs

        assert self.hydra_context is not None and self.config is not None  # set by setup()
        validate_jobs(self.hydra_context.config_loader, self.config, [list(o) for o in batch])
