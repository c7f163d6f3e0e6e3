"""What a run says about itself in MLflow's UI: its description and its dataset input.

The description (``mlflow.note.content``) is a sentence a person reads on the run's page: what was
trained and how it ended. The dataset input is what MLflow's Dataset column and filter show: the
training data's name, digest, source, schema and shape.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

from gdexp.tracking.protocol import DatasetSpec
from gdexp.training.data import Dataset

NOTE_TAG = "mlflow.note.content"


def digest(data: Dataset) -> str:
    """Eight hex digits that change whenever the data's values, shape or dtype do."""
    h = hashlib.sha256()
    for array in (data.X, data.Y):
        h.update(f"{array.dtype}{array.shape}".encode())
        h.update(array.tobytes())
    return h.hexdigest()[:8]


def dataset_spec(data: Dataset, data_cfg: Any, launch_dir: Path) -> DatasetSpec:
    """The run's training data as an MLflow dataset: a CSV file by its path, a built-in dataset
    by its name and settings (``data_cfg``: the config's ``data`` node or its resolved dict)."""
    name = str(data_cfg["name"])
    settings = {k: v for k, v in dict(data_cfg).items() if k not in ("name", "path")}
    source: dict[str, Any]
    if name == "csv" or "path" in data_cfg:
        path = Path(str(data_cfg["path"]))
        path = path if path.is_absolute() else launch_dir / path
        source_type, source = "local", {"uri": str(path.resolve())}
        name = path.stem
    else:
        source_type, source = "code", {"tags": {"gdexp.data": name, **{k: str(v) for k, v in settings.items()}}}

    def tensor(array: Any) -> str:
        spec = {"type": "tensor", "tensor-spec": {"dtype": str(array.dtype), "shape": [-1, array.shape[1]]}}
        return json.dumps([spec])

    schema = {"mlflow_tensorspec": {"features": tensor(data.X), "targets": tensor(data.Y)}}
    profile = {
        "num_rows": int(data.X.shape[0]),
        "features": list(data.features),
        "targets": list(data.targets),
        "features_shape": list(data.X.shape),
        "targets_shape": list(data.Y.shape),
    }
    return DatasetSpec(name, digest(data), source_type, json.dumps(source), json.dumps(schema), json.dumps(profile))


def _num(value: float) -> str:
    return f"{value:.4g}" if math.isfinite(value) else str(value)


def run_description(
    *,
    optimizer: str,
    lr: float,
    bias: bool,
    data_name: str,
    n_samples: int,
    engine: str,
    epochs: int,
    trained: int,
    status: str,
    summary: dict[str, float],
    converge_tol: float,
    prediction: str,
) -> str:
    """One paragraph: what was trained, and how it ended."""
    what = (
        f"{optimizer} at lr {lr:g} {'with' if bias else 'without'} a bias on `{data_name}` "
        f"({n_samples} samples), {engine} engine, {epochs} epochs."
    )
    converged_at = summary.get("epochs_to_converge")
    if status == "converged" and converged_at is not None:
        how = f"Converged at epoch {int(converged_at)} (loss <= {converge_tol:g})"
    elif status == "converged":
        how = f"Converged (loss <= {converge_tol:g})"
    elif status == "diverged":
        bound = _num(summary.get("lr_max_stable", math.nan))
        how = f"Diverged at epoch {trained}: the loss blew up (plain gradient descent is stable below lr {bound})"
    elif status == "max_epochs":
        how = f"Ran all {epochs} epochs without reaching loss <= {converge_tol:g}"
    elif status == "pruned":
        how = f"Pruned by the search's pruner after {trained} of {epochs} epochs"
    elif status == "killed":
        how = f"Interrupted after {trained} of {epochs} epochs"
    else:
        how = f"Failed after {trained} of {epochs} epochs"
    parts = [how]
    if "final_loss" in summary:
        parts.append(f"final loss {_num(summary['final_loss'])}")
    if "dist_to_opt" in summary:
        parts.append(f"distance to the optimum {_num(summary['dist_to_opt'])}")
    if prediction:
        parts.append(prediction)
    return f"{what} {'; '.join(parts)}."
