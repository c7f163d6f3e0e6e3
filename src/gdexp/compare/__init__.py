"""Comparison of runs: tables, plots and the sweep report, read from MLflow into pandas.

The Python API, for notebooks::

    from gdexp import compare
    runs = compare.select_runs(sweep="latest")          # one row per run: params.*, metrics.*, tags.*
    table = compare.runs_table(runs)                     # run, status, varying params, summary metrics
    grid = compare.pivot(runs, "lr", "optimizer.name", "final_loss")
    curves = compare.histories(runs)                     # every run's history.csv, long form

- :mod:`~gdexp.compare.runs`: selecting runs and reading their histories (store access);
- :mod:`~gdexp.compare.tables`: tables, pivots, seed groups, text formats;
- :mod:`~gdexp.compare.plots`, :mod:`~gdexp.compare.report`: figures and the HTML sweep report;
- :mod:`~gdexp.compare.cli`: the ``gdexp-compare`` command.
"""

from gdexp.compare.runs import SelectionError, column, histories, parse_param, select_runs, sweeps
from gdexp.compare.tables import (
    FORMATS,
    group_table,
    pivot,
    render,
    runs_table,
    shown_names,
    sort_table,
    varying_params,
)

__all__ = [
    "FORMATS",
    "SelectionError",
    "column",
    "group_table",
    "histories",
    "parse_param",
    "pivot",
    "render",
    "runs_table",
    "shown_names",
    "select_runs",
    "sort_table",
    "sweeps",
    "varying_params",
]
