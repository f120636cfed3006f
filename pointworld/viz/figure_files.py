"""Sets of PNG figures written for one input: a plan record, a dataset clip, a capture, an evaluation JSON.

Used by ``pointworld render`` and by ``pointworld plan`` / ``demo`` / ``eval`` to leave figures next to
their outputs. Each writer returns the paths it wrote (atomic writes, parent directories created).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import torch

from pointworld.geometry.checks import require_int
from pointworld.planning.plan_record import PlanRecord
from pointworld.viz.figure_canvas import MIN_FIGURE_PX
from pointworld.viz.figure_cloud import render_cloud, render_flow_comparison, render_flow_panels
from pointworld.viz.figure_curves import load_error_curves, plot_cost_history, plot_error_over_horizon
from pointworld.viz.flow_cloud import heat_colors, write_png
from pointworld.viz.view_data import ViewData
from pointworld.viz.viewpoint import ViewpointConfig

#: Candidate futures shown in a plan's candidate panel (the best ones).
MAX_CANDIDATE_PANELS = 4

#: Color of robot points drawn into a clip figure (dark blue).
ROBOT_POINT_COLOR = (0.1, 0.2, 0.6)


def resolve_step(step: int, horizon: int) -> int:
    """A 0-based future step in [0, horizon): ``step`` itself, or counted from the end when negative."""
    require_int("step", step)
    if not -horizon <= step < horizon:
        raise ValueError(f"step: expected an int in [{-horizon}, {horizon}) for a horizon of {horizon} steps, "
                         f"got {step}")
    return step % horizon


def write_eval_figure(eval_json: str | os.PathLike, png: str | os.PathLike, width_px: int = 800,
                      height_px: int = 500) -> Path:
    """The error-over-horizon plot (moving points' mean L2 per step, every predictor) of an evaluation JSON."""
    curves = load_error_curves(eval_json)
    return write_png(png, plot_error_over_horizon(curves, width_px=width_px, height_px=height_px))


def _uncertainty_colors(log_var: torch.Tensor) -> tuple[torch.Tensor, float, float]:
    """(N,) log variance, log(m^2) -> heat colors of the standard deviation stretched over its 1st..99th
    percentiles, and those two std values, m."""
    std = torch.exp(0.5 * log_var.double())
    low, high = (float(v) for v in torch.quantile(std, std.new_tensor([0.01, 0.99])))
    return heat_colors((std - low).clamp(min=0.0), max(high - low, 1e-9)), low, high


def write_plan_figures(record: PlanRecord, out: str | os.PathLike, view: ViewpointConfig | None = None,
                       step: int = -1, max_arrows: int = 150, min_arrow_m: float = 0.002,
                       curve_size_px: tuple[int, int] = (800, 500), prefix: str = "plan_") -> list[Path]:
    """``<prefix>flow.png`` (cloud, predicted flow at ``step``, goal), ``<prefix>uncertainty.png`` (predicted
    std), ``<prefix>cost.png`` (cost per iteration) and, with candidates, ``<prefix>candidates.png``."""
    if not isinstance(record, PlanRecord):
        raise TypeError(f"record: expected a PlanRecord, got {type(record).__name__}")
    view = ViewpointConfig() if view is None else view
    s = resolve_step(step, record.horizon)
    out = Path(out)
    ahead = f"t + {(s + 1) * record.dt_s:.2f} s"
    final = float(record.cost_history[-1]) if record.cost_history.numel() else float("nan")
    paths = [write_png(out / f"{prefix}flow.png", render_cloud(
        record.points, record.colors, view, record.displacement[s], goal_indices=record.goal_indices,
        goal_targets=record.goal_targets, max_arrows=max_arrows, min_arrow_m=min_arrow_m,
        title=f"{record.robot_name}: predicted flow at {ahead} (cost {final:.4g}); magenta: goal"))]
    colors, low, high = _uncertainty_colors(record.log_var[s])
    paths.append(write_png(out / f"{prefix}uncertainty.png", render_cloud(
        record.points, colors, view,
        title=f"predicted std at {ahead}: dark {100 * low:.2g} cm .. yellow {100 * high:.2g} cm")))
    if record.cost_history.numel():
        paths.append(write_png(out / f"{prefix}cost.png", plot_cost_history(record.cost_history, *curve_size_px)))
    if record.candidates is not None and record.candidates.shape[0] > 0:
        c = min(MAX_CANDIDATE_PANELS, record.candidates.shape[0])
        small = dataclasses.replace(view, width_px=max(MIN_FIGURE_PX, view.width_px // 2),
                                    height_px=max(MIN_FIGURE_PX, view.height_px // 2))
        titles = [f"#{i + 1}: cost {float(record.candidate_costs[i]):.4g}" for i in range(c)]
        paths.append(write_png(out / f"{prefix}candidates.png", render_flow_panels(
            record.points, record.colors, [record.candidates[i, s] for i in range(c)], small, titles=titles,
            max_arrows=max_arrows, min_arrow_m=min_arrow_m)))
    return paths


def write_clip_figures(data: ViewData, out: str | os.PathLike, view: ViewpointConfig | None = None,
                       step: int = -1, max_arrows: int = 150, min_arrow_m: float = 0.002,
                       prefix: str = "clip_") -> list[Path]:
    """``<prefix>flow.png``: predicted vs ground-truth flow at ``step`` side by side (ground truth alone
    without a prediction), with the robot's points at that step drawn in dark blue."""
    if not isinstance(data, ViewData) or data.ground_truth is None or data.valid is None:
        raise ValueError("data: expected a ViewData of a dataset clip (with ground_truth and valid)")
    view = ViewpointConfig() if view is None else view
    s = resolve_step(step, data.ground_truth.shape[0])
    n = data.points.shape[0]
    points, colors = data.points, data.colors
    gt = torch.where(data.valid[s, :, None], data.ground_truth[s], torch.zeros(()))
    mask = data.valid[s]
    pred = None if data.predicted is None else data.predicted[s]
    if data.robot_points is not None:  # the robot where it is at the shown step, without arrows
        robot = data.robot_points[s + 1]
        m = robot.shape[0]
        points = torch.cat([points, robot])
        colors = torch.cat([colors, colors.new_tensor(ROBOT_POINT_COLOR).expand(m, 3)])
        gt, mask = torch.cat([gt, gt.new_zeros(m, 3)]), torch.cat([mask, mask.new_zeros(m)])
        pred = None if pred is None else torch.cat([pred, pred.new_zeros(m, 3)])
    label = f"step {s + 1}"
    if pred is None:
        image = render_flow_panels(points, colors, [gt], view, [mask], [f"ground truth, {label} ({n} points)"],
                                   ["green"], max_arrows=max_arrows, min_arrow_m=min_arrow_m)
    else:
        image = render_flow_comparison(points, colors, pred, gt, view, mask, max_arrows=max_arrows,
                                       min_arrow_m=min_arrow_m,
                                       titles=(f"predicted, {label}", f"ground truth, {label}"))
    return [write_png(Path(out) / f"{prefix}flow.png", image)]


def write_cloud_figure(data: ViewData, png: str | os.PathLike, view: ViewpointConfig | None = None) -> Path:
    """The cloud of ``data`` (e.g. a fused capture) in its own colors, from ``view``."""
    if not isinstance(data, ViewData):
        raise TypeError(f"data: expected a ViewData, got {type(data).__name__}")
    view = ViewpointConfig() if view is None else view
    return write_png(png, render_cloud(data.points, data.colors, view,
                                       title=f"{data.title} ({data.points.shape[0]} points)"))
