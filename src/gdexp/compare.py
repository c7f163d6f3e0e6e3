"""Comparison tables from MLflow, as pandas DataFrames, and the ``gdexp.compare`` command.

The Python API, for notebooks::

    from gdexp import compare
    runs = compare.select_runs(sweep="latest")          # one row per run: params.*, metrics.*, tags.*
    table = compare.runs_table(runs)                     # run, status, varying params, summary metrics
    grid = compare.pivot(runs, "lr", "optimizer.name", "final_loss")
    curves = compare.histories(runs)                     # every run's history.csv, long form

Reads are bulk: one paged search for the runs (params, metrics and tags come with it) and each
run's ``history.csv`` read straight from a local artifact store, never a request per metric.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Sequence
from html import escape
from pathlib import Path
from urllib.parse import unquote, urlparse

import pandas as pd

from gdexp.tracking import resolve_uri

SUMMARY = ["final_loss", "diverged", "epochs_to_converge", "dist_to_opt"]
# Params that describe bookkeeping, not the computation: never "varying" columns.
QUIET_PARAMS = {
    "tracking.experiment",
    "tracking.enabled",
    "tracking.flush_seconds",
    "tracking.skip_finished",
    "optimizer.lr",
}
FORMATS = ["text", "csv", "md", "html", "latex", "json"]


class SelectionError(ValueError):
    """A selector that names nothing: printed as one line, exit status 2."""


def _client(uri: str | None):
    from mlflow import MlflowClient

    return MlflowClient(resolve_uri(uri, Path.cwd()))


def sweeps(experiment: str = "gdexp", uri: str | None = None) -> pd.DataFrame:
    """The experiment's sweep parent runs, newest first."""
    client = _client(uri)
    exp = _experiment(client, experiment)
    parents = _search(client, exp, "tags.`gdexp.role` = 'sweep'")
    return parents.sort_values("start_time", ascending=False, ignore_index=True) if len(parents) else parents


def _experiment(client, name: str):
    exp = client.get_experiment_by_name(name)
    if exp is None:
        known = ", ".join(sorted(e.name for e in client.search_experiments())) or "none yet"
        raise SelectionError(f"--experiment={name}: no such experiment; allowed: {known}")
    return exp


def _search(client, exp, filter_string: str) -> pd.DataFrame:
    from mlflow.exceptions import MlflowException

    rows, token = [], None
    while True:
        try:
            page = client.search_runs([exp.experiment_id], filter_string, max_results=50000, page_token=token)
        except MlflowException as err:
            first = str(err).strip().splitlines()[0]
            raise SelectionError(
                f"--filter={filter_string!r}: {first}; allowed: an MLflow search filter, "
                "e.g. \"params.lr = '0.1'\" or 'metrics.final_loss < 1e-3'"
            ) from None
        for run in page:
            row = {
                "run_id": run.info.run_id,
                "run_name": run.info.run_name,
                "mlflow_status": run.info.status,
                "start_time": run.info.start_time,
                "artifact_uri": run.info.artifact_uri,
            }
            row.update({f"params.{k}": v for k, v in run.data.params.items()})
            row.update({f"metrics.{k}": v for k, v in run.data.metrics.items()})
            row.update({f"tags.{k}": v for k, v in run.data.tags.items()})
            rows.append(row)
        token = page.token
        if not token:
            break
    return pd.DataFrame(rows)


def select_runs(
    experiment: str = "gdexp", sweep: str = "latest", filter: str | None = None, uri: str | None = None
) -> pd.DataFrame:
    """One row per run: ``run_id``, ``run_name``, ``mlflow_status``, ``params.*``, ``metrics.*``
    (latest values), ``tags.*``. ``sweep`` is ``latest`` (the newest sweep's jobs), a parent run
    id, or ``all`` (every run that is not a sweep parent); ``filter`` is an MLflow search filter."""
    client = _client(uri)
    exp = _experiment(client, experiment)
    clauses = [filter] if filter else []
    if sweep == "latest":
        parents = sweeps(experiment, uri)
        if parents.empty:
            raise SelectionError(
                f"--sweep=latest: experiment {experiment} has no sweep yet; "
                "allowed: all, or run one with `python -m gdexp.run -m ...`"
            )
        sweep = parents.loc[0, "run_id"]
    if sweep != "all":
        clauses.append(f"tags.`mlflow.parentRunId` = '{sweep}'")
    runs = _search(client, exp, " and ".join(clauses))
    if sweep == "all" and len(runs) and "tags.gdexp.role" in runs:
        runs = runs[runs["tags.gdexp.role"] != "sweep"]
    if runs.empty:
        what = f"--sweep={sweep}" + (f" --filter={filter!r}" if filter else "")
        raise SelectionError(
            f"{what}: selects no runs in experiment {experiment}; allowed: latest, all, "
            "or the run id of a sweep's parent run (see `gdexp-compare sweeps`)"
        )
    return runs.sort_values("start_time", ignore_index=True)


def varying_params(runs: pd.DataFrame) -> list[str]:
    """The params (without ``params.``) whose values differ across ``runs``, in config order."""
    cols = [c for c in runs.columns if c.startswith("params.") and c[7:] not in QUIET_PARAMS]
    # A key only some optimizers have (optimizer.betas) varies only if its values do.
    return [c[7:] for c in cols if runs[c].nunique(dropna=True) > 1]


def _parse(value):
    """A param string back to a number where it is one (MLflow keeps params as text)."""
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
            return parsed if isinstance(parsed, (int, float)) and not isinstance(parsed, bool) else value
        except ValueError:
            return value
    return value


def runs_table(runs: pd.DataFrame, all_columns: bool = False) -> pd.DataFrame:
    """Run name, status, the params that vary (every param with ``all_columns``), and the summary
    metrics: final loss, final parameters, predictions, divergence, convergence, distance to optimum."""
    params = sorted(c[7:] for c in runs.columns if c.startswith("params.")) if all_columns else varying_params(runs)
    table = pd.DataFrame(
        {
            "run": runs["run_name"].values,
            "status": runs.get("tags.gdexp.status", runs["mlflow_status"]).fillna("-").values,
        }
    )
    for p in params:
        table[p] = [_parse(v) for v in runs[f"params.{p}"]]
    metric_cols = [c for c in runs.columns if c.startswith("metrics.")]
    finals = sorted(c[8:] for c in metric_cols if c[8:].split("_")[0] in ("w", "b") and "_star" not in c)
    preds = sorted(c[8:] for c in metric_cols if c[8:].startswith("pred_"))
    for m in ["final_loss", *finals, *preds, "diverged", "epochs_to_converge", "dist_to_opt"]:
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


def _column(runs: pd.DataFrame, name: str, kind: str) -> pd.Series:
    for col in (name, f"params.{name}", f"metrics.{name}", f"tags.{name}"):
        if col in runs:
            return runs[col].map(_parse) if col.startswith("params.") else runs[col]
    known = sorted({c.split(".", 1)[1] for c in runs.columns if c.startswith(("params.", "metrics."))})
    raise SelectionError(f"--{kind}={name}: no such param or metric; allowed: {', '.join(known)}")


def pivot(runs: pd.DataFrame, row: str, col: str, value: str = "final_loss", agg: str = "mean") -> pd.DataFrame:
    """A grid such as lr x optimizer -> final_loss, repeated cells aggregated with ``agg``."""
    frame = pd.DataFrame(
        {row: _column(runs, row, "pivot"), col: _column(runs, col, "pivot"), value: _column(runs, value, "value")}
    )
    return frame.pivot_table(index=row, columns=col, values=value, aggfunc=agg, dropna=False)


def group_table(runs: pd.DataFrame, by: Sequence[str], metrics: Sequence[str] = SUMMARY) -> pd.DataFrame:
    """Repeated runs (seeds) aggregated per group: mean and std of each summary metric, and n."""
    frame = pd.DataFrame({p: _column(runs, p, "group-by") for p in by})
    present = [m for m in metrics if f"metrics.{m}" in runs]
    for m in present:
        frame[m] = runs[f"metrics.{m}"].values
    grouped = frame.groupby(list(by), dropna=False)
    out = grouped[present].agg(["mean", "std"])
    out.columns = [f"{m}_{stat}" for m, stat in out.columns]
    out["n"] = grouped.size()
    return out.reset_index()


def histories(runs: pd.DataFrame, uri: str | None = None) -> pd.DataFrame:
    """Every run's ``history.csv`` (every epoch, every curve) in long form, with ``run_id``.

    A local artifact store is read in place; a remote one through MLflow's artifact download."""
    frames = []
    for run_id, artifact_uri in zip(runs["run_id"], runs["artifact_uri"]):
        frame = pd.read_csv(_artifact_path(run_id, artifact_uri, "history.csv", uri))
        frame.insert(0, "run_id", run_id)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _artifact_path(run_id: str, artifact_uri: str, name: str, uri: str | None) -> Path:
    parsed = urlparse(artifact_uri)
    if parsed.scheme in ("file", ""):
        path = Path(unquote(parsed.path)) / name
        if path.is_file():
            return path
    from mlflow.artifacts import download_artifacts

    return Path(download_artifacts(run_id=run_id, artifact_path=name, tracking_uri=resolve_uri(uri, Path.cwd())))


# --------------------------------------------------------------------------- rendering


def _fmt(value) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        return f"{value:.6g}"
    return str(value)


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
        return shown.to_string(index=False)
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


# --------------------------------------------------------------------------- command line


def _selection_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--experiment", default="gdexp", help="MLflow experiment (default gdexp)")
    parser.add_argument("--sweep", default="latest", help="latest (default), a parent run id, or all")
    parser.add_argument("--filter", default=None, help="an MLflow search filter, e.g. \"params.lr = '0.1'\"")
    parser.add_argument(
        "--tracking-uri", default=None, help="default: MLFLOW_TRACKING_URI, else sqlite:///mlflow.db in this directory"
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gdexp-compare", description="Tables, plots and reports from gdexp's MLflow runs."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    table = sub.add_parser("table", help="one row per run, a pivot grid, or grouped seeds")
    _selection_args(table)
    table.add_argument("--all-columns", action="store_true", help="every param, not only those that vary")
    table.add_argument("--sort", default=None, help="a column to sort by")
    table.add_argument("--desc", action="store_true", help="sort descending")
    table.add_argument("--top", type=int, default=None, help="keep the first N rows")
    table.add_argument("--pivot", nargs=2, metavar=("ROW", "COL"), help="a grid of --value over two params")
    table.add_argument("--value", default="final_loss", help="the metric of --pivot (default final_loss)")
    table.add_argument("--agg", default="mean", choices=["mean", "min", "max", "std"])
    table.add_argument("--group-by", nargs="+", metavar="PARAM", help="mean and std over repeated runs (seeds)")
    table.add_argument("--format", default="text", choices=FORMATS)
    table.add_argument("--out", default=None, help="write to this file instead of printing")

    plot = sub.add_parser("plot", help="PNG plots: curves, weights, heatmap")
    _selection_args(plot)
    plot.add_argument("--kind", default="curves", choices=["curves", "weights", "heatmap"])
    plot.add_argument("--by", default=None, help="curves: colour by this param")
    plot.add_argument("--pivot", nargs=2, metavar=("ROW", "COL"), help="heatmap: the two params")
    plot.add_argument("--value", default="final_loss", help="heatmap: the metric")
    plot.add_argument("--out", default="plots", help="folder for the PNGs (default plots/)")

    report = sub.add_parser("report", help="one self-contained HTML page per sweep, also logged on its parent run")
    _selection_args(report)
    report.add_argument("--out", default=None, help="the HTML file (default report-<sweep>.html)")

    sweeps_cmd = sub.add_parser("sweeps", help="list the experiment's sweeps, newest first")
    sweeps_cmd.add_argument("--experiment", default="gdexp")
    sweeps_cmd.add_argument("--tracking-uri", default=None)
    return parser


def _table_command(args) -> str:
    runs = select_runs(args.experiment, args.sweep, args.filter, args.tracking_uri)
    if args.pivot:
        grid = pivot(runs, args.pivot[0], args.pivot[1], args.value, args.agg).reset_index()
        grid.columns = [str(c) for c in grid.columns]
        return render(grid, args.format)
    if args.group_by:
        out = group_table(runs, args.group_by)
    else:
        out = runs_table(runs, args.all_columns)
    out = sort_table(out, args.sort, args.desc, args.top)
    return render(out, args.format)


def main(argv: Sequence[str] | None = None) -> None:
    """The ``gdexp-compare`` console script."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "table":
            text = _table_command(args)
            if args.out:
                Path(args.out).write_text(text if text.endswith("\n") else text + "\n")
                print(f"wrote {args.out}")
            else:
                print(text, end="" if text.endswith("\n") else "\n")
        elif args.command == "sweeps":
            found = sweeps(args.experiment, args.tracking_uri)
            if found.empty:
                print(f"no sweeps in experiment {args.experiment}")
            for _, row in found.iterrows():
                print(
                    f"{row['run_id']}  {pd.to_datetime(row['start_time'], unit='ms'):%Y-%m-%d %H:%M}  "
                    f"{row.get('tags.gdexp.jobs', '?')} jobs  {row['run_name']}"
                )
        elif args.command == "plot":
            from gdexp import plots

            runs = select_runs(args.experiment, args.sweep, args.filter, args.tracking_uri)
            for path in plots.save(
                runs, args.kind, Path(args.out), by=args.by, pivot=args.pivot, value=args.value, uri=args.tracking_uri
            ):
                print(f"wrote {path}")
        elif args.command == "report":
            from gdexp import report

            path = report.build(
                args.experiment, args.sweep, args.filter, args.tracking_uri, Path(args.out) if args.out else None
            )
            print(f"wrote {path}")
    except SelectionError as err:
        print(f"gdexp-compare: error: {err}", file=sys.stderr)
        sys.exit(2)
    except BrokenPipeError:  # `gdexp-compare table | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


if __name__ == "__main__":
    # Run the module's importable twin, so that its classes are the ones other modules see.
    from gdexp.compare import main as _main

    _main()
