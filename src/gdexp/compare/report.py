"""One self-contained HTML page per sweep: the command and config, the table, the pivot, the plots
(embedded as data URIs). Written to a file and logged as ``report.html`` on the sweep's parent run,
so it opens from the MLflow UI."""

from __future__ import annotations

import base64
import io
import tempfile
from datetime import datetime
from html import escape
from pathlib import Path
from typing import Any

import pandas as pd

from gdexp.compare import plots
from gdexp.compare.runs import artifact_path, histories, select_runs, store_uri, sweeps
from gdexp.compare.tables import pivot, render, runs_table, varying_params
from gdexp.sweeps import search
from gdexp.tracking.store import log_file

OUTPUTS = Path("outputs")  # where a report goes unless --out says: the jobs' outputs/ folder
STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1340px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.15em; margin-top: 1.6em; border-bottom: 1px solid #ddd; }
table.gdexp-table { border-collapse: collapse; font-size: 0.85em; }
table.gdexp-table th, table.gdexp-table td { padding: 3px 8px; border-bottom: 1px solid #eee; text-align: right; }
table.gdexp-table th { background: #f4f4f4; }
pre { background: #f7f7f7; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.5em 0; }
.note { color: #666; font-size: 0.9em; }
"""


def _png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def parent_run(experiment: str, sweep: str, uri: str | None) -> pd.Series | None:
    if sweep == "all":
        return None
    parents = sweeps(experiment, uri)
    if sweep == "latest":
        return parents.iloc[0] if len(parents) else None
    match = parents[parents["run_id"] == sweep]
    return match.iloc[0] if len(match) else None


def _swept(parent: pd.Series | None) -> list[str]:
    """The params a sweep's command swept (``optimizer=sgd,adam`` sweeps ``optimizer.name``)."""
    if parent is None:
        return []
    keys = []
    for override in str(parent.get("tags.gdexp.overrides", "")).split():
        key, _, value = override.lstrip("+~").partition("=")
        if "," in value or value.startswith(("range(", "choice(", "glob(")):
            keys.append(f"{key}.name" if key in ("optimizer", "data") else key)
    return keys


def study_figures(parent: pd.Series | None, uri: str | None) -> dict[str, Any]:
    """A study's optimisation history and parameter importances (Optuna's own matplotlib plots,
    from the study's storage), by file stem; empty for a grid. Raises what loading it raised."""
    if parent is None or not isinstance(parent.get("tags.gdexp.study"), str):
        return {}
    name, storage = parent["tags.gdexp.study"], str(parent.get("tags.gdexp.study_storage", ""))
    if "***" in storage:  # masked: the store's own database, opened with the report's credentials
        resolved = store_uri(uri)
        storage = search.storage_of_store(resolved) if resolved.startswith("postgresql") else ""
    import warnings

    import optuna
    from optuna.visualization import matplotlib as optuna_plots

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=name, storage=storage)
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna marks its matplotlib plots experimental
        history = optuna_plots.plot_optimization_history(study)
        values = [t.value for t in study.trials if t.value is not None]
        if values and min(values) > 0:  # losses span decades
            history.set_yscale("log")
        out["study_history"] = history.figure
        if len(study.best_trial.params) > 1:
            out["study_importances"] = optuna_plots.plot_param_importances(study).figure
    return out


def _study_sections(parent: pd.Series | None, uri: str | None) -> list[str]:
    if parent is None or not isinstance(parent.get("tags.gdexp.study"), str):
        return []
    out = ["<h2>The study</h2>", f"<p class='note'>Optuna study {escape(parent['tags.gdexp.study'])}</p>"]
    try:
        figures = study_figures(parent, uri)
        names = {"study_history": "optimisation history", "study_importances": "parameter importances"}
        out += [f'<img alt="{names[k]}" src="{_png(fig)}">' for k, fig in figures.items()]
        if "study_importances" not in figures:
            out.append("<p class='note'>one searched parameter: its importance is all of it</p>")
        import matplotlib.pyplot as plt

        plt.close("all")
    except Exception as err:  # the storage moved, or the study has no complete trial yet
        problem = f"{type(err).__name__}: {err}"
        out.append(f"<p class='note'>the study could not be drawn: {escape(problem)}</p>")
    return out


def build(
    experiment: str = "gdexp",
    sweep: str = "latest",
    filter: str | None = None,
    uri: str | None = None,
    out: Path | None = None,
) -> Path:
    """Write the report of a sweep and log it on the sweep's parent run; the file's path."""
    runs = select_runs(experiment, sweep, filter, uri)
    parent = parent_run(experiment, sweep, uri)
    varying = varying_params(runs)
    axes = [k for k in _swept(parent) if k in varying] or varying
    table = runs_table(runs)
    if "final_loss" in table:  # runs of an older gdexp may lack a metric or a tag: shown without it
        table = table.sort_values("final_loss", na_position="last")
    history = histories(runs, uri)

    title = parent["run_name"] if parent is not None else f"{len(runs)} runs of experiment {experiment}"
    command = "python -m gdexp.run -m " + parent.get("tags.gdexp.overrides", "") if parent is not None else "-"
    try:
        config = artifact_path(runs.iloc[0]["run_id"], runs.iloc[0]["artifact_uri"], "config.yaml", uri).read_text()
    except Exception:  # not kept by that run (an older gdexp), or not reachable
        config = "(this run has no config.yaml)"
    diverged = int((runs.get("tags.gdexp.status", pd.Series(dtype=str)) == "diverged").sum())
    sections = [
        f"<h1>gdexp sweep report: {escape(title)}</h1>",
        f'<p class="note">experiment {escape(experiment)} · {len(runs)} runs · '
        f"{diverged} diverged · made {datetime.now():%Y-%m-%d %H:%M}"
        + (f" · parent run {escape(parent['run_id'])}" if parent is not None else "")
        + "</p>",
        "<h2>Command</h2>",
        f"<pre>{escape(command)}</pre>",
        f"<h2>Configuration</h2><p class='note'>of the first run; the sweep varies: "
        f"{escape(', '.join(varying) or 'nothing')}</p><pre>{escape(config)}</pre>",
        "<h2>Runs, best final loss first</h2>",
        render(table, "html"),
    ]
    by, style = (axes + [None, None])[:2]  # the curves' colour and line style
    if len(axes) >= 2 and "metrics.final_loss" in runs:
        grid = pivot(runs, axes[0], axes[1], "final_loss").reset_index()
        grid.columns = [str(c) for c in grid.columns]
        sections += [
            f"<h2>final_loss: {escape(axes[0])} x {escape(axes[1])} (mean over the other axes)</h2>",
            render(grid, "html"),
            f'<img alt="heatmap" src="{_png(plots.heatmap(runs, axes[0], axes[1]))}">',
        ]
    if history.empty:  # runs of an older gdexp kept no history.csv
        sections += ["<h2>Loss curves</h2>", "<p class='note'>these runs kept no history.csv</p>"]
    else:
        best = next(i for i in table.index if i in set(history["run_id"]))
        sections += [
            "<h2>Loss curves</h2>",
            f'<img alt="loss curves" src="{_png(plots.curves(runs, history, by, style))}">',
            f"<h2>Parameters of the best run ({escape(table.loc[best, 'run'])})</h2>",
            f'<img alt="parameters" src="{_png(plots.weights(runs, history, best))}">',
        ]

    sections += _study_sections(parent, uri)
    page = (
        f"<!doctype html>\n<html><head><meta charset='utf-8'><title>{escape(title)}</title>"
        f"<style>{STYLE}</style></head><body>\n" + "\n".join(sections) + "\n</body></html>\n"
    )
    name = f"report-{parent['run_id'][:8]}.html" if parent is not None else "report-all.html"
    path = out or OUTPUTS / name  # beside the jobs' own outputs, which a checkout ignores
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page)
    if parent is not None:  # on the parent run it is always report.html, whatever the file's name
        with tempfile.TemporaryDirectory() as folder:
            staged = Path(folder) / "report.html"
            staged.write_text(page)
            log_file(store_uri(uri), parent["run_id"], staged)
    return path
