"""Synthetic push batches: a learnable toy scene-flow problem for smoke training, tests and benchmarks.

Each sample is a flat table (z = 0) with one cube on it and a spherical "gripper" of robot points that moves
in a straight line at constant speed through the cube's centre. The cube is pushed kinematically: once
the gripper has travelled past the contact gap, the cube moves along the push direction by the extra
distance, so its points' ground-truth displacement is ``max(0, travel_t - gap)`` along that direction;
table points stay still. It needs no simulator and is fully determined by the generator's seed.
"""

from __future__ import annotations

import math

import torch

from pointworld.geometry.checks import require_int
from pointworld.model.inputs import ActionInput, SceneInput
from pointworld.robot.flow import FEATURE_DIM, FEATURE_LAYOUT

#: Cube side, m; gripper radius, m; gripper speed, m per step.
CUBE_SIDE_M, GRIPPER_RADIUS_M, SPEED_M_PER_STEP = 0.06, 0.02, 0.02
_DT_S = 0.1


def _cube_surface(n: int, side: float, g: torch.Generator, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, 3) points on the 5 visible faces of an axis-aligned cube centred at 0 and their normals."""
    face = torch.randint(0, 5, (n,), generator=g)
    uv = (torch.rand(n, 2, generator=g, dtype=dtype) - 0.5) * side
    axis = torch.tensor([0, 0, 1, 1, 2])[face]
    sign = torch.tensor([-1.0, 1.0, -1.0, 1.0, 1.0], dtype=dtype)[face]
    p = torch.zeros(n, 3, dtype=dtype)
    normal = torch.zeros(n, 3, dtype=dtype)
    others = torch.tensor([[1, 2], [1, 2], [0, 2], [0, 2], [0, 1]])[face]
    rows = torch.arange(n)
    p[rows, axis] = sign * side / 2
    normal[rows, axis] = sign
    p[rows[:, None], others] = uv
    return p, normal


def synthetic_push_batch(batch_size: int, num_scene_points: int = 1024, num_robot_points: int = 64,
                         horizon: int = 10, seed: int = 0, dtype: torch.dtype = torch.float32,
                         ) -> tuple[SceneInput, ActionInput, torch.Tensor, torch.Tensor]:
    """Draw a batch of synthetic push samples (see the module docstring).

    Args:
        batch_size: B.
        num_scene_points: N (a quarter on the cube, the rest on the table).
        num_robot_points: M gripper points.
        horizon: T future steps.
        seed: generator seed (same seed, same batch).
        dtype: floating dtype of the tensors.

    Returns:
        scene: SceneInput (B, N) in the world frame, m.
        action: ActionInput with flow (B, T+1, M, 15), robot_type 1.
        target: (B, T, N, 3) ground-truth displacements, m.
        valid: (B, T, N) bool, all True.
    """
    B = require_int("batch_size", batch_size, 1)
    N = require_int("num_scene_points", num_scene_points, 8)
    M = require_int("num_robot_points", num_robot_points, 1)
    T = require_int("horizon", horizon, 2)
    g = torch.Generator().manual_seed(require_int("seed", seed, 0))
    n_cube = N // 4
    cube, cube_n = _cube_surface(B * n_cube, CUBE_SIDE_M, g, dtype)
    cube, cube_n = cube.reshape(B, n_cube, 3), cube_n.reshape(B, n_cube, 3)
    center = torch.cat([torch.rand(B, 2, generator=g, dtype=dtype) * 0.3 + 0.3,
                        torch.full((B, 1), CUBE_SIDE_M / 2, dtype=dtype)], -1)
    table = torch.cat([torch.rand(B, N - n_cube, 2, generator=g, dtype=dtype) * 0.6 + 0.15,
                       torch.zeros(B, N - n_cube, 1, dtype=dtype)], -1)
    points = torch.cat([cube + center[:, None], table], 1)
    normals = torch.cat([cube_n, torch.zeros_like(table).index_fill_(-1, torch.tensor([2]), 1.0)], 1)
    colors = torch.cat([torch.tensor([0.8, 0.2, 0.1], dtype=dtype).expand(B, n_cube, 3),
                        torch.tensor([0.6, 0.5, 0.4], dtype=dtype).expand(B, N - n_cube, 3)], 1)
    colors = (colors + 0.05 * torch.randn(B, N, 3, generator=g, dtype=dtype)).clamp(0, 1)
    angle = torch.rand(B, generator=g, dtype=dtype) * 2 * math.pi
    direction = torch.stack([torch.cos(angle), torch.sin(angle), torch.zeros_like(angle)], -1)
    start_gap = torch.rand(B, generator=g, dtype=dtype) * 0.06 + 0.01  # travel before contact, m
    start = center - direction * (CUBE_SIDE_M / 2 + GRIPPER_RADIUS_M + start_gap)[:, None]
    ball = torch.randn(B, M, 3, generator=g, dtype=dtype)
    ball_n = ball / ball.norm(dim=-1, keepdim=True).clamp_min(1e-9)
    travel = torch.arange(T + 1, dtype=dtype) * SPEED_M_PER_STEP  # (T+1,)
    robot = start[:, None, None] + ball_n[:, None] * GRIPPER_RADIUS_M + travel[None, :, None, None] * direction[:, None, None]
    flow = torch.zeros(B, T + 1, M, FEATURE_DIM, dtype=dtype)
    flow[..., FEATURE_LAYOUT["xyz"]] = robot
    flow[..., FEATURE_LAYOUT["normal"]] = ball_n[:, None].expand(B, T + 1, M, 3)
    flow[..., FEATURE_LAYOUT["gripper_open"]] = 1.0
    flow[..., FEATURE_LAYOUT["velocity"]] = (direction * SPEED_M_PER_STEP / _DT_S)[:, None, None]
    flow[..., FEATURE_LAYOUT["time"]] = torch.arange(T + 1, dtype=dtype)[None, :, None, None]
    push = (travel[None, 1:] - start_gap[:, None]).clamp_min(0.0)  # (B, T)
    target = torch.zeros(B, T, N, 3, dtype=dtype)
    target[:, :, :n_cube] = (push[..., None] * direction[:, None])[:, :, None]
    scene = SceneInput(points, colors, normals, torch.ones(B, N, dtype=torch.bool))
    action = ActionInput(flow, torch.ones(B, M, dtype=torch.bool), torch.ones(B, dtype=torch.int64))
    return scene, action, target, torch.ones(B, T, N, dtype=torch.bool)
