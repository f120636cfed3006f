"""PlanRecord: built from a real plan, saved and loaded exactly, and refused when corrupt."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from pointworld.model.baselines import RigidFollow
from pointworld.planning.goals import translation_goal
from pointworld.planning.plan_record import (
    PlanRecord,
    PlanRecordError,
    load_plan_record,
    plan_record,
    save_plan_record,
)
from pointworld.planning.planner import MPCPlanner
from pointworld.robot.assets import shipped_urdf_path
from pointworld.robot.urdf import load_robot
from tests.planning.test_planner import make_scene, q0_like
from tests.planning.test_planner_candidates import config


def random_record(seed: int = 0, n: int = 20, t: int = 3, c: int | None = 2, robot: bool = True) -> PlanRecord:
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.rand(*s, generator=g)
    return PlanRecord(points=r(n, 3), colors=r(n, 3), displacement=r(t, n, 3) * 0.1, log_var=-5 + r(t, n),
                      robot_points=r(t + 1, 7, 3) if robot else None, goal_indices=torch.tensor([1, 4, 9]),
                      goal_targets=r(3, 3), candidates=None if c is None else r(c, t, n, 3),
                      candidate_costs=None if c is None else torch.sort(r(c)).values, cost_history=r(4),
                      q=r(t + 1, 2), gripper_open=r(t + 1), joint_names=("j1", "finger"), robot_name="arm",
                      dt_s=0.1)


def assert_same(a: PlanRecord, b: PlanRecord) -> None:
    for f in dataclasses.fields(PlanRecord):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, torch.Tensor):
            assert x.dtype == y.dtype, f.name
            torch.testing.assert_close(x, y, rtol=0, atol=0, msg=f.name)
        else:
            assert x == y, f.name


@pytest.mark.parametrize("c,robot", [(2, True), (None, False)])
def test_round_trip(tmp_path, c, robot):
    record = random_record(c=c, robot=robot)
    path = save_plan_record(tmp_path / "sub" / "plan.npz", record)
    assert path.is_file() and not list(path.parent.glob(".*tmp"))
    assert_same(record, load_plan_record(path))


def test_from_a_real_plan(tmp_path):
    torch.set_num_threads(1)
    robot = load_robot(shipped_urdf_path("flying_gripper"))
    scene, cluster, table = make_scene()
    goal = translation_goal(scene.points[0], cluster, (0.06, 0.0, 0.0), keep_still=table)
    result = MPCPlanner(robot, RigidFollow(radius_m=0.05), config(keep=2), horizon=4).plan(scene, q0_like(), 1.0, goal)
    record = plan_record(scene.points[0], scene.colors[0], result, goal, robot.name, robot.joint_names, 0.1)
    n = scene.points.shape[1]
    assert record.points.dtype == torch.float32 and record.points.shape == (n, 3)
    assert record.horizon == 4 and record.robot_points.shape[0] == 5
    assert record.candidates.shape == (2, 4, n, 3)
    torch.testing.assert_close(record.displacement, result.prediction.displacement[0].float())
    torch.testing.assert_close(record.cost_history, torch.tensor(result.cost_history, dtype=torch.float32))
    assert record.joint_names == tuple(robot.joint_names)
    assert_same(record, load_plan_record(save_plan_record(tmp_path / "p.npz", record)))


def test_truncated_and_corrupt_files(tmp_path):
    path = save_plan_record(tmp_path / "plan.npz", random_record())
    data = path.read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(PlanRecordError, match="cut.npz.*truncated or corrupt"):
        load_plan_record(tmp_path / "cut.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip at all" * 10)
    with pytest.raises(PlanRecordError, match="junk.npz"):
        load_plan_record(tmp_path / "junk.npz")
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        load_plan_record(tmp_path / "missing.npz")


def rewrite(path, **changes):
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    arrays.update(changes)
    for k in [k for k, v in changes.items() if v is None]:
        del arrays[k]
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize("changes,message", [
    ({"version": np.array(2)}, "version 1..1, got 2"),
    ({"version": None}, "version"),
    ({"format": np.array("something-else")}, "format 'pointworld-plan-record', got 'something-else'"),
    ({"points": None}, "missing entry 'points'"),
    ({"log_var": np.zeros((3, 19), np.float32)}, "log_var"),
    ({"candidate_costs": None}, "both or neither"),
    ({"goal_indices": np.array([0, 4, 25])}, r"goal_indices: expected indices in \[0, 20\)"),
])
def test_wrong_version_and_inconsistent_contents(tmp_path, changes, message):
    path = rewrite(save_plan_record(tmp_path / "plan.npz", random_record()), **changes)
    with pytest.raises(PlanRecordError, match=message) as info:
        load_plan_record(path)
    assert "plan.npz" in str(info.value)


def test_bad_records_and_arguments(tmp_path):
    good = random_record()
    with pytest.raises(ValueError, match="displacement"):
        dataclasses.replace(good, displacement=torch.zeros(3, 5, 3))
    with pytest.raises(ValueError, match="points: expected finite"):
        dataclasses.replace(good, points=good.points.clone().fill_(float("nan")))
    with pytest.raises(ValueError, match="joint_names: expected 2 names"):
        dataclasses.replace(good, joint_names=("a",))
    with pytest.raises(TypeError, match="record: expected a PlanRecord"):
        save_plan_record(tmp_path / "x.npz", {"points": good.points})
    with pytest.raises(TypeError, match="goal: expected a PointGoal"):
        plan_record(good.points, good.colors, object(), None, "arm", ("j",), 0.1)
