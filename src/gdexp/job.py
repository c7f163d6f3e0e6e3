"""One job's lifecycle, the same for a per-run job and for every member of a batched population.

:meth:`Job.prepare` (check the config, load the data, name the run, its tags and params) ->
train (the per-run engines in :func:`run_job`; a population in :mod:`gdexp.sweeps.batched`) ->
:meth:`Job.close` (summary metrics, predictions, status) -> the record in the job directory and
the MLflow run -> the lines a person reads. Tracking failures inside a sweep never stop training:
the job's record keeps everything for ``gdexp.sync``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from gdexp.checks import validate
from gdexp.config import config_hash, flatten, plain_gradient_descent, resolved
from gdexp.configfile import config_yaml
from gdexp.console import check_table_format, print_summary, progress, say_skipped
from gdexp.failures import fail_if_gone
from gdexp.outcome import Outcome
from gdexp.tracking.client import Tracker
from gdexp.tracking.describe import NOTE_TAG, dataset_spec, run_description
from gdexp.tracking.protocol import DatasetSpec, FinishedRun, RunFiles
from gdexp.tracking.record import SUPERSEDED_TAG, RunInfo, RunRecord, SweepInfo, thin_steps, unfinished_attempt
from gdexp.tracking.tags import run_name, run_tags
from gdexp.tracking.uri import Target, TrackingError, masked
from gdexp.training.analysis import pred_names, predictions, status
from gdexp.training.data import Dataset, load_data, predict_points
from gdexp.training.history import History, RunInterrupted, StopSignal, interrupts_stop, param_names
from gdexp.training.metrics import Finished, summarize


def check(cfg: DictConfig, launch_dir: Path) -> tuple[Dataset, list[list[float]]]:
    """Everything that can reject a config before training: values, data, prediction points."""
    validate(cfg)
    if cfg.accelerator.value == "gpu":
        from gdexp.training.engines import device_for  # torch: only a GPU request pays for it here

        device_for("gpu")
    data = load_data(cfg.data, launch_dir)
    check_table_format(cfg.print_format, param_names(data.n_features, data.n_targets, bool(cfg.bias)))
    return data, predict_points(cfg.predict_at, data.n_features)


@dataclass
class Job:
    """A job ready to train: its config and data, and what its record and MLflow run will carry.
    Its values are read from ``plain``, its resolved config; its ``cfg`` is what an engine trains
    from, made only if asked where ``config`` is a function (a population's member)."""

    config: DictConfig | Callable[[], DictConfig]
    plain: dict[str, Any]
    overrides: list[str]
    output_dir: Path
    data: Dataset  # in the config's dtype
    points: list[list[float]]
    name: str
    tags: dict[str, str]
    params: dict[str, str]
    config_yaml: str
    uri: str | None  # None: tracking off
    parent: str | None
    dataset: DatasetSpec
    started_ms: int  # when the job started: its MLflow run's start time, whenever the run is made

    @property
    def cfg(self) -> DictConfig:
        self.config = self.config if isinstance(self.config, DictConfig) else self.config()
        return self.config

    @classmethod
    def prepare(
        cls,
        cfg: DictConfig | Callable[[], DictConfig],
        *,
        overrides: list[str],
        output_dir: Path,
        launch_dir: Path,
        sweep: SweepInfo | None = None,
        data: Dataset | None = None,
        dataset: DatasetSpec | None = None,
        plain: dict[str, Any] | None = None,
        job_num: int | None = None,
    ) -> Job:
        """Check ``cfg`` and load its data (or, for a population's member, take its group's
        ``data`` and ``dataset`` input, and ``plain``, its checked config resolved)."""
        started_ms = int(time.time() * 1000)
        points = None
        if plain is None or data is None:  # a member's comes resolved, its data checked by its group
            assert isinstance(cfg, DictConfig)
            plain = plain or resolved(cfg)  # resolved once for the tags, the params and config.yaml
            if data is None:
                loaded, points = check(cfg, launch_dir)
                data = loaded.as_dtype(cfg.dtype.value)
        points = predict_points(plain["predict_at"], data.n_features) if points is None else points
        parent = sweep.parent_run_id if sweep else None
        return cls(
            config=cfg,
            plain=plain,
            overrides=overrides,
            output_dir=output_dir,
            data=data,
            points=points,
            name=run_name(overrides),
            tags={
                **run_tags(plain, config_hash(plain), overrides, output_dir, parent),
                **(sweep.trial_tags(job_num) if sweep else {}),
            },
            params=flatten(plain),
            config_yaml=config_yaml(plain),
            uri=target.uri if (target := Target.of(plain["tracking"], launch_dir)) else None,
            parent=parent,
            dataset=dataset or dataset_spec(data, plain["data"], launch_dir),
            started_ms=started_ms,
        )

    @property
    def pred_columns(self) -> list[str]:
        return pred_names(self.points, self.data.n_targets)

    @property
    def param_names(self) -> list[str]:
        return param_names(self.data.n_features, self.data.n_targets, bool(self.plain["bias"]))

    def history(self, initial: list[float], stop: StopSignal | None = None) -> History:
        """An empty history for this job's parameters."""
        return History(
            self.param_names, initial, self.cfg.diverge_above, flush_seconds=self.cfg.tracking.flush_seconds, stop=stop
        )

    def record(self, history: History, run_id: str | None = None, curve_points: int = 0) -> RunRecord:
        """The job directory's record of ``history``."""
        info = RunInfo(
            record_id=self.tags["gdexp.record_id"],
            run_name=self.name,
            params=self.params,
            tags=self.tags,
            tracking_uri=masked(self.uri) if self.uri else None,
            experiment=str(self.plain["tracking"]["experiment"]),
            parent_run_id=self.parent,
            mlflow_run_id=run_id,
            curve_points=curve_points,
        )
        return RunRecord(
            self.output_dir, info, history, self.data, bool(self.plain["bias"]), self.points, self.pred_columns
        )

    def close(self, history: History, end_status: str, run_id: str | None = None) -> Outcome:
        """A run that ended (``FINISHED``, ``KILLED`` or ``FAILED``): its summary metrics, predictions
        before (step 0, with the summary) and after (its last step), status, and their metric rows."""
        c = self.plain
        bias = bool(c["bias"])
        plain = plain_gradient_descent(c)
        summary = summarize(
            Finished(
                history, self.data, bias, c["loss_reduction"], c["converge_tol"], self.points, float(c["lr"]), plain
            )
        )
        first, last = (predictions(history.params[i], self.points, self.data, bias).ravel().tolist() for i in (0, -1))
        cols = self.pred_columns
        # A run that failed before its first epoch has no outcome to chart: no summary metrics.
        untrained = end_status == "FAILED" and history.epochs == 0
        rows = [] if untrained else [(k, v, 0) for k, v in summary.items()]
        rows += [(k, v, 0) for k, v in zip(cols, first)]
        rows += [(k, v, history.epochs) for k, v in zip(cols, last)] if history.epochs else []
        run_status = status(history, c["converge_tol"]) if end_status == "FINISHED" else end_status.lower()
        return Outcome(
            run_id,
            history,
            summary,
            run_status,
            dict(zip(cols, first)),
            dict(zip(cols, last)),
            self.points,
            rows,
            str(self.output_dir),
        )

    def final_tags(self, outcome: Outcome, **extra: str) -> dict[str, str]:
        return {**self.tags, **extra, "gdexp.status": outcome.status, NOTE_TAG: self.describe(outcome)}

    def describe(self, outcome: Outcome) -> str:
        """The run's description in MLflow: what was trained, how it ended."""
        c = self.plain
        return run_description(
            optimizer=str(c["optimizer"]["name"]),
            lr=float(c["lr"]),
            bias=bool(c["bias"]),
            data_name=self.dataset.name,
            n_samples=int(self.data.X.shape[0]),
            engine=c["engine"],
            epochs=int(c["epochs"]),
            trained=outcome.history.epochs,
            status=outcome.status,
            summary=outcome.summary,
            converge_tol=float(c["converge_tol"]),
            prediction=outcome.prediction() if outcome.history.epochs else "",
        )

    def tracking_lost(self, err: Exception) -> None:
        """Say that the store failed this job; its record keeps everything."""
        print(
            f"gdexp [{self.name}] warning: {err}; training goes on, the run is recorded in {self.output_dir} "
            f"(`python -m gdexp.sync {self.output_dir.parent}` replays it)",
            file=sys.stderr,
        )

    def ended(
        self, history: History, end_status: str, curve_points: int, loss_curve: bool = True, **extra_tags: str
    ) -> tuple[Outcome, tuple[FinishedRun, RunFiles] | None]:
        """A run trained elsewhere (a population's member) and ended: its record written whole,
        and what its MLflow run gets (None with tracking off), curves on an even grid of
        ``curve_points`` steps (every epoch in ``history.csv``)."""
        outcome = self.close(history, end_status)
        tags = self.final_tags(outcome, **extra_tags)
        self.record(history, curve_points=curve_points).write_whole(
            self.config_yaml, end_status, tags, outcome.metric_rows
        )
        if self.uri is None:
            return outcome, None
        names, epochs = history.param_names, history.epochs
        rows = [("loss", history.loss[s - 1], int(s)) for s in thin_steps(1, epochs, curve_points)]
        for s in thin_steps(0, epochs, curve_points):
            rows.extend((n, v, int(s)) for n, v in zip(names, history.params[s]))
        run = FinishedRun(
            self.name,
            tags,
            self.params,
            rows + outcome.metric_rows,
            end_status,
            start_time=self.started_ms,
            end_time=int(time.time() * 1000),
            dataset=self.dataset,
        )
        folder = self.output_dir
        files = RunFiles(
            self.name,
            [str(folder / "config.yaml"), str(folder / "history.csv")],
            history.loss if loss_curve else [],
            str(folder / "loss_curve.png") if loss_curve else "",
            record=str(folder),
        )
        return outcome, (run, files)


def run_job(
    cfg: DictConfig,
    *,
    overrides: list[str],
    output_dir: Path,
    launch_dir: Path,
    sweep: SweepInfo | None = None,
    quiet: bool = False,
    job_num: int | None = None,
    prune: Callable[[list[float], bool], bool] | None = None,
) -> Outcome | None:
    """Train one configuration with its engine and record it in ``output_dir`` (``run.json``,
    ``history.csv``, ``config.yaml``) and in MLflow unless tracking is off. A single run whose
    store cannot be reached stops before training; a sweep's job trains on and keeps its record
    for ``gdexp.sync``. None when ``tracking.skip_finished`` finds the configuration FINISHED.
    ``prune(loss, ask)``, a search's trial with a pruner, gets the loss at each flush."""
    job = Job.prepare(
        cfg, overrides=overrides, output_dir=output_dir, launch_dir=launch_dir, sweep=sweep, job_num=job_num
    )
    # Starting the writer now lets MLflow's import and the store's opening overlap torch's import.
    tracker = Tracker.get(job.uri, cfg.tracking.experiment) if job.uri else None

    from gdexp.training.engines import load_engine, train  # torch: a second, overlapping the writer's start
    from gdexp.training.model import make_linear, param_row

    load_engine(cfg.engine.value)  # Lightning too, while the writer opens the store

    data, c = job.data, cfg
    linear = make_linear(data.n_features, data.n_targets, c.bias, c.init.value, c.init_std, c.seed, c.dtype.value)
    history = job.history(param_row(linear))
    record = job.record(history)
    run_id = None
    if tracker is not None:
        try:
            tracker.ready()
            if cfg.tracking.skip_finished:
                done = tracker.finished_run(job.tags["gdexp.config_hash"])
                if done:
                    say_skipped(job.name, done)
                    return None
            earlier = unfinished_attempt(output_dir, job.tags["gdexp.config_hash"])
            record.start(job.config_yaml)  # first: a job killed as its run is made leaves a record naming it
            run_id = tracker.start_run(job.name, job.tags, job.params, job.started_ms, job.dataset)
            record.started_as(run_id)
            if earlier:  # this job ran here before and was stopped (a Slurm requeue): this run replaces it
                tracker.set_tags(earlier, {SUPERSEDED_TAG: run_id})
        except TrackingError as err:
            if sweep is None:
                record.discard()
                raise  # fail fast: nothing has trained yet
            job.tracking_lost(err)
            tracker = None
    if not record.started:
        record.start(job.config_yaml)

    def flush(first_step: int) -> None:
        record.append_history()
        if tracker is not None and run_id is not None:
            tracker.log_metrics(run_id, history.metrics(first_step))
        going = not (history.diverged or history.pruned or history.stop.received) and history.epochs < cfg.epochs
        if prune is not None and prune(history.loss, going):
            history.pruned = True  # end_epoch stops training; the run ends FINISHED, pruned

    end_status = "FAILED"
    try:
        with interrupts_stop(history.stop), progress(int(cfg.epochs), job.name) as bar:

            def flush_and_show(first_step: int) -> None:
                flush(first_step)
                bar.update(history.epochs - max(first_step - 1, 0))

            history.on_flush = flush_and_show
            try:
                train(cfg, job.data, linear, history)
                end_status = "FINISHED"
            except RunInterrupted:
                end_status = "KILLED"
                raise
            finally:
                history.on_flush = flush
    finally:
        fail_if_gone(output_dir, tracker, run_id)  # the run's directory deleted while it trained
        history.flush()
        outcome = job.close(history, end_status, run_id)
        tags = job.final_tags(outcome)
        record.finish(end_status, tags, outcome.metric_rows)
        if tracker is not None and run_id is not None:
            try:
                tracker.log_metrics(run_id, outcome.metric_rows)
                tracker.set_tags(run_id, {k: tags[k] for k in ("gdexp.status", NOTE_TAG)})
                tracker.log_artifact(run_id, output_dir / "config.yaml")
                tracker.log_artifact(run_id, output_dir / "history.csv")
                tracker.end_run(run_id, end_status)
                # Drawn by the writer after the end is acknowledged: off this job's critical path.
                tracker.log_loss_curve(run_id, history.loss, output_dir / "loss_curve.png", job.name)
            except TrackingError as err:
                job.tracking_lost(err)
    if not quiet:
        print_summary(cfg, outcome, job.name, tracker)
    return outcome
