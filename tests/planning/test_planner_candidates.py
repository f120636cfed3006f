"""The planner keeps the top candidates of its last optimizer iteration (PlanResult.candidates)."""

from __future__ import annotations

import pytest
import torch

from pointworld.model.baselines import RigidFollow
from pointworld.planning.action_space import ActionSpaceConfig
from pointworld.planning.costs import CostConfig
from pointworld.planning.goals import translation_goal
from pointworld.planning.optimizers import MPPIConfig
from pointworld.planning.planner import MPCPlanner, PlannerConfig
from pointworld.robot.assets import shipped_urdf_path
from pointworld.robot.urdf import load_robot
from tests.planning.test_planner import make_scene, q0_like


@pytest.fixture(scope="module")
def robot():
    return load_robot(shipped_urdf_path("flying_gripper"))


class Recorder:
    """RigidFollow that remembers every (K,) batch's displacement, to check what the planner kept."""

    def __init__(self) -> None:
        self.inner = RigidFollow(radius_m=0.05)
        self.calls: list[torch.Tensor] = []

    def predict(self, scene, action):
        out = self.inner.predict(scene, action)
        self.calls.append(out.displacement.clone())
        return out


def config(keep: int, chunk: int | None = None, iterations: int = 3) -> PlannerConfig:
    return PlannerConfig(optimizer=MPPIConfig(num_samples=12, iterations=iterations, noise_std=0.03, seed=1),
                         costs=CostConfig(joint_limit=0.0), action=ActionSpaceConfig(gripper=False),
                         robot_points=64, execute_steps=2, chunk_size=chunk, keep_candidates=keep)


def plan(robot, predictor, cfg):
    torch.set_num_threads(1)
    scene, cluster, table = make_scene()
    goal = translation_goal(scene.points[0], cluster, (0.06, 0.0, 0.0), keep_still=table)
    return MPCPlanner(robot, predictor, cfg, horizon=4).plan(scene, q0_like(), 1.0, goal), scene


def test_kept_candidates_are_the_last_iterations_best(robot):
    rec = Recorder()
    result, scene = plan(robot, rec, config(keep=3, chunk=5))
    n = scene.points.shape[1]
    assert result.candidates.shape == (3, 4, n, 3) and result.candidate_costs.shape == (3,)
    costs = result.candidate_costs
    assert bool((costs[1:] >= costs[:-1]).all())  # ascending: best first
    # the history's last entry is the best cost seen in any iteration: never above the kept best
    assert result.cost_history[-1] <= float(costs[0]) + 1e-12
    assert result.cost <= float(costs[0]) + 1e-12
    # the last optimizer iteration = the 3 chunked calls (5 + 5 + 2) before the final re-evaluation
    assert len(rec.calls) == 3 * 3 + 1
    last = torch.cat(rec.calls[-4:-1])
    assert last.shape[0] == 12
    # every kept displacement is one of that iteration's predictions, distinct ones
    match = [(last - c[None]).flatten(1).abs().amax(1).argmin() for c in result.candidates]
    for c, k in zip(result.candidates, match):
        torch.testing.assert_close(c, last[k], rtol=0, atol=0)
    assert len({int(k) for k in match}) == 3


def test_keep_zero_and_more_than_samples(robot):
    result, _ = plan(robot, RigidFollow(radius_m=0.05), config(keep=0))
    assert result.candidates is None and result.candidate_costs is None
    result, _ = plan(robot, RigidFollow(radius_m=0.05), config(keep=50, iterations=1))
    assert result.candidates.shape[0] == 12  # capped at K samples
    # one iteration: the kept best is the best ever seen, equal to the history
    assert float(result.candidate_costs[0]) == pytest.approx(result.cost_history[-1], abs=1e-12)


@pytest.mark.parametrize("bad", [-1, 1.5, True])
def test_bad_keep_candidates(bad):
    with pytest.raises(ValueError, match="keep_candidates"):
        PlannerConfig(keep_candidates=bad)
