"""scripts/error_breakdown.py: its categories partition the moving point-steps of ``l2_moved`` exactly (checked
against :func:`~pointworld.train.evaluate.evaluate`), and its rigid-fit floor is zero for rigid motion."""

from __future__ import annotations

import pytest
import torch

from pointworld.data.clip_dataset import ClipDataset, ClipDatasetConfig
from pointworld.geometry.rotations import axis_angle_to_matrix
from pointworld.model.baselines import ZeroMotion
from pointworld.model.segment_prior import SegmentFollow, SegmentFollowConfig
from pointworld.train.evaluate import evaluate
from tests.script_loader import load_script


@pytest.fixture(scope="module")
def script():
    return load_script("error_breakdown")


def test_categories_add_up_to_the_evaluated_l2_moved(script, write_tiny_dataset, tmp_path) -> None:
    data = write_tiny_dataset(tmp_path / "data", robot="flying_gripper")
    dataset = ClipDataset(ClipDatasetConfig(sources=({"path": data},), split="all", max_points=256,
                                            random_views=False, robot_points=64, seed=0))
    prior = SegmentFollowConfig(contact_radius_m=0.02)
    sums = script.breakdown(dataset, prior)
    want = evaluate({"prior": SegmentFollow(prior), "zero": ZeroMotion()}, dataset, progress=False)["predictors"]
    count = sum(s["count"] for s in sums.values())
    assert count > 0
    for key, name in (("error", "prior"), ("gt", "zero")):
        got = sum(s[key] for s in sums.values()) / count
        assert got == pytest.approx(want[name]["overall"]["l2_moved"], rel=1e-5)
    assert set(sums) <= {"support / unlabelled", "furniture", "missed, moving at t=0", "missed, robot within 4 cm",
                         "missed, robot further", "both move"}


def test_the_rigid_floor_is_zero_for_a_rigid_motion_only(script) -> None:
    gen = torch.Generator().manual_seed(0)
    points = torch.rand(50, 3, generator=gen, dtype=torch.float64)
    rot = axis_angle_to_matrix(torch.tensor([[0.0, 0.0, 0.3], [0.1, -0.2, 0.4]], dtype=torch.float64))
    moved = points @ rot.transpose(-1, -2) + torch.tensor([0.05, -0.02, 0.01], dtype=torch.float64)
    valid = torch.ones(2, 50, dtype=torch.bool)
    valid[1, :10] = False
    err = script._rigid_error(points, moved - points, valid)
    assert float(err.abs().max()) < 1e-12
    bent = (moved - points).clone()
    bent[:, :25, 2] += 0.02  # half the points lifted: no rigid motion fits
    assert float(script._rigid_error(points, bent, valid)[valid].mean()) > 1e-3
