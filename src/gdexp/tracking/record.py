"""A run's complete record in its own job directory, whatever happens to the tracking store.

A job directory holds ``config.yaml``, ``history.csv`` (every epoch) and ``run.json`` (what MLflow
would hold but the curves: run name, params, tags, summary metrics, status, and where the run
belongs). ``run.json`` is the commit point and is always written last, atomically: a kill at any
instant leaves either a complete FINISHED (or KILLED) record or an unfinished one (RUNNING, or no
``run.json`` at all), never a final status beside a torn history. A per-run job writes RUNNING when
it starts and appends ``history.csv`` at every flush, so a killed job keeps its curves up to the
last flush; a batched member, which has ended when it is recorded, writes its record once.
``gdexp.sync`` replays records into a store that lacks them. A sweep's directory also holds
``gdexp_sweep.json``: its parent run and its end.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import socket
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from gdexp.tracking.files import RECORD_FILE, DamagedRecord, read_record, write_atomically, write_json
from gdexp.tracking.protocol import MetricRow
from gdexp.training.analysis import predictions_many
from gdexp.training.data import Dataset
from gdexp.training.history import History

SWEEP_FILE = "gdexp_sweep.json"
FINAL = ("FINISHED", "KILLED", "FAILED")
SUPERSEDED_TAG = "gdexp.superseded_by"  # on a run whose job ran again in its job directory


@dataclass
class RunInfo:
    """What ``run.json`` holds."""

    record_id: str
    run_name: str
    params: dict[str, str]
    tags: dict[str, str]
    tracking_uri: str | None  # credentials masked
    experiment: str
    parent_run_id: str | None = None
    mlflow_run_id: str | None = None
    status: str = "RUNNING"
    metrics: list[MetricRow] = field(default_factory=list)
    curve_points: int = 0  # MLflow's curves of a batched run: an even grid of this many steps (0: every epoch)
    host: str = field(default_factory=socket.gethostname)  # the process that writes it: alive or gone?
    pid: int = field(default_factory=os.getpid)

    @classmethod
    def load(cls, path: Path) -> RunInfo:
        """Read a ``run.json``; a :class:`DamagedRecord` if it is not one."""
        raw = read_record(path)
        known = {f.name for f in fields(cls)}
        try:
            info = cls(**{k: v for k, v in raw.items() if k in known})
        except TypeError as err:
            raise DamagedRecord(f"{path}: {err}") from None
        problems = [
            name
            for name, ok in (
                ("record_id", isinstance(info.record_id, str) and info.record_id),
                ("run_name", isinstance(info.run_name, str)),
                ("params", isinstance(info.params, dict)),
                ("tags", isinstance(info.tags, dict)),
                ("experiment", isinstance(info.experiment, str)),
                ("status", info.status in ("RUNNING", *FINAL)),
                ("metrics", isinstance(info.metrics, list) and all(_metric_row(m) for m in info.metrics)),
                ("curve_points", isinstance(info.curve_points, int)),
            )
            if not ok
        ]
        if problems:
            raise DamagedRecord(f"{path}: bad {', '.join(problems)}")
        info.metrics = [(str(k), float(v), int(s)) for k, v, s in info.metrics]
        return info

    def save(self, folder: Path) -> None:
        # Its fields as they are (dataclasses.asdict deep-copies every tag and metric row first:
        # a third of a batched member's record time), in run.json's order.
        write_json(folder / RECORD_FILE, {f.name: getattr(self, f.name) for f in fields(self)})


def _metric_row(row: Any) -> bool:
    return (
        isinstance(row, (list, tuple))
        and len(row) == 3
        and isinstance(row[0], str)
        and isinstance(row[1], (int, float))
        and isinstance(row[2], int)
    )


def process_gone(host: str, pid: int) -> bool:
    """Whether the process that wrote a record is known to be gone: it ran on this machine and no
    such process is alive (on another machine nobody here can tell)."""
    if host != socket.gethostname() or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:  # a zombie (exited, not yet reaped by its parent) is gone too
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return False


class RunRecord:
    """A job directory's files, written as the run goes."""

    def __init__(
        self,
        folder: Path,
        info: RunInfo,
        history: History,
        data: Dataset,
        bias: bool,
        points: list[list[float]],
        pred_columns: list[str],
    ):
        self.folder, self.info = folder, info
        self.history, self.data, self.bias, self.points = history, data, bias, points
        self.header = ["epoch", "loss", *history.param_names, *pred_columns]
        self._written = 0  # history rows (steps) already in history.csv
        self.started = False

    def start(self, config_yaml: str) -> None:
        """A run that starts: its config, the header of its history, and ``run.json`` RUNNING."""
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "config.yaml").write_text(config_yaml)
        with (self.folder / "history.csv").open("w", newline="") as fh:
            csv.writer(fh).writerow(self.header)
        self.info.save(self.folder)
        self.started = True

    def started_as(self, run_id: str) -> None:
        """The MLflow run made for this record, named in ``run.json``."""
        self.info.mlflow_run_id = run_id
        self.info.save(self.folder)

    def discard(self) -> None:
        """A record started for a run that never trained (its store refused the run): gone."""
        for name in (RECORD_FILE, "config.yaml", "history.csv"):
            (self.folder / name).unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            self.folder.rmdir()  # if this record made it
        self.started = False

    def append_history(self) -> None:
        """Append every step recorded since the last call to ``history.csv``."""
        rows = self._rows()
        if rows:
            with (self.folder / "history.csv").open("a", newline="") as fh:
                csv.writer(fh).writerows(rows)

    def finish(self, status: str, tags: dict[str, str], metrics: list[MetricRow]) -> None:
        """The rest of the history, then ``run.json`` with its final status: the commit point."""
        self.append_history()
        self.info.status, self.info.tags, self.info.metrics = status, tags, metrics
        self.info.save(self.folder)

    def write_whole(self, config_yaml: str, status: str, tags: dict[str, str], metrics: list[MetricRow]) -> None:
        """A run that has ended, written at once: config and whole history first (each atomically),
        ``run.json`` last."""
        self.folder.mkdir(parents=True, exist_ok=True)
        write_atomically(self.folder / "config.yaml", config_yaml)
        table = io.StringIO(newline="")
        writer = csv.writer(table)
        writer.writerow(self.header)
        writer.writerows(self._rows())
        write_atomically(self.folder / "history.csv", table.getvalue())
        self.info.status, self.info.tags, self.info.metrics = status, tags, metrics
        self.info.save(self.folder)

    def _rows(self) -> list[list[Any]]:
        h = self.history
        steps = range(self._written, h.epochs + 1)
        preds = predictions_many(h.params[steps.start :], self.points, self.data, self.bias).tolist()
        rows = []
        for step, pred in zip(steps, preds):
            loss = repr(h.loss[step - 1]) if step else ""
            rows.append([step, loss, *map(repr, h.params[step]), *map(repr, pred)])
        self._written = h.epochs + 1
        return rows


def unfinished_attempt(folder: Path, config_hash: str) -> str | None:
    """The MLflow run of an earlier attempt at this job in its job directory that did not finish
    (KILLED, FAILED, or left RUNNING by a SIGKILL): Slurm requeues a preempted job into the same
    directory. None for a fresh directory or a damaged record."""
    try:
        info = RunInfo.load(folder / RECORD_FILE)
    except DamagedRecord:  # none yet, or not readable: nothing to replace
        return None
    same = info.tags.get("gdexp.config_hash") == config_hash
    return info.mlflow_run_id if same and info.status != "FINISHED" else None


def find_records(path: Path) -> list[Path]:
    """Every ``run.json`` at or below ``path`` (a run directory or a sweep directory)."""
    if (path / RECORD_FILE).is_file():
        return [path / RECORD_FILE]
    return sorted(path.rglob(RECORD_FILE))


def thin_steps(first: int, last: int, points: int) -> np.ndarray:
    """An even grid of at least ``points`` steps from ``first`` to ``last``, both included; every
    step when there are no more than ``points`` (or ``points`` is 0): the steps of a batched run's
    curves that MLflow holds."""
    if points <= 0 or last - first + 1 <= points:
        return np.arange(first, last + 1)
    return np.unique(np.rint(np.linspace(first, last, points)).astype(int))


# --------------------------------------------------------------------------- the sweep's record


@dataclass
class SweepInfo:
    """What ``gdexp_sweep.json`` holds: where every job of the sweep finds its parent run."""

    overrides: list[str]
    jobs: int
    parent_run_id: str | None = None
    tracking_uri: str | None = None  # credentials masked
    experiment: str | None = None
    status: str = "RUNNING"
    host: str = field(default_factory=socket.gethostname)  # the sweep's main process
    pid: int = field(default_factory=os.getpid)
    study: str | None = None  # hydra/sweeper=optuna: the study's name
    trials: dict[str, int] = field(default_factory=dict)  # hydra.job.num -> the study's trial number

    def trial_tags(self, job_num: int | None) -> dict[str, str]:
        """The tags of job ``job_num`` of a study: its trial number and the study's name."""
        if not self.study or job_num is None or str(job_num) not in self.trials:
            return {}
        return {"gdexp.study": self.study, "gdexp.trial": str(self.trials[str(job_num)])}

    @classmethod
    def load(cls, path: Path) -> SweepInfo:
        try:
            raw = json.loads(path.read_text())
            info = cls(**{k: v for k, v in raw.items() if k in {f.name for f in fields(cls)}})
        except (OSError, ValueError, TypeError, AttributeError) as err:
            raise DamagedRecord(f"{path}: not a sweep record ({err})") from None
        if not isinstance(info.parent_run_id, (str, type(None))) or info.status not in ("RUNNING", *FINAL):
            raise DamagedRecord(f"{path}: bad parent_run_id or status")
        return info

    def save(self, folder: Path) -> None:
        write_json(folder / SWEEP_FILE, asdict(self))


def sweep_dir(folder: str, launch_dir: str) -> Path:
    """A sweep's directory, absolute: jobs may run elsewhere than the launch directory."""
    path = Path(folder)
    return path if path.is_absolute() else Path(launch_dir) / path


def read_sweep(folder: Path) -> SweepInfo | None:
    """The record of the sweep whose directory is ``folder``, if it has one."""
    path = folder / SWEEP_FILE
    return SweepInfo.load(path) if path.is_file() else None


def recorded_curves(folder: Path, curve_points: int = 0, problems: list[str] | None = None) -> list[MetricRow]:
    """``(key, value, step)`` of every curve in a job directory's history.csv; for a run of a
    batched sweep, on the even grid of ``curve_points`` steps its MLflow curves were written on.
    A line that is torn or not numbers (a kill mid-write) is left out and noted in ``problems``."""
    path = folder / "history.csv"
    if not path.is_file():
        return []
    lines: list[dict[str, str]] = []
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        for line in reader:
            if None in line.values() or None in line or not _numbers(line):
                if problems is not None:
                    problems.append(f"{path}: line {reader.line_num} is torn or not numbers; left out")
                continue
            lines.append(line)
    last = int(float(lines[-1]["epoch"])) if lines else 0
    keep = {name: set(thin_steps(first, last, curve_points).tolist()) for name, first in (("loss", 1), ("", 0))}
    rows = []
    for line in lines:
        step = int(float(line["epoch"]))
        for key, value in line.items():
            if key == "epoch" or value == "" or key.startswith("pred_"):
                continue
            if step in keep["loss" if key == "loss" else ""]:
                rows.append((key, float(value), step))
    return rows


def _numbers(line: dict[str, Any]) -> bool:
    try:
        for value in line.values():
            if value != "":
                float(value)
        return line.get("epoch", "") != ""
    except (TypeError, ValueError):
        return False
