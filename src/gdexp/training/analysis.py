"""The closed-form view of a run: least-squares optimum, stability bound, predictions, status.

The math the summary metrics (:mod:`gdexp.training.metrics`) are computed from."""

from __future__ import annotations

import math

import numpy as np

from gdexp.training.data import Dataset
from gdexp.training.history import History


def _design(X: np.ndarray, bias: bool) -> np.ndarray:
    X = X.astype(np.float64)
    return np.hstack([X, np.ones((X.shape[0], 1))]) if bias else X


def closed_form(data: Dataset, bias: bool) -> list[float]:
    """The least-squares optimum of the same model on the same data, in parameter order
    (every target's weights, then every target's bias)."""
    solution, *_ = np.linalg.lstsq(_design(data.X, bias), data.Y.astype(np.float64), rcond=None)
    weights = solution[: data.n_features].T  # (targets, features)
    out = weights.ravel().tolist()
    return out + (solution[data.n_features].tolist() if bias else [])


def hessian_eigenvalues(data: Dataset, bias: bool, reduction: str = "mean") -> np.ndarray:
    """The full-batch loss Hessian's eigenvalues, ascending (one model target: every target has
    the same Hessian). The MSE Hessian is 2/N A^T A (2 A^T A for the sum)."""
    A = _design(data.X, bias)
    scale = 2.0 if reduction == "sum" else 2.0 / A.shape[0]
    return np.clip(np.linalg.eigvalsh(scale * A.T @ A), 0.0, None)


def lr_max_stable(data: Dataset, bias: bool, reduction: str = "mean") -> float:
    """2 / the largest eigenvalue of the full-batch loss Hessian: plain gradient descent
    diverges above this learning rate."""
    largest = float(hessian_eigenvalues(data, bias, reduction)[-1])
    return 2.0 / largest if largest > 0 else math.inf


def lr_optimal(data: Dataset, bias: bool, reduction: str = "mean") -> float:
    """2 / (largest + smallest eigenvalue): the fixed step of plain gradient descent whose slowest
    direction contracts fastest (every direction then contracts by (k - 1) / (k + 1), k the
    condition number)."""
    eig = hessian_eigenvalues(data, bias, reduction)
    total = float(eig[-1] + eig[0])
    return 2.0 / total if total > 0 else math.inf


def predicted_contraction(data: Dataset, bias: bool, reduction: str, lr: float) -> float:
    """How much plain gradient descent at ``lr`` shrinks the distance to the optimum per epoch, at
    worst: max |1 - lr * eigenvalue| (above 1: it diverges)."""
    eig = hessian_eigenvalues(data, bias, reduction)
    return float(np.max(np.abs(1.0 - lr * eig)))


def observed_contraction(params: list[list[float]], optimum: list[float]) -> float | None:
    """The distance to the optimum's shrink per epoch that the run showed: the geometric mean over
    the second half of the epochs before the distance fell below 1e-4 of its start (after that,
    float rounding sets it); None when the run started at the optimum or ran no epoch."""
    distances = np.linalg.norm(np.asarray(params, np.float64) - np.asarray(optimum, np.float64), axis=1)
    finite = np.flatnonzero(np.isfinite(distances))
    last = int(finite[-1]) if len(finite) else 0
    if last < 1 or distances[0] <= 0:
        return None
    close = np.flatnonzero(distances[1 : last + 1] <= 1e-4 * distances[0])
    end = int(close[0]) + 1 if len(close) else last
    start = end // 2
    if distances[start] <= 0:
        return None
    return float((distances[end] / distances[start]) ** (1.0 / (end - start)))


def unflatten(row, data: Dataset, bias: bool) -> tuple[np.ndarray, np.ndarray]:
    """A parameter row as ``W`` (targets, features) and ``b`` (targets,), in the data's dtype; rows
    stacked along leading axes give ``W`` and ``b`` with the same leading axes."""
    P = np.asarray(row, dtype=data.X.dtype)
    n, lead = data.n_features * data.n_targets, P.shape[:-1]
    W = P[..., :n].reshape(*lead, data.n_targets, data.n_features)
    b = P[..., n:] if bias else np.zeros((*lead, data.n_targets), P.dtype)
    return W, b


def mse(row: list[float], data: Dataset, bias: bool) -> float:
    """The mean squared error of the model with parameters ``row``, in the data's dtype like training."""
    W, b = unflatten(row, data, bias)
    return float(np.mean(np.square(data.X @ W.T + b - data.Y)))


def predictions(row: list[float], points: list[list[float]], data: Dataset, bias: bool) -> np.ndarray:
    """Model outputs at ``points``: shape (points, targets)."""
    W, b = unflatten(row, data, bias)
    return np.asarray(points, dtype=data.X.dtype) @ W.T + b


def predictions_many(rows: list[list[float]], points: list[list[float]], data: Dataset, bias: bool) -> np.ndarray:
    """:func:`predictions` for many parameter rows at once, each flattened: (rows, points * targets)."""
    if not len(rows):
        return np.empty((0, len(points) * data.n_targets))
    W, b = unflatten(rows, data, bias)
    x = np.asarray(points, dtype=data.X.dtype)
    return (np.matmul(x, W.transpose(0, 2, 1)) + b[:, None, :]).reshape(len(W), -1)


def pred_names(points: list[list[float]], n_targets: int) -> list[str]:
    """``pred_5`` for x = 5.0, ``pred_1_2.5`` for (1, 2.5); ``_t{k}`` per target when several."""

    def num(v: float) -> str:
        return f"{v:g}"

    names = []
    for point in points:
        base = "pred_" + "_".join(num(v) for v in point)
        names.extend([base] if n_targets == 1 else [f"{base}_t{t}" for t in range(n_targets)])
    return names


def star_name(name: str) -> str:
    """``w`` -> ``w_star``, ``w_0`` -> ``w_star_0``, ``b_1`` -> ``b_star_1``."""
    head, _, tail = name.partition("_")
    return f"{head}_star" + (f"_{tail}" if tail else "")


def status(history: History, converge_tol: float) -> str:
    """``diverged``, ``pruned`` (a search's pruner stopped it), ``converged`` (the loss reached
    ``converge_tol``) or ``max_epochs``."""
    if history.diverged:
        return "diverged"
    if history.pruned:
        return "pruned"
    return "converged" if history.epochs_to_converge(converge_tol) is not None else "max_epochs"
