"""Penetration (contact proxy) cost: a naive all-pairs loop for every chunk size, known values, bad input."""

from __future__ import annotations

import math

import pytest
import torch

from pointworld.planning import penetration as penetration_module
from pointworld.planning.penetration import penetration_cost

DT = torch.float64


def _naive_penetration(robot: torch.Tensor, scene: torch.Tensor, static: torch.Tensor, margin: float):
    ref = scene[static]
    out = torch.zeros(robot.shape[0], dtype=robot.dtype)
    for k in range(robot.shape[0]):
        total = 0.0
        for p in robot[k].reshape(-1, 3):
            d = min((math.dist(p.tolist(), r.tolist()) for r in ref), default=math.inf)
            total += max(0.0, margin - d) / margin
        out[k] = total / (robot.shape[1] * robot.shape[2])
    return out


@pytest.mark.parametrize("chunk_elements", [1, 200, 2**24])
def test_penetration_cost_matches_naive_loop(monkeypatch: pytest.MonkeyPatch, chunk_elements: int) -> None:
    monkeypatch.setattr(penetration_module, "PENETRATION_CHUNK_ELEMENTS", chunk_elements)
    gen = torch.Generator().manual_seed(2)
    N = 60
    scene = torch.rand(N, 3, dtype=DT, generator=gen) * torch.tensor([0.3, 0.3, 0.0], dtype=DT)  # a table z = 0
    scene[40:] += torch.tensor([0.0, 0.0, 0.5], dtype=DT)  # raised points, not static
    static = torch.arange(N) < 40
    robot = torch.rand(3, 4, 6, 3, dtype=DT, generator=gen) * torch.tensor([0.3, 0.3, 0.04], dtype=DT)
    robot[..., 2] -= 0.005
    robot[2, ..., 2] += 0.5  # candidate 2 hovers near the non-static points only
    margin = 0.02
    cost = penetration_cost(robot, scene, static, margin)
    expected = _naive_penetration(robot, scene, static, margin)
    assert float(expected[:2].min()) > 0.0 and float(expected[2]) == 0.0
    torch.testing.assert_close(cost, expected, atol=1e-12, rtol=0)
    per_point = robot.reshape(-1, 1, 1, 3)  # one robot point per candidate: checks the scatter back
    torch.testing.assert_close(penetration_cost(per_point, scene, static, margin),
                               _naive_penetration(per_point, scene, static, margin), atol=1e-12, rtol=0)
    cost32 = penetration_cost(robot.float(), scene.float(), static, margin)
    torch.testing.assert_close(cost32.double(), expected, atol=1e-5, rtol=0)


def test_penetration_cost_known_values_and_empty_cases() -> None:
    scene = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]], dtype=DT)
    static = torch.tensor([True, False])
    robot = torch.full((2, 2, 2, 3), 3.0, dtype=DT)  # K=2, T+1=2, M=2, far away
    robot[1, 1, 0] = torch.tensor([0.0, 0.0, 0.004], dtype=DT)  # 4 mm above the static point
    robot[1, 0, 1] = torch.tensor([1.0, 0.0, 0.0], dtype=DT)  # on the non-static point: no cost
    cost = penetration_cost(robot, scene, static, margin_m=0.01)
    assert cost[0].item() == 0.0
    assert cost[1].item() == pytest.approx(0.6 / 4, abs=1e-12)
    assert penetration_cost(robot, scene, torch.zeros(2, dtype=torch.bool)).tolist() == [0.0, 0.0]
    assert penetration_cost(robot[:, :, :0], scene, static).tolist() == [0.0, 0.0]
    with pytest.raises(ValueError, match="margin_m"):
        penetration_cost(robot, scene, static, margin_m=0.0)
    with pytest.raises(ValueError, match="static"):
        penetration_cost(robot, scene, static[:1])
    with pytest.raises(TypeError, match="scene_points"):
        penetration_cost(robot, scene.float(), static)
