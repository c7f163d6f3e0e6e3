"""Plots of runs, headless: loss curves, parameter paths, heatmaps. Each function returns the
matplotlib Figure (tests and notebooks inspect it); :func:`save` writes PNGs."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend
from matplotlib.lines import Line2D

from gdexp.compare.runs import SelectionError, column, histories
from gdexp.compare.tables import pivot, shown_names, varying_params
from gdexp.tracking.loss_curve import plain, short
from gdexp.training.analysis import star_name
from gdexp.training.data import load_data

STYLES: tuple[Any, ...] = ("-", "--", ":", "-.")  # a second axis as line styles; beyond four values they repeat


def curves(runs: pd.DataFrame, history: pd.DataFrame, by: str | None = None, style: str | None = None) -> Figure:
    """Loss against epoch, one line per run, log y. Two axes of a sweep at once: colour by the
    param ``by`` and line style by ``style``; left out, they are the params that vary (the first
    two), so three lrs per optimizer stay apart. One legend entry per value of each."""
    fig = Figure(figsize=(8, 5), layout="constrained")
    ax = fig.subplots()
    varying = [p for p in varying_params(runs) if p != "seed"]
    if by is None and style is None and varying and len(runs) > 1:
        by = varying[0]
    if by is not None and style is None:
        style = _second_axis(runs, by, varying)
    colours = column(runs, by, "by").astype(str) if by else None
    styles = column(runs, style, "style").astype(str) if style else None
    title = "loss per epoch"
    if colours is not None and colours.nunique() == 1 and len(runs) > 1:  # one colour says nothing
        title = f"loss per epoch ({by} = {colours.iloc[0]} in every run)"
        by, colours = None, None
    palette = {v: f"C{i % 10}" for i, v in enumerate(dict.fromkeys(colours))} if colours is not None else {}
    dashes = {v: STYLES[i % len(STYLES)] for i, v in enumerate(dict.fromkeys(styles))} if styles is not None else {}
    names = shown_names(list(runs["run_name"]))
    for i, run_id in enumerate(runs["run_id"]):
        h = history[(history["run_id"] == run_id) & history["loss"].notna()]
        loss = h["loss"].to_numpy(dtype=float)
        color = palette[colours.iloc[i]] if colours is not None else f"C{i % 10}"
        line = dashes[styles.iloc[i]] if styles is not None else "-"
        label = None if (colours is not None or styles is not None) else plain(short(names[i], 60))
        ax.plot(h["epoch"], np.where(loss > 0, loss, np.nan), label=label, color=color, linestyle=line, alpha=0.85)
    ax.set(xlabel="epoch", ylabel="loss (MSE)", yscale="log", title=plain(title))
    ax.grid(alpha=0.3)
    # One entry per colour (a solid line) and per line style (in grey): the two axes, each read once.
    handles = [Line2D([], [], color=c, label=plain(f"{by}={v}")) for v, c in palette.items()]
    handles += [Line2D([], [], color="0.4", linestyle=d, label=plain(f"{style}={v}")) for v, d in dashes.items()]
    if handles:
        ax.legend(handles=handles, fontsize=7, loc="best", ncols=2 if len(handles) > 12 else 1)
    elif len(runs) <= 20:
        ax.legend(fontsize=7, loc="best")
    return fig


def _second_axis(runs: pd.DataFrame, by: str, varying: list[str]) -> str | None:
    """The next param that varies within ``by``'s groups: ``lr`` beside ``optimizer.name``, not
    ``optimizer.momentum``, which the optimizer decides."""
    try:
        groups = column(runs, by, "by").astype(str)
    except SelectionError:
        return None
    for param in varying:
        values = runs[f"params.{param}"].astype(str)
        if param != by and values.groupby(groups.values).nunique().max() > 1:
            return param
    return None


def weights(runs: pd.DataFrame, history: pd.DataFrame, run_id: str | None = None) -> Figure:
    """One run's parameters against epoch with the closed-form optimum dashed; for a
    two-parameter model (w, b) also its path in the (w, b) plane over the loss contours."""
    run = runs[runs["run_id"] == run_id].iloc[0] if run_id else runs.iloc[0]
    h = history[history["run_id"] == run["run_id"]]
    names = [c for c in h.columns if c.split("_")[0] in ("w", "b") and c not in ("run_id",)]
    two = names == ["w", "b"]

    fig = Figure(figsize=(11 if two else 7, 4.5), layout="constrained")
    axes = fig.subplots(1, 2 if two else 1, squeeze=False)
    ax = axes[0][0]
    for i, name in enumerate(names):
        ax.plot(h["epoch"], h[name], color=f"C{i}", label=name)
        star = run.get(f"metrics.{star_name(name)}")
        if star is not None and not pd.isna(star):
            ax.axhline(star, color=f"C{i}", linestyle="--", linewidth=1, label=f"{star_name(name)} = {star:.4g}")
    title = "\n".join(textwrap.wrap(f"parameters: {run['run_name']}", 70, break_on_hyphens=False)[:3])
    ax.set(xlabel="epoch", ylabel="parameter value")
    ax.set_title(plain(title), fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if two:
        _path_over_contours(axes[0][1], run, h)
    return fig


def _path_over_contours(ax, run: pd.Series, h: pd.DataFrame) -> None:
    w, b = h["w"].to_numpy(float), h["b"].to_numpy(float)
    w_star, b_star = run.get("metrics.w_star"), run.get("metrics.b_star")
    X, Y = _training_data(run)
    span_w = max(np.ptp(np.r_[w, w_star]), 1.0) * 0.6
    span_b = max(np.ptp(np.r_[b, b_star]), 1.0) * 0.6
    gw = np.linspace(min(w.min(), w_star) - span_w, max(w.max(), w_star) + span_w, 200)
    gb = np.linspace(min(b.min(), b_star) - span_b, max(b.max(), b_star) + span_b, 200)
    W, B = np.meshgrid(gw, gb)
    if X is not None:
        loss = ((W[..., None] * X + B[..., None] - Y) ** 2).mean(axis=-1)
        ax.contour(
            W, B, loss, levels=np.geomspace(max(loss.min(), 1e-6), loss.max(), 20), cmap="viridis", linewidths=0.8
        )
    ax.plot(w, b, ".-", color="C3", markersize=3, linewidth=1, label="path")
    ax.plot(w[0], b[0], "o", color="C3", label="start")
    ax.plot(w_star, b_star, "*", color="k", markersize=12, label="optimum")
    ax.set(xlabel="w", ylabel="b", title="path in the (w, b) plane over the loss")
    ax.legend(fontsize=8)


def _training_data(run: pd.Series) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The run's one-feature, one-target data, rebuilt from its ``data.*`` params by the dataset's
    own loader; None when it cannot be (a CSV that has moved, several features)."""
    from omegaconf import OmegaConf

    keys = {k[len("params.data.") :]: v for k, v in run.items() if str(k).startswith("params.data.")}
    spec = {k: _param_value(v) for k, v in keys.items() if not pd.isna(v)}
    try:
        data = load_data(OmegaConf.create(spec))
    except Exception:  # whatever the loader makes of params it may no longer be able to read
        return None, None
    if data.n_features != 1 or data.n_targets != 1:
        return None, None
    return data.X[:, 0].astype(float), data.Y[:, 0].astype(float)


def _param_value(text: str) -> object:
    """A param's text back to the value it was (MLflow keeps lists as JSON, null as ``null``)."""
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return text


def heatmap(runs: pd.DataFrame, row: str, col: str, value: str = "final_loss") -> Figure:
    """``value`` over two params (mean over repeats), log colour scale for losses."""
    grid = pivot(runs, row, col, value)
    data = grid.to_numpy(dtype=float)
    fig = Figure(figsize=(1.2 * len(grid.columns) + 3, 0.5 * len(grid.index) + 2.5), layout="constrained")
    ax = fig.subplots()
    shown = np.log10(np.clip(data, 1e-16, None)) if "loss" in value or "dist" in value else data
    image = ax.imshow(shown, aspect="auto", cmap="viridis_r")
    ax.set_xticks(range(len(grid.columns)), [plain(str(c)) for c in grid.columns], rotation=30, ha="right")
    ax.set_yticks(range(len(grid.index)), [plain(str(i)) for i in grid.index])
    ax.set(xlabel=col, ylabel=row, title=value)
    for (i, j), v in np.ndenumerate(data):
        if np.isnan(v):
            continue
        # Dark text on the map's light end, white on its dark end: readable on every cell.
        r, g, b, _ = image.cmap(image.norm(shown[i, j]))
        ink = "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white"
        ax.text(j, i, f"{v:.2g}", ha="center", va="center", fontsize=7, color=ink)
    fig.colorbar(image, ax=ax, label=f"log10 {value}" if shown is not data else value)
    return fig


def figures(
    runs: pd.DataFrame,
    kind: str,
    *,
    by: str | None = None,
    style: str | None = None,
    pivot: list[str] | None = None,
    value: str = "final_loss",
    uri: str | None = None,
) -> dict[str, Figure]:
    """The figures of one ``kind``, by file stem."""
    if kind == "heatmap":
        if not pivot:
            raise SelectionError(
                "--kind=heatmap: needs --pivot ROW COL; allowed: two params, e.g. --pivot lr optimizer.name"
            )
        return {f"heatmap_{value}": heatmap(runs, pivot[0], pivot[1], value)}
    history = histories(runs, uri)
    if kind == "curves":
        return {"curves": curves(runs, history, by, style)}
    if kind == "weights":
        return {
            f"weights_{name}": weights(runs, history, run_id) for run_id, name in zip(runs["run_id"], runs["run_name"])
        }
    raise SelectionError(f"--kind={kind}: unknown; allowed: curves, weights, heatmap")


def save(runs: pd.DataFrame, kind: str, out: Path, **options) -> list[Path]:
    """Write the figures of ``kind`` as PNGs into ``out``; their paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for stem, fig in figures(runs, kind, **options).items():
        path = out / f"{_safe(stem)}.png"
        fig.savefig(path, dpi=110)
        paths.append(path)
    return paths


def _safe(stem: str) -> str:
    return "".join(c if c.isalnum() or c in "-_.=" else "_" for c in stem)[:150]
