"""The datasets a run trains on, as float32 arrays (the seeds' dtype).

A dataset is one YAML in ``conf/data/`` (its ``name`` and keys) and one loader function here,
registered under that name with :func:`loader`. The loader checks its own ``data.*`` keys (a bad
one is a :class:`~gdexp.config.ConfigError`) and returns a :class:`Dataset`; everything else
(training, tracking, the contour plots of ``gdexp-compare``) finds it through :func:`load_data`.
"""

from __future__ import annotations

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


def load_data(data: DictConfig, launch_dir: Path | None = None) -> Dataset:
    """Build the dataset that ``data`` describes, with its registered loader; a bad value, file or
    column is a :class:`ConfigError`. Relative paths are taken from ``launch_dir``."""
    found = LOADERS.get(str(data.get("name")))
    if found is None:
        raise ConfigError("data.name", data.get("name"), ", ".join(sorted(LOADERS)))
    return found(data, launch_dir or Path.cwd())


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
    if data.n_features < 1:
        raise ConfigError("data.n_features", data.n_features, "an integer >= 1")
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
        frame = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise ConfigError("data.path", data.path, allowed, "the file is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise ConfigError("data.path", data.path, allowed, f"not a readable CSV ({err})") from None
    if frame.empty:
        raise ConfigError("data.path", data.path, allowed, "the file has a header but no rows")
    columns = [str(c) for c in frame.columns]
    frame.columns = columns

    targets = [data.target] if isinstance(data.target, str) else list(data.target)
    if not targets or not isinstance(data.target, (str, list, ListConfig)):
        raise ConfigError("data.target", data.target, f"a column name or a list of them: {', '.join(columns)}")
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
        column = pd.to_numeric(frame[name], errors="coerce")
        bad = column.isna() & frame[name].notna()
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
        if not np.isfinite(column.to_numpy(dtype=np.float64)).all():
            raise ConfigError("data.path", data.path, allowed, f"column '{name}' has an infinite value")
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
