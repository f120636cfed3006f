"""Inputs and outputs of the world model (and of anything that predicts scene flow like it).

All tensors are padded and batched (DESIGN.md: point clouds at the API are (B, N, 3) with a (B, N) bool
mask); the backbone packs them internally. Frames: world, metres. Letters: B batch, N scene points,
M robot points, T future steps (T + 1 steps including t = 0), F lifted image-feature channels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from pointworld.geometry.checks import require_dtype, require_finite, require_floating, require_shape
from pointworld.robot.flow import FEATURE_DIM, FEATURE_LAYOUT


@dataclass(frozen=True)
class SceneInput:
    """Scene points at t = 0.

    Attributes:
        points: (B, N, 3) positions, m, world frame.
        colors: (B, N, 3) RGB in [0, 1].
        normals: (B, N, 3) unit normals, world frame (zeros where unknown).
        mask: (B, N) bool, True for real points (False = padding).
        image_features: optional (B, N, F) features lifted from images
            (:mod:`pointworld.model.lift`), zeros where a point is seen by no view.
    """

    points: torch.Tensor
    colors: torch.Tensor
    normals: torch.Tensor
    mask: torch.Tensor
    image_features: torch.Tensor | None = None

    def __post_init__(self) -> None:
        require_floating("points", self.points)
        require_shape("points", self.points, (None, None, 3), max_leading=0)
        B, N = self.points.shape[:2]
        for name in ("colors", "normals"):
            require_shape(name, getattr(self, name), (B, N, 3), max_leading=0)
        require_dtype("mask", self.mask, torch.bool)
        require_shape("mask", self.mask, (B, N), max_leading=0)
        if self.image_features is not None:
            require_shape("image_features", self.image_features, (B, N, None), max_leading=0)
        require_finite("points", self.points[self.mask])

    @property
    def batch_size(self) -> int:
        """B."""
        return int(self.points.shape[0])

    def expand(self, batch_size: int) -> SceneInput:
        """Broadcast a single scene (B = 1) to ``batch_size`` copies (views, no memory copy)."""
        if self.batch_size == batch_size:
            return self
        if self.batch_size != 1:
            raise ValueError(f"batch_size: can only expand a scene with B = 1, this one has B = {self.batch_size}")

        def grow(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.expand((batch_size,) + tuple(t.shape[1:]))

        return SceneInput(grow(self.points), grow(self.colors), grow(self.normals), grow(self.mask),
                          grow(self.image_features))


@dataclass(frozen=True)
class ActionInput:
    """A batch of candidate actions as robot point flows (:func:`pointworld.robot.flow.robot_point_flow`).

    Attributes:
        flow: (B, T+1, M, 15) robot point-flow features in ``FEATURE_LAYOUT`` order (xyz m, normal,
            gripper_open, velocity m/s, acceleration m/s^2, time index, link id), world frame.
        mask: (B, M) bool, True for real robot points (robots with fewer points are padded).
        robot_type: (B,) int64 index of the robot in the model's robot vocabulary.
    """

    flow: torch.Tensor
    mask: torch.Tensor
    robot_type: torch.Tensor

    def __post_init__(self) -> None:
        require_floating("flow", self.flow)
        require_shape("flow", self.flow, (None, None, None, FEATURE_DIM), max_leading=0)
        B, steps, M = self.flow.shape[:3]
        if steps < 2:
            raise ValueError(f"flow: expected T + 1 >= 2 time steps, got {steps}")
        require_dtype("mask", self.mask, torch.bool)
        require_shape("mask", self.mask, (B, M), max_leading=0)
        require_dtype("robot_type", self.robot_type, torch.int64)
        require_shape("robot_type", self.robot_type, (B,), max_leading=0)

    @property
    def batch_size(self) -> int:
        """B."""
        return int(self.flow.shape[0])

    @property
    def horizon(self) -> int:
        """T, the number of future steps."""
        return int(self.flow.shape[1]) - 1

    @property
    def points(self) -> torch.Tensor:
        """(B, T+1, M, 3) robot point positions, m, world frame."""
        return self.flow[..., FEATURE_LAYOUT["xyz"]]

    @property
    def gripper_open(self) -> torch.Tensor:
        """(B, T+1) gripper-open state per step in [0, 1] (max over the real robot points)."""
        g = self.flow[..., FEATURE_LAYOUT["gripper_open"]][..., 0]
        return torch.where(self.mask[:, None, :], g, torch.zeros_like(g)).amax(-1)


@dataclass(frozen=True)
class Prediction:
    """Predicted scene flow.

    Attributes:
        displacement: (B, T, N, 3) displacement of every scene point from t = 0 at steps 1..T, m, world.
        log_var: (B, T, N) log of the predicted variance of each displacement component, log(m^2).
    """

    displacement: torch.Tensor
    log_var: torch.Tensor


class FlowPredictor(Protocol):
    """Anything the planner and the evaluation can call: the world model and the baselines."""

    def predict(self, scene: SceneInput, action: ActionInput) -> Prediction:
        """Predict the flow of ``scene`` (B = 1 or B = K) under each of the K actions of ``action``."""
        ...
