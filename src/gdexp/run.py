"""``python -m gdexp.run``: one run, or a Hydra multirun, tracked in MLflow.

The data flow of a job: config -> :func:`prepare` (validate, load data) -> engine (train into a
History) -> tracking (params, curves, summary, artifacts) -> a short printed summary.
"""

from __future__ import annotations

import os
import signal
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from gdexp.analysis import pred_names, predictions, status, summarize
from gdexp.config import (
    CONF_DIR,
    ConfigError,
    config_hash,
    config_yaml,
    flatten,
    group_options,
    register_configs,
    resolved,
    validate,
)
from gdexp.data import Dataset, load_data, predict_points
from gdexp.history import History, RunInterrupted, param_names
from gdexp.record import RunRecord
from gdexp.tracking import (
    SweepAborted,
    Tracker,
    TrackingError,
    read_sweep,
    resolve_uri,
    run_name,
    source_tags,
    sweep_dir,
)

register_configs()


@contextmanager
def interrupts_stop(history: History) -> Iterator[None]:
    """SIGINT and SIGTERM stop the run at the next batch boundary (a second one at once), so the
    history so far is recorded and a write to the tracker is never cut in half."""

    def handler(signum: int, frame: Any) -> None:
        if history.interrupt is not None:
            raise RunInterrupted(signum)
        history.interrupt = signum

    try:
        previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread: leave signals to whoever owns them
        yield
        return
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def prepare(cfg: DictConfig, launch_dir: Path) -> tuple[Dataset, list[list[float]]]:
    """Everything that can reject a config before training: values, data, prediction points."""
    validate(cfg)
    if cfg.accelerator.value == "gpu":
        from gdexp.engines import device_for

        device_for("gpu")
    data = load_data(cfg.data, launch_dir)
    return data, predict_points(cfg.predict_at, data.n_features)


def preflight(config: DictConfig, overrides: list[str]) -> int:
    """Compose and :func:`prepare` one job per value of every sweep axis (the other axes at their
    first value), so a bad value anywhere in a sweep stops it before any job trains. Returns the
    number of jobs the sweep will run."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)
    axes: dict[str, list[str]] = {}
    for o in parsed:
        key = o.get_key_element()
        if o.is_sweep_override():
            if not o.is_discrete_sweep():
                axes[key] = []  # range/interval sweeps are the sweeper's business
                continue
            axes[key] = [f"{key}={v}" for v in o.sweep_string_iterator()]
        else:
            axes[key] = [f"{key}={o.get_value_element_as_str()}"]
    from gdexp.batched import apply_overrides, member_override

    loader = GlobalHydra.instance().config_loader()
    launch_dir = Path(config.hydra.runtime.cwd)
    base = [values[0] for values in axes.values() if values]
    parser = OverridesParser.create()
    composed: dict[tuple[str, ...], DictConfig] = {}
    seen: set[tuple[str, ...]] = set()
    jobs = 1
    for i, values in enumerate(v for v in axes.values() if v):
        jobs *= len(values)
        for value in values:
            job = tuple(base[:i] + [value] + base[i + 1 :])
            if job in seen:
                continue
            seen.add(job)
            try:
                (parsed,) = parser.parse_overrides([value])
                if member_override(parsed):  # a per-run value: set on the composed base, as Hydra sets it
                    if () not in composed:
                        composed[()] = loader.load_sweep_config(config, base)
                    cfg = apply_overrides(composed[()], [parsed])
                else:
                    cfg = loader.load_sweep_config(config, list(job))
            except Exception as err:
                raise ConfigError("override", value, "a valid value for its key", one_line(err)) from None
            prepare(cfg, launch_dir)
    if not seen:
        prepare(config, launch_dir)
    return jobs


def run_tags(
    cfg: DictConfig | dict[str, Any], overrides: list[str], output_dir: Path, parent: str | None
) -> dict[str, str]:
    """A run's tags as it starts (``gdexp.status`` comes at its end); ``cfg`` may be resolved."""
    plain = resolved(cfg)
    tags = {
        **source_tags(),
        "gdexp.overrides": " ".join(overrides),
        "gdexp.engine": plain["engine"],
        "gdexp.config_hash": config_hash(plain),
        "gdexp.output_dir": str(output_dir),
        "gdexp.record_id": uuid.uuid4().hex,
    }
    if parent:
        tags["gdexp.sweep"] = tags["mlflow.parentRunId"] = parent
    return tags


def closing_metrics(
    cfg: DictConfig, history: History, data: Dataset, points: list[list[float]], pred_cols: list[str]
) -> tuple[dict[str, float], list[float], list[float], list[tuple[str, float, int]]]:
    """A finished run's summary metrics, its predictions before and after, and the metric rows
    that record both (summary and predictions before at step 0, predictions after at the end)."""
    bias = bool(cfg.bias)
    summary = summarize(history, data, bias, cfg.loss_reduction.value, cfg.converge_tol, points)
    first, last = (predictions(history.params[i], points, data, bias).ravel().tolist() for i in (0, -1))
    rows = [(k, v, 0) for k, v in summary.items()] + [(k, v, 0) for k, v in zip(pred_cols, first)]
    rows += [(k, v, history.epochs) for k, v in zip(pred_cols, last)] if history.epochs else []
    return summary, first, last, rows


@dataclass
class Outcome:
    """What a job returns to Hydra (and to tests)."""

    run_id: str | None
    history: History
    summary: dict[str, float]
    status: str
    pred_before: dict[str, float]  # pred_5 -> f(5) with the initial parameters
    pred_after: dict[str, float]  # ... with the final ones
    points: list[list[float]]


def run_job(
    cfg: DictConfig,
    *,
    overrides: list[str],
    output_dir: Path,
    launch_dir: Path,
    sweep: dict[str, Any] | None = None,
    quiet: bool = False,
) -> Outcome | None:
    """Train one configuration and record it in ``output_dir`` (``run.json``, ``history.csv``,
    ``config.yaml``) and in MLflow unless tracking is off. A single run whose store cannot be
    reached stops before training; a sweep's job trains on and keeps its record for
    ``gdexp.sync``. None when ``tracking.skip_finished`` finds the configuration FINISHED."""
    data, points = prepare(cfg, launch_dir)
    data = data.as_dtype(cfg.dtype.value)
    uri = resolve_uri(cfg.tracking.uri, launch_dir) if cfg.tracking.enabled else None
    # Starting the writer now lets MLflow's import and the store's opening overlap torch's import.
    tracker = Tracker.get(uri, cfg.tracking.experiment) if uri else None

    from gdexp.engines import train
    from gdexp.model import make_linear, param_row

    bias, name = cfg.bias, run_name(overrides)
    linear = make_linear(data.n_features, data.n_targets, bias, cfg.init.value, cfg.init_std, cfg.seed, cfg.dtype.value)
    parent = (sweep or {}).get("parent_run_id")
    plain = resolved(cfg)  # resolved once for the tags, the params and config.yaml
    tags = run_tags(plain, overrides, output_dir, parent)
    params = flatten(plain)
    run_id = None
    if tracker is not None:
        try:
            tracker.ready()
            if cfg.tracking.skip_finished:
                done = tracker.finished_run(tags["gdexp.config_hash"])
                if done:
                    print(f"gdexp [{name}] skipped: finished already as MLflow run {done}")
                    return None
            run_id = tracker.start_run(name, tags, params)
        except TrackingError as err:
            if sweep is None:
                raise  # fail fast: nothing has trained yet
            _warn_tracking_lost(name, err, output_dir)
            tracker = None

    history = History(
        param_names(data.n_features, data.n_targets, bias),
        param_row(linear),
        cfg.diverge_above,
        flush_seconds=cfg.tracking.flush_seconds,
    )
    pred_cols = pred_names(points, data.n_targets)
    record = RunRecord(
        output_dir,
        {
            "record_id": tags["gdexp.record_id"],
            "run_name": name,
            "params": params,
            "tags": tags,
            "tracking_uri": uri,
            "experiment": cfg.tracking.experiment,
            "parent_run_id": parent,
            "mlflow_run_id": run_id,
        },
        history,
        data,
        bias,
        points,
        pred_cols,
    )
    (output_dir / "config.yaml").write_text(config_yaml(plain))

    def flush(first_step: int) -> None:
        record.append_history()
        if tracker is not None and run_id is not None:
            tracker.log_metrics(run_id, history.metrics(first_step))

    history.on_flush = flush
    end_status = "FAILED"
    try:
        with interrupts_stop(history):
            try:
                train(cfg, data, linear, history)
                end_status = "FINISHED"
            except RunInterrupted:
                end_status = "KILLED"
                raise
    finally:
        history.flush()
        summary, first, last, final_rows = closing_metrics(cfg, history, data, points, pred_cols)
        run_status = status(history, cfg.converge_tol) if end_status == "FINISHED" else end_status.lower()
        record.save(status=end_status, tags={**tags, "gdexp.status": run_status}, metrics=final_rows)
        if tracker is not None and run_id is not None:
            try:
                tracker.log_metrics(run_id, final_rows)
                tracker.set_tags(run_id, {"gdexp.status": run_status})
                tracker.log_artifact(run_id, output_dir / "config.yaml")
                tracker.log_artifact(run_id, output_dir / "history.csv")
                tracker.end_run(run_id, end_status)
                # Drawn by the writer after the end is acknowledged: off this job's critical path.
                tracker.log_loss_curve(run_id, history.loss, output_dir / "loss_curve.png", name)
            except TrackingError as err:
                _warn_tracking_lost(name, err, output_dir)
    outcome = Outcome(
        run_id, history, summary, run_status, dict(zip(pred_cols, first)), dict(zip(pred_cols, last)), points
    )
    if not quiet:
        print_summary(cfg, outcome, overrides, tracker)
    return outcome


def _warn_tracking_lost(name: str, err: Exception, output_dir: Path) -> None:
    print(
        f"gdexp [{name}] warning: {err}; training goes on, the run is recorded in {output_dir} "
        f"(`python -m gdexp.sync {output_dir.parent}` replays it)",
        file=sys.stderr,
    )


def _fmt_point(point: list[float]) -> str:
    return ", ".join(f"{v:g}" for v in point)


def print_summary(cfg: DictConfig, outcome: Outcome, overrides: list[str], tracker: Tracker | None) -> None:
    """A few lines a person reads after a run, ending with the seeds' f(5)."""
    h = outcome.history
    first = f"{h.loss[0]:.6g}" if h.loss else "-"
    params = ", ".join(f"{n} = {v:.4f}" for n, v in zip(h.param_names, h.params[-1]))
    print(
        f"gdexp [{run_name(overrides)}] {cfg.engine.value} · optimizer={cfg.optimizer.name} lr={cfg.lr:g} · "
        f"{h.epochs}/{cfg.epochs} epochs · {outcome.status}"
    )
    print(
        f"  loss {first} -> {h.loss[-1] if h.loss else float('nan'):.6g} (final {outcome.summary['final_loss']:.6g})"
        f" · {params} · distance to optimum {outcome.summary['dist_to_opt']:.3g}"
    )
    if tracker is not None:
        print(f"  MLflow run {outcome.run_id} · experiment {tracker.experiment} · {tracker.uri}")
    per_point = len(outcome.pred_after) // len(outcome.points)
    for label, preds in (("before", outcome.pred_before), ("after", outcome.pred_after)):
        values = list(preds.values())
        shown = "; ".join(
            f"f({_fmt_point(p)}) = " + ", ".join(f"{v:.3f}" for v in values[i * per_point : (i + 1) * per_point])
            for i, p in enumerate(outcome.points)
        )
        print(f"Prediction {label} training: {shown}")


# --------------------------------------------------------------------------- entry points


_JOB_ERRORS: list[tuple[list[str], BaseException]] = []
_TASK_STARTED: list[bool] = []  # empty while Hydra is still composing the configuration


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def _hydra_main(cfg: DictConfig) -> dict[str, Any] | None:
    # A job's error is kept for main() to report in one line: raised here, Hydra would print its
    # own message first (and, in a multirun, the other jobs must go on anyway).
    _TASK_STARTED.append(True)
    try:
        return _job(cfg)
    except Exception as err:
        from hydra.core.hydra_config import HydraConfig

        record_job_error(list(HydraConfig.get().overrides.task), err, HydraConfig.get().mode.name == "MULTIRUN")
        return None


def record_job_error(overrides: list[str], err: BaseException, multirun: bool) -> None:
    """Keep a job's error for :func:`main`'s one-line report; a sweep says so at once and goes on."""
    _JOB_ERRORS.append((overrides, err))
    if multirun:
        print(f"gdexp: job [{run_name(overrides)}] failed: {one_line(err)}", file=sys.stderr)


def _job(cfg: DictConfig) -> dict[str, Any]:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hc = HydraConfig.get()
    sweep = read_sweep(sweep_dir(hc.sweep.dir, hc.runtime.cwd)) if hc.mode == RunMode.MULTIRUN else None
    outcome = run_job(
        cfg,
        overrides=list(hc.overrides.task),
        output_dir=Path(hc.runtime.output_dir),
        launch_dir=Path(hc.runtime.cwd),
        sweep=sweep,
    )
    # What goes back to the launcher must pickle (joblib, submitit): plain values only.
    if outcome is None:
        return {"status": "skipped"}
    return {"run_id": outcome.run_id, "status": outcome.status, **outcome.summary}


def one_line(err: BaseException) -> str:
    """An error as the single line a user sees: key, value, what is allowed."""
    from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
    from omegaconf.errors import OmegaConfBaseException

    if isinstance(err, SweepAborted):
        err = err.error
    if isinstance(err, (ConfigError, TrackingError)):
        return str(err)
    if isinstance(err, MissingConfigException) and err.missing_cfg_file:
        group, _, value = str(err.missing_cfg_file).rpartition("/")
        if group:
            return f"{group}={value}: no such option; allowed: {', '.join(group_options(group))}"
    cause = err.__cause__ if isinstance(err, ConfigCompositionException) else err
    if isinstance(cause, OmegaConfBaseException) and getattr(cause, "full_key", None):
        message = str(cause).strip().splitlines()[0]
        key = cause.full_key
        if message.startswith("Key '") and "not in" in message:
            return f"{key}: no such config key; allowed: {_allowed(None)}"
        value = _override_value(key)
        shown = f"{key}={value}" if value is not None else key
        return f"{shown}: {message}; allowed: {_allowed(key)}"
    text = " ".join(str(err).split())
    if isinstance(err, ConfigCompositionException) and "Could not override" in text:
        key = text.split("'")[1] if "'" in text else "?"
        return f"{key}: no such config key; allowed: {_allowed(None)}"
    if isinstance(err, OverrideParseException):
        return f"override: {text}"
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _override_value(key: str) -> str | None:
    """What the command line gave ``key``, for the error line."""
    for arg in sys.argv[1:]:
        name, sep, value = arg.lstrip("+~").partition("=")
        if sep and name == key:
            return value
    return None


def _allowed(key: str | None) -> str:
    """What a top-level key accepts, from the schema's type; every key when ``key`` is None."""
    import typing
    from enum import Enum

    from gdexp.config import Config

    hints = typing.get_type_hints(Config)
    if key not in hints:
        return ", ".join(hints) + " (and the optimizer.* and data.* keys of the chosen group)"
    kind = hints[key]
    if isinstance(kind, type) and issubclass(kind, Enum):
        return ", ".join(kind.__members__)
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    for known, text in names.items():
        if kind is known or known in typing.get_args(kind):
            return text + (" or null" if type(None) in typing.get_args(kind) else "")
    return "a value of the key's type (see README)"


def main() -> None:
    """The console script: Hydra's errors and ours become one line and a non-zero exit."""
    user_wants_trace = os.environ.get("HYDRA_FULL_ERROR") == "1"
    os.environ["HYDRA_FULL_ERROR"] = "1"  # let exceptions reach us instead of Hydra's printer
    try:
        _hydra_main()
        if _JOB_ERRORS:
            overrides, first = _JOB_ERRORS[0]
            raise (
                first
                if len(_JOB_ERRORS) == 1
                else RuntimeError(
                    f"{len(_JOB_ERRORS)} jobs failed; the first, [{run_name(overrides)}]: {one_line(first)}"
                )
            )
    except RunInterrupted as err:
        print(f"gdexp: interrupted by {err}; the run so far is recorded as KILLED", file=sys.stderr)
        Tracker.close_all()
        sys.exit(128 + err.signum)
    except (Exception, SweepAborted) as err:  # SweepAborted: a BaseException, see tracking.py
        if user_wants_trace:
            raise
        print(f"gdexp: error: {one_line(err)}", file=sys.stderr)
        Tracker.close_all()
        # Whatever fails before the first job starts is the configuration's fault.
        sys.exit(2 if _is_config_error(err) or not _TASK_STARTED else 1)


def _is_config_error(err: BaseException) -> bool:
    """Bad input (exit 2), as opposed to a failure while running (exit 1)."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    return isinstance(err, (ConfigError, SweepAborted, HydraException, OmegaConfBaseException, TrackingError))


if __name__ == "__main__":
    # Run the module's importable twin, so that its classes are the ones other modules see.
    from gdexp.run import main as _main

    _main()
