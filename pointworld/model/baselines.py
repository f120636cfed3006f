"""Reference flow predictors without learning, to put the world model's metrics in context.

Both implement :class:`~pointworld.model.inputs.FlowPredictor`: ``predict(scene, action)`` with a scene of
B = 1 (broadcast to the K actions) or B = K, returning a :class:`~pointworld.model.inputs.Prediction`
with displacement (K, T, N, 3) m, world frame, and log_var (K, T, N) log(m^2) all zero (unit variance:
these baselines make no uncertainty estimate). Letters: K actions, T future steps, N scene points,
M robot points.
"""

from __future__ import annotations

import torch

from pointworld.geometry.checks import require_positive
from pointworld.geometry.neighbors import knn
from pointworld.model.inputs import ActionInput, Prediction, SceneInput


def check_predictor_args(scene: object, action: object) -> None:
    """Raise unless ``scene`` is a SceneInput of B = 1 or K and ``action`` a K-action ActionInput on its device."""
    if not isinstance(scene, SceneInput):
        raise TypeError(f"scene: expected a SceneInput, got {type(scene).__name__}")
    if not isinstance(action, ActionInput):
        raise TypeError(f"action: expected an ActionInput, got {type(action).__name__}")
    if scene.batch_size not in (1, action.batch_size):
        raise ValueError(f"scene: expected batch size 1 or {action.batch_size} (the number of actions), "
                         f"got {scene.batch_size}")
    if scene.points.device != action.flow.device:
        raise ValueError(f"action: expected tensors on {scene.points.device} like scene, got "
                         f"{action.flow.device}")


class ZeroMotion:
    """Predicts that nothing in the scene moves: displacement 0 m and log_var 0 everywhere."""

    def predict(self, scene: SceneInput, action: ActionInput) -> Prediction:
        """Zero flow for every scene point (padding included) under each of the K actions.

        Args:
            scene: scene points at t = 0, B = 1 or K (only N, dtype and device are used).
            action: K candidate actions with T future steps.

        Returns:
            Prediction with displacement (K, T, N, 3) zeros, m, and log_var (K, T, N) zeros, log(m^2),
            dtype and device of ``scene.points``.
        """
        check_predictor_args(scene, action)
        k, t, n = action.batch_size, action.horizon, scene.points.shape[1]
        like = scene.points
        return Prediction(like.new_zeros((k, t, n, 3)), like.new_zeros((k, t, n)))


class RigidFollow:
    """Scene points near the robot move with it; everything else stays still.

    Every valid scene point is attached to its nearest valid robot point at t = 0 (euclidean; between
    equidistant robot points the choice is arbitrary); if that distance is at most ``radius_m`` the
    scene point copies the robot point's displacement from t = 0 at every step, else it stays still.
    Padded scene points and scenes without any valid robot point get zero displacement. This is the
    "objects near the gripper are carried rigidly" guess, without rotation about the contact.

    Args:
        radius_m: attachment radius, m, > 0.
    """

    def __init__(self, radius_m: float = 0.05) -> None:
        self.radius_m = require_positive("radius_m", radius_m)

    def predict(self, scene: SceneInput, action: ActionInput) -> Prediction:
        """Flow of every scene point under each of the K actions.

        Args:
            scene: scene points (B = 1 or K, N, 3) at t = 0, m, world frame, with their mask.
            action: K candidate actions; ``action.points`` (K, T+1, M, 3) robot positions, m, world
                frame, and ``action.mask`` (K, M).

        Returns:
            Prediction with displacement (K, T, N, 3), m, world frame, and log_var (K, T, N) zeros,
            dtype and device of ``scene.points``.
        """
        check_predictor_args(scene, action)
        scene = scene.expand(action.batch_size)
        dtype = scene.points.dtype
        robot = action.points.to(dtype)  # (K, T+1, M, 3)
        with torch.no_grad():
            query = torch.where(scene.mask[..., None], scene.points, 0.0)
            dist, idx = knn(query, robot[:, 0].contiguous(), 1, action.mask)  # (K, N, 1)
        attached = scene.mask & (dist[..., 0] <= self.radius_m)  # (K, N); no robot point: dist = inf
        motion = robot[:, 1:] - robot[:, :1]  # (K, T, M, 3)
        k, t, m = motion.shape[:3]
        if m == 0:
            displacement = scene.points.new_zeros((k, t, scene.points.shape[1], 3))
        else:
            gather_idx = idx[..., 0].clamp_min(0)[:, None, :, None].expand(k, t, -1, 3)
            followed = torch.gather(motion, 2, gather_idx)  # (K, T, N, 3)
            displacement = torch.where(attached[:, None, :, None], followed, 0.0)
        return Prediction(displacement, displacement.new_zeros(displacement.shape[:3]))
