"""Static figures: viewpoint projection against a naive per-point camera, rendered pixels, curves, bad input."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from pointworld.errors import EmptyCloudError
from pointworld.viz.figure_cloud import render_cloud, render_flow_comparison, render_flow_panels
from pointworld.viz.figure_curves import (error_curves, load_error_curves, plot_cost_history,
                                          plot_error_over_horizon)
from pointworld.viz.flow_cloud import write_png
from pointworld.viz.viewpoint import FIT_FRACTION, ViewpointConfig, project_view, view_camera


def naive_pixel(p, view: ViewpointConfig, target, distance):
    """Pixel (u, v) and depth of one point, written out per point with plain floats."""
    az, el = math.radians(view.azimuth_deg), math.radians(view.elevation_deg)
    eye = [target[i] + distance * d for i, d in enumerate(
        (math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)))]
    fwd = [target[i] - eye[i] for i in range(3)]
    n = math.sqrt(sum(f * f for f in fwd))
    fwd = [f / n for f in fwd]
    right = [fwd[1], -fwd[0], 0.0]  # fwd x (0, 0, 1)
    n = math.sqrt(sum(r * r for r in right))
    right = [r / n for r in right]
    down = [fwd[1] * right[2] - fwd[2] * right[1], fwd[2] * right[0] - fwd[0] * right[2],
            fwd[0] * right[1] - fwd[1] * right[0]]
    rel = [p[i] - eye[i] for i in range(3)]
    x, y, z = (sum(a * b for a, b in zip(rel, axis)) for axis in (right, down, fwd))
    f = 0.5 * view.height_px / math.tan(math.radians(view.fov_deg) / 2)
    return f * x / z + (view.width_px - 1) / 2, f * y / z + (view.height_px - 1) / 2, z


def random_cloud(n=400, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    points = torch.rand(n, 3, generator=g, dtype=dtype) * torch.tensor([0.6, 0.8, 0.2], dtype=dtype)
    return points + torch.tensor([0.3, -0.4, 0.0], dtype=dtype), torch.rand(n, 3, generator=g, dtype=dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("az, el", [(210.0, 35.0), (0.0, 10.0), (-75.0, 60.0), (130.0, -20.0)])
def test_projection_matches_a_naive_per_point_camera(dtype, az, el):
    points, _ = random_cloud(50, dtype=dtype)
    view = ViewpointConfig(azimuth_deg=az, elevation_deg=el, target_m=(0.6, 0.0, 0.1), distance_m=1.7,
                           fov_deg=50.0, width_px=320, height_px=240)
    uv, depth = project_view(points, *view_camera(points, view))
    assert uv.dtype == dtype and uv.shape == (50, 2) and depth.shape == (50,)
    expect = torch.tensor([naive_pixel(p.tolist(), view, (0.6, 0.0, 0.1), 1.7) for p in points.double()],
                          dtype=torch.float64)
    tol = 1e-9 if dtype == torch.float64 else 2e-3
    torch.testing.assert_close(uv.double(), expect[:, :2], atol=tol, rtol=0)
    torch.testing.assert_close(depth.double(), expect[:, 2], atol=tol, rtol=0)


def test_project_view_is_batched():
    points, _ = random_cloud(30)
    camera = view_camera(points, ViewpointConfig())
    batch = torch.stack([points, points + 0.01])
    uv, depth = project_view(batch, *camera)
    assert uv.shape == (2, 30, 2)
    torch.testing.assert_close(uv[1], project_view(points + 0.01, *camera)[0])


def test_automatic_view_fits_the_cloud_tightly():
    points, _ = random_cloud(500)
    view = ViewpointConfig(width_px=400, height_px=200)
    K, T = view_camera(points, view)
    uv, depth = project_view(points, K, T)
    assert bool((depth > 0).all())
    half = torch.tensor([200.0, 100.0], dtype=torch.float64)
    centre = torch.tensor([199.5, 99.5], dtype=torch.float64)
    reach = ((uv - centre).abs() / half).max()  # fraction of the half image the cloud reaches
    assert FIT_FRACTION - 0.01 < float(reach) <= FIT_FRACTION + 1e-6


def color_centroid(image: np.ndarray, rgb: tuple[int, int, int]) -> tuple[float, float]:
    mask = (np.abs(image.astype(int) - np.array(rgb)).sum(-1) < 30)
    assert mask.sum() > 0, f"no pixel of color {rgb}"
    rows, cols = np.nonzero(mask)
    return float(cols.mean()), float(rows.mean())


def test_points_land_where_the_naive_projection_says():
    points = torch.tensor([[0.5, -0.2, 0.0], [0.7, 0.25, 0.1], [0.4, 0.1, 0.2]], dtype=torch.float64)
    colors = torch.eye(3, dtype=torch.float64)  # red, green, blue
    view = ViewpointConfig(target_m=(0.55, 0.0, 0.1), distance_m=1.5, width_px=200, height_px=160,
                           point_size_px=5.0)
    image = render_cloud(points, colors, view)
    assert image.shape == (160, 200, 3) and image.dtype == np.uint8
    for p, rgb in zip(points.tolist(), [(255, 0, 0), (0, 255, 0), (0, 0, 255)]):
        u, v, _ = naive_pixel(p, view, (0.55, 0.0, 0.1), 1.5)
        cu, cv = color_centroid(image, rgb)
        assert abs(cu - u) < 1.0 and abs(cv - v) < 1.0, (rgb, (cu, cv), (u, v))


@pytest.mark.parametrize("order", [[0, 1], [1, 0]])
def test_nearer_points_are_drawn_over_farther_ones(order):
    view = ViewpointConfig(azimuth_deg=180.0, elevation_deg=0.0, target_m=(0.0, 0.0, 0.0), distance_m=1.0,
                           width_px=64, height_px=48, point_size_px=8.0)
    # the camera sits at x = -1 looking along +x: the point at x = -0.3 is nearer than the one at x = +0.3
    points = torch.tensor([[-0.3, 0.0, 0.0], [0.3, 0.0, 0.0]], dtype=torch.float64)[order]
    colors = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)[order]
    image = render_cloud(points, colors, view)
    u, v, _ = naive_pixel([-0.3, 0.0, 0.0], view, (0.0, 0.0, 0.0), 1.0)
    assert tuple(image[round(v), round(u)]) == (255, 0, 0)


def red_pixels(image: np.ndarray) -> int:
    px = image.astype(int)
    return int(((px[..., 0] > 200) & (px[..., 1] < 60) & (px[..., 2] < 60)).sum())


def test_arrows_are_drawn_for_large_displacements_only():
    points, _ = random_cloud(200)
    gray = torch.full_like(points, 0.5)
    view = ViewpointConfig(width_px=240, height_px=180)
    plain = render_cloud(points, gray, view)
    small = torch.full_like(points, 0.001)  # below min_arrow_m
    moved = torch.zeros_like(points)
    moved[:20, 0] = 0.1
    assert red_pixels(plain) == 0
    assert np.array_equal(render_cloud(points, gray, view, small), plain)
    assert np.array_equal(render_cloud(points, gray, view, moved, max_arrows=0), plain)
    assert red_pixels(render_cloud(points, gray, view, moved)) > 50


def test_comparison_panel_is_side_by_side_with_its_own_arrows(tmp_path):
    points, colors = random_cloud(300)
    colors = colors * 0.3  # dark points: arrows stand out
    pred = torch.zeros_like(points)
    pred[:30, 1] = 0.08
    gt = pred.clone()
    valid = torch.ones(300, dtype=torch.bool)
    view = ViewpointConfig(width_px=160, height_px=120)
    image = render_flow_comparison(points, colors, pred, gt, view, valid)
    assert image.shape == (120, 320, 3)
    left, right = image[:, :160].astype(int), image[:, 160:].astype(int)
    assert red_pixels(left) > 20 and red_pixels(right) == 0
    assert int(((right[..., 1] > 100) & (right[..., 0] < 60) & (right[..., 2] < 60)).sum()) > 20
    masked = render_flow_comparison(points, colors, pred, gt, view, torch.zeros(300, dtype=torch.bool))
    assert np.array_equal(masked[:, 160:], render_cloud(points, colors, view, title="ground truth")[:, :])
    path = write_png(tmp_path / "cmp.png", image)
    with Image.open(path) as im:
        assert im.size == (320, 120) and np.asarray(im.convert("RGB")).std() > 10


def test_goal_markers_are_drawn():
    points, colors = random_cloud(100)
    view = ViewpointConfig(width_px=160, height_px=120)
    image = render_cloud(points, colors * 0.2, view, goal_indices=torch.tensor([0, 1]),
                         goal_targets=points[:2] + 0.05)
    px = image.astype(int)
    assert int(((px[..., 0] > 200) & (px[..., 1] < 60) & (px[..., 2] > 200)).sum()) > 10  # magenta


EVAL = {"predictors": {"model": {"overall": {"epe_moved_per_step": [0.01, 0.02, None, 0.04]}},
                       "zero_motion": {"overall": {"epe_moved_per_step": [0.02, 0.04, 0.06, 0.08]}}}}


def test_error_curves_of_flat_and_sectioned_results():
    flat = error_curves(EVAL)
    assert list(flat) == ["model", "zero_motion"] and math.isnan(flat["model"][2])
    sectioned = error_curves({"test": EVAL, "unseen": EVAL, "note": "x"})
    assert list(sectioned) == ["test/model", "test/zero_motion", "unseen/model", "unseen/zero_motion"]
    np.testing.assert_allclose(sectioned["unseen/zero_motion"], [0.02, 0.04, 0.06, 0.08])


def test_error_over_horizon_plot_from_a_file(tmp_path):
    path = tmp_path / "eval.json"
    path.write_text(json.dumps(EVAL))
    image = plot_error_over_horizon(load_error_curves(path), dt_s=0.1, width_px=320, height_px=200)
    assert image.shape == (200, 320, 3) and image.std() > 10
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 20


def test_cost_history_plot():
    image = plot_cost_history(torch.tensor([3.0, 2.0, 1.5, 1.2]), width_px=300, height_px=200)
    assert image.shape == (200, 300, 3) and image.std() > 10


def test_bad_curve_inputs_raise(tmp_path):
    with pytest.raises(ValueError, match="epe_moved_per_step"):
        error_curves({"predictors": {"model": {"overall": {"l2": 0.1}}}})
    with pytest.raises(ValueError, match="predictors"):
        error_curves({"rows": []})
    with pytest.raises(ValueError, match="metric"):
        error_curves(EVAL, metric="l2")
    with pytest.raises(FileNotFoundError, match="no evaluation JSON"):
        load_error_curves(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="not a JSON"):
        load_error_curves(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="finite"):
        plot_cost_history([1.0, float("nan")])
    with pytest.raises(ValueError, match="non-empty"):
        plot_cost_history([])
    with pytest.raises(ValueError, match="dt_s"):
        plot_error_over_horizon({"a": [0.1]}, dt_s=0.0)


@pytest.mark.parametrize("kwargs, match", [
    ({"elevation_deg": 90.0}, "elevation_deg"), ({"fov_deg": 180.0}, "fov_deg"), ({"width_px": 8}, "width_px"),
    ({"distance_m": -1.0}, "distance_m"), ({"target_m": (0.0, 1.0)}, "target_m"),
    ({"azimuth_deg": float("nan")}, "azimuth_deg"), ({"point_size_px": 0.0}, "point_size_px")])
def test_bad_viewpoints_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ViewpointConfig(**kwargs)


def test_bad_cloud_inputs_raise():
    points, colors = random_cloud(10)
    view = ViewpointConfig(width_px=64, height_px=48)
    with pytest.raises(ValueError, match=r"points: expected shape \(…, 3\)"):
        render_cloud(points[:, :2], colors, view)
    with pytest.raises(ValueError, match="points: expected finite"):
        render_cloud(torch.where(torch.arange(10)[:, None] == 3, torch.nan, points), colors, view)
    with pytest.raises(EmptyCloudError, match="points"):
        render_cloud(points[:0], colors[:0], view)
    with pytest.raises(ValueError, match="colors: expected RGB values in"):
        render_cloud(points, colors * 300, view)
    with pytest.raises(ValueError, match="displacement"):
        render_cloud(points, colors, view, torch.zeros(9, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="goal_indices"):
        render_cloud(points, colors, view, goal_indices=torch.tensor([10]), goal_targets=points[:1])
    with pytest.raises(ValueError, match="both or neither"):
        render_cloud(points, colors, view, goal_indices=torch.tensor([1]))
    with pytest.raises(ValueError, match="min_arrow_m"):
        render_cloud(points, colors, view, points, min_arrow_m=-1.0)
    with pytest.raises(TypeError, match="valid"):
        render_flow_comparison(points, colors, points, points, view, torch.ones(10))
    with pytest.raises(ValueError, match="titles"):
        render_flow_panels(points, colors, [points, points], view, titles=["one"])
    with pytest.raises(TypeError, match="view"):
        view_camera(points, {"width_px": 64})
