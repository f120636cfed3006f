"""Headless matplotlib figures of an exact pixel size, turned into RGB arrays or PNG files.

Uses matplotlib's object API (:class:`matplotlib.figure.Figure` on a ``FigureCanvasAgg``), so no
display and no global backend switch are needed, and figures are never registered with pyplot.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from pointworld.geometry.checks import require_int
from pointworld.viz.flow_cloud import write_png

#: Dots per inch of every figure; sizes are given in pixels and converted with it.
FIGURE_DPI = 100.0

#: Smallest accepted figure edge, px (below it text and axes no longer fit).
MIN_FIGURE_PX = 16


def new_figure(width_px: int, height_px: int) -> Figure:
    """A blank white figure of exactly ``width_px`` x ``height_px`` pixels on an Agg canvas.

    Raises:
        ValueError: a size that is not an int >= :data:`MIN_FIGURE_PX`.
    """
    require_int("width_px", width_px, MIN_FIGURE_PX)
    require_int("height_px", height_px, MIN_FIGURE_PX)
    fig = Figure(figsize=(width_px / FIGURE_DPI, height_px / FIGURE_DPI), dpi=FIGURE_DPI, facecolor="white")
    FigureCanvasAgg(fig)
    return fig


def figure_rgb(fig: Figure) -> np.ndarray:
    """Draw ``fig`` and return its pixels: (H, W, 3) uint8 RGB, H x W the figure's size in pixels."""
    if not isinstance(fig, Figure):
        raise TypeError(f"fig: expected a matplotlib Figure, got {type(fig).__name__}")
    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    canvas.draw()
    return np.ascontiguousarray(np.asarray(canvas.buffer_rgba())[..., :3])


def save_figure_png(path: str | Path, fig: Figure) -> Path:
    """Draw ``fig`` and write it as an RGB PNG at ``path`` (atomic; parent directories created)."""
    return write_png(path, figure_rgb(fig))
