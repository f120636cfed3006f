"""Static pictures of a scene cloud: points from a viewpoint with flow arrows, and predicted vs ground truth.

Points are projected with the pinhole camera of a :class:`~pointworld.viz.viewpoint.ViewpointConfig`
and drawn far-to-near (a painter's z-buffer) as square markers of ``point_size_px`` pixels; the axes span
the image in pixel units, so a point drawn at ``uv_px`` covers the pixel with that centre. Arrows go from
a point at t = 0 to its displaced position, for the ``max_arrows`` largest displacements above
``min_arrow_m``. Goal points are ringed and joined to their targets (crosses) by dashed lines.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from matplotlib.axes import Axes

from pointworld.geometry.checks import (require_dtype, require_finite, require_floating, require_int,
                                        require_shape)
from pointworld.viz.figure_canvas import FIGURE_DPI, figure_rgb, new_figure
from pointworld.viz.viewpoint import ViewpointConfig, check_cloud, project_view, view_camera

#: Color of the points when a cloud has no colors (light gray).
DEFAULT_POINT_COLOR = (0.6, 0.6, 0.6)


def _check_inputs(points: torch.Tensor, colors: torch.Tensor | None,
                  displacements: dict[str, torch.Tensor | None]) -> torch.Tensor:
    """Validate the cloud, its colors and each (N, 3) displacement; return the cloud as float64 CPU."""
    p = check_cloud("points", points)
    n = p.shape[0]
    if colors is not None:
        c = require_finite("colors", require_shape("colors", require_floating("colors", colors), (n, 3),
                                                   max_leading=0))
        if bool(((c < 0) | (c > 1)).any()):
            raise ValueError(f"colors: expected RGB values in [0, 1], got min {float(c.min()):.3g} "
                             f"and max {float(c.max()):.3g}")
    for name, d in displacements.items():
        if d is not None:
            require_finite(name, require_shape(name, require_floating(name, d), (n, 3), max_leading=0))
    return p.detach().cpu().double()


def _check_goal(goal_indices: torch.Tensor | None, goal_targets: torch.Tensor | None, n: int) -> None:
    if (goal_indices is None) != (goal_targets is None):
        raise ValueError("goal_indices, goal_targets: expected both or neither, got only one of them")
    if goal_indices is None:
        return
    idx = require_shape("goal_indices", require_dtype("goal_indices", goal_indices, torch.int64), (None,),
                        max_leading=0)
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= n):
        raise ValueError(f"goal_indices: expected indices in [0, {n}), got range [{int(idx.min())}, "
                         f"{int(idx.max())}]")
    require_finite("goal_targets", require_shape("goal_targets", require_floating("goal_targets", goal_targets),
                                                 (idx.shape[0], 3), max_leading=0))


def _image_axes(fig, rect: tuple[float, float, float, float], view: ViewpointConfig) -> Axes:
    """Axes filling ``rect`` (figure fractions) whose data coordinates are the image's pixels."""
    ax = fig.add_axes(rect)
    ax.set_xlim(-0.5, view.width_px - 0.5)
    ax.set_ylim(view.height_px - 0.5, -0.5)
    ax.set_axis_off()
    return ax


def _draw_points(ax: Axes, uv: np.ndarray, depth: np.ndarray, rgb: np.ndarray, size_px: float) -> None:
    """Scatter the points in front of the camera, far first, as squares ``size_px`` wide."""
    keep = np.isfinite(uv).all(axis=1) & (depth > 0)
    order = np.argsort(-depth[keep], kind="stable")
    side_pt = size_px * 72.0 / FIGURE_DPI  # marker size is given in points (1/72 inch)
    ax.scatter(uv[keep][order, 0], uv[keep][order, 1], s=side_pt ** 2, c=rgb[keep][order], marker="s",
               linewidths=0, zorder=1)


def _draw_arrows(ax: Axes, points: torch.Tensor, displacement: torch.Tensor, camera, color: str,
                 max_arrows: int, min_arrow_m: float, mask: torch.Tensor | None = None) -> int:
    """Arrows for the ``max_arrows`` largest displacements (> ``min_arrow_m``); returns how many were drawn."""
    d = displacement.detach().cpu().double()
    norm = d.norm(dim=-1)
    eligible = norm > min_arrow_m if mask is None else (norm > min_arrow_m) & mask.cpu()
    chosen = torch.nonzero(eligible).flatten()
    chosen = chosen[torch.argsort(norm[chosen], descending=True, stable=True)[:max_arrows]]
    if chosen.numel() == 0:
        return 0
    start, _ = project_view(points[chosen], *camera)
    end, _ = project_view(points[chosen] + d[chosen], *camera)
    ok = torch.isfinite(start).all(-1) & torch.isfinite(end).all(-1)
    s, e = start[ok].numpy(), end[ok].numpy()
    ax.quiver(s[:, 0], s[:, 1], e[:, 0] - s[:, 0], e[:, 1] - s[:, 1], angles="xy", scale_units="xy", scale=1,
              color=color, width=0.003, headwidth=4, headlength=5, minlength=0.5, zorder=3)
    return int(ok.sum())


def _draw_goal(ax: Axes, points: torch.Tensor, goal_indices: torch.Tensor, goal_targets: torch.Tensor,
               camera) -> None:
    src, _ = project_view(points[goal_indices.cpu()], *camera)
    dst, _ = project_view(goal_targets.detach().cpu().double(), *camera)
    src, dst = src.numpy(), dst.numpy()
    ax.scatter(src[:, 0], src[:, 1], s=20, facecolors="none", edgecolors="magenta", linewidths=1.2, zorder=4)
    ax.scatter(dst[:, 0], dst[:, 1], s=30, c="magenta", marker="x", linewidths=1.5, zorder=4)
    for a, b in zip(src, dst, strict=True):
        ax.plot([a[0], b[0]], [a[1], b[1]], color="magenta", linestyle="--", linewidth=0.8, zorder=4)


def _check_min_arrow(min_arrow_m: float) -> None:
    if isinstance(min_arrow_m, bool) or not isinstance(min_arrow_m, (int, float)) or not 0 <= min_arrow_m < math.inf:
        raise ValueError(f"min_arrow_m: expected a finite number >= 0 (m), got {min_arrow_m!r}")


def _label(ax: Axes, text: str | None) -> None:
    if text:
        ax.text(0.01, 0.99, text, transform=ax.transAxes, va="top", ha="left", fontsize=10,
                bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "none"}, zorder=5)


def _rgb(colors: torch.Tensor | None, n: int) -> np.ndarray:
    if colors is None:
        return np.tile(np.asarray(DEFAULT_POINT_COLOR), (n, 1))
    return colors.detach().cpu().double().numpy()


def render_cloud(points: torch.Tensor, colors: torch.Tensor | None, view: ViewpointConfig,
                 displacement: torch.Tensor | None = None, *, goal_indices: torch.Tensor | None = None,
                 goal_targets: torch.Tensor | None = None, max_arrows: int = 150, min_arrow_m: float = 0.002,
                 title: str | None = None, arrow_color: str = "red") -> np.ndarray:
    """The cloud from ``view``, optionally with flow arrows and goal markers, as an image.

    Args:
        points: (N, 3) scene points at t = 0, m, world frame (N >= 1, finite).
        colors: (N, 3) RGB in [0, 1], or None (gray).
        view: camera placement and image size (target/distance default to fit ``points``).
        displacement: (N, 3) displacement drawn as arrows from each point, m, world frame; None = no arrows.
        goal_indices: (P,) int64 indices of goal points into ``points`` (with ``goal_targets``) or None.
        goal_targets: (P, 3) their target positions, m, world frame.
        max_arrows: at most this many arrows (the largest displacements), >= 0.
        min_arrow_m: displacements of this norm or less get no arrow, m.
        title: text in the top-left corner.
        arrow_color: matplotlib color of the arrows.

    Returns:
        (view.height_px, view.width_px, 3) uint8 RGB image.
    """
    p = _check_inputs(points, colors, {"displacement": displacement})
    _check_goal(goal_indices, goal_targets, p.shape[0])
    require_int("max_arrows", max_arrows, 0)
    _check_min_arrow(min_arrow_m)
    camera = view_camera(p, view)
    fig = new_figure(view.width_px, view.height_px)
    ax = _image_axes(fig, (0.0, 0.0, 1.0, 1.0), view)
    uv, depth = project_view(p, *camera)
    _draw_points(ax, uv.numpy(), depth.numpy(), _rgb(colors, p.shape[0]), view.point_size_px)
    if displacement is not None:
        _draw_arrows(ax, p, displacement, camera, arrow_color, max_arrows, min_arrow_m)
    if goal_indices is not None:
        _draw_goal(ax, p, goal_indices, goal_targets, camera)
    _label(ax, title)
    return figure_rgb(fig)


def render_flow_panels(points: torch.Tensor, colors: torch.Tensor | None, displacements: Sequence[torch.Tensor],
                       view: ViewpointConfig, masks: Sequence[torch.Tensor | None] | None = None,
                       titles: Sequence[str] | None = None, arrow_colors: Sequence[str] | None = None, *,
                       max_arrows: int = 150, min_arrow_m: float = 0.002) -> np.ndarray:
    """One row of panels of the same view, each the cloud with the arrows of one displacement field.

    Args:
        points: (N, 3) scene points at t = 0, m, world frame.
        colors: (N, 3) RGB in [0, 1] or None.
        displacements: F >= 1 tensors (N, 3), displacement per panel, m, world frame (finite).
        view: camera of every panel; each panel is ``view.width_px`` x ``view.height_px``.
        masks: F entries (N,) bool or None: points allowed an arrow (e.g. ground truth observed).
        titles: F panel labels. arrow_colors: F matplotlib colors (default red).
        max_arrows, min_arrow_m: as in :func:`render_cloud`, per panel.

    Returns:
        (view.height_px, F * view.width_px, 3) uint8 RGB image.
    """
    f = len(displacements) if isinstance(displacements, Sequence) else 0
    if f == 0:
        raise ValueError(f"displacements: expected a non-empty sequence of (N, 3) tensors, got {displacements!r:.60}")
    masks, titles = [None] * f if masks is None else list(masks), [None] * f if titles is None else list(titles)
    arrow_colors = ["red"] * f if arrow_colors is None else list(arrow_colors)
    for name, seq in (("masks", masks), ("titles", titles), ("arrow_colors", arrow_colors)):
        if len(seq) != f:
            raise ValueError(f"{name}: expected {f} entries (one per displacement), got {len(seq)}")
    p = _check_inputs(points, colors, {f"displacements[{i}]": d for i, d in enumerate(displacements)})
    for i, m in enumerate(masks):
        if m is not None:
            require_shape(f"masks[{i}]", require_dtype(f"masks[{i}]", m, torch.bool), (p.shape[0],), max_leading=0)
    require_int("max_arrows", max_arrows, 0)
    _check_min_arrow(min_arrow_m)
    camera = view_camera(p, view)
    fig = new_figure(f * view.width_px, view.height_px)
    uv, depth = project_view(p, *camera)
    rgb = _rgb(colors, p.shape[0])
    for i in range(f):
        ax = _image_axes(fig, (i / f, 0.0, 1.0 / f, 1.0), view)
        _draw_points(ax, uv.numpy(), depth.numpy(), rgb, view.point_size_px)
        _draw_arrows(ax, p, displacements[i], camera, arrow_colors[i], max_arrows, min_arrow_m, masks[i])
        _label(ax, titles[i])
    return figure_rgb(fig)


def render_flow_comparison(points: torch.Tensor, colors: torch.Tensor | None, predicted: torch.Tensor,
                           ground_truth: torch.Tensor, view: ViewpointConfig, valid: torch.Tensor | None = None,
                           *, max_arrows: int = 150, min_arrow_m: float = 0.002,
                           titles: tuple[str, str] = ("predicted", "ground truth")) -> np.ndarray:
    """Side-by-side panels of the same view: predicted flow arrows (left, red), ground truth (right, green).

    Args:
        points: (N, 3) scene points at t = 0, m, world frame.
        colors: (N, 3) RGB in [0, 1] or None.
        predicted: (N, 3) predicted displacement at one step, m, world frame.
        ground_truth: (N, 3) true displacement at the same step, m, world frame (finite; give unobserved
            entries any finite value and mask them with ``valid``).
        view: camera of both panels; each panel is ``view.width_px`` x ``view.height_px``.
        valid: (N,) bool, ground truth observed (None = all); unobserved points get no ground-truth arrow.
        max_arrows, min_arrow_m: as in :func:`render_cloud`, per panel.
        titles: labels of the two panels.

    Returns:
        (view.height_px, 2 * view.width_px, 3) uint8 RGB image.
    """
    if valid is not None:
        require_shape("valid", require_dtype("valid", valid, torch.bool), (None,), max_leading=0)
    return render_flow_panels(points, colors, [predicted, ground_truth], view, [None, valid], list(titles),
                              ["red", "green"], max_arrows=max_arrows, min_arrow_m=min_arrow_m)
