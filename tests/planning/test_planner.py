"""MPCPlanner on a synthetic scene with analytic predictors (RigidFollow, spies) and a micro WorldModel."""

from __future__ import annotations

import pytest
import torch

from pointworld.errors import JointMismatchError
from pointworld.model.baselines import RigidFollow, ZeroMotion
from pointworld.model.inputs import ActionInput, Prediction, SceneInput
from pointworld.planning.action_space import ActionSpaceConfig
from pointworld.planning.costs import CostConfig
from pointworld.planning.goals import translation_goal
from pointworld.planning.optimizers import MPPIConfig
from pointworld.planning.planner import MPCPlanner, PlannerConfig, PlanResult
from pointworld.robot.assets import shipped_urdf_path
from pointworld.robot.urdf import load_robot
from tests.micro import micro_world_model

Q0 = (0.5, 0.0, 0.3, 0.0, 0.0, 0.0, 0.04)  # flying gripper: x y z roll pitch yaw finger; hand bottom at z 0.3


@pytest.fixture(scope="module")
def robot():
    return load_robot(shipped_urdf_path("flying_gripper"))


def make_scene(dtype=torch.float64) -> tuple[SceneInput, torch.Tensor, torch.Tensor]:
    """A table grid at z = 0 and a 2 cm cluster just below the hand; returns scene, cluster mask, table mask."""
    g = torch.arange(11, dtype=dtype) * 0.04
    tx, ty = torch.meshgrid(0.3 + g, -0.2 + g, indexing="ij")
    table = torch.stack([tx.flatten(), ty.flatten(), torch.zeros(tx.numel(), dtype=dtype)], -1)
    c = torch.tensor([-0.01, 0.0, 0.01], dtype=dtype)
    cx, cy, cz = torch.meshgrid(c, c, c, indexing="ij")
    cluster = torch.stack([cx.flatten(), cy.flatten(), cz.flatten()], -1) + torch.tensor([0.5, 0.0, 0.28], dtype=dtype)
    points = torch.cat([table, cluster])
    n = points.shape[0]
    scene = SceneInput(points[None], torch.full((1, n, 3), 0.5, dtype=dtype), torch.zeros((1, n, 3), dtype=dtype),
                       torch.ones((1, n), dtype=torch.bool))
    is_cluster = torch.arange(n) >= table.shape[0]
    return scene, is_cluster, ~is_cluster


def small_config(**overrides) -> PlannerConfig:
    base = {"optimizer": MPPIConfig(num_samples=32, iterations=4, noise_std=0.03, seed=0),
            "costs": CostConfig(joint_limit=0.0), "action": ActionSpaceConfig(gripper=False),
            "robot_points": 128, "execute_steps": 3}
    return PlannerConfig(**{**base, **overrides})


def q0_like(dtype=torch.float64) -> torch.Tensor:
    return torch.tensor(Q0, dtype=dtype)


def test_planner_moves_cluster_toward_target(robot):
    torch.set_num_threads(1)
    scene, cluster, table = make_scene()
    points = scene.points[0]
    goal = translation_goal(points, cluster, (0.08, 0.0, 0.0), keep_still=table)
    planner = MPCPlanner(robot, RigidFollow(radius_m=0.05), small_config(), horizon=6)
    result = planner.plan(scene, q0_like(), 1.0, goal)
    assert isinstance(result, PlanResult)
    final = points[goal.indices] + result.prediction.displacement[0, -1, goal.indices]
    start_err = float((points[goal.indices] - goal.targets).norm(dim=-1).mean())
    final_err = float((final - goal.targets).norm(dim=-1).mean())
    assert start_err == pytest.approx(0.08, abs=1e-12)
    assert final_err < 0.3 * start_err
    assert all(a >= b for a, b in zip(result.cost_history, result.cost_history[1:]))
    assert result.cost <= result.cost_history[0] + 1e-12
    hold_still_cost = 0.08 * (1.0 + 0.1)  # goal term (terminal + running weight) when nothing moves
    assert result.cost < 0.5 * hold_still_cost
    # the predicted motion is the hand's: the table stays, the gripper moved about +8 cm in x
    assert float(result.prediction.displacement[0, :, table].abs().max()) == 0.0
    assert float(result.q[-1, 0] - result.q[0, 0]) > 0.04
    assert result.breakdown["goal"] == pytest.approx(result.cost - 0.01 * result.breakdown["smoothness"]
                                                     - 0.5 * result.breakdown["keep_still"]
                                                     - 0.5 * result.breakdown["reach"], abs=1e-9)
    # the reported prediction is the predictor's for the chosen trajectory (re-run independently)
    from pointworld.robot.flow import robot_point_flow
    flow = robot_point_flow(robot, planner.surface, result.q[None], result.gripper_open[None])
    action = ActionInput(flow.features(), torch.ones((1, flow.points.shape[2]), dtype=torch.bool),
                         torch.zeros(1, dtype=torch.int64))
    again = RigidFollow(radius_m=0.05).predict(scene, action)
    torch.testing.assert_close(again.displacement, result.prediction.displacement, atol=1e-12, rtol=0)
    torch.testing.assert_close(result.robot_points, flow.points[0], atol=1e-12, rtol=0)


def test_planned_trajectories_respect_limits_for_random_goals(robot):
    torch.set_num_threads(1)
    scene, cluster, _ = make_scene()
    points = scene.points[0]
    gen = torch.Generator().manual_seed(3)
    config = small_config(optimizer=MPPIConfig(num_samples=16, iterations=2, noise_std=0.2, seed=1),
                          action=ActionSpaceConfig(gripper=True))
    planner = MPCPlanner(robot, RigidFollow(radius_m=0.05), config, horizon=5)
    step = planner.action_space.bounds(torch.float64, "cpu")[1][:6]
    for i in range(3):
        offset = (torch.rand(3, generator=gen, dtype=torch.float64) - 0.5) * 2.0
        q0 = q0_like()
        q0[0] = 1.5 - 0.01 * i  # start next to the x limit so clamping matters
        result = planner.plan(scene, q0, 1.0, translation_goal(points, cluster, offset), warm_start=False)
        q = result.q
        assert q.shape == (6, robot.num_joints) and result.actions.shape == (5, planner.action_space.dim)
        torch.testing.assert_close(q[0], q0, atol=0, rtol=0)
        limits = robot.to(torch.float64)  # exact limits (float32 would round 0.04 m down)
        assert bool(((q >= limits.lower) & (q <= limits.upper)).all())
        assert bool(((q[1:, :6] - q[:-1, :6]).abs() <= step + 1e-12).all())
        assert bool(((result.gripper_open >= 0) & (result.gripper_open <= 1)).all())
        assert torch.isfinite(torch.tensor(result.cost))


def test_joint_mismatch_and_bad_arguments(robot):
    scene, cluster, _ = make_scene()
    goal = translation_goal(scene.points[0], cluster, (0.05, 0.0, 0.0))
    planner = MPCPlanner(robot, ZeroMotion(), small_config(optimizer=MPPIConfig(num_samples=4, iterations=1)),
                         horizon=3)
    with pytest.raises(JointMismatchError, match="q0"):
        planner.plan(scene, torch.zeros(robot.num_joints - 1, dtype=torch.float64), 1.0, goal)
    with pytest.raises(JointMismatchError, match="q0"):
        planner.plan(scene, q0_like()[None], 1.0, goal)
    with pytest.raises(ValueError, match="gripper0"):
        planner.plan(scene, q0_like(), 1.5, goal)
    with pytest.raises(TypeError, match="goal"):
        planner.plan(scene, q0_like(), 1.0, "goal")
    with pytest.raises(TypeError, match="scene"):
        planner.plan(scene.points, q0_like(), 1.0, goal)
    with pytest.raises(ValueError, match="B = 1"):
        planner.plan(scene.expand(2), q0_like(), 1.0, goal)
    with pytest.raises(ValueError, match="static"):
        planner.plan(scene, q0_like(), 1.0, goal, static=torch.ones(3, dtype=torch.bool))
    with pytest.raises(TypeError, match="predictor"):
        MPCPlanner(robot, object())
    with pytest.raises(TypeError, match="robot"):
        MPCPlanner("panda", ZeroMotion())
    with pytest.raises(ValueError, match="execute_steps"):
        MPCPlanner(robot, ZeroMotion(), small_config(execute_steps=5), horizon=3)
    with pytest.raises(ValueError, match="robot_points"):
        PlannerConfig(robot_points=0)
    with pytest.raises(TypeError, match="optimizer"):
        PlannerConfig(optimizer={"num_samples": 3})


class _JointSpy:
    """Joint-hook predictor: records the trajectories it gets and predicts no motion."""

    def __init__(self, n: int, horizon: int) -> None:
        self.n, self.horizon, self.calls = n, horizon, []

    def predict_joints(self, q: torch.Tensor, gripper_open: torch.Tensor) -> Prediction:
        self.calls.append((q.clone(), gripper_open.clone()))
        k = q.shape[0]
        return Prediction(q.new_zeros((k, self.horizon, self.n, 3)), q.new_zeros((k, self.horizon, self.n)))

    def predict(self, scene, action):  # pragma: no cover - must never be called
        raise AssertionError("the joint hook must be used instead of predict()")


def test_joint_hook_and_warm_start(robot):
    scene, cluster, _ = make_scene()
    goal = translation_goal(scene.points[0], cluster, (0.05, 0.0, 0.0))
    spy = _JointSpy(scene.points.shape[1], 4)
    planner = MPCPlanner(robot, spy, small_config(optimizer=MPPIConfig(num_samples=8, iterations=2, noise_std=0.02),
                                                  costs=CostConfig(joint_limit=0.0, reach=0.0)), horizon=4)
    assert planner.uses_joint_hook
    first = planner.plan(scene, q0_like(), 1.0, goal)
    assert len(spy.calls) == 3 and spy.calls[0][0].shape == (8, 5, robot.num_joints)
    assert first.robot_points is None  # no cost term needed robot points (no reach, workspace box, static mask)
    # fresh start: candidate 0 is the zero-delta mean, i.e. the robot holding still
    torch.testing.assert_close(spy.calls[0][0][0], q0_like().expand(5, -1), atol=0, rtol=0)
    warm = planner.warm_start_mean
    assert warm is not None and warm.shape == (4, planner.action_space.dim)
    spy.calls.clear()
    planner.plan(scene, q0_like(), 1.0, goal)
    expected = planner.action_space.to_trajectory(q0_like(), warm[None], 1.0).q[0]
    torch.testing.assert_close(spy.calls[0][0][0], expected, atol=1e-12, rtol=0)
    planner.reset()
    assert planner.warm_start_mean is None
    spy.calls.clear()
    planner.plan(scene, q0_like(), 1.0, goal, warm_start=False)
    torch.testing.assert_close(spy.calls[0][0][0], q0_like().expand(5, -1), atol=0, rtol=0)


def test_timings_and_determinism(robot):
    scene, cluster, table = make_scene(torch.float32)
    goal = translation_goal(scene.points[0], cluster, (0.05, 0.0, 0.0), keep_still=table)
    config = small_config(optimizer=MPPIConfig(num_samples=8, iterations=2, noise_std=0.02),
                          costs=CostConfig(joint_limit=0.0, workspace_low=(0.0, -1.0, -0.1),
                                           workspace_high=(1.0, 1.0, 1.0)), static_max_z_m=0.005)
    a = MPCPlanner(robot, RigidFollow(0.05), config, horizon=4).plan(scene, q0_like(torch.float32), 1.0, goal)
    b = MPCPlanner(robot, RigidFollow(0.05), config, horizon=4).plan(scene, q0_like(torch.float32), 1.0, goal)
    for key in ("fk_s", "model_s", "cost_s", "total_s"):
        assert a.timings[key] >= 0.0
    assert a.timings["total_s"] >= a.timings["fk_s"] + a.timings["model_s"] + a.timings["cost_s"]
    assert a.timings["evaluations"] == 8 * 2 + 2
    assert a.actions.dtype == torch.float32 and a.q.dtype == torch.float32
    torch.testing.assert_close(a.actions, b.actions, atol=0, rtol=0)
    assert set(a.breakdown) >= {"goal", "keep_still", "workspace", "penetration", "smoothness"}
    assert a.breakdown["workspace"] == 0.0  # the hand stays inside the box


def test_chunked_prediction_matches_unchunked(robot):
    scene, cluster, _ = make_scene()
    goal = translation_goal(scene.points[0], cluster, (0.05, 0.0, 0.0))
    opt = MPPIConfig(num_samples=10, iterations=2, noise_std=0.02)
    whole = MPCPlanner(robot, RigidFollow(0.05), small_config(optimizer=opt), horizon=4)
    chunked = MPCPlanner(robot, RigidFollow(0.05), small_config(optimizer=opt, chunk_size=3), horizon=4)
    a, b = (p.plan(scene, q0_like(), 1.0, goal) for p in (whole, chunked))
    torch.testing.assert_close(a.actions, b.actions, atol=1e-12, rtol=0)
    assert a.cost == pytest.approx(b.cost, abs=1e-12)


class _EncodingFollow(RigidFollow):
    """RigidFollow with an encode_scene step; counts encodings and checks predict gets the encoding."""

    def __init__(self) -> None:
        super().__init__(0.05)
        self.encodings, self.robot_types = 0, []

    def encode_scene(self, scene: SceneInput) -> tuple[str, SceneInput]:
        self.encodings += 1
        return ("encoded", scene)

    def predict(self, scene, action: ActionInput) -> Prediction:
        assert isinstance(scene, tuple) and scene[0] == "encoded"
        self.robot_types.append(action.robot_type)
        return super().predict(scene[1], action)


def test_scene_is_encoded_once_per_plan(robot):
    scene, cluster, _ = make_scene()
    goal = translation_goal(scene.points[0], cluster, (0.05, 0.0, 0.0))
    predictor = _EncodingFollow()
    planner = MPCPlanner(robot, predictor, small_config(optimizer=MPPIConfig(num_samples=6, iterations=3)),
                         robot_type=2, horizon=4)
    planner.plan(scene, q0_like(), 1.0, goal)
    assert predictor.encodings == 1 and len(predictor.robot_types) == 4  # 3 iterations + final evaluation
    assert all(bool((t == 2).all()) and t.dtype == torch.int64 for t in predictor.robot_types)
    planner.plan(scene, q0_like(), 1.0, goal)
    assert predictor.encodings == 2


def test_world_model_predictor(robot):
    torch.set_num_threads(1)
    model = micro_world_model(horizon=3)
    scene, cluster, table = make_scene(torch.float32)
    goal = translation_goal(scene.points[0], cluster, (0.05, 0.0, 0.0), keep_still=table)
    with pytest.raises(ValueError, match="horizon"):
        MPCPlanner(robot, model, small_config(), horizon=10)
    config = small_config(optimizer=MPPIConfig(num_samples=4, iterations=1, noise_std=0.02), robot_points=32)
    planner = MPCPlanner(robot, model, config, horizon=3)
    assert planner.robot_type == model.config.robot_type_index("flying_gripper") == 2
    calls = []
    encode = model.encode_scene
    model.encode_scene = lambda s: calls.append(s) or encode(s)  # instance attribute: counts encodings
    try:
        result = planner.plan(scene, q0_like(torch.float32), 1.0, goal)
    finally:
        del model.encode_scene
    assert len(calls) == 1
    n = scene.points.shape[1]
    assert result.prediction.displacement.shape == (1, 3, n, 3)
    assert all(torch.isfinite(torch.tensor(v)) for v in result.breakdown.values())
    # the plan's prediction is the model's for the chosen trajectory
    from pointworld.robot.flow import robot_point_flow
    flow = robot_point_flow(robot, planner.surface, result.q[None], result.gripper_open[None])
    action = ActionInput(flow.features(), torch.ones((1, 32), dtype=torch.bool), torch.tensor([2]))
    torch.testing.assert_close(model.predict(scene, action).displacement, result.prediction.displacement,
                               atol=1e-5, rtol=1e-4)
    model.train()
    with pytest.raises(ValueError, match="eval"):
        planner.plan(scene, q0_like(torch.float32), 1.0, goal)
    model.eval()


def test_end_effector_action_space(robot):
    from pointworld.planning.ee_action_space import EndEffectorActionSpace

    scene, cluster, _ = make_scene()
    goal = translation_goal(scene.points[0], cluster, (0.05, 0.0, 0.0))
    spy = _JointSpy(scene.points.shape[1], 3)
    space = EndEffectorActionSpace(robot, "hand", ActionSpaceConfig(gripper=True))
    planner = MPCPlanner(robot, spy, small_config(optimizer=MPPIConfig(num_samples=4, iterations=1, noise_std=0.02)),
                         horizon=3, action_space=space)
    result = planner.plan(scene, q0_like(), 0.5, goal)
    assert result.actions.shape == (3, 5)
    # candidate 0 of a fresh plan holds still: zero EE deltas and the gripper command at its current opening
    first = spy.calls[0][0][0]
    torch.testing.assert_close(first[:, :6], q0_like()[:6].expand(4, -1), atol=1e-6, rtol=0)
    assert float(spy.calls[0][1][0, 0]) == 0.5


def test_joint_limit_cost_leaves_out_joints_no_candidate_moves(robot):
    """The finger of Q0 sits on its upper limit; held (gripper not planned) it adds nothing to the
    joint-limit term, while a planned joint entering its band still does."""
    from pointworld.planning.cost_terms import joint_limit_cost
    from pointworld.planning.rollout import commanded_limits

    scene, cluster, table = make_scene()
    goal = translation_goal(scene.points[0], cluster, (0.08, 0.0, 0.0), keep_still=table)
    planner = MPCPlanner(robot, ZeroMotion(), small_config(costs=CostConfig(joint_limit=1.0)), horizon=4)
    result = planner.plan(scene, q0_like(), 1.0, goal)
    assert result.breakdown["joint_limit"] == 0.0
    planned = MPCPlanner(robot, ZeroMotion(), small_config(costs=CostConfig(joint_limit=1.0),
                                                           action=ActionSpaceConfig(gripper=True)), horizon=4)
    assert planned.plan(scene, q0_like(), 1.0, goal).breakdown["joint_limit"] > 0.0  # a commanded finger counts
    q = q0_like().expand(3, 5, -1).clone()
    q[1, 2:, 0] += 0.1  # joint 0 moves in one candidate
    lower, upper = commanded_limits(q, robot.lower, robot.upper)
    moved = torch.zeros(robot.num_joints, dtype=torch.bool)
    moved[0] = True
    assert torch.equal(lower[moved], robot.lower.to(q)[moved]) and torch.equal(upper[moved], robot.upper.to(q)[moved])
    assert bool(torch.isinf(lower[~moved]).all() and torch.isinf(upper[~moved]).all())
    full = joint_limit_cost(q, robot.lower, robot.upper, 0.05)
    assert float(full.min()) > 0.9  # the finger on its limit, in every candidate
    assert float(joint_limit_cost(q, lower, upper, 0.05).max()) == 0.0
