"""Comparison tables: one row per run, pivots, seed groups, and their text formats.

The summary-metric columns come from the metric registry (:mod:`gdexp.training.metrics`): a metric
registered there shows up here without another edit.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from html import escape

import pandas as pd

from gdexp.compare.runs import SelectionError, column, parse_param
from gdexp.training.metrics import table_metrics

# Params that describe bookkeeping, not the computation: never "varying" columns.
QUIET_PARAMS = {
    "tracking.experiment",
    "tracking.enabled",
    "tracking.flush_seconds",
    "tracking.skip_finished",
    "optimizer.lr",
}
FORMATS = ["text", "csv", "md", "html", "latex", "json"]


def varying_params(runs: pd.DataFrame) -> list[str]:
    """The params (without ``params.``) whose values differ across ``runs``, in config order."""
    cols = [c for c in runs.columns if c.startswith("params.") and c[7:] not in QUIET_PARAMS]
    # A key only some optimizers have (optimizer.betas) varies only if its values do.
    return [c[7:] for c in cols if runs[c].nunique(dropna=True) > 1]


_TOKEN = re.compile(r",(?=[+~]?[A-Za-z_][\w./-]*=)")  # a run name's commas that start another key=value


def shown_names(names: Sequence[str]) -> list[str]:
    """Run names as a table or a legend shows them: only the ``key=value`` parts that differ
    across ``names`` (``data=line_intercept,bias=true,epochs=300`` on every row says nothing), a
    float to 4 significant digits (a search's ``lr=0.09145320282946535``) unless that would make
    two names one. A name whose parts every other name shares, or the only name, is kept whole."""
    split = [_TOKEN.split(str(n)) for n in names]
    common = set.intersection(*(set(t) for t in split)) if len(split) > 1 else set()
    kept = [[t for t in tokens if t not in common] for tokens in split]
    distinct = len(set(map(str, names)))
    for digits in (4, 6, 9, 0):  # 0: as written
        shown = [",".join(_rounded(t, digits) for t in tokens) or str(n) for tokens, n in zip(kept, names)]
        if len(set(shown)) == distinct:
            break
    return shown


def _rounded(token: str, digits: int) -> str:
    key, _, value = token.partition("=")
    if not digits or len(value) <= digits + 4 or not re.fullmatch(r"-?\d+\.\d+(e-?\d+)?", value):
        return token
    return f"{key}={float(value):.{digits}g}"


def runs_table(runs: pd.DataFrame, all_columns: bool = False) -> pd.DataFrame:
    """Run name (what varies, :func:`shown_names`), status, the params that vary (every param
    with ``all_columns``), and the summary metrics: final loss, final parameters, predictions,
    divergence, the theory's ``lr_max_stable`` and ``lr_optimal``, convergence, distance to
    optimum (every metric with ``all_columns``)."""
    params = sorted(c[7:] for c in runs.columns if c.startswith("params.")) if all_columns else varying_params(runs)
    table = pd.DataFrame(
        {
            "run": shown_names(list(runs["run_name"])),
            "status": runs.get("tags.gdexp.status", runs["mlflow_status"]).fillna("-").values,
        }
    )
    parents = runs.get("tags.mlflow.parentRunId")
    if parents is not None and parents.nunique(dropna=True) > 1:  # --sweep all: which sweep each run is of
        table["sweep"] = parents.fillna("-").str[:8].values
    for p in params:
        table[p] = [parse_param(v) for v in runs[f"params.{p}"]]
    metric_cols = [c for c in runs.columns if c.startswith("metrics.")]
    finals = sorted(c[8:] for c in metric_cols if c[8:].split("_")[0] in ("w", "b") and "_star" not in c)
    preds = sorted(c[8:] for c in metric_cols if c[8:].startswith("pred_"))
    summary = table_metrics()
    shown = [*summary[:1], *finals, *preds, *summary[1:]]
    if all_columns:  # every metric the runs hold, the others after the table's own
        shown += sorted(c[8:] for c in metric_cols if c[8:] not in shown)
    for m in shown:
        if f"metrics.{m}" in runs:
            table[m] = runs[f"metrics.{m}"].values
    table.index = runs["run_id"].values
    return table


def sort_table(table: pd.DataFrame, key: str | None, desc: bool = False, top: int | None = None) -> pd.DataFrame:
    """``table`` sorted by column ``key`` (NaN last) and cut to ``top`` rows."""
    if key:
        if key not in table:
            raise SelectionError(f"--sort={key}: no such column; allowed: {', '.join(table.columns)}")
        table = table.sort_values(key, ascending=not desc, na_position="last", kind="stable")
    return table.head(top) if top else table


def pivot(runs: pd.DataFrame, row: str, col: str, value: str = "final_loss", agg: str = "mean") -> pd.DataFrame:
    """A grid such as lr x optimizer -> final_loss, repeated cells aggregated with ``agg``."""
    frame = pd.DataFrame(
        {row: column(runs, row, "pivot"), col: column(runs, col, "pivot"), value: column(runs, value, "value")}
    )
    return frame.pivot_table(index=row, columns=col, values=value, aggfunc=agg, dropna=False)


def group_table(runs: pd.DataFrame, by: Sequence[str], metrics: Sequence[str] | None = None) -> pd.DataFrame:
    """Repeated runs (seeds) aggregated per group: mean and std of each summary metric (the
    table's, unless ``metrics`` says), and n."""
    metrics = table_metrics() if metrics is None else metrics
    frame = pd.DataFrame({p: column(runs, p, "group-by") for p in by})
    present = [m for m in metrics if f"metrics.{m}" in runs]
    for m in present:
        frame[m] = runs[f"metrics.{m}"].values
    grouped = frame.groupby(list(by), dropna=False)
    out = grouped[present].agg(["mean", "std"])
    out.columns = [f"{m}_{stat}" for m, stat in out.columns]
    out["n"] = grouped.size()
    return out.reset_index()


def _fmt(value) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        return f"{value:.6g}"
    return str(value)


def _aligned(shown: pd.DataFrame) -> str:
    """A frame of strings as ``to_string(index=False)`` prints it, in a tenth of its time (a
    10,000-run sweep's table: 0.06 s, not 0.64): each column right-aligned to its widest cell,
    one space between columns. Pandas itself where its own rules apply: an empty frame, a
    header with spaces around it (pandas strips it), a cell it escapes or that is not printable."""
    cols = [[str(c), *shown[c].tolist()] for c in shown.columns]
    plain = all(col[0] == col[0].strip() and all(v.isprintable() for v in col) for col in cols)
    if shown.empty or not plain:
        return shown.to_string(index=False)
    widths = [max(map(len, col)) for col in cols]
    return "\n".join(" ".join(v.rjust(w) for v, w in zip(row, widths)) for row in zip(*cols))


def render(table: pd.DataFrame, fmt: str = "text") -> str:
    """``table`` as text (aligned), csv, md, html, latex or json. Diverged runs are marked in
    text (``!``), md (bold) and html (a class, shown red)."""
    frame = table.reset_index(drop=True)
    diverged = frame["status"].eq("diverged") if "status" in frame else pd.Series(False, index=frame.index)
    if fmt == "csv":
        return frame.to_csv(index=False)
    if fmt == "json":
        return frame.to_json(orient="records", indent=2)
    if fmt == "latex":
        return frame.map(_fmt).to_latex(index=False, escape=True)
    shown = frame.map(_fmt)
    if fmt == "text":
        if diverged.any():
            shown["status"] = [f"{s} !" if d else s for s, d in zip(shown["status"], diverged)]
        return _aligned(shown)
    if fmt == "md":
        if diverged.any():
            shown["status"] = [f"**{s}**" if d else s for s, d in zip(shown["status"], diverged)]
        head = "| " + " | ".join(shown.columns) + " |"
        rule = "| " + " | ".join("---:" if frame[c].dtype.kind in "if" else "---" for c in frame.columns) + " |"
        rows = [
            "| " + " | ".join(str(v).replace("|", "\\|") for v in row) + " |" for row in shown.itertuples(index=False)
        ]
        return "\n".join([head, rule, *rows]) + "\n"
    if fmt == "html":
        head = "".join(f"<th>{escape(str(c))}</th>" for c in shown.columns)
        body = "".join(
            (' <tr class="diverged" style="color:#b00020;font-weight:bold">' if d else " <tr>")
            + "".join(f"<td>{escape(str(v))}</td>" for v in row)
            + "</tr>\n"
            for row, d in zip(shown.itertuples(index=False), diverged)
        )
        return f'<table class="gdexp-table">\n <thead><tr>{head}</tr></thead>\n <tbody>\n{body} </tbody>\n</table>\n'
    raise SelectionError(f"--format={fmt}: unknown; allowed: {', '.join(FORMATS)}")
