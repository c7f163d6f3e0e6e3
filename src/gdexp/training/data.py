"""The datasets a run trains on, as float32 arrays (the seeds' dtype).

A dataset is one YAML in ``conf/data/`` (its ``name`` and keys) and one loader function here,
registered under that name with :func:`loader`. The loader checks its own ``data.*`` keys (a bad
one is a :class:`~gdexp.config.ConfigError`) and returns a :class:`Dataset`; everything else
(training, tracking, the contour plots of ``gdexp-compare``) finds it through :func:`load_data`.
"""

from __future__ import annotations

import csv as csv_module
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, ListConfig

from gdexp.config import ConfigError


@dataclass(frozen=True)
class Dataset:
    """Inputs ``X`` of shape (samples, features) and targets ``Y`` of shape (samples, targets)."""

    X: np.ndarray
    Y: np.ndarray
    features: list[str]
    targets: list[str]

    @property
    def n_features(self) -> int:
        return self.X.shape[1]

    @property
    def n_targets(self) -> int:
        return self.Y.shape[1]

    def as_dtype(self, dtype: str) -> Dataset:
        """The same data in ``dtype`` (float32 like the seeds, or float64)."""
        return Dataset(self.X.astype(dtype), self.Y.astype(dtype), self.features, self.targets)


Loader = Callable[[DictConfig, Path], Dataset]
LOADERS: dict[str, Loader] = {}


def loader(*names: str) -> Callable[[Loader], Loader]:
    """Register a function as the loader of the datasets whose ``data.name`` is one of ``names``."""

    def register(function: Loader) -> Loader:
        for name in names:
            LOADERS[name] = function
        return function

    return register


# Largest magnitude of an input or target: squared errors summed over the samples must stay finite
# in float32 (3.4e38), the seeds' dtype.
MAX_VALUE = 1e15
# Largest model: its full-batch Hessian (parameters squared, float64) gives the stability bound.
MAX_PARAMS = 4096
MAX_CELLS = 2**28  # samples x features: 1 GiB of float32 inputs


def load_data(data: DictConfig, launch_dir: Path | None = None) -> Dataset:
    """Build the dataset that ``data`` describes, with its registered loader; a bad value, file or
    column is a :class:`ConfigError`, and so is data too large or too big in value to train on.
    Relative paths are taken from ``launch_dir``."""
    name = str(data.get("name"))
    found = LOADERS.get(name)
    if found is None:
        raise ConfigError("data.name", data.get("name"), ", ".join(sorted(LOADERS)))
    dataset = found(data, launch_dir or Path.cwd())
    size = (dataset.n_features + 1) * dataset.n_targets
    if size > MAX_PARAMS:
        raise ConfigError(
            "data", name, f"at most {MAX_PARAMS} parameters (features + 1) x targets", f"{size} parameters"
        )
    biggest = max(float(np.abs(dataset.X).max(initial=0)), float(np.abs(dataset.Y).max(initial=0)))
    if not math.isfinite(biggest) or biggest > MAX_VALUE:
        raise ConfigError(
            "data", name, f"inputs and targets within +-{MAX_VALUE:g} (float32 training)", f"a value of {biggest:g}"
        )
    return dataset


def _finite(key: str, values: list[float], allowed: str) -> None:
    if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
        raise ConfigError(key, list(values), allowed)


@loader("line", "line_intercept")
def line(data: DictConfig, launch_dir: Path) -> Dataset:
    """y = slope * x + intercept at the points ``x`` (seeds 000 to 004)."""
    if len(data.x) < 1:
        raise ConfigError("data.x", data.x, "a non-empty list of finite numbers")
    _finite("data.x", list(data.x), "a non-empty list of finite numbers")
    _finite("data.slope", [data.slope], "a finite number")
    _finite("data.intercept", [data.intercept], "a finite number")
    x = np.asarray(data.x, dtype=np.float32)[:, None]
    y = np.float32(data.slope) * x + np.float32(data.intercept)
    return Dataset(x, y.astype(np.float32), ["x"], ["y"])


@loader("synthetic")
def synthetic(data: DictConfig, launch_dir: Path) -> Dataset:
    """X ~ N(0, 1); y = X @ weights + intercept + noise * N(0, 1), all drawn from ``data.seed``."""
    if data.n_samples < 1:
        raise ConfigError("data.n_samples", data.n_samples, "an integer >= 1")
    if not 1 <= data.n_features < MAX_PARAMS:
        raise ConfigError(
            "data.n_features", data.n_features, f"an integer from 1 to {MAX_PARAMS - 1} (the Hessian's size)"
        )
    if data.n_samples * data.n_features > MAX_CELLS:
        raise ConfigError(
            "data.n_samples", data.n_samples, f"n_samples x n_features at most {MAX_CELLS:,} (1 GiB of float32 inputs)"
        )
    if not 0 <= data.seed <= 2**32 - 1:
        raise ConfigError("data.seed", data.seed, "an integer from 0 to 4294967295")
    if data.weights is not None and len(data.weights) != data.n_features:
        raise ConfigError("data.weights", data.weights, f"null or a list of data.n_features={data.n_features} numbers")
    if data.weights is not None:
        _finite("data.weights", list(data.weights), "null or a list of finite numbers")
    _finite("data.intercept", [data.intercept], "a finite number")
    if data.noise < 0 or not math.isfinite(data.noise):
        raise ConfigError("data.noise", data.noise, "a finite number >= 0")
    rng = np.random.default_rng(data.seed)
    X = rng.standard_normal((data.n_samples, data.n_features))
    weights = np.arange(1, data.n_features + 1) if data.weights is None else np.asarray(data.weights)
    y = X @ weights + data.intercept + data.noise * rng.standard_normal(data.n_samples)
    features = [f"x{i}" for i in range(data.n_features)]
    return Dataset(X.astype(np.float32), y[:, None].astype(np.float32), features, ["y"])


@loader("csv")
def csv(data: DictConfig, launch_dir: Path) -> Dataset:
    """Columns of a CSV file with a header row: ``target`` (one or a list), ``features`` (or every other)."""
    import pandas as pd  # only CSV data pays for pandas

    path = Path(data.path)
    path = path if path.is_absolute() else launch_dir / path
    allowed = "a readable CSV file with a header row and numeric columns, no missing values"
    if not path.is_file():
        raise ConfigError("data.path", data.path, allowed, "no such file")
    try:
        with path.open(newline="") as fh:
            header = next(csv_module.reader(fh), [])
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.EmptyDataError, StopIteration):
        raise ConfigError("data.path", data.path, allowed, "the file is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError, csv_module.Error) as err:
        problem = " ".join(str(err).split())  # pandas' messages span lines
        raise ConfigError("data.path", data.path, allowed, f"not a readable CSV ({problem})") from None
    if frame.empty:
        raise ConfigError("data.path", data.path, allowed, "the file has a header but no rows")
    twice = sorted({c for c in header if header.count(c) > 1})
    if twice:
        raise ConfigError("data.path", data.path, allowed, f"column {twice[0]!r} appears twice in the header")
    columns = [str(c) for c in frame.columns]
    frame.columns = columns

    if not isinstance(data.target, (str, list, ListConfig)) or not data.target:
        raise ConfigError("data.target", data.target, f"a column name or a list of them: {', '.join(columns)}")
    targets = [data.target] if isinstance(data.target, str) else [str(t) for t in data.target]
    for name in targets:
        if name not in columns:
            raise ConfigError("data.target", name, f"a column of {data.path}: {', '.join(columns)}")
    features = list(data.features) if data.features is not None else [c for c in columns if c not in targets]
    if not features:
        raise ConfigError("data.features", data.features, "at least one column besides the target")
    for name in features:
        if name not in columns or name in targets:
            raise ConfigError("data.features", name, f"a non-target column of {data.path}: {', '.join(columns)}")

    for name in features + targets:
        text = frame[name].str.strip()
        if text.str.lower().isin(["true", "false"]).any():
            row = int(text.str.lower().isin(["true", "false"]).idxmax()) + 2
            raise ConfigError(
                "data.path", data.path, allowed, f"column '{name}' holds true/false, not numbers (line {row})"
            )
        column = pd.to_numeric(text.replace("", np.nan), errors="coerce")
        bad = column.isna() & text.ne("") & ~text.str.lower().isin(["nan", "na", "null", "none"])
        if bad.any():
            row = int(bad.idxmax()) + 2  # 1-based, after the header line
            raise ConfigError(
                "data.path",
                data.path,
                allowed,
                f"column '{name}' is not numeric ({frame[name][bad.idxmax()]!r} on line {row})",
            )
        if column.isna().any():
            row = int(column.isna().idxmax()) + 2
            raise ConfigError("data.path", data.path, allowed, f"column '{name}' has a missing/NaN value on line {row}")
        values = column.to_numpy(dtype=np.float64)
        if not np.isfinite(values).all():
            raise ConfigError("data.path", data.path, allowed, f"column '{name}' has an infinite value")
        if (np.abs(values) > MAX_VALUE).any():
            row = int(np.argmax(np.abs(values) > MAX_VALUE)) + 2
            raise ConfigError(
                "data.path",
                data.path,
                f"values within +-{MAX_VALUE:g}: their squares must stay finite in float32 training",
                f"column '{name}' has {values[row - 2]:g} on line {row}",
            )
        frame[name] = column
    X = frame[features].to_numpy(dtype=np.float32)
    Y = frame[targets].to_numpy(dtype=np.float32)
    return Dataset(X, Y, features, targets)


def predict_points(predict_at: ListConfig | list, n_features: int) -> list[list[float]]:
    """``predict_at`` as a list of input points, each with one value per feature.

    One feature: every number is a point (``[5.0]`` is f(5)). Several features: a flat list of
    ``n_features`` numbers is one point, a list of such lists is several, and a single number is
    the point with that value in every feature (so the default ``[5.0]`` works for any data).
    """
    items = list(predict_at)
    if not items:
        raise ConfigError("predict_at", [], "at least one point, e.g. [5.0]")
    flat = all(not isinstance(v, (list, ListConfig)) for v in items)
    if n_features == 1 and flat:
        return [[float(v)] for v in items]
    if flat and len(items) == 1:
        items = [[items[0]] * n_features]
    elif items and flat:
        items = [items]
    points = [[float(v) for v in point] for point in items]
    if any(len(p) != n_features for p in points):
        raise ConfigError(
            "predict_at",
            [list(p) for p in points],
            f"points of {n_features} value(s) each, one per feature of the data",
        )
    return points
