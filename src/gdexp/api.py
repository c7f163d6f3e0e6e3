"""gdexp from Python and Jupyter: :func:`train` one run, :func:`sweep` a grid.

The same composition, checks, tracking and records as ``python -m gdexp.run``: keyword arguments
are the configuration keys, a bad value raises :class:`ConfigError` (a ``ValueError``) with the
command's one line, and every run lands in MLflow and in its job directory. Safe in a notebook:
no ``sys.argv``, no change of directory, no signal handlers off the main thread (Ctrl-C in Jupyter
stops a run at its next epoch, recorded KILLED, then raises ``KeyboardInterrupt``), and any number
of calls in one kernel.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import io
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

from gdexp.compare.runs import records_frame, select_runs
from gdexp.compare.tables import runs_table
from gdexp.config import CONF_DIR, LAUNCHERS, ConfigError, register_configs
from gdexp.explain import is_config_error, one_line
from gdexp.job import run_job
from gdexp.outcome import Outcome
from gdexp.session import SESSION
from gdexp.sweeps.callback import SweepAborted
from gdexp.sweeps.interrupt import close_sweeps
from gdexp.sweeps.overrides import value_text
from gdexp.task import hydra_task
from gdexp.tracking.record import SWEEP_FILE, SweepInfo
from gdexp.training.history import RunInterrupted

# --------------------------------------------------------------------------- overrides


def _key_overrides(keys: Mapping[str, Any], sweep: bool) -> list[str]:
    out = []
    for key, value in keys.items():
        if key == "experiment":  # a named experiment from experiments/, as `+experiment=NAME`
            out.append(f"+experiment={value_text(value)}")
        elif sweep and isinstance(value, (list, tuple, range)):
            if len(value) == 0:
                raise ConfigError.said(f"{key}=[]: an empty sweep axis; allowed: a list of one value or more")
            out.append(f"{key}=" + ",".join(value_text(v) for v in value))
        else:
            out.append(f"{key}={value_text(value)}")
    return out


def _tracking_overrides(tracking: bool, tracking_uri: str | None) -> list[str]:
    out = [] if tracking else ["tracking.enabled=false"]
    # MLFLOW_TRACKING_URI as it is now, carried in the config: a launcher's worker processes (joblib's
    # loky workers live on between calls) keep the environment they started with, and a notebook
    # that points MLFLOW_TRACKING_URI at another store between two sweeps would write there.
    tracking_uri = tracking_uri if tracking_uri is not None or not tracking else os.environ.get("MLFLOW_TRACKING_URI")
    if tracking_uri is not None:
        out.append(f"tracking.uri={value_text(tracking_uri)}")
    return out


def _now_dir(root: str) -> Path:
    return Path.cwd() / root / _dt.datetime.now().strftime("%Y-%m-%d/%H-%M-%S-%f")


@contextmanager
def _hydra_free() -> Iterator[None]:
    """Hydra's global state is ours for the call, and cleared after it, whatever happens."""
    if GlobalHydra.instance().is_initialized():
        GlobalHydra.instance().clear()  # a call interrupted before its clean-up, or a notebook's own
    register_configs()
    try:
        yield
    finally:
        GlobalHydra.instance().clear()


def _said(err: BaseException, overrides: list[str]) -> BaseException:
    """A bad-input error as :class:`ConfigError` with the command's one line; others as they are."""
    if isinstance(err, ConfigError):
        return err
    if is_config_error(err):
        return ConfigError.said(one_line(err, overrides))
    return err


# --------------------------------------------------------------------------- train


@dataclass
class Run:
    """A trained run: ``run_id`` (None with ``tracking=False``), ``history``, ``summary``, ``status``."""

    run_id: str | None
    status: str
    summary: dict[str, float]
    output_dir: Path
    outcome: Outcome = field(repr=False)
    _history: pd.DataFrame | None = field(default=None, repr=False)

    @property
    def history(self) -> pd.DataFrame:
        """Every epoch: ``epoch``, ``loss``, the parameters, the predictions (the run's ``history.csv``)."""
        if self._history is None:
            self._history = pd.read_csv(self.output_dir / "history.csv")
        return self._history

    @property
    def prediction(self) -> str:
        """The seeds' ``f(5) = 10.000`` after training."""
        return self.outcome.prediction()

    def plot(self, ax: Any = None, **kwargs: Any) -> Any:
        """The loss curve on a log scale (matplotlib): ``r.plot()`` in a notebook."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(5, 3.2))
        h = self.history
        ax.plot(h["epoch"], h["loss"], label=kwargs.pop("label", None), **kwargs)
        ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss (MSE)")
        return ax


def train(
    *,
    overrides: Sequence[str] = (),
    tracking: bool = True,
    tracking_uri: str | None = None,
    output_dir: str | Path | None = None,
    quiet: bool = False,
    **keys: Any,
) -> Run:
    """Train one configuration: ``gdexp.train(lr=0.1, optimizer="adam", bias=True)``.

    ``keys`` are the configuration keys (``experiment="seed_004"`` is ``+experiment=seed_004``);
    ``overrides`` takes dotted keys in Hydra's syntax (``["optimizer.momentum=0.9"]``). The run's
    files go to ``output_dir`` (default ``outputs/DATE/TIME`` here, as the command's); ``quiet``
    skips the printed summary. Raises :class:`ConfigError` for bad input, before any training."""
    listed = _key_overrides(keys, sweep=False) + _tracking_overrides(tracking, tracking_uri) + list(overrides)
    folder = Path(output_dir).resolve() if output_dir is not None else _now_dir("outputs")
    try:
        with SESSION.command():
            with _hydra_free(), initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3", job_name="gdexp"):
                cfg: DictConfig = compose(config_name="config", overrides=listed)
            outcome = run_job(cfg, overrides=listed, output_dir=folder, launch_dir=Path.cwd(), quiet=quiet)
    except RunInterrupted:
        raise KeyboardInterrupt from None  # recorded KILLED first, by run_job
    except Exception as err:
        said = _said(err, listed)
        if said is err:
            raise
        raise said from None
    if outcome is None:  # tracking.skip_finished found it done
        raise ConfigError.said("tracking.skip_finished=true: this configuration has a FINISHED run already")
    return Run(outcome.run_id, outcome.status, dict(outcome.summary), folder, outcome)


# --------------------------------------------------------------------------- sweep


def sweep(
    *,
    launcher: str = "basic",
    overrides: Sequence[str] = (),
    tracking: bool = True,
    tracking_uri: str | None = None,
    sweep_dir: str | Path | None = None,
    quiet: bool = False,
    **keys: Any,
) -> pd.DataFrame:
    """Run a grid: ``gdexp.sweep(lr=[0.01, 0.1], optimizer=["sgd", "adam"], launcher="batched")``.

    A list sweeps its key; other values are fixed. Every job is a child run of one parent run, as
    with ``python -m gdexp.run -m``. Returns one row per run (``run_id``, ``run``, ``status``, the
    params that vary, the summary metrics), as ``gdexp-compare table`` shows them; ``df.attrs``
    holds ``parent_run_id`` and ``sweep_dir``. The sweep's own summary (and a batched launch's
    or a search's progress) is printed, never a job's; ``quiet=True`` prints nothing but
    warnings and errors. Raises :class:`ConfigError` for bad input
    anywhere in the grid, before any training."""
    if launcher not in LAUNCHERS:
        raise ConfigError("launcher", launcher, ", ".join(LAUNCHERS))
    listed = _key_overrides(keys, sweep=True) + _tracking_overrides(tracking, tracking_uri) + list(overrides)
    if launcher != "basic":
        listed.append(f"hydra/launcher={launcher}")
    folder = Path(sweep_dir).resolve() if sweep_dir is not None else _now_dir("multirun")
    # Hydra's logging is the command line's business: a notebook's logging is left as it is.
    listed += [f"hydra.sweep.dir={value_text(str(folder))}", "hydra.mode=MULTIRUN"]
    listed += ["hydra/job_logging=none", "hydra/hydra_logging=none"]
    with SESSION.command(), contextlib.redirect_stdout(io.StringIO()) if quiet else contextlib.nullcontext():
        _multirun(listed)
        failures = list(SESSION.failures)
        target = SESSION.sweeps[-1].target if SESSION.sweeps else None
    if failures and all(f.bad_input for f in failures):
        raise ConfigError.said(failures[0].message)
    for failure in failures:
        warnings.warn(f"gdexp: job [{failure.name}] failed: {failure.message}", stacklevel=2)
    return _sweep_table(folder, target.uri if target else None)


def _multirun(listed: list[str]) -> None:
    """Hydra's multirun in this process, whatever goes wrong said as :func:`sweep` says it."""
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import create_config_search_path

    try:
        with _hydra_free():
            search_path = create_config_search_path(str(CONF_DIR))
            hydra = Hydra.create_main_hydra2(task_name="gdexp", config_search_path=search_path)
            hydra.multirun(
                config_name="config",
                task_function=lambda cfg: hydra_task(cfg, quiet=True),  # a notebook wants the table
                overrides=listed,
                with_log_configuration=False,
            )
    except (KeyboardInterrupt, RunInterrupted):
        SESSION.close_writers()
        close_sweeps(stop_workers=False)  # the kernel's other processes are not ours to stop
        raise KeyboardInterrupt from None
    except SweepAborted as err:
        raise _said(err.error, listed) from None
    except Exception as err:
        said = _said(err, listed)
        if said is err:
            raise
        raise said from None


def _sweep_table(folder: Path, uri: str | None) -> pd.DataFrame:
    record = SweepInfo.load(folder / SWEEP_FILE) if (folder / SWEEP_FILE).is_file() else None
    parent = record.parent_run_id if record else None
    if uri is not None and parent and record is not None:
        runs = select_runs(record.experiment or "gdexp", parent, uri=uri)
    else:
        runs = records_frame(folder)
    table = runs_table(runs).rename_axis("run_id").reset_index()
    table.attrs.update(parent_run_id=parent, sweep_dir=str(folder))
    return table
