"""Back off and look again: ExecutedPath against a recording fake robot and the simulator, the goal
tracker's update leaving its state alone when the goal is lost, and run_episode's recovery."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

import pointworld.planning.closed_loop as closed_loop
from pointworld.errors import EmptyCloudError
from pointworld.model.baselines import ZeroMotion
from pointworld.planning.action_space import ActionSpaceConfig
from pointworld.planning.closed_loop import SimRobot, _GoalTracker, run_episode, table_observation
from pointworld.planning.costs import CostConfig
from pointworld.planning.lookback import ExecutedPath
from pointworld.planning.observation import observe_scene
from pointworld.planning.optimizers import MPPIConfig
from pointworld.planning.planner import MPCPlanner, PlannerConfig
from pointworld.robot.urdf import load_robot
from pointworld.sim.cameras import CameraRigConfig
from pointworld.sim.config import SceneConfig
from pointworld.sim.task import TaskConfig, TaskEnv


class FakeRobot:
    """Executes perfectly and records every command."""

    def __init__(self, opening: float = 0.7) -> None:
        self.calls: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.opening = opening

    def joint_positions(self) -> torch.Tensor:
        return self.calls[-1][0][-1] if self.calls else torch.zeros(3, dtype=torch.float64)

    def gripper_open(self) -> float:
        return self.opening

    def execute(self, q_traj: torch.Tensor, gripper_open: torch.Tensor) -> torch.Tensor:
        self.calls.append((q_traj.clone(), gripper_open.clone()))
        return q_traj.clone()


@pytest.fixture(scope="module")
def flying():
    return load_robot("flying_gripper", load_meshes=False)


def _chunk(start: torch.Tensor, step: torch.Tensor, n: int) -> torch.Tensor:
    return start + step * torch.arange(1, n + 1, dtype=torch.float64)[:, None]


def test_executed_path_retraces_chunks_in_reverse(flying) -> None:
    j = flying.num_joints
    q_start = torch.full((j,), 0.01, dtype=torch.float64)
    a = _chunk(q_start, torch.full((j,), 0.002, dtype=torch.float64), 3)
    b = _chunk(a[-1], torch.full((j,), -0.001, dtype=torch.float64), 4)
    path, robot = ExecutedPath(q_start), FakeRobot()
    path.record(a)
    path.record(b.float())  # any floating dtype
    path.record(torch.zeros(0, j))  # an empty chunk is no chunk
    assert path.chunks == 2
    assert path.retract(robot, flying)
    targets, opening = robot.calls[-1]
    expected = torch.cat([a[-1:], b[:-1]]).flip(0)  # back along b: its earlier positions, then its start
    assert torch.allclose(targets, expected, atol=1e-7) and targets.shape == (4, j)
    assert torch.equal(opening, torch.full((4,), 0.7, dtype=torch.float64))  # the gripper holds its opening
    assert path.retract(robot, flying)
    assert torch.allclose(robot.calls[-1][0], torch.cat([q_start[None], a[:-1]]).flip(0))
    assert path.chunks == 0 and not path.retract(robot, flying) and len(robot.calls) == 2  # nothing moved
    # a chunk recorded after a retract starts where the retract ended
    path.record(a)
    assert path.retract(robot, flying)
    assert torch.allclose(robot.calls[-1][0][-1], q_start)


def test_executed_path_clamps_into_the_limits(flying) -> None:
    lo, hi = flying.lower.to(torch.float64), flying.upper.to(torch.float64)
    finite = torch.isfinite(lo) & torch.isfinite(hi)  # the wrist's continuous joints have none
    q_start = torch.where(finite, hi + 0.003, 0.0)  # a soft limit pressed a hair past
    path, robot = ExecutedPath(q_start), FakeRobot()
    path.record(torch.where(finite, lo, 0.0)[None].repeat(2, 1))
    assert path.retract(robot, flying)
    assert torch.allclose(robot.calls[-1][0][-1], torch.where(finite, hi, 0.0))


def test_executed_path_bad_input(flying) -> None:
    with pytest.raises(TypeError, match="q_start"):
        ExecutedPath(torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="q_start"):
        ExecutedPath(torch.zeros(2, 3))
    path = ExecutedPath(torch.zeros(flying.num_joints))
    with pytest.raises(ValueError, match="measured"):
        path.record(torch.zeros(2, flying.num_joints + 1))


def push_env() -> TaskEnv:
    return TaskEnv(SceneConfig(robot="flying_gripper", n_objects=(1, 1), include_drawer=False,
                               object_size_m=(0.05, 0.07), shapes=("box",)),
                   TaskConfig(kind="push", push_distance_m=(0.05, 0.06), push_yaw_rad=(0.0, 0.0),
                              cameras=CameraRigConfig(n_views=2, width=160, height=120)))


def test_retract_in_simulation_returns_to_the_chunk_start() -> None:
    env = push_env()
    env.reset(0)
    robot = SimRobot(env)
    q0 = robot.joint_positions()
    path = ExecutedPath(q0)
    step = torch.zeros_like(q0)
    step[0], step[2] = 0.01, -0.01
    path.record(robot.execute(_chunk(q0, step, 5), torch.ones(5, dtype=torch.float64)))
    assert float((robot.joint_positions() - q0)[:3].norm()) > 0.05
    assert path.retract(robot, env.robot)
    np.testing.assert_allclose(robot.joint_positions()[:3], q0[:3], atol=5e-3)  # the servos track it back


def test_goal_tracker_update_changes_nothing_when_the_goal_is_lost(monkeypatch) -> None:
    env = push_env()
    task = env.reset(0)
    obs = observe_scene(env.observe(), table_observation(env))
    q = env.joint_positions()
    tracker = _GoalTracker(env, task, obs, q)
    T_before, goal_before = tracker.T_est.clone(), tracker.goal
    n = obs.scene.points.shape[1]
    plan = SimpleNamespace(prediction=SimpleNamespace(displacement=torch.full((1, 3, n, 3), 0.05)))

    def lost(*args, **kwargs):
        raise EmptyCloudError("points: no observed point (test)")

    monkeypatch.setattr(closed_loop, "tracked_goal", lost)
    with pytest.raises(EmptyCloudError):
        tracker.update(obs, plan, 3, obs, q)  # the predicted 5 cm motion would have moved T_est
    assert torch.equal(tracker.T_est, T_before) and tracker.goal is goal_before
    monkeypatch.undo()
    goal = tracker.update(obs, plan, 3, obs, q)  # the object did not move: tracking finds it in place
    assert tracker.goal is goal and float((tracker.T_est[:3, 3] - T_before[:3, 3]).norm()) < 0.01


def _planner(env: TaskEnv) -> MPCPlanner:
    config = PlannerConfig(optimizer=MPPIConfig(num_samples=4, iterations=1, seed=0),
                           costs=CostConfig(keep_still=0.0, joint_limit=0.0, reach=0.5),
                           action=ActionSpaceConfig(joints=("x", "y", "z"), gripper=False), execute_steps=3)
    return MPCPlanner(env.robot, ZeroMotion(), config)


def _lose_goal(monkeypatch, lost_on: set[int]) -> list[int]:
    """Make the n-th call of tracked_goal (0-based, n in ``lost_on``) find no point; returns the call log."""
    calls: list[int] = []
    real = closed_loop.tracked_goal

    def flaky(*args, **kwargs):
        calls.append(len(calls))
        if calls[-1] in lost_on:
            raise EmptyCloudError("points: no observed point (test)")
        return real(*args, **kwargs)

    monkeypatch.setattr(closed_loop, "tracked_goal", flaky)
    return calls


def test_lost_goal_backs_off_looks_again_and_goes_on(monkeypatch) -> None:
    env = push_env()
    planner = _planner(env)
    resets: list[int] = []
    real_reset = planner.reset
    monkeypatch.setattr(planner, "reset", lambda: (resets.append(1), real_reset()))
    retracted: list[torch.Tensor] = []
    real_retract = ExecutedPath.retract

    def retract(self, robot, model):
        out = real_retract(self, robot, model)
        retracted.append(robot.joint_positions())
        return out

    monkeypatch.setattr(ExecutedPath, "retract", retract)
    calls = _lose_goal(monkeypatch, {0})  # hidden right after the first chunk, visible once backed off
    starts: list[torch.Tensor] = []
    result = run_episode(env, planner, 0, max_replans=3,
                         on_step=lambda r, obs, goal, plan, outcome: starts.append(plan.q[0].double()))
    assert result.lookbacks == 1 and len(retracted) == 1
    assert result.replans == len(starts) == len(result.plan_times_s)
    assert len(result.outcomes) == result.replans + result.lookbacks
    assert not result.message.startswith("goal lost")
    assert result.replans == 3 or result.success
    np.testing.assert_allclose(retracted[0][:3], starts[0][:3], atol=5e-3)  # back where plan 1 started
    np.testing.assert_allclose(starts[1][:3], retracted[0][:3], atol=1e-3)  # plan 2 starts from there
    assert len(resets) == 2  # the episode's start, and the warm start dropped after the retract
    assert calls[:2] == [0, 1]


@pytest.mark.parametrize(("max_lookbacks", "lost_from", "lookbacks", "replans"), [
    (0, 0, 0, 1),  # no looking back: the first loss ends it
    (2, 0, 1, 1),  # one chunk executed: one retract, then the path is used up
    (2, 1, 2, 2),  # lost after the second chunk: two retracts, still nothing
    (1, 1, 1, 2),  # the limit stops it first
])
def test_a_goal_lost_for_good_ends_the_episode(monkeypatch, max_lookbacks: int, lost_from: int, lookbacks: int,
                                               replans: int) -> None:
    env = push_env()
    _lose_goal(monkeypatch, set(range(lost_from, 100)))
    result = run_episode(env, _planner(env), 0, max_replans=5, max_lookbacks=max_lookbacks)
    if result.success:  # a retract can end the task (not expected with these seeds)
        pytest.skip("the task ended in success")
    assert result.message.startswith("goal lost: points: no observed point (test)")
    assert (result.lookbacks, result.replans) == (lookbacks, replans)
    assert len(result.outcomes) == replans + lookbacks


def test_run_episode_rejects_negative_lookbacks() -> None:
    env = push_env()
    with pytest.raises(ValueError, match="max_lookbacks"):
        run_episode(env, _planner(env), 0, max_lookbacks=-1)
