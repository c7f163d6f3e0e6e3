"""``loss_curve.png``: the picture of its loss curve that every run logs.

Drawn by the MLflow writer process (:mod:`gdexp.tracking.writer`) after a run ends, so it costs
the training process nothing. Matplotlib only, no pyplot.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def plain(text: str) -> str:
    """``text`` as Matplotlib shows it verbatim: a ``$`` would start mathtext (run names come from
    overrides and CSV paths, so ``$x^$`` is possible and would fail to draw)."""
    return text.replace("$", r"\$")


def short(text: str, limit: int = 80) -> str:
    """``text`` cut in the middle to ``limit`` characters: a long run name fits its plot's title."""
    if len(text) <= limit:
        return text
    keep = limit - 3
    return f"{text[: keep - keep // 3]}...{text[len(text) - keep // 3 :]}"


class LossCurve:
    """One run's loss against epoch, log scale: the ``loss_curve.png`` every run logs.

    A writer process draws thousands of these, so one Figure serves them all, and its y axis
    spans whole decades: runs of a sweep then share a handful of axes, each drawn once and kept,
    and a run only adds its line and title (about 8 ms a run instead of 40)."""

    KEEP = 64  # backgrounds kept, one per (epochs, decades) seen

    def __init__(self) -> None:
        # Heavy: the writer imports it once the store is open, off the main process's critical path.
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend
        from matplotlib.ticker import NullLocator

        self.figure = Figure(figsize=(6, 3.6), dpi=100)
        self.canvas = FigureCanvasAgg(self.figure)
        self.ax = self.figure.subplots()
        (self.line,) = self.ax.plot([], [], color="C0")
        self.ax.set(xlabel="epoch", ylabel="loss (MSE)", yscale="log")
        self.ax.yaxis.set_minor_locator(NullLocator())
        self.ax.grid(alpha=0.3)
        self.figure.subplots_adjust(left=0.13, right=0.97, bottom=0.14, top=0.9)
        self._backgrounds: dict[tuple[float, ...], Any] = {}

    @staticmethod
    def _limits(values: np.ndarray) -> tuple[float, float, float, float]:
        n = len(values)
        pad = 0.05 * max(n - 1, 1)
        shown = values[np.isfinite(values) & (values > 0)]
        if not len(shown):
            return 1 - pad, n + pad, 0.1, 10.0
        low, high = np.floor(np.log10(shown.min())), np.ceil(np.log10(shown.max()))
        return 1 - pad, n + pad, 10.0**low, 10.0 ** max(high, low + 1)

    def draw(self, loss: list[float], title: str = "") -> Any:
        """The Figure with this run's curve, for inspection (``save`` writes the PNG)."""
        values = np.asarray(loss, dtype=float)
        limits = self._limits(values)
        self.ax.set_xlim(limits[:2])
        self.ax.set_ylim(limits[2:])
        self.line.set_data(np.arange(1, len(values) + 1), np.where(values > 0, values, np.nan))
        self.ax.set_title(plain(short(title)), fontsize=9)
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
            self.ax.title.set_text(plain(short(title)))
        else:
            self.canvas.restore_region(background)
        self.ax.draw_artist(self.line)
        self.ax.draw_artist(self.ax.title)
        width, height = self.canvas.get_width_height()
        image = Image.frombuffer("RGBA", (width, height), self.canvas.buffer_rgba(), "raw", "RGBA", 0, 1)
        image.save(path, format="png", compress_level=3)
        return path


_DRAWER: list[LossCurve] = []


def drawer() -> LossCurve:
    """The process's one :class:`LossCurve` (made on first use: it imports Matplotlib)."""
    if not _DRAWER:
        _DRAWER.append(LossCurve())
    return _DRAWER[0]


def save_loss_curve(loss: list[float], path: Path, title: str = "") -> Path:
    """Write one run's ``loss_curve.png``."""
    return drawer().save(loss, path, title)
