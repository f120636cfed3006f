"""Evaluation of K candidate action sequences for the MPC planner, with a per-phase clock.

One evaluation (:class:`CandidateEvaluator`): actions (K, T, D) -> joint trajectories through the action
space -> robot point flows of the sampled surface points (forward kinematics, world frame) -> the
predictor's scene flow (K, T, N, 3) -> :func:`~pointworld.planning.costs.total_cost`. A predictor with
``predict_joints(q (K, T+1, J), gripper_open (K, T+1))`` (the joint hook, e.g. the simulator oracle) gets
the joint trajectories instead of an ActionInput; robot point flows are then computed only when a cost
term needs robot points (workspace, penetration, reach). Predictions run under ``torch.no_grad`` in
chunks of at most ``chunk_size`` candidates.

Timings (:class:`PhaseClock`, s): ``fk_s`` (trajectories + robot point flows), ``model_s`` (scene
encoding + predictions), ``cost_s``. On CUDA the device is synchronised before each clock read, so the
split is exact but the evaluation runs slightly slower than unsynchronised.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch

from pointworld.model.inputs import ActionInput, Prediction, SceneInput
from pointworld.planning.action_space import JointTrajectory
from pointworld.planning.costs import CostConfig, total_cost
from pointworld.planning.goals import PointGoal
from pointworld.robot.flow import robot_point_flow
from pointworld.robot.model import Robot
from pointworld.robot.sampling import RobotSurfacePoints


class PhaseClock:
    """Accumulates wall time (s) per phase (``fk_s``, ``model_s``, ``cost_s``) and counts evaluated
    candidates; synchronises ``device`` before each read when it is a CUDA device."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.device = device
        self.totals = {"fk_s": 0.0, "model_s": 0.0, "cost_s": 0.0}
        self.evaluations = 0
        self.last = self.now()

    def now(self) -> float:
        """The current time, s (after the device finished its queued work)."""
        if self.cuda:
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def lap(self, phase: str) -> None:
        """Add the time since the previous lap (or :meth:`restart`) to ``phase``."""
        t = self.now()
        self.totals[phase] += t - self.last
        self.last = t

    def restart(self) -> None:
        """Start the next lap now (time since the last lap is counted nowhere)."""
        self.last = self.now()


@dataclass
class Evaluation:
    """Candidates scored by :class:`CandidateEvaluator`.

    Attributes:
        costs: (K,) total cost. breakdown: term name -> (K,) unweighted term.
        prediction: displacement (K, T, N, 3) m world, log_var (K, T, N).
        trajectory: joint trajectories q (K, T+1, J), gripper_open (K, T+1).
        robot_points: (K, T+1, M, 3) robot surface points per step, m world, or None (not needed).
    """

    costs: torch.Tensor
    breakdown: dict[str, torch.Tensor]
    prediction: Prediction
    trajectory: JointTrajectory
    robot_points: torch.Tensor | None


def predict_candidates(predictor: object, context: object, traj: JointTrajectory, features: torch.Tensor | None,
                       robot_type: int, chunk_size: int | None) -> Prediction:
    """Scene flow of K candidates, in chunks of ``chunk_size`` (None = all at once), without gradients.

    Args:
        predictor: has ``predict_joints(q, gripper_open)`` (used if present) or ``predict(context, action)``.
        context: the SceneInput (B = 1) or the predictor's scene encoding of it.
        traj: q (K, T+1, J) rad or m, gripper_open (K, T+1) in [0, 1].
        features: (K, T+1, M, C) robot point flow features, world frame (unused by the joint hook).
        robot_type: index of the robot in the predictor's vocabulary.

    Returns:
        Prediction with displacement (K, T, N, 3), m world, and log_var (K, T, N).
    """
    K = traj.q.shape[0]
    chunk = chunk_size or K
    hook = callable(getattr(predictor, "predict_joints", None))
    parts = []
    with torch.no_grad():
        for s in range(0, K, chunk):
            if hook:
                parts.append(predictor.predict_joints(traj.q[s:s + chunk], traj.gripper_open[s:s + chunk]))
                continue
            f = features[s:s + chunk]
            k, m = f.shape[0], f.shape[2]
            action = ActionInput(flow=f, mask=torch.ones((k, m), dtype=torch.bool, device=f.device),
                                 robot_type=torch.full((k,), robot_type, dtype=torch.int64, device=f.device))
            parts.append(predictor.predict(context, action))
    if len(parts) == 1:
        return parts[0]
    return Prediction(torch.cat([p.displacement for p in parts]), torch.cat([p.log_var for p in parts]))


def commanded_limits(q: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Joint limits for the joint-limit cost with the held joints left out (limits +-inf).

    A held joint (a gripper that is not planned, a joint outside the action space) adds the same amount
    to every candidate, which changes no choice but hides the other terms in the reported cost (a
    gripper held open sits on its limit). :class:`CandidateEvaluator` passes the trajectories of the
    all-low and all-high actions, so every evaluation of one plan uses the same limits.

    Args:
        q: (K, T+1, J) joint trajectories, rad or m (e.g. the probes above).
        lower, upper: (J,) joint limits, same units.

    Returns:
        (lower, upper): (J,) each, ``-inf`` / ``+inf`` where ``q`` equals ``q[0, 0]`` at every step of
        every trajectory.
    """
    held = (q == q[:1, :1]).flatten(0, 1).all(0)
    lower, upper = lower.to(q), upper.to(q)
    return (torch.where(held, torch.full_like(lower, -math.inf), lower),
            torch.where(held, torch.full_like(upper, math.inf), upper))


@dataclass
class RolloutSetup:
    """What stays fixed while the candidates of one ``plan()`` call are evaluated.

    Attributes:
        robot: the robot in the scene's dtype/device. surface: M sampled surface points.
        action_space: ``to_trajectory(q0, actions, gripper_open0)``. predictor: the flow predictor.
        costs: cost weights. robot_type: predictor robot index. chunk_size: candidates per prediction.
        dt_s: step duration, s. T_world_base: (4, 4) base pose in the world, or None.
    """

    robot: Robot
    surface: RobotSurfacePoints
    action_space: object
    predictor: object
    costs: CostConfig
    robot_type: int
    chunk_size: int | None
    dt_s: float
    T_world_base: torch.Tensor | None = None


class CandidateEvaluator:
    """Scores candidate actions (K, T, D) from one state (see the module docstring).

    Args:
        setup: the fixed parts. scene: the observation, B = 1, points (1, N, 3) m world (encoded once
            here when the predictor has ``encode_scene`` and no joint hook).
        q0: (J,) current joints, rad or m, scene dtype/device. gripper0: current opening in [0, 1].
        goal: goal indices (P,) into the N points and targets (P, 3), m world.
        static: (N,) bool points to keep clear of, or None. clock: the :class:`PhaseClock` to charge.
    """

    def __init__(self, setup: RolloutSetup, scene: SceneInput, q0: torch.Tensor, gripper0: float, goal: PointGoal,
                 static: torch.Tensor | None, clock: PhaseClock) -> None:
        self.setup, self.scene, self.q0, self.gripper0 = setup, scene, q0, gripper0
        self.goal, self.static, self.clock = goal, static, clock
        low, high = setup.action_space.bounds(q0.dtype, q0.device)  # probe: every action at a bound
        probe = setup.action_space.to_trajectory(q0, torch.stack([low, high])[:, None], gripper0).q
        self.limits = commanded_limits(probe, setup.robot.lower, setup.robot.upper)
        cfg = setup.costs
        self.hook = callable(getattr(setup.predictor, "predict_joints", None))
        self.need_flow = (not self.hook or cfg.reach > 0
                          or (cfg.workspace > 0 and cfg.workspace_low is not None)
                          or (cfg.penetration > 0 and static is not None))
        clock.restart()
        self.context: object = scene
        if not self.hook and callable(getattr(setup.predictor, "encode_scene", None)):
            with torch.no_grad():
                self.context = setup.predictor.encode_scene(scene)
            clock.lap("model_s")

    def __call__(self, actions: torch.Tensor) -> Evaluation:
        """Evaluate candidates (K, T, D) within the action space's bounds -> :class:`Evaluation`."""
        s, clock = self.setup, self.clock
        clock.restart()
        traj = s.action_space.to_trajectory(self.q0, actions, self.gripper0)
        flow = None
        if self.need_flow:
            flow = robot_point_flow(s.robot, s.surface, traj.q, traj.gripper_open, dt_s=s.dt_s,
                                    T_world_base=s.T_world_base, validate=False)
        clock.lap("fk_s")
        prediction = predict_candidates(s.predictor, self.context, traj, None if flow is None else flow.features(),
                                        s.robot_type, s.chunk_size)
        clock.lap("model_s")
        robot_points = None if flow is None else flow.points
        costs, breakdown = total_cost(s.costs, self.scene.points[0], prediction, self.goal, actions, traj.q,
                                      *self.limits, robot_points, self.static)
        clock.lap("cost_s")
        clock.evaluations += int(actions.shape[0])
        return Evaluation(costs, breakdown, prediction, traj, robot_points)


class TopCandidates:
    """Wraps a :class:`CandidateEvaluator` as the optimizer's cost function and keeps the ``keep`` lowest-cost
    candidates of the latest call (the optimizer's last iteration once it returns), best first.

    Only the kept predictions are retained (indexed out of the evaluation that already ran, whatever its
    chunking); +inf-cost (infeasible) candidates are never kept, so fewer than ``keep`` may remain.

    Attributes:
        displacement: (C, T, N, 3) predicted displacement of the kept candidates, m world, or None.
        costs: (C,) their total costs, ascending, or None. ``keep = 0`` keeps nothing (both stay None).
    """

    def __init__(self, evaluate: CandidateEvaluator, keep: int) -> None:
        self.evaluate, self.keep = evaluate, keep
        self.displacement: torch.Tensor | None = None
        self.costs: torch.Tensor | None = None

    def __call__(self, actions: torch.Tensor) -> torch.Tensor:
        """Evaluate candidates (K, T, D) -> costs (K,), remembering the best ``keep`` of them."""
        ev = self.evaluate(actions)
        if self.keep > 0:
            finite = int(torch.isfinite(ev.costs).sum())
            costs, idx = torch.topk(ev.costs, min(self.keep, finite), largest=False, sorted=True)
            self.displacement, self.costs = ev.prediction.displacement[idx].clone(), costs.clone()
        return ev.costs
