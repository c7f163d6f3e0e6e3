"""``python -m gdexp.compare`` (``gdexp-compare``): tables, plots and reports from gdexp's runs."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from gdexp.commandline import OneLineParser, user_errors
from gdexp.compare.runs import SelectionError, select_runs, sweeps
from gdexp.compare.tables import FORMATS, group_table, pivot, render, runs_table, sort_table


def _selection_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--experiment", default="gdexp", help="MLflow experiment (default gdexp)")
    parser.add_argument("--sweep", default="latest", help="latest (default), a parent run id, or all")
    parser.add_argument("--filter", default=None, help="an MLflow search filter, e.g. \"params.lr = '0.1'\"")
    parser.add_argument(
        "--tracking-uri", default=None, help="default: MLFLOW_TRACKING_URI, else sqlite:///mlflow.db in this directory"
    )


def _positive(text: str) -> int:
    value = int(text) if text.lstrip("-").isdigit() else 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: allowed: a whole number >= 1")
    return value


def _write(path: Path, text: str) -> None:
    """Write ``text`` to ``path``: a missing folder is made, an unwritable place is one line."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    except OSError as err:
        raise SelectionError(f"--out={path}: {err.strerror or err}; allowed: a file in a writable folder") from None


def _parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="gdexp-compare", description="Tables, plots and reports from gdexp's MLflow runs.")
    sub = parser.add_subparsers(dest="command", required=True)

    table = sub.add_parser("table", help="one row per run, a pivot grid, or grouped seeds")
    _selection_args(table)
    table.add_argument("--all-columns", action="store_true", help="every param, not only those that vary")
    table.add_argument("--sort", default=None, help="a column to sort by")
    table.add_argument("--desc", action="store_true", help="sort descending")
    table.add_argument("--top", type=_positive, default=None, help="keep the first N rows")
    table.add_argument("--pivot", nargs=2, metavar=("ROW", "COL"), help="a grid of --value over two params")
    table.add_argument("--value", default="final_loss", help="the metric of --pivot (default final_loss)")
    table.add_argument("--agg", default="mean", choices=["mean", "min", "max", "std"])
    table.add_argument("--group-by", nargs="+", metavar="PARAM", help="mean and std over repeated runs (seeds)")
    table.add_argument("--format", default="text", choices=FORMATS)
    table.add_argument("--out", default=None, help="write to this file instead of printing")

    plot = sub.add_parser("plot", help="PNG plots: curves, weights, heatmap")
    _selection_args(plot)
    plot.add_argument("--kind", default="curves", choices=["curves", "weights", "heatmap", "study"])
    plot.add_argument("--by", default=None, help="curves: colour by this param (default: the first that varies)")
    plot.add_argument("--style", default=None, help="curves: line style by this param (default: the next that varies)")
    plot.add_argument("--pivot", nargs=2, metavar=("ROW", "COL"), help="heatmap: the two params")
    plot.add_argument("--value", default="final_loss", help="heatmap: the metric")
    plot.add_argument("--out", default="outputs/plots", help="folder for the PNGs (default outputs/plots/)")

    report = sub.add_parser("report", help="one self-contained HTML page per sweep, also logged on its parent run")
    _selection_args(report)
    report.add_argument("--out", default=None, help="the HTML file (default outputs/report-<sweep>.html)")

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


def _study_plots(args: argparse.Namespace) -> None:
    """``plot --kind study``: the optimisation history and parameter importances of a study."""
    from gdexp.compare import report  # matplotlib (0.4 s) only for the commands that draw

    parent = report.parent_run(args.experiment, args.sweep, args.tracking_uri)
    try:
        figures = report.study_figures(parent, args.tracking_uri)
    except Exception as err:
        raise SelectionError(f"--kind=study: the study could not be loaded ({type(err).__name__}: {err})") from None
    if not figures:
        raise SelectionError(f"--sweep={args.sweep}: not a study; allowed: the parent run of hydra/sweeper=optuna")
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        for stem, fig in figures.items():
            fig.savefig(out / f"{stem}.png", dpi=110, bbox_inches="tight")
            print(f"wrote {out / f'{stem}.png'}")
    except OSError as err:
        raise SelectionError(
            f"--out={args.out}: {err.strerror or err}; allowed: a writable folder for the PNGs"
        ) from None


def main(argv: Sequence[str] | None = None) -> None:
    """The ``gdexp-compare`` console script."""
    args = _parser().parse_args(argv)
    try:
        with user_errors("gdexp-compare"):
            _command(args)
    except BrokenPipeError:  # `gdexp-compare table | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _command(args: argparse.Namespace) -> None:
    if args.command == "table":
        text = _table_command(args)
        if args.out:
            _write(Path(args.out), text if text.endswith("\n") else text + "\n")
            print(f"wrote {args.out}")
        else:
            print(text, end="" if text.endswith("\n") else "\n")
    elif args.command == "sweeps":
        found = sweeps(args.experiment, args.tracking_uri)
        if found.empty:
            print(f"no sweeps in experiment {args.experiment}")
        for _, row in found.iterrows():  # status, runs and directory tell the same sweep run twice apart
            where = row.get("tags.gdexp.sweep_dir")
            print(
                f"{row['run_id']}  {pd.to_datetime(row['start_time'], unit='ms'):%Y-%m-%d %H:%M}  "
                f"{row['mlflow_status']:<8}  {row['runs']} runs  {row['run_name']}"
                + (f"  ({where})" if isinstance(where, str) else "")
            )
    elif args.command == "plot":
        from gdexp.compare import plots  # matplotlib (0.4 s) only for the commands that draw

        runs = select_runs(args.experiment, args.sweep, args.filter, args.tracking_uri)
        if args.kind == "study":
            _study_plots(args)
            return
        try:
            paths = plots.save(
                runs,
                args.kind,
                Path(args.out),
                by=args.by,
                style=args.style,
                pivot=args.pivot,
                value=args.value,
                uri=args.tracking_uri,
            )
        except OSError as err:
            raise SelectionError(
                f"--out={args.out}: {err.strerror or err}; allowed: a writable folder for the PNGs"
            ) from None
        for path in paths:
            print(f"wrote {path}")
    elif args.command == "report":
        from gdexp.compare import report  # matplotlib (0.4 s) only for the commands that draw

        try:
            path = report.build(
                args.experiment, args.sweep, args.filter, args.tracking_uri, Path(args.out) if args.out else None
            )
        except OSError as err:
            raise SelectionError(f"--out={args.out}: {err.strerror or err}; allowed: a writable file") from None
        print(f"wrote {path}")
