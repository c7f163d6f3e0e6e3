"""Plots of runs, headless: loss curves, parameter paths, heatmaps. Each function returns the
matplotlib Figure (tests and notebooks inspect it); :func:`save` writes PNGs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend
from matplotlib.ticker import NullLocator

from gdexp.analysis import star_name

if TYPE_CHECKING:
    import pandas as pd


class LossCurve:
    """One run's loss against epoch, log scale: the ``loss_curve.png`` every run logs.

    A writer process draws thousands of these, so one Figure serves them all, and its y axis
    spans whole decades: runs of a sweep then share a handful of axes, each drawn once and kept,
    and a run only adds its line and title (about 8 ms a run instead of 40)."""

    KEEP = 64  # backgrounds kept, one per (epochs, decades) seen

    def __init__(self) -> None:
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        self.figure = Figure(figsize=(6, 3.6), dpi=100)
        self.canvas = FigureCanvasAgg(self.figure)
        self.ax = self.figure.subplots()
        (self.line,) = self.ax.plot([], [], color="C0")
        self.ax.set(xlabel="epoch", ylabel="loss (MSE)", yscale="log")
        self.ax.yaxis.set_minor_locator(NullLocator())
        self.ax.grid(alpha=0.3)
        self.figure.subplots_adjust(left=0.13, right=0.97, bottom=0.14, top=0.9)
        self._backgrounds: dict[tuple[float, ...], object] = {}

    @staticmethod
    def _limits(values: np.ndarray) -> tuple[float, float, float, float]:
        n = len(values)
        pad = 0.05 * max(n - 1, 1)
        shown = values[np.isfinite(values) & (values > 0)]
        if not len(shown):
            return 1 - pad, n + pad, 0.1, 10.0
        low, high = np.floor(np.log10(shown.min())), np.ceil(np.log10(shown.max()))
        return 1 - pad, n + pad, 10.0**low, 10.0 ** max(high, low + 1)

    def draw(self, loss: list[float], title: str = "") -> Figure:
        """The Figure with this run's curve, for inspection (``save`` writes the PNG)."""
        values = np.asarray(loss, dtype=float)
        limits = self._limits(values)
        self.ax.set_xlim(limits[:2])
        self.ax.set_ylim(limits[2:])
        self.line.set_data(np.arange(1, len(values) + 1), np.where(values > 0, values, np.nan))
        self.ax.set_title(title)
        return self.figure

    def save(self, loss: list[float], path: Path, title: str = "") -> Path:
        from PIL import Image

        values = np.asarray(loss, dtype=float)
        limits = self._limits(values)
        self.draw(loss, title)
        background = self._backgrounds.get(limits)
        if background is None:
            self.line.set_visible(False)
            self.ax.title.set_text("")  # not hidden: Matplotlib would then move it off the figure
            self.canvas.draw()
            if len(self._backgrounds) >= self.KEEP:
                self._backgrounds.clear()
            background = self._backgrounds[limits] = self.canvas.copy_from_bbox(self.figure.bbox)
            self.line.set_visible(True)
            self.ax.title.set_text(title)
        else:
            self.canvas.restore_region(background)
        self.ax.draw_artist(self.line)
        self.ax.draw_artist(self.ax.title)
        width, height = self.canvas.get_width_height()
        image = Image.frombuffer("RGBA", (width, height), self.canvas.buffer_rgba(), "raw", "RGBA", 0, 1)
        image.save(path, format="png", compress_level=3)
        return path


def curves(runs: pd.DataFrame, history: pd.DataFrame, by: str | None = None) -> Figure:
    """Loss against epoch, one line per run, log y; coloured by the param ``by`` when given."""
    from gdexp.compare import _column

    fig = Figure(figsize=(8, 5), layout="constrained")
    ax = fig.subplots()
    groups = _column(runs, by, "by").astype(str) if by else None
    palette = {v: f"C{i % 10}" for i, v in enumerate(dict.fromkeys(groups))} if by else {}
    seen = set()
    for i, (run_id, name) in enumerate(zip(runs["run_id"], runs["run_name"])):
        h = history[(history["run_id"] == run_id) & history["loss"].notna()]
        loss = h["loss"].to_numpy(dtype=float)
        if by:
            key = groups.iloc[i]
            label = f"{by}={key}" if key not in seen else None
            seen.add(key)
            color = palette[key]
        else:
            label, color = name, None
        ax.plot(h["epoch"], np.where(loss > 0, loss, np.nan), label=label, color=color, alpha=0.85)
    ax.set(xlabel="epoch", ylabel="loss (MSE)", yscale="log", title="loss per epoch")
    ax.grid(alpha=0.3)
    if len(runs) <= 20 or by:
        ax.legend(fontsize=7, loc="best")
    return fig


def weights(runs: pd.DataFrame, history: pd.DataFrame, run_id: str | None = None) -> Figure:
    """One run's parameters against epoch with the closed-form optimum dashed; for a
    two-parameter model (w, b) also its path in the (w, b) plane over the loss contours."""
    run = runs[runs["run_id"] == run_id].iloc[0] if run_id else runs.iloc[0]
    h = history[history["run_id"] == run["run_id"]]
    names = [c for c in h.columns if c.split("_")[0] in ("w", "b") and c not in ("run_id",)]
    two = names == ["w", "b"]
    import pandas as pd

    fig = Figure(figsize=(11 if two else 7, 4.5), layout="constrained")
    axes = fig.subplots(1, 2 if two else 1, squeeze=False)
    ax = axes[0][0]
    for i, name in enumerate(names):
        ax.plot(h["epoch"], h[name], color=f"C{i}", label=name)
        star = run.get(f"metrics.{star_name(name)}")
        if star is not None and not pd.isna(star):
            ax.axhline(star, color=f"C{i}", linestyle="--", linewidth=1, label=f"{star_name(name)} = {star:.4g}")
    ax.set(xlabel="epoch", ylabel="parameter value", title=f"parameters: {run['run_name']}")
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
    """The run's one-feature data, rebuilt from its params (line data); None when not rebuildable."""
    from gdexp.compare import _parse

    name = run.get("params.data.name")
    if name in ("line", "line_intercept"):
        x = np.asarray(json.loads(run.get("params.data.x")), dtype=float)
        return x, float(_parse(run.get("params.data.slope"))) * x + float(_parse(run.get("params.data.intercept")))
    return None, None


def heatmap(runs: pd.DataFrame, row: str, col: str, value: str = "final_loss") -> Figure:
    """``value`` over two params (mean over repeats), log colour scale for losses."""
    from gdexp.compare import pivot

    grid = pivot(runs, row, col, value)
    data = grid.to_numpy(dtype=float)
    fig = Figure(figsize=(1.2 * len(grid.columns) + 3, 0.5 * len(grid.index) + 2.5), layout="constrained")
    ax = fig.subplots()
    shown = np.log10(np.clip(data, 1e-16, None)) if "loss" in value or "dist" in value else data
    image = ax.imshow(shown, aspect="auto", cmap="viridis_r")
    ax.set_xticks(range(len(grid.columns)), [str(c) for c in grid.columns], rotation=30, ha="right")
    ax.set_yticks(range(len(grid.index)), [str(i) for i in grid.index])
    ax.set(xlabel=col, ylabel=row, title=value)
    for (i, j), v in np.ndenumerate(data):
        ax.text(j, i, f"{v:.2g}", ha="center", va="center", fontsize=7, color="w")
    fig.colorbar(image, ax=ax, label=f"log10 {value}" if shown is not data else value)
    return fig


def figures(
    runs: pd.DataFrame,
    kind: str,
    *,
    by: str | None = None,
    pivot: list[str] | None = None,
    value: str = "final_loss",
    uri: str | None = None,
) -> dict[str, Figure]:
    """The figures of one ``kind``, by file stem."""
    from gdexp.compare import SelectionError, histories

    if kind == "heatmap":
        if not pivot:
            raise SelectionError(
                "--kind=heatmap: needs --pivot ROW COL; allowed: two params, e.g. --pivot lr optimizer.name"
            )
        return {f"heatmap_{value}": heatmap(runs, pivot[0], pivot[1], value)}
    history = histories(runs, uri)
    if kind == "curves":
        return {"curves": curves(runs, history, by)}
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


_LOSS_CURVE: list[LossCurve] = []


def save_loss_curve(loss: list[float], path: Path, title: str = "") -> Path:
    """Write one run's ``loss_curve.png``."""
    if not _LOSS_CURVE:
        _LOSS_CURVE.append(LossCurve())
    return _LOSS_CURVE[0].save(loss, path, title)


def _safe(stem: str) -> str:
    return "".join(c if c.isalnum() or c in "-_.=" else "_" for c in stem)[:150]
