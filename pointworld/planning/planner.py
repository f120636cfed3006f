"""The embodiment-agnostic MPC planner: candidate actions -> robot point flows -> predicted scene flow -> cost.

One :meth:`MPCPlanner.plan` call runs the optimizer (:func:`~pointworld.planning.optimizers.optimize`,
MPPI or CEM) over candidate actions (K, T, D), each batch scored by
:class:`~pointworld.planning.rollout.CandidateEvaluator`: action space -> joint trajectories -> robot point
flows of ``robot_points`` surface points on the links matching ``robot_links`` (sampled once at
construction) -> the predictor's scene flow -> :func:`~pointworld.planning.costs.total_cost`. A predictor
with ``encode_scene`` (the :class:`~pointworld.model.world_model.WorldModel`) encodes the scene once per
``plan()``. **Joint hook**: a predictor with ``predict_joints(q (K, T+1, J), gripper_open (K, T+1)) ->
Prediction`` (e.g. the simulator oracle, which replays joint commands) is called with the candidate
joint trajectories instead of ``predict`` (details in :mod:`pointworld.planning.rollout`).

The returned plan is the lower-cost one of the optimizer's final mean and the best candidate seen (both
re-evaluated together). Warm start: the optimizer's final mean shifted left by ``execute_steps``, the last
action repeated at the end (deltas keep their direction, gripper commands their value); :meth:`reset`
forgets it. Timings (s): ``fk_s``, ``model_s``, ``cost_s`` (see :class:`~pointworld.planning.rollout.PhaseClock`)
and ``total_s``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch

from pointworld.errors import JointMismatchError
from pointworld.geometry.checks import require_int, require_shape
from pointworld.geometry.se3 import check_rigid_transform
from pointworld.model.inputs import Prediction, SceneInput
from pointworld.planning.action_space import ActionSpaceConfig, JointDeltaActionSpace
from pointworld.planning.costs import CostConfig
from pointworld.planning.goals import PointGoal
from pointworld.planning.noise import shift_warm_start
from pointworld.planning.optimizers import CEMConfig, MPPIConfig, optimize
from pointworld.planning.rollout import (
    CandidateEvaluator,
    PhaseClock,
    RolloutSetup,
    TopCandidates,
)
from pointworld.robot.model import Robot
from pointworld.robot.sampling import sample_surface_points


@dataclass
class PlannerConfig:
    """Settings of :class:`MPCPlanner`.

    Attributes:
        optimizer: MPPI or CEM settings (samples K, iterations, noise in action units or, with
            ``std_relative_to_bounds``, as a fraction of each action dim's half-range).
        costs: cost weights and parameters.
        action: action-space settings (speed scale, dt_s, gripper planning, planned joints).
        robot_points: M, the number of robot surface points fed to the predictor.
        robot_links: link names or fnmatch patterns the robot points are sampled on.
        execute_steps: steps of each plan executed before the next plan (warm-start shift), 0..T.
        chunk_size: predict at most this many candidates at once, None = all K. Bounds memory, and on CPU
            it is faster too: 512 candidates in one call ran 2x slower than one at a time (bench_planning).
        static_max_z_m: scene points with z <= this (m, world) count as static obstacles (the table) in
            the penetration cost when ``plan()`` gets no ``static`` mask; None = no such default.
        keep_candidates: C, how many lowest-cost candidates of the last optimizer iteration the result
            keeps (their predicted displacement, for viewing); 0 = none.
    """

    optimizer: MPPIConfig | CEMConfig = field(default_factory=MPPIConfig)
    costs: CostConfig = field(default_factory=CostConfig)
    action: ActionSpaceConfig = field(default_factory=ActionSpaceConfig)
    robot_points: int = 256
    robot_links: tuple[str, ...] = ("*hand", "*finger")
    execute_steps: int = 3
    chunk_size: int | None = 32
    static_max_z_m: float | None = None
    keep_candidates: int = 4

    def __post_init__(self) -> None:
        for name, cls in (("optimizer", (MPPIConfig, CEMConfig)), ("costs", CostConfig),
                          ("action", ActionSpaceConfig)):
            if not isinstance(getattr(self, name), cls):
                raise TypeError(f"PlannerConfig.{name}: expected {cls}, got {type(getattr(self, name)).__name__}")
        require_int("robot_points", self.robot_points, 1)
        require_int("execute_steps", self.execute_steps, 0)
        require_int("keep_candidates", self.keep_candidates, 0)
        if self.chunk_size is not None:
            require_int("chunk_size", self.chunk_size, 1)
        if self.static_max_z_m is not None and not math.isfinite(self.static_max_z_m):
            raise ValueError(f"PlannerConfig.static_max_z_m: expected a finite height in m or None, "
                             f"got {self.static_max_z_m!r}")
        self.robot_links = (self.robot_links,) if isinstance(self.robot_links, str) else tuple(self.robot_links)


@dataclass
class PlanResult:
    """One plan.

    Attributes:
        actions: (T, D) chosen actions, action units (see the action space).
        q: (T+1, J) joint trajectory, rad or m, step 0 = q0.
        gripper_open: (T+1,) gripper opening in [0, 1].
        prediction: predicted scene flow of the chosen action (B = 1): displacement (1, T, N, 3) m world,
            log_var (1, T, N).
        cost: total cost of the chosen action.
        breakdown: unweighted cost terms of the chosen action, name -> value.
        cost_history: best cost after each optimizer iteration.
        timings: ``fk_s``, ``model_s``, ``cost_s``, ``total_s`` (s) and ``evaluations`` (candidates).
        robot_points: (T+1, M, 3) robot surface points along the chosen trajectory, m world (None if the
            joint hook made flows unnecessary).
        candidates: (C, T, N, 3) predicted displacement of the C = ``keep_candidates`` lowest-cost
            candidates of the last optimizer iteration, best first, m world (None when none are kept).
        candidate_costs: (C,) their costs, ascending (None when none are kept).
    """

    actions: torch.Tensor
    q: torch.Tensor
    gripper_open: torch.Tensor
    prediction: Prediction
    cost: float
    breakdown: dict[str, float]
    cost_history: list[float]
    timings: dict[str, float]
    robot_points: torch.Tensor | None = None
    candidates: torch.Tensor | None = None
    candidate_costs: torch.Tensor | None = None


def _opening(name: str, value: object) -> float:
    """A gripper opening: one real number (or one-element tensor) in [0, 1], else ``ValueError``."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    ok = ok or (isinstance(value, torch.Tensor) and value.numel() == 1 and value.is_floating_point())
    g = float(value) if ok else math.nan
    if not 0.0 <= g <= 1.0:
        raise ValueError(f"{name}: expected one opening in [0, 1] (1 = open), got {value!r}")
    return g


def _predictor_horizon(predictor: object) -> int | None:
    config = getattr(predictor, "config", None)
    value = getattr(config, "horizon", getattr(predictor, "horizon", None))
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class MPCPlanner:
    """Sampling-based MPC over a flow predictor (see the module docstring).

    Args:
        robot: the robot (URDF with link meshes); its dtype/device are irrelevant, every plan runs in the
            scene's dtype on the scene's device.
        predictor: a :class:`~pointworld.model.inputs.FlowPredictor` (``predict(scene | encoding, action)``),
            optionally with ``encode_scene(scene)`` (encoded once per plan) or ``predict_joints(q,
            gripper_open)`` (the joint hook, used instead of ``predict``).
        config: planner settings (default :class:`PlannerConfig`).
        robot_type: index of the robot in the predictor's robot vocabulary; None = the model's
            ``config.robot_type_index(robot.name)`` when the predictor has one, else 0 (unknown robot).
        T_world_base: (4, 4) rigid pose of the robot base in the world, or None (world = base frame).
        horizon: T, the number of planned steps; must equal the predictor's ``config.horizon`` (or
            ``horizon``) when it declares one.
        action_space: an action space with ``dim``, ``bounds(dtype, device)``, ``planned_joints`` and
            ``to_trajectory(q0, actions, gripper_open0)``; default a
            :class:`~pointworld.planning.action_space.JointDeltaActionSpace` of ``config.action``.
    """

    def __init__(self, robot: Robot, predictor: object, config: PlannerConfig | None = None,
                 robot_type: int | None = None, T_world_base: torch.Tensor | None = None,
                 horizon: int = 10, action_space: object | None = None) -> None:
        if not isinstance(robot, Robot):
            raise TypeError(f"robot: expected a pointworld Robot, got {type(robot).__name__}")
        self.config = PlannerConfig() if config is None else config
        if not isinstance(self.config, PlannerConfig):
            raise TypeError(f"config: expected a PlannerConfig, got {type(self.config).__name__}")
        if not (callable(getattr(predictor, "predict", None)) or callable(getattr(predictor, "predict_joints", None))):
            raise TypeError(f"predictor: expected an object with predict(scene, action) or "
                            f"predict_joints(q, gripper_open), got {type(predictor).__name__}")
        self.horizon = require_int("horizon", horizon, 1)
        model_horizon = _predictor_horizon(predictor)
        if model_horizon is not None and model_horizon != self.horizon:
            raise ValueError(f"horizon: the predictor predicts T = {model_horizon} steps, the planner was "
                             f"given horizon = {self.horizon}; use the model's horizon")
        if self.config.execute_steps > self.horizon:
            raise ValueError(f"config.execute_steps: expected at most the horizon {self.horizon}, "
                             f"got {self.config.execute_steps}")
        self.robot, self.predictor = robot, predictor
        self.robot_type = self._robot_type(robot, predictor, robot_type)
        self.T_world_base = None if T_world_base is None else self._check_base(T_world_base)
        self.action_space = action_space or JointDeltaActionSpace(robot, self.config.action)
        self.surface = sample_surface_points(robot, self.config.robot_points, links=list(self.config.robot_links))
        self._robots: dict[tuple[torch.dtype, torch.device], Robot] = {}
        self._warm: torch.Tensor | None = None

    @staticmethod
    def _robot_type(robot: Robot, predictor: object, robot_type: int | None) -> int:
        if robot_type is not None:
            return require_int("robot_type", robot_type, 0)
        index = getattr(getattr(predictor, "config", None), "robot_type_index", None)
        return int(index(robot.name)) if callable(index) else 0

    @staticmethod
    def _check_base(T: torch.Tensor) -> torch.Tensor:
        check_rigid_transform("T_world_base", T)
        return require_shape("T_world_base", T, (4, 4), max_leading=0)

    def reset(self) -> None:
        """Forget the warm start (call at the start of a new episode)."""
        self._warm = None

    @property
    def warm_start_mean(self) -> torch.Tensor | None:
        """(T, D) the mean the next ``plan(warm_start=True)`` starts from, or None after :meth:`reset`."""
        return self._warm

    @property
    def uses_joint_hook(self) -> bool:
        """True when the predictor is called through ``predict_joints`` (see module docstring)."""
        return callable(getattr(self.predictor, "predict_joints", None))

    def _robot_on(self, dtype: torch.dtype, device: torch.device) -> Robot:
        key = (dtype, device)
        if key not in self._robots:
            self._robots[key] = self.robot.to(dtype=dtype, device=device)
        return self._robots[key]

    def candidate_evaluator(self, scene: SceneInput, q0: torch.Tensor, gripper0: float, goal: PointGoal,
                            static: torch.Tensor | None, clock: PhaseClock) -> CandidateEvaluator:
        """The scorer that :meth:`plan` optimises: candidate actions (K, T, D) from this state -> costs.

        Args:
            scene: the observation, B = 1, points (1, N, 3) m world (checked by :meth:`plan`).
            q0: (J,) current joints, rad or m, in the scene's dtype and device. gripper0: opening in [0, 1].
            goal: goal indices (P,) and targets (P, 3), m world. static: (N,) bool points to keep clear
                of, or None. clock: the :class:`PhaseClock` its phases are charged to.

        Returns:
            A :class:`~pointworld.planning.rollout.CandidateEvaluator` (subclasses may wrap it, e.g. to score
            the same candidates with a second model).
        """
        return CandidateEvaluator(self._setup(q0.dtype, q0.device), scene, q0, gripper0, goal, static, clock)

    def plan(self, scene: SceneInput, q0: torch.Tensor, gripper0: float, goal: PointGoal,
             warm_start: bool = True, static: torch.Tensor | None = None) -> PlanResult:
        """Optimise the next T actions from the current state.

        Args:
            scene: the observed scene, B = 1: points (1, N, 3) m world frame (all of them are used as
                given; padding is ignored by the predictors but goal indices must point at real points).
            q0: (J,) current joint positions, rad or m, ``robot.joint_names`` order.
            gripper0: current gripper opening in [0, 1] (1 = open).
            goal: selected point indices (P,) into the N scene points and their targets (P, 3), m world.
            warm_start: start from the previous plan shifted by ``execute_steps`` (if there is one).
            static: (N,) bool scene points the robot must keep clear of (penetration cost), or None =
                points with z <= ``config.static_max_z_m`` (None there too: no penetration term).

        Returns:
            :class:`PlanResult` (tensors in the scene's dtype on the scene's device).

        Raises:
            JointMismatchError: ``q0`` has not the robot's J joints. ValueError/TypeError: bad scene,
            goal, gripper0 or static mask, a predictor in training mode.
        """
        clock_start = time.perf_counter()
        points = self._check_scene(scene)
        dtype, device = points.dtype, points.device
        q0 = self._check_q0(q0)
        g0 = _opening("gripper0", gripper0)
        if not isinstance(goal, PointGoal):
            raise TypeError(f"goal: expected a PointGoal, got {type(goal).__name__}")
        static = self._static_mask(static, points)
        clock = PhaseClock(device)
        evaluate = self.candidate_evaluator(scene, q0.to(dtype=dtype, device=device), g0, goal, static, clock)
        low, high = self.action_space.bounds(dtype, device)
        top = TopCandidates(evaluate, self.config.keep_candidates)
        result = optimize(top, self._initial_mean(g0, dtype, device, warm_start), self.config.optimizer, low, high)
        final = torch.stack([result.mean, result.best])
        ev = evaluate(final)
        k = int(torch.argmin(ev.costs))
        self._warm = shift_warm_start(result.mean, self.config.execute_steps, fill="last")
        timings = dict(clock.totals, total_s=clock.now() - clock_start, evaluations=float(clock.evaluations))
        pred = ev.prediction
        return PlanResult(
            actions=final[k], q=ev.trajectory.q[k], gripper_open=ev.trajectory.gripper_open[k],
            prediction=Prediction(pred.displacement[k:k + 1], pred.log_var[k:k + 1]),
            cost=float(ev.costs[k]), breakdown={n: float(v[k]) for n, v in ev.breakdown.items()},
            cost_history=list(result.cost_history), timings=timings,
            robot_points=None if ev.robot_points is None else ev.robot_points[k],
            candidates=top.displacement, candidate_costs=top.costs)

    # ------------------------------------------------------------------------------------ helpers
    def _setup(self, dtype: torch.dtype, device: torch.device) -> RolloutSetup:
        """The fixed parts of a candidate evaluation in ``dtype`` on ``device``."""
        base = None if self.T_world_base is None else self.T_world_base.to(dtype=dtype, device=device)
        dt_s = getattr(getattr(self.action_space, "config", None), "dt_s", self.config.action.dt_s)
        return RolloutSetup(robot=self._robot_on(dtype, device), surface=self.surface,
                            action_space=self.action_space, predictor=self.predictor, costs=self.config.costs,
                            robot_type=self.robot_type, chunk_size=self.config.chunk_size, dt_s=dt_s,
                            T_world_base=base)

    def _check_scene(self, scene: object) -> torch.Tensor:
        if not isinstance(scene, SceneInput):
            raise TypeError(f"scene: expected a SceneInput, got {type(scene).__name__}")
        if scene.batch_size != 1:
            raise ValueError(f"scene: expected one observed scene (B = 1), got B = {scene.batch_size}")
        if isinstance(self.predictor, torch.nn.Module) and self.predictor.training:
            raise ValueError("predictor: the model is in training mode (dropout, robot-type dropout); call "
                             "model.eval() before planning")
        return scene.points[0]

    def _check_q0(self, q0: object) -> torch.Tensor:
        q0 = self.robot.check_joint_positions(q0, "q0")  # JointMismatchError if the last dim is not J
        if q0.dim() != 1:
            raise JointMismatchError(f"q0: expected one joint vector ({self.robot.num_joints},) of robot "
                                     f"{self.robot.name!r}, got shape {tuple(q0.shape)}")
        return q0

    def _static_mask(self, static: object, points: torch.Tensor) -> torch.Tensor | None:
        if static is None:
            z = self.config.static_max_z_m
            return None if z is None else points[:, 2] <= z
        if not isinstance(static, torch.Tensor) or static.dtype != torch.bool or static.shape != points.shape[:1]:
            raise ValueError(f"static: expected a ({points.shape[0]},) bool tensor (one flag per scene point), "
                             f"got {getattr(static, 'dtype', type(static).__name__)} of shape "
                             f"{tuple(getattr(static, 'shape', ()))}")
        return static.to(points.device)

    def _initial_mean(self, g0: float, dtype: torch.dtype, device: torch.device, warm: bool) -> torch.Tensor:
        """(T, D) the warm start if there is one of the right shape, else no motion: 0 for every delta dim
        and the current opening ``g0`` for every gripper-command dim (the dims bounded by [0, 1])."""
        T, D = self.horizon, int(self.action_space.dim)
        if warm and self._warm is not None and tuple(self._warm.shape) == (T, D):
            return self._warm.to(dtype=dtype, device=device)
        low, high = self.action_space.bounds(dtype, device)
        command = (low == 0) & (high == 1)
        return torch.where(command, torch.full_like(low, g0), torch.zeros_like(low)).expand(T, D).clone()
