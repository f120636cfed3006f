"""Segment-follow prior: support removal, connected segments (against a naive BFS), the contact rules on a
hand-built push / lift, and the world model's use of it."""

from __future__ import annotations

import dataclasses
from collections import deque

import numpy as np
import pytest
import torch

from pointworld.model.inputs import ActionInput, SceneInput
from pointworld.model.segment_prior import (
    SegmentFollow,
    SegmentFollowConfig,
    connected_segments,
    push_twist,
    segment_follow,
    support_mask,
)
from pointworld.model.world_model import WorldModel
from pointworld.robot.flow import FEATURE_DIM, FEATURE_LAYOUT
from tests.micro import micro_world_model

STEP_M = 0.01  # robot motion per step in the hand-built actions


def _box(center: tuple[float, float, float], size: float, spacing: float = 0.015):
    """Surface points (P, 3) and outward normals (P, 3) of an axis-aligned cube without its (unseen)
    bottom face, m."""
    g = np.arange(-size / 2, size / 2 + 1e-9, spacing)
    pts, nrm = [], []
    for axis in range(3):
        for sign in (-1.0, 1.0):
            if axis == 2 and sign < 0:
                continue
            u, v = np.meshgrid(g, g, indexing="ij")
            p = np.zeros(u.shape + (3,))
            others = [a for a in range(3) if a != axis]
            p[..., axis], p[..., others[0]], p[..., others[1]] = sign * size / 2, u, v
            n = np.zeros_like(p)
            n[..., axis] = sign
            pts.append(p.reshape(-1, 3))
            nrm.append(n.reshape(-1, 3))
    p, n = np.concatenate(pts), np.concatenate(nrm)
    p, idx = np.unique(np.round(p, 6), axis=0, return_index=True)
    return p + np.asarray(center), n[idx]


def _scene(extra_boxes=()) -> tuple[SceneInput, dict[str, torch.Tensor]]:
    """A 0.6 m table (z = 0, normals up) with a 6 cm cube at x = 0.1 and another at (-0.15, 0.15);
    returns the scene (B = 1, float64) and boolean masks of the table and each cube's points."""
    g = np.arange(-0.3, 0.3 + 1e-9, 0.015)
    tx, ty = np.meshgrid(g, g, indexing="ij")
    table = np.stack([tx.ravel(), ty.ravel(), np.zeros(tx.size)], -1)
    parts = [(table, np.tile([0.0, 0.0, 1.0], (len(table), 1)))]
    parts += [_box((0.1, 0.0, 0.03 + 0.0075), 0.06), _box((-0.15, 0.15, 0.03 + 0.0075), 0.06)]
    parts += [_box(c, s) for c, s in extra_boxes]
    pts = np.concatenate([p for p, _ in parts])
    nrm = np.concatenate([n for _, n in parts])
    sizes = np.cumsum([0] + [len(p) for p, _ in parts])
    names = ["table", "pushed", "other"] + [f"extra{i}" for i in range(len(extra_boxes))]
    masks = {}
    for i, name in enumerate(names):
        m = torch.zeros(len(pts), dtype=torch.bool)
        m[sizes[i]:sizes[i + 1]] = True
        masks[name] = m
    p = torch.from_numpy(pts)[None]
    scene = SceneInput(points=p, colors=torch.zeros_like(p), normals=torch.from_numpy(nrm)[None],
                       mask=torch.ones(p.shape[:2], dtype=torch.bool))
    return scene, masks


TWO_CM = SegmentFollowConfig(contact_radius_m=0.02)  # the geometry below is laid out for a 2 cm contact radius


def _action(start: np.ndarray, direction: tuple[float, float, float], steps: int, gripper_open: float,
            K: int = 1) -> ActionInput:
    """A 3 x 3 patch of robot points starting at ``start`` (3,), moving STEP_M per step along ``direction``."""
    offsets = np.stack(np.meshgrid([0.0], [-0.01, 0.0, 0.01], [-0.01, 0.0, 0.01], indexing="ij"), -1).reshape(-1, 3)
    t = np.arange(steps + 1)[:, None, None]
    xyz = start + offsets[None] + t * STEP_M * np.asarray(direction)[None, None]  # (T+1, M, 3)
    flow = torch.zeros((K, steps + 1, len(offsets), FEATURE_DIM), dtype=torch.float64)
    flow[..., FEATURE_LAYOUT["xyz"]] = torch.from_numpy(xyz)
    flow[..., FEATURE_LAYOUT["gripper_open"]] = gripper_open
    return ActionInput(flow=flow, mask=torch.ones((K, len(offsets)), dtype=torch.bool),
                       robot_type=torch.zeros(K, dtype=torch.long))


def _bfs_min_labels(points: np.ndarray, valid: np.ndarray, radius: float, k: int) -> np.ndarray:
    """Naive reference: components of the symmetric k-nearest-within-radius graph, labelled by min index."""
    idx = np.flatnonzero(valid)
    d = np.linalg.norm(points[idx, None] - points[None, idx], axis=-1)
    adj = np.zeros_like(d, dtype=bool)
    for i in range(len(idx)):
        order = np.argsort(d[i], kind="stable")[:k + 1]
        adj[i, order[d[i, order] <= radius]] = True
    adj |= adj.T
    labels = np.full(len(points), -1)
    for s in range(len(idx)):
        if labels[idx[s]] >= 0:
            continue
        comp, queue = [s], deque([s])
        labels[idx[s]] = idx[s]
        while queue:
            for j in np.flatnonzero(adj[queue.popleft()]):
                if labels[idx[j]] < 0:
                    labels[idx[j]] = idx[s]
                    queue.append(j)
                    comp.append(j)
    return labels


def test_connected_segments_match_a_naive_bfs() -> None:
    rng = np.random.default_rng(0)
    centers = rng.uniform(-0.5, 0.5, size=(6, 3))
    pts = np.concatenate([c + rng.normal(scale=0.01, size=(40, 3)) for c in centers] +
                         [rng.uniform(-0.5, 0.5, size=(30, 3))])
    perm = rng.permutation(len(pts))
    pts = pts[perm]
    valid = rng.random(len(pts)) > 0.1
    got = connected_segments(torch.from_numpy(pts)[None], torch.from_numpy(valid)[None], 0.02)[0].numpy()
    want = _bfs_min_labels(pts, valid, 0.02, 8)
    np.testing.assert_array_equal(got, want)


def test_support_is_the_table_top_only() -> None:
    scene, masks = _scene()
    sup = support_mask(scene.points, scene.normals, scene.mask, 0.01)[0]
    assert bool(sup[masks["table"]].all())
    assert not bool(sup[masks["pushed"] | masks["other"]].any())  # cube sides and tops, even at table height


def test_a_push_moves_the_touched_object_only_after_contact() -> None:
    scene, masks = _scene()
    T = 8  # robot patch starts 3.5 cm left of the cube's face (x = 0.07) and pushes along +x
    action = _action(np.array([0.035, 0.0, 0.0375]), (1.0, 0.0, 0.0), T, gripper_open=0.0)
    disp = segment_follow(scene, action, TWO_CM)[0]  # (T, N, 3)
    # contact once the patch (before the step) is within 2 cm: from the step starting at x = 0.055 (t = 3)
    expected_x = np.array([max(0, t - 2) * STEP_M for t in range(1, T + 1)])
    pushed = disp[:, masks["pushed"]]
    np.testing.assert_allclose(pushed[..., 0].numpy(), np.repeat(expected_x[:, None], pushed.shape[1], 1),
                               atol=1e-12)
    assert float(pushed[..., 1:].abs().max()) < 1e-12  # a push through the centre: no turn
    assert float(disp[:, masks["table"] | masks["other"]].abs().max()) == 0.0
    # the default 1 cm contact radius starts the same push one step later
    late = segment_follow(scene, action, SegmentFollowConfig())[0, :, masks["pushed"], 0]
    np.testing.assert_allclose(late[:, 0].numpy(), np.concatenate([[0.0], expected_x[:-1]]), atol=1e-12)


@pytest.mark.parametrize("gripper_open, lifts", [(0.5, True), (0.0, False), (1.0, False)])
def test_only_a_holding_gripper_lifts(gripper_open: float, lifts: bool) -> None:
    scene, masks = _scene()
    T = 5  # patch already touching the cube's left face, moving up
    action = _action(np.array([0.06, 0.0, 0.0375]), (0.0, 0.0, 1.0), T, gripper_open=gripper_open)
    z = segment_follow(scene, action, TWO_CM)[0, :, masks["pushed"], 2]
    want = np.arange(1, T + 1) * STEP_M if lifts else np.zeros(T)
    np.testing.assert_allclose(z[:, 0].numpy(), want, atol=1e-12)


def test_segments_larger_than_the_limit_never_move() -> None:
    scene, masks = _scene()
    action = _action(np.array([0.055, 0.0, 0.0375]), (1.0, 0.0, 0.0), 4, gripper_open=0.0)
    small = SegmentFollowConfig(max_segment_extent_m=0.05)  # the 6 cm cube is now "furniture"
    assert float(segment_follow(scene, action, small).abs().max()) == 0.0


def _reordered(scene: SceneInput, order: torch.Tensor) -> SceneInput:
    return SceneInput(points=scene.points[:, order], colors=scene.colors[:, order],
                      normals=scene.normals[:, order], mask=scene.mask[:, order])


def test_an_object_listed_first_is_not_widened_by_the_support() -> None:
    # the segment whose label is index 0 must not collect the extent of unlabelled (support) points
    scene, masks = _scene()
    order = torch.cat([torch.nonzero(masks["pushed"])[:, 0], torch.nonzero(~masks["pushed"])[:, 0]])
    first = _reordered(scene, order)
    action = _action(np.array([0.035, 0.0, 0.0375]), (1.0, 0.0, 0.0), 8, gripper_open=0.0)
    want = segment_follow(scene, action, TWO_CM)[:, :, order]
    torch.testing.assert_close(segment_follow(first, action, TWO_CM), want, rtol=0.0, atol=1e-12)
    assert float(want[0, -1, :int(masks["pushed"].sum()), 0].min()) > 0.05


def test_the_table_sides_do_not_join_objects_into_furniture() -> None:
    # a cube at the table's edge, whose side (a row of points 1.25 cm below the top, horizontal normals)
    # rings the table: linked through it, cube and ring would form one 0.6 m segment that never moves
    scene, masks = _scene(extra_boxes=[((0.27, 0.0, 0.0375), 0.06)])
    g, h = np.arange(-0.3, 0.3 + 1e-9, 0.015), np.array([-0.0125])
    sides, normals = [], []
    for axis in (0, 1):
        for sign in (-1.0, 1.0):
            u, z = np.meshgrid(g, h, indexing="ij")
            p = np.stack([u.ravel(), u.ravel(), z.ravel()], -1)
            p[:, axis] = sign * 0.3
            n = np.zeros_like(p)
            n[:, axis] = sign
            sides.append(p)
            normals.append(n)
    n0, side = scene.points.shape[1], torch.from_numpy(np.concatenate(sides))[None]
    pts = torch.cat([scene.points, side], 1)
    ring = SceneInput(points=pts, colors=torch.zeros_like(pts), mask=torch.ones(pts.shape[:2], dtype=torch.bool),
                      normals=torch.cat([scene.normals, torch.from_numpy(np.concatenate(normals))[None]], 1))
    action = _action(np.array([0.205, 0.0, 0.0375]), (1.0, 0.0, 0.0), 4, gripper_open=0.0)
    disp = segment_follow(ring, action, TWO_CM)[0]
    cube = torch.cat([masks["extra0"], torch.zeros(side.shape[1], dtype=torch.bool)])
    np.testing.assert_allclose(disp[:, cube, 0].numpy(), np.repeat([[0.0], [0.0], [STEP_M], [2 * STEP_M]],
                                                                    int(cube.sum()), 1), atol=1e-12)
    assert float(disp[:, n0:].abs().max()) == 0.0  # the table's sides stay


@pytest.mark.parametrize("yaw_deg", [0.0, 30.0, 45.0])
def test_the_size_limit_does_not_depend_on_how_an_object_is_turned(yaw_deg: float) -> None:
    # a 30 cm bar (five touching 6 cm cubes) turned by yaw about the vertical: its axis-aligned box is
    # only 25.5 cm wide at 45 deg, but it is 30 cm long however it lies
    bar = [_box((x, 0.0, 0.0375), 0.06) for x in np.arange(-0.12, 0.121, 0.06)]
    yaw = np.radians(yaw_deg)
    R = np.array([[np.cos(yaw), -np.sin(yaw), 0.0], [np.sin(yaw), np.cos(yaw), 0.0], [0.0, 0.0, 1.0]])
    centre = np.array([-0.05, -0.18, 0.0])
    pts = np.concatenate([p for p, _ in bar]) @ R.T + centre
    nrm = np.concatenate([n for _, n in bar]) @ R.T
    scene, _ = _scene()
    n0 = scene.points.shape[1]
    p = torch.cat([scene.points, torch.from_numpy(pts)[None]], 1)
    both = SceneInput(points=p, colors=torch.zeros_like(p), mask=torch.ones(p.shape[:2], dtype=torch.bool),
                      normals=torch.cat([scene.normals, torch.from_numpy(nrm)[None]], 1))
    side = R @ np.array([0.0, -1.0, 0.0])  # the bar's long side faces -y before the turn
    action = _action(centre + 0.05 * side + [0.0, 0.0, 0.0375], tuple(-side), 4, gripper_open=0.0)
    for limit, moves in ((0.28, False), (0.33, True)):
        disp = segment_follow(both, action, dataclasses.replace(TWO_CM, max_segment_extent_m=limit))[0]
        assert (float(disp[-1, n0:].norm(dim=-1).min()) > 0.01) == moves, (limit, yaw_deg)


def test_one_scene_is_shared_by_k_actions_and_predictor_shapes() -> None:
    scene, masks = _scene()
    action = _action(np.array([0.055, 0.0, 0.0375]), (1.0, 0.0, 0.0), 4, gripper_open=0.0, K=3)
    action.flow[1, ..., FEATURE_LAYOUT["xyz"]] += torch.tensor([0.0, 0.5, 0.0], dtype=torch.float64)  # misses
    pred = SegmentFollow().predict(scene, action)
    assert pred.displacement.shape == (3, 4, scene.points.shape[1], 3)
    assert torch.equal(pred.log_var, torch.zeros(3, 4, scene.points.shape[1], dtype=torch.float64))
    one = SegmentFollow().predict(scene.expand(3), action).displacement
    assert torch.equal(pred.displacement, one)
    assert float(pred.displacement[1].abs().max()) == 0.0
    assert float(pred.displacement[0, -1, masks["pushed"], 0].min()) > 0.0


@pytest.mark.parametrize("field, value", [("link_radius_m", 0.0), ("contact_radius_m", -1.0),
                                          ("support_band_m", float("nan")), ("max_segment_extent_m", True),
                                          ("held_open_range", (0.5, 0.2)), ("held_open_range", (0.1,)),
                                          ("pivot_scale", 0.0)])
def test_config_rejects_bad_values(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        SegmentFollowConfig(**{field: value})


@pytest.mark.parametrize("field", ["push_only", "rotate"])
def test_config_rejects_non_bool_switches(field: str) -> None:
    with pytest.raises(TypeError, match=field):
        SegmentFollowConfig(**{field: 1})


def test_push_twist_solves_the_sticking_contact_on_an_ellipsoidal_limit_surface() -> None:
    """Independent check: on the limit surface the twist is lambda * (f_x, f_y, m / c^2) for the contact
    force f at r (m = r x f), and sticking means the body's velocity at r equals the pusher's."""
    rng = np.random.default_rng(3)
    step, contact = rng.normal(scale=0.01, size=(50, 2)), rng.normal(scale=0.04, size=(50, 2))
    c = rng.uniform(0.01, 0.05, size=50)
    got_v, got_w = push_twist(torch.from_numpy(step), torch.from_numpy(contact), torch.from_numpy(c), 10.0)
    for i in range(50):
        (rx, ry), c2 = contact[i], c[i] ** 2
        # body velocity at r: v + w z x r, with (v, w) = (g, (rx g_y - ry g_x) / c2) for g = lambda f
        A = np.array([[1 + ry * ry / c2, -rx * ry / c2], [-rx * ry / c2, 1 + rx * rx / c2]])
        g = np.linalg.solve(A, step[i])
        np.testing.assert_allclose(got_v[i].numpy(), g, rtol=0, atol=1e-12)
        np.testing.assert_allclose(float(got_w[i]), (rx * g[1] - ry * g[0]) / c2, rtol=0, atol=1e-10)
    centred_v, centred_w = push_twist(torch.tensor([[0.01, 0.0]]), torch.tensor([[-0.03, 0.0]]), torch.tensor([0.02]))
    assert torch.allclose(centred_v, torch.tensor([[0.01, 0.0]])) and float(centred_w.abs()) == 0.0
    _, bounded = push_twist(torch.tensor([[0.05, 0.0]]), torch.tensor([[0.0, 0.1]]), torch.tensor([0.001]), 0.2)
    assert float(bounded) == pytest.approx(-0.2)


def test_an_off_centre_push_turns_the_object_rigidly() -> None:
    scene, masks = _scene()
    T = 6  # the patch, centred 2 cm off the cube's axis, touches its left face from the first step
    action = _action(np.array([0.065, 0.02, 0.0375]), (1.0, 0.0, 0.0), T, gripper_open=0.0)
    disp = segment_follow(scene, action, TWO_CM)[0]
    p0 = scene.points[0, masks["pushed"]]
    p1 = p0 + disp[-1, masks["pushed"]]
    def pairwise(p: torch.Tensor) -> torch.Tensor:
        return torch.linalg.vector_norm(p[:, None] - p[None], dim=-1)

    torch.testing.assert_close(pairwise(p1), pairwise(p0), rtol=0, atol=1e-12)  # a rigid motion
    R = np.linalg.svd(((p1 - p1.mean(0)).T @ (p0 - p0.mean(0))).numpy())  # Kabsch: rotation p0 -> p1
    rot = R[0] @ R[2]
    yaw = np.arctan2(rot[1, 0], rot[0, 0])
    assert yaw < -0.05  # pushed along +x on its +y side: clockwise seen from above
    centre = float((p1.mean(0) - p0.mean(0))[0])
    assert 0.0 < centre < T * STEP_M  # the centre moves, but less than the pusher
    stiff = segment_follow(scene, action, dataclasses.replace(TWO_CM, pivot_scale=3.0))[0, -1, masks["pushed"]]
    assert 0.0 < float(stiff[:, 1].abs().max()) < float(disp[-1, masks["pushed"], 1].abs().max())  # turns less
    straight = segment_follow(scene, action, dataclasses.replace(TWO_CM, rotate=False))[0, -1, masks["pushed"]]
    torch.testing.assert_close(straight[:, 0], torch.full_like(straight[:, 0], T * STEP_M), rtol=0, atol=1e-12)


def test_a_free_object_is_pushed_but_never_pulled() -> None:
    scene, masks = _scene()
    action = _action(np.array([0.065, 0.0, 0.0375]), (-1.0, 0.0, 0.0), 4, gripper_open=0.0)  # moving away
    assert float(segment_follow(scene, action, TWO_CM)[:, :, masks["pushed"]].abs().max()) == 0.0
    pulled = segment_follow(scene, action, dataclasses.replace(TWO_CM, push_only=False))[0, :, masks["pushed"], 0]
    assert float(pulled[-1].max()) < 0.0  # without push_only, the retreating patch drags the cube along


def test_world_model_adds_the_prior_to_the_network_output() -> None:
    plain = micro_world_model(horizon=4).double()
    config = dataclasses.replace(plain.config, segment_prior=SegmentFollowConfig())
    with_prior = WorldModel(config).double().eval()
    state = plain.state_dict()
    key = "scene_token.0.weight"  # the prior's 3 T extra input channels, given zero weight
    grown = with_prior.state_dict()[key].shape[1] - state[key].shape[1]
    assert grown == 3 * 4
    state[key] = torch.cat([state[key], state[key].new_zeros(state[key].shape[0], grown)], 1)
    with_prior.load_state_dict(state)
    scene, masks = _scene()
    action = _action(np.array([0.055, 0.0, 0.0375]), (1.0, 0.0, 0.0), 4, gripper_open=0.0, K=2)
    a = plain.predict(scene, action)
    b = with_prior.predict(scene, action)
    prior = segment_follow(scene, action, SegmentFollowConfig())
    torch.testing.assert_close(b.displacement, a.displacement + prior, rtol=0, atol=1e-12)
    torch.testing.assert_close(b.log_var, a.log_var, rtol=0, atol=0)
    assert float(prior[:, -1, masks["pushed"], 0].min()) > 0.0


def test_model_config_round_trips_the_prior_settings() -> None:
    config = dataclasses.replace(micro_world_model(horizon=2).config,
                                 segment_prior=SegmentFollowConfig(link_radius_m=0.05))
    back = type(config).from_dict(config.to_dict())
    assert back == config and back.segment_prior.link_radius_m == 0.05
    with pytest.raises(TypeError, match="segment_prior"):
        dataclasses.replace(config, segment_prior=3)
