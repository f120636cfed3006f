"""The viewer's data, frame math and server-side scene for each input kind (no browser; see test_viewer_browser)."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

from pointworld.planning.plan_record import PlanRecordError, save_plan_record
from pointworld.viz.flow_cloud import heat_colors
from pointworld.viz.view_data import (
    ViewData,
    load_view_data,
    parse_clip_spec,
    view_data_from_clip,
    view_data_from_plan,
)
from pointworld.viz.view_frames import (
    displacement_at,
    flow_segments,
    std_scale_m,
    to_rgb8,
    uncertainty_colors,
)
from pointworld.viz.viewer import Viewer
from tests.micro import micro_world_model
from tests.micro import tiny_dataset as tiny_dataset_in
from tests.planning.test_plan_record import random_record

viser = pytest.importorskip("viser")


# ------------------------------------------------------------------------------------------- frame math
def test_displacement_at_and_flow_segments_match_a_naive_loop():
    g = torch.Generator().manual_seed(3)
    disp = torch.randn(3, 40, 3, generator=g, dtype=torch.float64) * 0.01
    valid = torch.rand(3, 40, generator=g) > 0.3
    points = torch.rand(40, 3, generator=g, dtype=torch.float64)
    assert bool((displacement_at(disp, 0, valid) == 0).all())
    for step in (1, 3):
        got = displacement_at(disp, step, valid)
        for n in range(40):
            expect = disp[step - 1, n] if valid[step - 1, n] else torch.zeros(3, dtype=torch.float64)
            assert torch.equal(got[n], expect)
    seg, idx = flow_segments(points, disp[2], min_length_m=0.015, max_segments=10)
    rows = sorted(((float(disp[2, n].norm()), n) for n in range(40) if float(disp[2, n].norm()) >= 0.015),
                  reverse=True)[:10]
    assert [n for _, n in rows] == idx.tolist()
    for (start, end), n in zip(seg, idx):
        assert torch.equal(start, points[n]) and torch.allclose(end, points[n] + disp[2, n], atol=1e-15)
    with pytest.raises(ValueError, match=r"step: expected a step in 0..3, got 4"):
        displacement_at(disp, 4)
    with pytest.raises(ValueError, match="displacement"):
        flow_segments(points, disp)


def test_uncertainty_colors_and_scale():
    log_var = torch.log(torch.tensor([[1e-4, 4e-4, 9e-4, 1.6e-3]], dtype=torch.float64) ** 1)  # std 1..4 cm
    assert std_scale_m(log_var, quantile=1.0) == pytest.approx(0.04, rel=1e-9)
    assert std_scale_m(log_var, quantile=0.5) == pytest.approx(float(np.quantile([0.01, 0.02, 0.03, 0.04], 0.5)))
    colors = uncertainty_colors(log_var[0], 0.04)
    torch.testing.assert_close(colors, heat_colors(torch.tensor([0.01, 0.02, 0.03, 0.04], dtype=torch.float64), 0.04))
    assert to_rgb8(torch.tensor([[0.0, 0.5, 1.0]])).tolist() == [[0, 128, 255]]
    with pytest.raises(ValueError, match=r"colors: expected RGB values in \[0, 1\]"):
        to_rgb8(torch.tensor([[0.0, 1.5, 1.0]]))
    with pytest.raises(ValueError, match="log_var: expected some finite"):
        std_scale_m(torch.full((2, 3), float("nan")))


def test_view_data_validation():
    p = torch.zeros(5, 3)
    with pytest.raises(ValueError, match="colors"):
        ViewData(points=p, colors=torch.zeros(4, 3))
    with pytest.raises(ValueError, match=r"colors: expected RGB values in \[0, 1\]"):
        ViewData(points=p, colors=torch.full((5, 3), 1.2))
    with pytest.raises(ValueError, match="ground_truth, valid: expected both or neither"):
        ViewData(points=p, colors=p, ground_truth=torch.zeros(2, 5, 3))
    with pytest.raises(ValueError, match="log_var"):
        ViewData(points=p, colors=p, predicted=torch.zeros(2, 5, 3), log_var=torch.zeros(3, 5))
    with pytest.raises(ValueError, match=r"goal_indices: expected indices in \[0, 5\)"):
        ViewData(points=p, colors=p, goal_indices=torch.tensor([7]), goal_targets=torch.zeros(1, 3))
    with pytest.raises(ValueError, match="points: expected finite"):
        ViewData(points=p.clone().fill_(float("inf")), colors=p)
    assert ViewData(points=p, colors=p).horizon == 0
    assert parse_clip_spec("/a/b:c/ds:12") == (Path("/a/b:c/ds"), 12)
    with pytest.raises(ValueError, match="DATASET_DIR:INDEX"):
        parse_clip_spec("/a/ds")


# ------------------------------------------------------------------------------------------- plan record
def node_points(viewer: Viewer, name: str) -> np.ndarray:
    handle = viewer.server.scene.get_handle_by_name(name)
    assert handle is not None, name
    return np.asarray(handle.points, dtype=np.float64)


@pytest.fixture
def plan_viewer(tmp_path):
    record = random_record(n=30, t=3, c=2)
    path = save_plan_record(tmp_path / "plan.npz", record)
    viewer = Viewer(view_data_from_plan(path), port=0)
    yield viewer, record
    viewer.close()


def test_plan_record_scene_nodes_and_timeline(plan_viewer):
    viewer, r = plan_viewer
    expected = ["/candidates/0", "/candidates/1", "/flow/predicted", "/goal/links", "/goal/points",
                "/goal/targets", "/robot/points", "/scene/cloud"]
    assert viewer.node_names() == expected
    with urllib.request.urlopen(viewer.url, timeout=10) as response:  # the page is served
        assert response.status == 200 and b"<html" in response.read(2000).lower()
    # opens at the last step: the cloud moved by the prediction, robot at T, goal points moved too
    np.testing.assert_allclose(node_points(viewer, "/scene/cloud"), (r.points + r.displacement[2]).numpy(), atol=1e-6)
    np.testing.assert_allclose(node_points(viewer, "/robot/points"), r.robot_points[3].numpy(), atol=1e-6)
    np.testing.assert_allclose(node_points(viewer, "/goal/targets"), r.goal_targets.numpy(), atol=1e-6)
    np.testing.assert_allclose(node_points(viewer, "/goal/points"),
                               (r.points + r.displacement[2])[r.goal_indices].numpy(), atol=1e-6)
    viewer.set_step(1)
    assert viewer._gui["step"].value == 1  # the page's slider follows
    np.testing.assert_allclose(node_points(viewer, "/scene/cloud"), (r.points + r.displacement[0]).numpy(), atol=1e-6)
    segments = np.asarray(viewer.server.scene.get_handle_by_name("/flow/predicted").points)
    seg, _ = flow_segments(r.points, r.displacement[0], 0.002, 1500)
    np.testing.assert_allclose(segments, seg.numpy(), atol=1e-6)
    viewer.set_step(0)
    np.testing.assert_allclose(node_points(viewer, "/scene/cloud"), r.points.numpy(), atol=1e-6)
    assert not viewer.server.scene.get_handle_by_name("/candidates/0").visible  # nothing to show at t = 0
    np.testing.assert_array_equal(viewer.server.scene.get_handle_by_name("/scene/cloud").colors,
                                  to_rgb8(r.colors).numpy())


def test_color_modes_flow_choice_and_bad_arguments(plan_viewer):
    viewer, r = plan_viewer
    viewer.set_step(2)
    viewer.set_color_mode("uncertainty")
    expect = to_rgb8(uncertainty_colors(r.log_var[1], std_scale_m(r.log_var))).numpy()
    np.testing.assert_array_equal(viewer.server.scene.get_handle_by_name("/scene/cloud").colors, expect)
    viewer.set_flow("none")
    np.testing.assert_allclose(node_points(viewer, "/scene/cloud"), r.points.numpy(), atol=1e-6)
    assert viewer.color_modes == ["rgb", "uncertainty", "motion"]
    with pytest.raises(ValueError, match="flow: expected one of"):
        viewer.set_flow("ground truth")  # a plan has no ground truth
    with pytest.raises(ValueError, match=r"step: expected a step in 0..3, got 9"):
        viewer.set_step(9)
    with pytest.raises(ValueError, match="mode"):
        viewer.set_color_mode("depth")
    with pytest.raises(TypeError, match="data: expected a ViewData"):
        Viewer(r)


def test_close_is_idempotent_and_frees_the_port(tmp_path):
    viewer = Viewer(ViewData(points=torch.rand(10, 3), colors=torch.rand(10, 3)))
    url = viewer.url
    assert viewer.node_names() == ["/scene/cloud"] and "step" not in viewer._gui
    viewer.close()
    viewer.close()
    with pytest.raises(OSError):
        urllib.request.urlopen(url, timeout=5)
    (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(PlanRecordError, match="bad.npz"):
        load_view_data(tmp_path / "bad.npz")


# ------------------------------------------------------------------------------------------- dataset clip
@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory) -> Path:
    return tiny_dataset_in(tmp_path_factory.mktemp("viewer_data") / "ds", episodes=2, horizon=3, max_objects=2)


def test_clip_with_model_prediction_and_ground_truth(tiny_dataset):
    torch.set_num_threads(1)
    data = view_data_from_clip(f"{tiny_dataset}:3", model=micro_world_model(3))
    episodes = sorted(tiny_dataset.glob("*.h5"))
    same = load_view_data(f"{episodes[1]}:1")  # the same clip named by its episode file, no model
    torch.testing.assert_close(same.points, data.points, rtol=0, atol=0)
    torch.testing.assert_close(same.ground_truth, data.ground_truth, rtol=0, atol=0)
    assert same.predicted is None and data.predicted.shape == data.ground_truth.shape
    with Viewer(data) as viewer:
        names = viewer.node_names()
        assert names == ["/flow/ground_truth", "/flow/predicted", "/robot/points", "/scene/cloud"]
        viewer.set_flow("ground truth")
        viewer.set_step(3)
        moved = data.points + data.ground_truth[2] * data.valid[2, :, None]
        np.testing.assert_allclose(node_points(viewer, "/scene/cloud"), moved.numpy(), atol=1e-6)
        np.testing.assert_allclose(node_points(viewer, "/robot/points"), data.robot_points[3].numpy(), atol=1e-6)
        viewer.set_color_mode("motion")
        viewer.set_color_mode("uncertainty")
    with pytest.raises(ValueError, match="model: predicts T = 2 steps"):
        view_data_from_clip(f"{tiny_dataset}:0", model=micro_world_model(2))
    with pytest.raises(IndexError, match="clips 0..1, got index 5"):
        view_data_from_clip(f"{episodes[0]}:5")
    with pytest.raises(ValueError, match="add ':INDEX'"):
        load_view_data(tiny_dataset)


# ------------------------------------------------------------------------------------------- capture
def test_capture_shows_the_fused_cloud(tmp_path):
    from pointworld.capture.storage import save_capture
    from pointworld.capture.synthetic import look_at, render_frames, table_scene

    K = np.array([[75.0, 0.0, 39.5], [0.0, 74.0, 29.5], [0.0, 0.0, 1.0]])
    T = np.stack([look_at(e, [0.6, 0.0, 0.05]) for e in ([1.3, 0.55, 0.65], [1.3, -0.55, 0.65])])
    save_capture(render_frames(table_scene(0), K, T, 60, 80, ["a", "b"]), tmp_path / "cap")
    data = load_view_data(tmp_path / "cap", max_points=500)
    assert 50 < data.points.shape[0] <= 500 and data.horizon == 0
    with Viewer(data) as viewer:
        assert viewer.node_names() == ["/scene/cloud"]
        np.testing.assert_allclose(node_points(viewer, "/scene/cloud"), data.points.numpy(), atol=1e-6)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_view_data(tmp_path / "nothing")
