"""The typed settings of gdexp's launchers and sweeper, as Hydra's config nodes hold them.

Hydra imports every plugin module at every app's start-up, so this module imports nothing but
:mod:`dataclasses`: each plugin's config node subclasses its settings here (adding only its
``_target_``), the plugin builds its settings from its keyword arguments, and gdexp reads a
sweep's launcher and sweeper by these types, never by the ``_target_`` string. Each launcher's
checks live beside its settings (:meth:`BatchedSettings.check`, :func:`check_joblib`,
:meth:`gdexp.sweeps.search.Settings.of`), and :func:`check_launcher` picks them by type.
"""

from dataclasses import dataclass, field
from typing import Any


@dataclass
class BatchedSettings:
    """``hydra/launcher=batched``."""

    # Steps per metric curve in MLflow: an even grid with the first and last epoch (0: every
    # epoch). Each run's history.csv keeps every epoch whatever this says.
    curve_points: int = 100
    # Writer processes that write finished runs to MLflow in parallel with training; null: by
    # store (2 on SQLite, whose writes queue for one lock; 4 on a server, which takes them in
    # parallel). Measured by benchmarks/bench_scale.py.
    writers: int | None = None
    # Each member's loss_curve.png (about 8 ms a run, 80 s of a 10,000-run sweep): off, the curves
    # are drawn on demand (gdexp-compare plot, the report) and MLflow's UI charts them from the
    # metrics; true draws them after the runs are stored, as the per-run launchers do.
    loss_curves: bool = False

    @staticmethod
    def check(node: Any) -> None:
        """``hydra.launcher.*`` as composed, checked with the sweep's values."""
        from gdexp.config import ConfigError

        points = node.curve_points
        if not isinstance(points, int) or (points != 0 and points < 100):
            raise ConfigError("hydra.launcher.curve_points", points, "0 (every epoch) or an integer >= 100")
        if node.writers is not None and (not isinstance(node.writers, int) or node.writers < 1):
            raise ConfigError("hydra.launcher.writers", node.writers, "an integer >= 1, or null (by store)")
        if not isinstance(node.loss_curves, bool):
            raise ConfigError("hydra.launcher.loss_curves", node.loss_curves, "true or false")


def check_joblib(node: Any) -> None:
    """``hydra/launcher=joblib`` (Hydra's own launcher): its ``n_jobs``."""
    from gdexp.config import ConfigError

    n_jobs = node.n_jobs
    if not isinstance(n_jobs, int) or n_jobs == 0 or n_jobs < -1024:
        raise ConfigError("hydra.launcher.n_jobs", n_jobs, "a positive number of workers, or -1 for one per core")


def _kind(node: Any) -> type | None:
    from omegaconf import OmegaConf

    kind = OmegaConf.get_type(node)
    return kind if isinstance(kind, type) else None


def check_launcher(node: Any) -> None:
    """The selected launcher's own settings (``hydra.launcher``), by its config node's type,
    before any run is made."""
    from hydra_plugins.hydra_joblib_launcher.config import JobLibLauncherConf

    kind = _kind(node)
    if kind is not None and issubclass(kind, BatchedSettings):
        BatchedSettings.check(node)
    elif kind is not None and issubclass(kind, JobLibLauncherConf):
        check_joblib(node)


def draws_loss_curves(node: Any) -> bool:
    """Whether the selected launcher (``hydra.launcher``) draws each run's loss_curve.png."""
    kind = _kind(node)
    return not (kind is not None and issubclass(kind, BatchedSettings) and not node.loss_curves)


def is_search(node: Any) -> bool:
    """Whether the selected sweeper (``hydra.sweeper``) is gdexp's search."""
    kind = _kind(node)
    return kind is not None and issubclass(kind, SearchSettings)


@dataclass
class SearchSettings:
    """``hydra/sweeper=optuna``, as given (checked by :meth:`gdexp.sweeps.search.Settings.of`)."""

    n_trials: int = 20  # the study's total
    n_jobs: int = 1  # trials in flight: a batch (batched launcher), or as many running (per-run launchers)
    objective: str = "final_loss"  # a summary metric
    direction: str = "minimize"
    sampler: str = "tpe"  # tpe, random, gp, qmc, grid
    seed: int | None = None
    study_name: str | None = None  # null: derived from the sweep's fixed overrides
    storage: str | None = None  # null: beside the MLflow store
    params: dict[str, str] | None = field(default=None)  # the search space in a config file: key -> grammar
    pruner: str = "none"  # none, median, successive_halving, hyperband (Optuna's)
    # The pruner's own arguments, e.g. {min_resource: 25, reduction_factor: 3}. Any, not a dict:
    # a dict node under Hydra's struct flag would refuse every key not already in it.
    pruner_args: Any = None
