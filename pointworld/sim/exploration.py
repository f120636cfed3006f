"""Scripted, contact-rich exploration of a :class:`~pointworld.sim.env.SimEnv` scene.

Behaviours (one per segment; TCP key poses in the world = robot base frame, turned into joint
trajectories by :func:`pointworld.sim.motions.plan_waypoints`):

- ``push``: closed gripper, from above a point beside a random object, down to just above the table,
  straight through the object's centre and beyond, back up;
- ``sweep``: the same along a random line across the table;
- ``grasp_lift_place``: open above an object (fingers closing across its narrower side), descend,
  close, lift, move, lower, open, lift;
- ``drawer_pull``: fingers pointing horizontally at the drawer handle, close around the bar, pull along
  the slide axis, open, back off;
- ``cloth_drag``: closed finger tips pressed onto the cloth near a corner, dragged outward;
- ``free_space``: one to three random poses above the table with random gripper openings;
- ``idle``: the joint targets stay constant (nothing moves).

The bimanual robot acts with its left, right or both arms (each arm plans its own behaviour of the
same kind; an arm that does not act holds its pose). A behaviour whose poses IK cannot reach is retried
on another target, then replaced by ``free_space``, then by ``idle``; :attr:`Behaviour.requested`
keeps the name originally drawn. Behaviours that need a drawer or cloth are drawn only when the scene
has one. Every trajectory lasts at least ``segment_steps`` control steps (holding the last target).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from pointworld.geometry.checks import require_int, require_positive
from pointworld.sim import behaviours as kb
from pointworld.sim.behaviours import SceneGeometry
from pointworld.sim.env import SimEnv
from pointworld.sim.motions import ArmSpec, arm_specs, plan_waypoints

BEHAVIOURS: tuple[str, ...] = ("push", "sweep", "grasp_lift_place", "drawer_pull", "cloth_drag",
                               "free_space", "idle")
_DEFAULT_WEIGHTS = {"push": 3.0, "sweep": 1.0, "grasp_lift_place": 2.0, "drawer_pull": 1.0,
                    "cloth_drag": 1.0, "free_space": 1.0, "idle": 1.0}
_KEYS = {"push": kb.push_keys, "sweep": kb.sweep_keys, "grasp_lift_place": kb.grasp_keys,
         "drawer_pull": kb.drawer_keys, "cloth_drag": kb.cloth_keys, "free_space": kb.free_space_keys}


@dataclass
class ExplorationConfig:
    """Exploration policy settings (mirrored by ``configs/exploration/default.yaml`` if present).

    Attributes:
        weights: behaviour name (:data:`BEHAVIOURS`) -> relative probability (>= 0, not all 0).
        segment_steps: least length of a segment, control steps (idle lasts exactly this long).
        max_ee_speed: TCP speed bound, m/s.
        velocity_fraction: fraction of each joint's velocity limit a trajectory may use, (0, 1].
        approach_height_m: clearance above the object (or table) of approach / retreat poses, m.
        push_distance_m: (min, max) distance pushed beyond the object's centre, m.
        both_arms_probability: bimanual only: chance that both arms act in one segment.
        target_tries: targets tried per arm before falling back to free-space motion.
        seed: seed of :func:`explore_episode` when it gets no generator.
    """

    weights: dict[str, float] = field(default_factory=lambda: dict(_DEFAULT_WEIGHTS))
    segment_steps: int = 20
    max_ee_speed: float = 0.25
    velocity_fraction: float = 0.5
    approach_height_m: float = 0.1
    push_distance_m: tuple[float, float] = (0.08, 0.18)
    both_arms_probability: float = 0.3
    target_tries: int = 3
    seed: int = 0

    def __post_init__(self) -> None:
        w = dict(self.weights)
        bad = [k for k in w if k not in BEHAVIOURS]
        if bad or any(not isinstance(v, (int, float)) or not np.isfinite(v) or v < 0 for v in w.values()) \
                or sum(w.values()) <= 0:
            raise ValueError(f"weights: expected non-negative finite weights for names in {BEHAVIOURS}, "
                             f"not all zero, got {self.weights!r}")
        self.weights = {k: float(w.get(k, 0.0)) for k in BEHAVIOURS}
        require_int("segment_steps", self.segment_steps, 1)
        require_int("target_tries", self.target_tries, 1)
        require_int("seed", self.seed, 0)
        for name in ("max_ee_speed", "approach_height_m"):
            require_positive(name, getattr(self, name))
        if not 0.0 < self.velocity_fraction <= 1.0:
            raise ValueError(f"velocity_fraction: expected a value in (0, 1], got {self.velocity_fraction!r}")
        if not 0.0 <= self.both_arms_probability <= 1.0:
            raise ValueError(f"both_arms_probability: expected a value in [0, 1], got "
                             f"{self.both_arms_probability!r}")
        d = self.push_distance_m
        d = tuple(d) if hasattr(d, "__len__") and not isinstance(d, str) else d  # lists, Hydra ListConfig
        if not (isinstance(d, tuple) and len(d) == 2 and all(isinstance(v, (int, float)) for v in d)
                and 0.0 <= d[0] <= d[1] < 1.0):
            raise ValueError(f"push_distance_m: expected (min, max) with 0 <= min <= max < 1 m, got {d!r}")
        self.push_distance_m = (float(d[0]), float(d[1]))


@dataclass
class Behaviour:
    """One planned segment.

    Attributes:
        name: the behaviour executed (one of :data:`BEHAVIOURS`).
        q_traj: (S, J) joint targets, one per control step, rad or m, float64, within the limits.
        gripper: (S, G) gripper openings in [0, 1] (1 = open), float64.
        arm: ``None`` (single-arm robot), ``"left"``, ``"right"`` or ``"both"``.
        target: the object / part acted on (``"+"``-joined for two arms), or None.
        requested: the behaviour originally drawn (differs from ``name`` after a fallback).
        planning_ms: wall time spent planning, ms.
    """

    name: str
    q_traj: torch.Tensor
    gripper: torch.Tensor
    arm: str | None
    target: str | None
    requested: str
    planning_ms: float = 0.0


def _available(env: SimEnv, config: ExplorationConfig) -> dict[str, float]:
    assert env.scene is not None
    w = dict(config.weights)
    if "drawer_handle" not in env.scene.articulated_names:
        w["drawer_pull"] = 0.0
    if "cloth" not in env.scene.deformable_names:
        w["cloth_drag"] = 0.0
    if not env.scene.object_names:
        w["push"] = w["grasp_lift_place"] = 0.0
    if sum(w.values()) <= 0:
        w["idle"] = 1.0
    return w


def _plan_arm(env: SimEnv, geo: SceneGeometry, arm: ArmSpec, name: str, q_start: np.ndarray,
              rng: np.random.Generator, config: ExplorationConfig) -> tuple[np.ndarray, np.ndarray, str | None] | None:
    """(q_traj (S, J), opening (S,), target) for one arm, or None if no target is reachable."""
    c = env.config
    gripper_steps = int(np.ceil(max(0.4, float(env.robot.upper[arm.gripper_column])
                                    / float(env.robot.velocity_limit[arm.gripper_column])
                                    / config.velocity_fraction) / c.control_dt_s)) + 2
    for _ in range(config.target_tries):
        keys = _KEYS[name](geo, arm, rng, config)
        if keys is None:
            return None
        xyz, R, opening, target = keys
        out = plan_waypoints(env.robot, arm, q_start, xyz, R, opening, dt=c.control_dt_s,
                             max_ee_speed=config.max_ee_speed, velocity_fraction=config.velocity_fraction,
                             gripper_steps=gripper_steps, seed=int(rng.integers(2**31)))
        if out is not None:
            return out[0], out[1], target
    return None


def _merge(q_start: np.ndarray, g_start: np.ndarray, parts: list[tuple[ArmSpec, np.ndarray, np.ndarray]],
           min_steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Overlay per-arm trajectories on a hold of ``q_start``; pad every one to the longest by holding."""
    steps = max([min_steps] + [len(q) for _, q, _ in parts])
    q = np.repeat(q_start[None], steps, axis=0)
    g = np.repeat(g_start[None], steps, axis=0)
    for arm, qa, ga in parts:
        cols = np.append(arm.columns, arm.gripper_column)
        q[:, cols] = np.concatenate([qa[:, cols], np.repeat(qa[-1:, cols], steps - len(qa), axis=0)])
        g[:, arm.gripper_slot] = np.concatenate([ga, np.repeat(ga[-1:], steps - len(ga))])
    return q, g


def _start_state(env: SimEnv, q_start: torch.Tensor | None) -> np.ndarray:
    if q_start is None:  # the simulated state may sit a hair outside a limit (e.g. squeezed fingers)
        return env.robot.clamp_to_limits(env.joint_positions()).numpy()
    q = env.robot.check_joint_limits(q_start, "q_start")
    return q.detach().to("cpu", torch.float64).numpy().copy()


def plan_behaviour(env: SimEnv, rng: np.random.Generator, config: ExplorationConfig,
                   q_start: torch.Tensor | None = None) -> Behaviour:
    """Draw a behaviour and plan it from the current scene state.

    Args:
        env: a reset environment (object poses, drawer and cloth are read from it).
        rng: the random generator driving every choice (same state -> same plan).
        config: exploration settings.
        q_start: (J,) joint positions to start from, rad or m (default: the simulated ones, clamped
            into the limits); pass the last commanded targets between segments.

    Returns:
        :class:`Behaviour` with ``q_traj`` (S, J) and ``gripper`` (S, G), S >= ``config.segment_steps``.
    """
    if not isinstance(config, ExplorationConfig):
        raise TypeError(f"config: expected an ExplorationConfig, got {type(config).__name__}")
    t0 = time.perf_counter()
    q0 = _start_state(env, q_start)
    arms = arm_specs(env.robot, env.home_q)
    g0 = np.array([q0[a.gripper_column] / float(env.robot.upper[a.gripper_column])
                   for a in sorted(arms.values(), key=lambda a: a.gripper_slot)]).clip(0.0, 1.0)
    weights = _available(env, config)
    names = list(weights)
    p = np.array([weights[n] for n in names])
    requested = str(rng.choice(names, p=p / p.sum()))
    if len(arms) == 1:
        chosen, label = list(arms.values()), None
    elif rng.random() < config.both_arms_probability:
        chosen, label = list(arms.values()), "both"
    else:
        chosen = [arms[str(rng.choice(sorted(arms)))]]
        label = chosen[0].name
    geo = SceneGeometry.read(env)
    for name in (requested, "free_space"):
        if name == "idle":
            break
        parts, targets = [], []
        for arm in chosen:
            out = _plan_arm(env, geo, arm, name, q0, rng, config)
            if out is not None:
                parts.append((arm, out[0], out[1]))
                targets.append(out[2])
        if parts:
            q, g = _merge(q0, g0, parts, config.segment_steps)
            label = label if len(parts) == len(chosen) else (parts[0][0].name if label else None)
            target = "+".join(t for t in targets if t) or None
            break
    else:
        name = "idle"
    if name == "idle":
        q, g = _merge(q0, g0, [], config.segment_steps)
        target = None
    ms = (time.perf_counter() - t0) * 1e3
    return Behaviour(name=name, q_traj=torch.from_numpy(q), gripper=torch.from_numpy(g), arm=label,
                     target=target, requested=requested, planning_ms=ms)


def explore_episode(env: SimEnv, n_segments: int, rng: np.random.Generator | None = None,
                    config: ExplorationConfig | None = None) -> Iterator[Behaviour]:
    """Yield ``n_segments`` behaviours, each planned from the scene state when it is requested.

    The caller must execute every behaviour (``env.execute(b.q_traj, b.gripper)``) before asking for
    the next one; each plan starts from the previous behaviour's last targets (the first from the
    simulated joint positions). ``rng`` None: ``np.random.default_rng(config.seed)``; ``config``
    None: the defaults. Arguments are checked when the first behaviour is requested.
    """
    n_segments = require_int("n_segments", n_segments, 1)
    config = ExplorationConfig() if config is None else config
    rng = np.random.default_rng(config.seed) if rng is None else rng
    q_last: torch.Tensor | None = None
    for _ in range(n_segments):
        b = plan_behaviour(env, rng, config, q_last)
        q_last = b.q_traj[-1]
        yield b
