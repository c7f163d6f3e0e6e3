"""A run's summary metrics: one registered function each, computed when the run ends.

Every metric registered here is logged on every run (per-run and batched), kept in its
``run.json``, and shown as a column by ``gdexp-compare table`` and the sweep report unless it is
registered with ``table=False``. Adding a metric is one function::

    @metric(table=True)
    def max_abs_w(run: Finished) -> float:
        return max(abs(v) for v in run.final)

A metric returns a number, ``None`` (absent for this run), or a dict of several named numbers.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from gdexp.training import analysis
from gdexp.training.analysis import closed_form, lr_max_stable, mse, star_name
from gdexp.training.data import Dataset
from gdexp.training.history import History

Value = float | None | dict[str, float]


@dataclass(frozen=True)
class Finished:
    """What a metric sees of a run that ended: its history, its data and model settings."""

    history: History
    data: Dataset
    bias: bool
    reduction: str
    converge_tol: float
    points: list[list[float]]
    lr: float = math.nan
    plain_gd: bool = False  # full-batch SGD without momentum or weight decay: the step theory predicts

    @property
    def final(self) -> list[float]:
        """The final parameters, in parameter order."""
        return self.history.params[-1]

    @cached_property
    def optimum(self) -> list[float]:
        """The closed-form least-squares optimum of the same model on the same data."""
        return closed_form(self.data, self.bias)


@dataclass(frozen=True)
class Metric:
    name: str
    compute: Callable[[Finished], Value]
    table: bool  # a column of gdexp-compare's tables and the sweep report


METRICS: list[Metric] = []


def metric(name: str | None = None, *, table: bool = True) -> Callable[[Callable[[Finished], Value]], Callable]:
    """Register a summary metric (named after the function unless ``name`` says otherwise)."""

    def register(function: Callable[[Finished], Value]) -> Callable[[Finished], Value]:
        entry = Metric(name or function.__name__, function, table)
        METRICS[:] = [m for m in METRICS if m.name != entry.name] + [entry]
        return function

    return register


def summarize(run: Finished) -> dict[str, float]:
    """Every registered metric of a finished (or stopped) run, in registration order."""
    summary: dict[str, float] = {}
    for entry in METRICS:
        value = entry.compute(run)
        if isinstance(value, dict):
            summary.update(value)
        elif value is not None:
            summary[entry.name] = float(value)
    return summary


def table_metrics() -> list[str]:
    """The metrics shown as columns of a run table, in registration order."""
    return [m.name for m in METRICS if m.table]


# --------------------------------------------------------------------------- the shipped metrics


@metric()
def final_loss(run: Finished) -> float:
    """The loss at the final parameters (not the last epoch's, which is before its update)."""
    return mse(run.final, run.data, run.bias)


@metric()
def diverged(run: Finished) -> float:
    return float(run.history.diverged)


@metric(table=False)
def epochs_run(run: Finished) -> float:
    return float(run.history.epochs)


@metric("lr_max_stable")  # the theory beside the run: shown in every table
def stability_bound(run: Finished) -> float:
    """2 / the largest Hessian eigenvalue: plain gradient descent diverges above this lr."""
    return lr_max_stable(run.data, run.bias, run.reduction)


@metric()
def epochs_to_converge(run: Finished) -> float | None:
    """The first epoch whose loss is at most ``converge_tol``; absent when never reached."""
    epoch = run.history.epochs_to_converge(run.converge_tol)
    return None if epoch is None else float(epoch)


@metric(table=False)
def optimum(run: Finished) -> dict[str, float]:
    """``w_star``, ``b_star`` ...: the closed-form optimum, named like the parameters."""
    return {star_name(n): v for n, v in zip(run.history.param_names, run.optimum)}


@metric()
def dist_to_opt(run: Finished) -> float:
    """The distance of the final parameters from the optimum."""
    return float(np.linalg.norm(np.asarray(run.final, np.float64) - np.asarray(run.optimum)))


@metric("lr_optimal")
def fastest_step(run: Finished) -> float:
    """2 / (largest + smallest Hessian eigenvalue): the fastest fixed step of plain gradient descent."""
    return analysis.lr_optimal(run.data, run.bias, run.reduction)


@metric(table=False)
def contraction(run: Finished) -> dict[str, float]:
    """``contraction_observed``: the distance to the optimum's shrink per epoch in this run;
    ``contraction_predicted``: what theory says plain gradient descent at this lr does (only for
    plain full-batch SGD, where the theory holds)."""
    out = {}
    if run.plain_gd and math.isfinite(run.lr):
        out["contraction_predicted"] = analysis.predicted_contraction(run.data, run.bias, run.reduction, run.lr)
    observed = analysis.observed_contraction(run.history.params, run.optimum)
    if observed is not None and math.isfinite(observed):
        out["contraction_observed"] = observed
    return out
