"""Closed-loop MPC: observe -> plan -> execute a few steps -> observe -> track the goal points -> replan.

The goal points are tracked from the cameras alone and the next goal keeps the first observation's
world targets (:mod:`pointworld.planning.tracking` gives the formula). Observed points on the robot
itself (within 1.5 cm of its surface at the measured joints) and below the floor of the task's
selection box (the supporting table) take part in neither tracking nor selection. Only
:class:`SimRobot`, :func:`run_episode` (``TaskEnv.evaluate``) and the optional oracle touch the
simulator, and only they import it (MuJoCo is the ``sim`` extra); the rest runs on real cameras.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch

from pointworld.errors import EmptyCloudError
from pointworld.geometry.checks import require_floating, require_int, require_shape
from pointworld.planning.goals import PointGoal, goal_from_task
from pointworld.planning.lookback import ExecutedPath
from pointworld.planning.observation import (
    Observation,
    ObservationConfig,
    observe_scene,
)
from pointworld.planning.planner import MPCPlanner, PlanResult
from pointworld.planning.tracking import (
    fit_rigid_transform,
    near_robot,
    track_selection,
    tracked_goal,
)
from pointworld.robot.sampling import sample_surface_points

if TYPE_CHECKING:  # the simulator (MuJoCo, the ``sim`` extra) is imported only where it is used
    from pointworld.sim.task import Task, TaskEnv, TaskOutcome


class RobotInterface(Protocol):
    """What the closed loop needs from a robot (simulated or real)."""

    def joint_positions(self) -> torch.Tensor:
        """(J,) measured joint positions, rad or m, ``robot.joint_names`` order."""
        ...

    def gripper_open(self) -> float:
        """Current gripper opening command in [0, 1] (1 = open)."""
        ...

    def execute(self, q_traj: torch.Tensor, gripper_open: torch.Tensor) -> torch.Tensor:
        """Track ``q_traj`` (S, J) (one target per control step, rad or m) with gripper openings (S,)
        in [0, 1]; return the (S, J) measured joint positions."""
        ...


class SimRobot:
    """:class:`RobotInterface` of a :class:`TaskEnv` (create it after ``env.reset``).

    ``execute`` commands the simulator exactly as :class:`~pointworld.planning.oracle.SimOracle`
    replays candidates (see :func:`~pointworld.planning.oracle.gripper_command`).
    """

    def __init__(self, env: TaskEnv) -> None:
        from pointworld.sim.task import TaskEnv

        if not isinstance(env, TaskEnv):
            raise TypeError(f"env: expected a TaskEnv, got {type(env).__name__}")
        self.env = env
        self._command: float | None = None

    def joint_positions(self) -> torch.Tensor:
        """(J,) simulated joint positions, rad or m, float64."""
        return self.env.joint_positions()

    def gripper_open(self) -> float:
        """The last commanded opening; before any command, the measured finger opening / upper limit
        (mean over the grippers; 1.0 for a robot without gripper)."""
        if self._command is not None:
            return self._command
        index = self.env.sim.index
        if index is None or len(index.gripper) == 0:
            return 1.0
        q = self.env.joint_positions().numpy()
        return float(np.clip(np.mean(q[index.gripper] / index.gripper_upper), 0.0, 1.0))

    def execute(self, q_traj: torch.Tensor, gripper_open: torch.Tensor) -> torch.Tensor:
        """Track ``q_traj`` (S, J), rad or m, with gripper openings ``gripper_open`` (S,) in [0, 1];
        returns the (S, J) simulated joint positions, float64 (errors as ``TaskEnv.execute``)."""
        from pointworld.planning.oracle import gripper_command

        self.env.robot.check_joint_positions(q_traj, "q_traj")
        require_shape("q_traj", q_traj, (None, self.env.robot.num_joints), max_leading=0)
        require_floating("gripper_open", gripper_open)
        require_shape("gripper_open", gripper_open, (q_traj.shape[0],), max_leading=0)
        q64 = q_traj.detach().to("cpu", torch.float64)
        g64 = gripper_open.detach().to("cpu", torch.float64)
        out = self.env.execute(q64, gripper_command(self.env, g64))
        if g64.numel():
            self._command = float(g64[-1])
        return out



@dataclass
class EpisodeResult:
    """Outcome of :func:`run_episode`.

    Attributes:
        success: the task's success test passed after some execution.
        final_error_m: position error of the last evaluation, m.
        yaw_error_rad: yaw error of the last evaluation, rad (None where yaw is not part of the goal).
        replans: number of plans made.
        lookbacks: times the robot backed off along its executed path to find a goal it lost from view
            (:mod:`pointworld.planning.lookback`).
        plan_times_s: wall time of each ``plan()`` call, s.
        outcomes: the evaluation after each execution (of a plan's first steps, or of a retract).
        message: why the episode ended (success, out of replans, goal lost).
    """

    success: bool
    final_error_m: float
    yaw_error_rad: float | None
    replans: int
    lookbacks: int = 0
    plan_times_s: list[float] = field(default_factory=list)
    outcomes: list[TaskOutcome] = field(default_factory=list)
    message: str = ""


def _predicted_motion(points: torch.Tensor, displacement: torch.Tensor) -> torch.Tensor:
    """(4, 4) float64 rigid fit of the predicted motion of the goal points (P, 3) by their displacement
    (P, 3), m, world; a pure translation by the mean displacement when P < 3."""
    p, d = points.detach().to("cpu", torch.float64), displacement.detach().to("cpu", torch.float64)
    if p.shape[0] >= 3:
        return fit_rigid_transform(p, p + d)
    T = torch.eye(4, dtype=torch.float64)
    T[:3, 3] = d.mean(0)
    return T


class _GoalTracker:
    """The goal of a task across replans (module docstring), from observations and measured joints."""

    def __init__(self, env: TaskEnv, task: Task, obs: Observation, q: torch.Tensor) -> None:
        self.robot, self.surface = env.robot, sample_surface_points(env.robot, 2048, seed=0)
        self.floor_z = float(task.select_min_world[2])
        self.T_goal_start = torch.from_numpy(task.T_goal_start.copy())
        self.T_est = torch.eye(4, dtype=torch.float64)
        points = obs.scene.points[0]
        goal = goal_from_task(task, points)
        keep = ~near_robot(points, self.robot, self.surface, q)[goal.indices]
        if not bool(keep.any()):
            raise EmptyCloudError("points: every observed point of the task's selection lies on the robot")
        self.goal = PointGoal(goal.indices[keep], goal.targets[keep])
        self.points0 = points[self.goal.indices].to(torch.float64)

    def update(self, previous: Observation, plan: PlanResult, steps: int, obs: Observation,
               q: torch.Tensor) -> PointGoal:
        """Track the selection into ``obs`` (prior: the plan's predicted motion over ``steps``) and
        return the new goal (``EmptyCloudError`` if the selection is lost; the tracker is then unchanged,
        so the same update can be tried again on another observation)."""
        idx = self.goal.indices
        predicted_T = _predicted_motion(previous.scene.points[0][idx], plan.prediction.displacement[0, steps - 1, idx])
        points = obs.scene.points[0]
        robot = near_robot(points, self.robot, self.surface, q)
        T_new = track_selection(self.points0, self.T_est, points[~robot], predicted_T, min_z_m=self.floor_z)
        goal = tracked_goal(points, self.points0, T_new, self.T_goal_start, min_z_m=self.floor_z, exclude=robot)
        self.T_est, self.goal = T_new, goal  # only once the goal is built: a lost selection changes nothing
        return goal


def _observe(env: TaskEnv, config: ObservationConfig, planner: MPCPlanner) -> Observation:
    from pointworld.planning.oracle import SimOracle

    obs = observe_scene(env.observe(), config)
    if isinstance(planner.predictor, SimOracle):
        planner.predictor.bind(obs.cloud)
    return obs


def table_observation(env: TaskEnv, base: ObservationConfig | None = None) -> ObservationConfig:
    """``base`` (default settings if None) with its fusion workspace set to ``env.workspace_box()``: the
    crop follows the scene's table wherever the robot's table placement puts it."""
    base = ObservationConfig() if base is None else base
    low, high = env.workspace_box()
    fusion = dataclasses.replace(base.fusion, workspace_min_m=low, workspace_max_m=high)
    return dataclasses.replace(base, fusion=fusion)


def _look_back(env: TaskEnv, robot: SimRobot, path: ExecutedPath, lost: EmptyCloudError,
               observe_and_track: Callable[[], Observation], result: EpisodeResult,
               max_lookbacks: int) -> Observation | None:
    """After ``lost``: retract along ``path``, then observe and track again, up to ``max_lookbacks`` times.

    Each retract is evaluated into ``result`` (it may move what the robot touches). Returns the
    observation the goal was found in again, or None (``result.message`` set) when the goal stays lost,
    the path is used up, or a retract ends the task with success.
    """
    for _ in range(max_lookbacks):
        if not path.retract(robot, env.robot):
            break
        result.lookbacks += 1
        _record(result, env.evaluate())
        if result.success:
            result.message = "success"
            return None
        try:
            return observe_and_track()
        except EmptyCloudError as err:
            lost = err
    result.message = f"goal lost: {lost}"
    return None


def _record(result: EpisodeResult, outcome: TaskOutcome) -> None:
    """Append ``outcome`` to ``result`` and make it the episode's latest state."""
    result.outcomes.append(outcome)
    result.success, result.final_error_m, result.yaw_error_rad = (
        outcome.success, outcome.position_error_m, outcome.yaw_error_rad)


def run_episode(env: TaskEnv, planner: MPCPlanner, seed: int, max_replans: int = 10,
                observation: ObservationConfig | None = None,
                on_step: Callable[[int, Observation, PointGoal, PlanResult, TaskOutcome], None] | None = None,
                max_lookbacks: int = 2) -> EpisodeResult:
    """Reset ``env`` to the task of ``seed`` and run MPC until success or ``max_replans`` plans.

    ``observation`` None observes with :func:`table_observation` (the crop box over the scene's table).

    No scripted motion: the robot starts at its home pose and the planner's reach cost
    (:func:`~pointworld.planning.cost_terms.reach_cost`) brings it to the object. Each round: plan on the current
    observation, execute the first ``planner.config.execute_steps`` steps through :class:`SimRobot`,
    evaluate (stop on success), observe, track the selection (:func:`track_selection` on the observed
    points off the robot (:func:`near_robot`), prior = the plan's predicted motion of the goal points)
    and build the next goal (:func:`tracked_goal`; see the module docstring). When no observed point is
    left of the selection (the arm hides the object from every camera), the robot backs off along its
    executed path, one chunk in reverse at a time, and the same tracking is tried on a new observation
    (:mod:`pointworld.planning.lookback`), at most ``max_lookbacks`` times in a row (0: the episode
    ends at once with "goal lost"); after such a recovery the planner's warm start is dropped. A
    :class:`SimOracle` predictor is re-bound to every observation. ``on_step(replan, observation, goal,
    plan, outcome)`` is called after each execution, with the observation and goal the plan was made on.
    The measured joints handed to the planner are clamped into the limits (MuJoCo's limits are soft: a
    finger pressed open reads a few mm past its limit).
    """
    require_int("seed", seed, 0)
    require_int("max_replans", max_replans, 1)
    require_int("max_lookbacks", max_lookbacks, 0)
    steps = planner.config.execute_steps
    if steps < 1:
        raise ValueError(f"planner.config.execute_steps: expected >= 1 for a closed loop, got {steps}")
    task = env.reset(seed)
    config = table_observation(env) if observation is None else observation
    planner.reset()
    robot = SimRobot(env)
    obs = _observe(env, config, planner)
    q_start = robot.joint_positions()
    tracker, path = _GoalTracker(env, task, obs, q_start), ExecutedPath(q_start)
    result = EpisodeResult(False, math.inf, None, 0, message="out of replans")
    for r in range(max_replans):
        start = time.perf_counter()
        q0 = env.robot.clamp_to_limits(robot.joint_positions())
        goal = tracker.goal
        plan = planner.plan(obs.scene, q0, robot.gripper_open(), goal)
        result.plan_times_s.append(time.perf_counter() - start)
        result.replans = r + 1
        path.record(robot.execute(plan.q[1:steps + 1], plan.gripper_open[1:steps + 1]))
        outcome = env.evaluate()
        _record(result, outcome)
        if on_step is not None:
            on_step(r, obs, goal, plan, outcome)
        if outcome.success or r + 1 == max_replans:
            result.message = "success" if outcome.success else result.message
            break
        previous = obs

        def observe_and_track() -> Observation:
            new = _observe(env, config, planner)
            tracker.update(previous, plan, steps, new, robot.joint_positions())  # noqa: B023 (called this round)
            return new

        try:
            obs = observe_and_track()
        except EmptyCloudError as err:
            found = _look_back(env, robot, path, err, observe_and_track, result, max_lookbacks)
            if found is None:
                break
            obs = found
            planner.reset()  # the warm start was planned from where the robot no longer is
    return result
