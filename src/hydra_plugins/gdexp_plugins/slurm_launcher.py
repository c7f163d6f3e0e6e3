"""``hydra/launcher=slurm`` (gdexp's ``conf/hydra/launcher/slurm.yaml``): hydra-submitit-launcher's
Slurm launcher, with a sweep that waits for every job and reports each one Slurm ended.

The submitit launcher returns the jobs' results in order and raises at the first job that did not
return one, while the rest still run on the cluster. This one waits for them all; a job that Slurm
cancelled, timed out or killed becomes a failed job that names its Slurm job and state, so the
sweep ends with its summary, a non-zero exit, and ``tracking.skip_finished=true`` reruns only it.
An interrupt of the sweep cancels the jobs it is waiting for (Slurm sends them SIGTERM, so each
records its run KILLED with its curve so far). The logic is :mod:`gdexp.sweeps.slurm`.

No ``from __future__ import annotations``: Hydra executes plugin modules outside ``sys.modules``.
"""

from collections.abc import Sequence
from typing import Any

from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher


class GdexpSlurmLauncher(SlurmLauncher):
    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[Any]:
        from gdexp.sweeps.slurm import launch

        return launch(self, [list(o) for o in job_overrides], initial_job_idx)
