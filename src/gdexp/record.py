"""A run's complete record in its own job directory, whatever happens to the tracking store.

``run.json`` holds what MLflow would hold but the curves: run name, params, tags, summary
metrics, status, and where the run belongs (tracking URI, experiment, sweep parent). It is
written when the run starts (status RUNNING) and again when it ends. ``history.csv`` gets its
rows at every flush, so a killed job leaves its curves up to the last flush. ``gdexp.sync``
replays records into a store that lacks them.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any

from gdexp.analysis import predictions_many
from gdexp.data import Dataset
from gdexp.history import History

RECORD_FILE = "run.json"


class RunRecord:
    """The job directory's ``run.json`` and ``history.csv``, kept up to date during the run."""

    def __init__(
        self,
        folder: Path,
        fields: dict[str, Any],
        history: History,
        data: Dataset,
        bias: bool,
        points: list[list[float]],
        pred_columns: list[str],
    ):
        self.folder = folder
        self.fields = {"status": "RUNNING", **fields}
        self.history, self.data, self.bias, self.points = history, data, bias, points
        folder.mkdir(parents=True, exist_ok=True)
        self._written = 0  # history rows (steps) already in history.csv
        with (folder / "history.csv").open("w", newline="") as fh:
            csv.writer(fh).writerow(["epoch", "loss", *history.param_names, *pred_columns])
        self.save()

    def save(self, **updates: Any) -> None:
        """Write ``run.json`` atomically, with ``updates`` merged in."""
        self.fields.update(updates)
        _write_record(self.folder, self.fields)

    def append_history(self) -> None:
        """Append every step recorded since the last call to ``history.csv``."""
        h = self.history
        rows = []
        steps = range(self._written, h.epochs + 1)
        preds = predictions_many(h.params[steps.start :], self.points, self.data, self.bias).tolist()
        for step, pred in zip(steps, preds):
            loss = repr(h.loss[step - 1]) if step else ""
            rows.append([step, loss, *map(repr, h.params[step]), *map(repr, pred)])
        if rows:
            with (self.folder / "history.csv").open("a", newline="") as fh:
                csv.writer(fh).writerows(rows)
                fh.flush()
        self._written = h.epochs + 1


def set_run_id(folder: Path, run_id: str) -> None:
    """Note in a record the MLflow run that holds it (written once the store has it)."""
    path = folder / RECORD_FILE
    fields = json.loads(path.read_text())
    fields["mlflow_run_id"] = run_id
    _write_record(folder, fields)


def _write_record(folder: Path, fields: dict[str, Any]) -> None:
    tmp = folder / f".{RECORD_FILE}.tmp"
    tmp.write_text(json.dumps(fields, indent=2, default=float))
    os.replace(tmp, folder / RECORD_FILE)


def find_records(path: Path) -> list[Path]:
    """Every ``run.json`` at or below ``path`` (a run directory or a sweep directory)."""
    if (path / RECORD_FILE).is_file():
        return [path / RECORD_FILE]
    return sorted(path.rglob(RECORD_FILE))
