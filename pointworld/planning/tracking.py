"""Perception-only tracking of the goal points across replans (no simulator state: works on real cameras).

Goal across replans (world frame, m). At the first observation the task selects the goal points
``points0`` (P, 3) and their fixed world targets ``T_goal_start @ p0``. After each execution the selected
object's motion since the first observation, ``T_new`` (p_now = T_new @ p0), is tracked from the
cameras alone (:func:`track_selection`: a prior from the plan's predicted motion, refined by ICP); the
next goal (:func:`tracked_goal`) selects the new observation's points inside the axis-aligned box of
``T_new @ points0`` grown by a margin, and asks them to move by the remaining motion::

    T_remaining = T_goal_start @ inv(T_new)      (target of a point p = T_remaining @ p)

so a point that is where the tracked motion put it, ``p = T_new @ p0``, keeps its original target
``T_goal_start @ p0``. Observed points on the robot itself (:func:`near_robot`, from the measured
joints) are left out of both. :func:`fit_rigid_transform` (Kabsch) turns corresponding point sets, e.g.
predicted displacements, into rigid motions.
"""

from __future__ import annotations

import math

import numpy as np
import open3d as o3d
import torch

from pointworld.data.augment import yaw_matrix
from pointworld.errors import EmptyCloudError
from pointworld.geometry.checks import (
    require_dtype,
    require_floating,
    require_int,
    require_positive,
    require_shape,
)
from pointworld.geometry.neighbors import knn
from pointworld.geometry.se3 import (
    check_rigid_transform,
    invert_transform,
    make_transform,
    transform_points,
)
from pointworld.model.segment_prior import connected_segments
from pointworld.planning.goals import PointGoal, rigid_goal
from pointworld.robot.kinematics import forward_kinematics
from pointworld.robot.model import Robot
from pointworld.robot.sampling import RobotSurfacePoints


def fit_rigid_transform(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Least-squares rigid transform between corresponding point sets (Kabsch, batched, no reflection).

    Args:
        source: (..., P, 3) points, m, frame a (P >= 3, not all collinear for a unique rotation).
        target: (..., P, 3) corresponding points, m, frame b.

    Returns:
        (..., 4, 4) ``T_b_a`` minimising ``sum |T_b_a @ source - target|^2``; dtype of ``source``.
    """
    require_floating("source", source)
    require_shape("source", source, (None, 3), min_leading=0)
    if require_floating("target", target).shape != source.shape:
        raise ValueError(f"target: expected the shape of source {tuple(source.shape)}, got {tuple(target.shape)}")
    if source.shape[-2] < 3:
        raise ValueError(f"source: expected at least 3 points, got {source.shape[-2]}")
    target = target.to(source)
    cs, ct = source.mean(-2, keepdim=True), target.mean(-2, keepdim=True)
    H = (source - cs).transpose(-1, -2) @ (target - ct)  # (..., 3, 3)
    U, _, Vh = torch.linalg.svd(H)
    d = torch.sign(torch.linalg.det(Vh.transpose(-1, -2) @ U.transpose(-1, -2)))
    D = torch.diag_embed(torch.stack([torch.ones_like(d), torch.ones_like(d), torch.where(d == 0, 1.0, d)], -1))
    R = Vh.transpose(-1, -2) @ D @ U.transpose(-1, -2)
    t = ct.squeeze(-2) - (R @ cs.squeeze(-2)[..., None])[..., 0]
    T = torch.zeros(source.shape[:-2] + (4, 4), dtype=source.dtype, device=source.device)
    T[..., :3, :3], T[..., :3, 3], T[..., 3, 3] = R, t, 1.0
    return T


def near_robot(points: torch.Tensor, robot: Robot, surface: RobotSurfacePoints, q: torch.Tensor,
               clearance_m: float = 0.015, T_world_base: torch.Tensor | None = None) -> torch.Tensor:
    """Which observed points lie on the robot itself (self-filtering from the measured joints).

    Args:
        points: (N, 3) observed points, m, world frame.
        robot: the robot model.
        surface: M points sampled on its links (:func:`pointworld.robot.sampling.sample_surface_points`).
        q: (J,) measured joint positions, rad or m.
        clearance_m: points closer than this to a surface sample count as robot, m.
        T_world_base: optional (4, 4) robot base pose in the world (None: world = base frame).

    Returns:
        (N,) bool, True for points within ``clearance_m`` of the robot's surface at ``q``.
    """
    require_shape("points", require_floating("points", points), (None, 3), max_leading=0)
    q = robot.check_joint_positions(q, "q").detach().to("cpu", torch.float64)
    model = robot.to(torch.float64, torch.device("cpu"))
    T_link = forward_kinematics(model.chain, q, None if T_world_base is None else T_world_base.to(q))
    s = surface.to(torch.float64, torch.device("cpu"))
    T = T_link[s.link_index]  # (M, 4, 4)
    robot_points = (T[:, :3, :3] @ s.points_link[..., None])[..., 0] + T[:, :3, 3]
    p = points.detach().to("cpu", torch.float64)
    dist, _ = knn(p[None], robot_points[None], 1)
    return (dist[0, :, 0] < clearance_m).to(points.device)


def _crop(points: torch.Tensor, around: torch.Tensor, margin_m: float, min_z_m: float) -> torch.Tensor:
    """(N,) bool: ``points`` (N, 3) inside the box of ``around`` (P, 3) grown by ``margin_m``, z >= min_z_m."""
    lo, hi = around.min(0).values - margin_m, around.max(0).values + margin_m
    inside = ((points >= lo) & (points <= hi)).all(-1)
    return inside & (points[:, 2] >= min_z_m)


def _overlap(moved: torch.Tensor, target: torch.Tensor, max_correspondence_m: float) -> float:
    """Fraction of ``moved`` (P, 3) with a ``target`` (M, 3) point within ``max_correspondence_m``."""
    if target.shape[0] == 0:
        return 0.0
    dist, _ = knn(moved[None], target[None], 1)
    return float((dist[0, :, 0] <= max_correspondence_m).double().mean())


def _icp(moved: torch.Tensor, cloud: torch.Tensor, *, max_correspondence_m: float, crop_margin_m: float,
         min_z_m: float, iterations: int) -> tuple[torch.Tensor, float]:
    """ICP of ``moved`` (P, 3) against ``cloud`` (N, 3) cropped around it (float64, m, world): the (4, 4)
    correction and its fitness in [0, 1] (identity and the raw overlap when fewer than 3 points are in the
    crop)."""
    target = cloud[_crop(cloud, moved, crop_margin_m, min_z_m)]
    if target.shape[0] < 3:
        return torch.eye(4, dtype=torch.float64), _overlap(moved, target, max_correspondence_m)
    src, dst = o3d.geometry.PointCloud(), o3d.geometry.PointCloud()
    src.points, dst.points = o3d.utility.Vector3dVector(moved.numpy()), o3d.utility.Vector3dVector(target.numpy())
    reg = o3d.pipelines.registration.registration_icp(
        src, dst, max_correspondence_m, np.eye(4), o3d.pipelines.registration.TransformationEstimationPointToPoint(),
        o3d.pipelines.registration.ICPConvergenceCriteria(max_iteration=iterations))
    return torch.from_numpy(np.asarray(reg.transformation).copy()), float(reg.fitness)


_RELOCALIZE_YAWS_RAD = (0.0, 0.4, -0.4)
_FITNESS_TIE = 0.05
_SEGMENT_LINK_M = 0.02


def _relocalize(p0: torch.Tensor, hypotheses: list[torch.Tensor], cloud: torch.Tensor, search_radius_m: float,
                min_z_m: float, icp: dict) -> list[tuple[float, float, torch.Tensor]]:
    """Re-detect the selection among the observed segments near the hypotheses' positions.

    ``cloud`` (N, 3) above ``min_z_m`` is split into connected segments (links of 2 cm); each segment
    with at least a quarter as many points as ``p0`` (P, 3) and its centroid within ``search_radius_m``
    of a hypothesis's centroid gives candidates: ``hypotheses[0] @ p0`` turned by 0 and +-0.4 rad about
    the vertical and shifted onto the segment's centroid, each refined by ICP. Returns (fitness, mean
    point distance to ``hypotheses[0] @ p0``, m, refined (4, 4) motion) per candidate."""
    above = cloud[cloud[:, 2] >= min_z_m]
    if above.shape[0] < 3:
        return []
    label = connected_segments(above[None], torch.ones(1, above.shape[0], dtype=torch.bool), _SEGMENT_LINK_M)[0]
    roots, counts = torch.unique(label, return_counts=True)
    predicted = transform_points(hypotheses[0], p0)
    centres = torch.stack([transform_points(T, p0).mean(0) for T in hypotheses])
    out = []
    for root in roots[counts >= max(3, p0.shape[0] // 4)]:
        centre = above[label == root].mean(0)
        if float((centres - centre).norm(dim=-1).min()) > search_radius_m:
            continue
        for yaw in _RELOCALIZE_YAWS_RAD:  # the prediction turned about its own centroid, onto the segment's
            R = yaw_matrix(yaw)
            T = make_transform(R, centre - R @ centres[0]) @ hypotheses[0]
            correction, fitness = _icp(transform_points(T, p0), cloud, **icp)
            refined = correction @ T
            out.append((fitness, _mean_distance(refined, p0, predicted), refined))
    return out


def _mean_distance(T: torch.Tensor, p0: torch.Tensor, reference: torch.Tensor) -> float:
    """Mean distance (m) of ``T @ p0`` (P, 3) to ``reference`` (P, 3), point by point (turns count too)."""
    return float((transform_points(T, p0) - reference).norm(dim=-1).mean())


def track_selection(points0: torch.Tensor, T_est: torch.Tensor, cloud_points: torch.Tensor,
                    predicted_T: torch.Tensor | None = None, *, max_correspondence_m: float = 0.02,
                    crop_margin_m: float = 0.03, min_fitness: float = 0.3, min_z_m: float = -math.inf,
                    iterations: int = 30, search_radius_m: float = 0.15) -> torch.Tensor:
    """Track the motion of the selected goal points from camera observations alone.

    Two hypotheses are tried: the predicted motion ``predicted_T @ T_est`` and "it did not move",
    ``T_est`` (only the latter without ``predicted_T``). Each is refined by Open3D point-to-point ICP of
    the moved ``hypothesis @ points0`` against the new observation cropped to their box grown by
    ``crop_margin_m`` (and to z >= ``min_z_m``, to leave a supporting table out). The refinement with the
    highest ICP fitness wins if it matches at least ``min_fitness`` of the moved points (ties go to the
    prediction). Otherwise the selection is re-detected: the observation above ``min_z_m`` is split into
    connected segments, and the predicted points are moved onto each segment near either hypothesis
    (centroid within ``search_radius_m``; also turned by +-0.4 rad) and refined by ICP. Of those
    refinements that reach ``min_fitness``, the ones within 0.05 of the best fitness compete and the one
    whose points end closest to the predicted points (mean distance, so a turn counts) wins. If none
    does, the unrefined hypothesis with the larger overlap with the observation is kept (ties to the
    prediction). A model's wrong prediction (an object predicted pushed that stayed, or pushed
    elsewhere) therefore does not lose the object.

    Args:
        points0: (P, 3) the selected points at the first observation, m, world frame.
        T_est: (4, 4) estimated motion of the selection from the first observation to the previous
            one (p_prev = T_est @ p0), world frame.
        cloud_points: (N, 3) the new observation, m, world frame.
        predicted_T: optional (4, 4) predicted rigid motion of the selection over the executed steps
            (e.g. :func:`fit_rigid_transform` of the plan's predicted displacements), world frame.
        max_correspondence_m: ICP correspondence distance, m.
        crop_margin_m: growth of the crop box around the moved points, m.
        min_fitness: minimum fraction of moved points with an ICP correspondence, in [0, 1].
        min_z_m: lowest z of the crop, m.
        iterations: ICP iterations.
        search_radius_m: how far from the hypotheses a re-detected segment's centroid may lie, m.

    Returns:
        (4, 4) ``T_new``: motion from the first observation to the new one (p_new = T_new @ p0),
        dtype/device of ``T_est``.
    """
    check_rigid_transform("T_est", require_shape("T_est", T_est, (4, 4), max_leading=0))
    require_shape("points0", require_floating("points0", points0), (None, 3), max_leading=0)
    require_shape("cloud_points", require_floating("cloud_points", cloud_points), (None, 3), max_leading=0)
    if not 0.0 <= min_fitness <= 1.0:
        raise ValueError(f"min_fitness: expected a fraction in [0, 1], got {min_fitness!r}")
    require_int("iterations", iterations, 1)
    require_positive("search_radius_m", search_radius_m)
    previous = T_est.detach().to("cpu", torch.float64)
    hypotheses = [previous]
    if predicted_T is not None:
        check_rigid_transform("predicted_T", require_shape("predicted_T", predicted_T, (4, 4), max_leading=0))
        hypotheses.insert(0, predicted_T.detach().to(previous) @ previous)
    p0 = points0.detach().to("cpu", torch.float64)
    if p0.shape[0] < 3:
        return hypotheses[0].to(T_est)
    cloud = cloud_points.detach().to("cpu", torch.float64)
    moved = [transform_points(prior, p0) for prior in hypotheses]
    icp = {"max_correspondence_m": max_correspondence_m, "crop_margin_m": crop_margin_m, "min_z_m": min_z_m,
           "iterations": iterations}
    refined = []
    for prior, m in zip(hypotheses, moved):
        correction, fitness = _icp(m, cloud, **icp)
        refined.append((fitness, correction @ prior))
    best = max(range(len(hypotheses)), key=lambda i: (refined[i][0], -i))
    if refined[best][0] >= min_fitness:
        return refined[best][1].to(T_est)
    found = [c for c in _relocalize(p0, hypotheses, cloud, search_radius_m, min_z_m, icp) if c[0] >= min_fitness]
    if found:  # the best fits; among near-equal ones, the closest to the prediction
        top = max(c[0] for c in found)
        return min((c for c in found if c[0] >= top - _FITNESS_TIE), key=lambda c: c[1])[2].to(T_est)
    # no refinement is trusted: keep the hypothesis the observation overlaps more (ties to the prediction)
    raw = [_overlap(m, cloud[_crop(cloud, m, max_correspondence_m, min_z_m)], max_correspondence_m) for m in moved]
    return hypotheses[max(range(len(hypotheses)), key=lambda i: (raw[i], -i))].to(T_est)


def tracked_goal(points: torch.Tensor, points0: torch.Tensor, T_new: torch.Tensor, T_goal_start: torch.Tensor,
                 *, margin_m: float = 0.01, min_z_m: float = -math.inf,
                 exclude: torch.Tensor | None = None) -> PointGoal:
    """The goal at a replan: the observed points near the tracked selection, moved by the remaining motion.

    Args:
        points: (N, 3) the new observation, m, world frame.
        points0: (P, 3) the selected points at the first observation, m, world frame.
        T_new: (4, 4) tracked motion since the first observation (p_now = T_new @ p0), world frame.
        T_goal_start: (4, 4) the task's motion from the first observation to the goal, world frame.
        margin_m: growth of the box around ``T_new @ points0`` that selects the points, m.
        min_z_m: lowest z of that box (a supporting table stays out), m.
        exclude: optional (N,) bool, points never selected (e.g. :func:`near_robot`).

    Returns:
        :class:`PointGoal` over ``points`` with targets ``T_goal_start @ inv(T_new) @ p``.

    Raises:
        EmptyCloudError: no observed point lies in the box (the selection is occluded or lost).
    """
    require_shape("points", require_floating("points", points), (None, 3), max_leading=0)
    if require_shape("points0", require_floating("points0", points0), (None, 3), max_leading=0).shape[0] == 0:
        raise ValueError("points0: expected at least one selected point, got none")
    for name, T in (("T_new", T_new), ("T_goal_start", T_goal_start)):
        check_rigid_transform(name, require_shape(name, T, (4, 4), max_leading=0))
    moved = transform_points(T_new.to(points), points0.to(points))
    selection = _crop(points, moved, margin_m, min_z_m)
    if exclude is not None:
        require_shape("exclude", require_dtype("exclude", exclude, torch.bool), (points.shape[0],), max_leading=0)
        selection = selection & ~exclude.to(selection.device)
    if not bool(selection.any()):
        raise EmptyCloudError(f"points: no observed point within {margin_m} m of the tracked goal selection "
                              f"(box {moved.min(0).values.tolist()}..{moved.max(0).values.tolist()} m, z >= "
                              f"{min_z_m}); the object is occluded or was lost")
    remaining = T_goal_start.to(torch.float64) @ invert_transform(T_new.to(torch.float64))
    return rigid_goal(points, selection, remaining.to(points))
