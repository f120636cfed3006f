"""Line plots: the planner's cost over optimizer iterations, and flow error over the prediction horizon.

The error curves come from an evaluation JSON written by :func:`pointworld.train.evaluate.write_results`
(``{"predictors": {name: {"overall": {"epe_moved_per_step": [...], ...}}}}``) or from a file holding
several such results under named sections (``{"held_out_test": {...}, "unseen_robot": {...}}``, as the
bundled ``tiny_eval.json``). Missing values (NaN written as ``null``) are plotted as gaps.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.ticker import MaxNLocator

from pointworld.viz.figure_canvas import figure_rgb, new_figure

#: Per-step metrics an evaluation JSON may hold, in order of preference for the error-over-horizon plot.
HORIZON_METRICS = ("epe_moved_per_step", "epe_per_step")


def _curve(name: str, values: object) -> np.ndarray:
    """A non-empty 1-D float array from a list of numbers/None (None -> NaN), else ``ValueError``."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().tolist()
    elif isinstance(values, np.ndarray):
        values = values.tolist() if values.ndim == 1 else [values.tolist()]
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or len(values) == 0:
        raise ValueError(f"{name}: expected a non-empty sequence of numbers, got {values!r:.80}")
    out = []
    for v in values:
        if v is None:
            out.append(math.nan)
        elif isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ValueError(f"{name}: expected numbers (or null), got an entry {v!r:.40}")
        else:
            out.append(float(v))
    return np.asarray(out, dtype=np.float64)


def _sections(results: Mapping) -> dict[str, Mapping]:
    """Name -> evaluation result (a mapping with ``predictors``); the name is "" for an unsectioned file."""
    if isinstance(results.get("predictors"), Mapping):
        return {"": results}
    return {str(k): v for k, v in results.items() if isinstance(v, Mapping) and isinstance(v.get("predictors"),
                                                                                          Mapping)}


def error_curves(results: Mapping, metric: str = "epe_moved_per_step") -> dict[str, np.ndarray]:
    """The per-step error curve of every predictor (and section) of an evaluation result.

    Args:
        results: parsed evaluation JSON (see the module docstring).
        metric: a per-step metric of :data:`HORIZON_METRICS`.

    Returns:
        ``{"<section>/<predictor>" or "<predictor>": (T,) error per step, m}`` in file order.

    Raises:
        ValueError: no predictor results, or none with a valid ``metric`` curve.
    """
    if metric not in HORIZON_METRICS:
        raise ValueError(f"metric: expected one of {HORIZON_METRICS}, got {metric!r}")
    if not isinstance(results, Mapping):
        raise TypeError(f"results: expected a mapping (parsed evaluation JSON), got {type(results).__name__}")
    sections = _sections(results)
    if not sections:
        raise ValueError("results: expected an evaluation result with a 'predictors' mapping (or sections of "
                         f"them), got top-level keys {sorted(map(str, results))[:10]}")
    curves: dict[str, np.ndarray] = {}
    for section, entry in sections.items():
        for name, pred in entry["predictors"].items():
            overall = pred.get("overall") if isinstance(pred, Mapping) else None
            if isinstance(overall, Mapping) and metric in overall:
                label = f"{section}/{name}" if section else str(name)
                curves[label] = _curve(f"{label}.{metric}", overall[metric])
    if not curves:
        raise ValueError(f"results: no predictor has an overall '{metric}' curve (an evaluation JSON from an "
                         "older version? re-run `pointworld eval`)")
    return curves


def load_error_curves(path: str | os.PathLike, metric: str = "epe_moved_per_step") -> dict[str, np.ndarray]:
    """:func:`error_curves` of the evaluation JSON file at ``path``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not JSON, or no curves (the message names the file).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"path: no evaluation JSON at {path}")
    try:
        results = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"path: {path} is not a JSON file ({exc})") from exc
    if not isinstance(results, Mapping):
        raise ValueError(f"path: {path} holds a JSON {type(results).__name__}, expected an object")
    try:
        return error_curves(results, metric)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc


def _line_axes(width_px: int, height_px: int, xlabel: str, ylabel: str, title: str | None):
    fig = new_figure(width_px, height_px)
    ax = fig.add_axes((0.12, 0.13, 0.84, 0.78))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    if title:
        ax.set_title(title, fontsize=10)
    return fig, ax


def plot_error_over_horizon(curves: Mapping[str, object], dt_s: float | None = None, width_px: int = 800,
                            height_px: int = 500, title: str | None = "flow error over the horizon",
                            ylabel: str = "mean L2 error on moving points (cm)") -> np.ndarray:
    """One line per curve: error (plotted in cm) against the future step (or time if ``dt_s`` is given).

    Args:
        curves: label -> (T,) error per step, m (lists, arrays or tensors; NaN/None = gap).
        dt_s: seconds per step (> 0) to label the x axis in s, or None for step numbers 1..T.
        width_px, height_px: image size, px.
        title: plot title (None = none).
        ylabel: y-axis label.

    Returns:
        (height_px, width_px, 3) uint8 RGB image.
    """
    if not isinstance(curves, Mapping) or not curves:
        raise ValueError(f"curves: expected a non-empty mapping label -> per-step errors, got {curves!r:.80}")
    if dt_s is not None and not (isinstance(dt_s, (int, float)) and 0 < dt_s < math.inf):
        raise ValueError(f"dt_s: expected a finite number > 0 or None, got {dt_s!r}")
    xlabel = "time ahead (s)" if dt_s is not None else "future step"
    fig, ax = _line_axes(width_px, height_px, xlabel, ylabel, title)
    split = {label: (label.rsplit("/", 1) if "/" in label else ["", label]) for label in curves}
    sections = list(dict.fromkeys(sec for sec, _ in split.values()))  # line style per section
    names = list(dict.fromkeys(name for _, name in split.values()))  # color per predictor
    styles = ("-", "--", ":", "-.")
    for label, values in curves.items():
        y = _curve(f"curves[{label!r}]", values) * 100.0
        x = np.arange(1, y.shape[0] + 1, dtype=np.float64) * (1.0 if dt_s is None else dt_s)
        section, name = split[label]
        ax.plot(x, y, styles[sections.index(section) % len(styles)], color=f"C{names.index(name) % 10}",
                marker="o", markersize=3, label=label)
    ax.set_ylim(bottom=0.0)
    ax.legend(fontsize=8, loc="upper left")
    return figure_rgb(fig)


def plot_cost_history(cost_history: object, width_px: int = 800, height_px: int = 500,
                      title: str | None = "planning cost over optimizer iterations") -> np.ndarray:
    """The best cost after each optimizer iteration (dimensionless cost units).

    Args:
        cost_history: (I,) best cost per iteration, I >= 1 (list, array or tensor; finite).
        width_px, height_px: image size, px.
        title: plot title (None = none).

    Returns:
        (height_px, width_px, 3) uint8 RGB image.
    """
    y = _curve("cost_history", cost_history)
    if not np.isfinite(y).all():
        raise ValueError(f"cost_history: expected finite costs, got {int((~np.isfinite(y)).sum())} NaN/inf "
                         f"of {y.shape[0]}")
    fig, ax = _line_axes(width_px, height_px, "optimizer iteration", "best cost", title)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # iterations are whole numbers
    x = np.arange(1, y.shape[0] + 1)
    ax.plot(x, y, "-o", markersize=3, color="tab:blue")
    ax.annotate(f"{y[-1]:.4g}", (x[-1], y[-1]), textcoords="offset points", xytext=(-10, 8), fontsize=8)
    return figure_rgb(fig)
