"""A task environment for the planner: a seeded scene with a goal, cameras, execution and evaluation.

:class:`TaskEnv` wraps :class:`pointworld.sim.env.SimEnv`: ``reset(seed)`` builds the scene, draws
the camera rig and a goal (:class:`pointworld.sim.task_goals.Task`: move the points in a box by a
rigid motion), ``observe()`` renders a :class:`pointworld.capture.frame.SceneCapture` like a real rig
would deliver (robot pixels included), ``execute`` tracks a joint trajectory, and ``evaluate()``
scores the true simulator state against the goal. Everything random derives from the reset seed
through independent streams (scene: ``SimEnv.reset(seed)``; camera rig, goal and depth noise:
``numpy.random.SeedSequence(seed).spawn(3)``), so one seed gives the same scene, cameras, goal and,
for the same sequence of calls, the same observations. The camera rig config's own ``seed`` is not
used. Configuration: :class:`TaskConfig`, mirrored by ``configs/task/{push,drawer,cloth}.yaml``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import torch

from pointworld.capture.frame import RGBDFrame, SceneCapture
from pointworld.geometry.checks import require_int, require_positive
from pointworld.robot.model import Robot
from pointworld.sim.cameras import VIEW_ORDER, CameraRigConfig, sample_cameras
from pointworld.sim.config import SceneConfig, require_range
from pointworld.sim.env import SimEnv
from pointworld.sim.render import DepthNoiseConfig, add_depth_noise, render_views
from pointworld.sim.task_goals import (
    KINDS,
    Task,
    TaskOutcome,
    cloth_outcome,
    drawer_outcome,
    push_outcome,
    sample_cloth_task,
    sample_drawer_task,
    sample_push_task,
)

__all__ = ["KINDS", "Task", "TaskConfig", "TaskEnv", "TaskOutcome"]

_SAMPLERS = {"push": sample_push_task, "drawer": sample_drawer_task, "cloth": sample_cloth_task}


@dataclass
class TaskConfig:
    """What to ask of the planner, and how the scene is observed (units m, rad).

    Attributes:
        kind: ``"push"`` (move one object), ``"drawer"`` (open the drawer; the scene needs
            ``include_drawer``) or ``"cloth"`` (drag a cloth corner; the scene needs ``include_cloth``).
        push_distance_m: (min, max) distance between the object's start and goal positions, m.
        push_yaw_rad: (min, max) turn of the object about the vertical, rad, within [-pi, pi].
        position_tolerance_m: push success bound on the object's position error, m.
        yaw_tolerance_rad: push success bound on the yaw error (non-round shapes), rad.
        max_object_extent_m: only objects whose largest side is at most this are push targets, m.
        table_margin_m: push goal discs and cloth goal points stay this far inside the table edges, m.
        drawer_open_m: (min, max) goal opening of the drawer (slide position), m.
        drawer_tolerance_m: drawer success bound on |opening - goal|, m.
        cloth_distance_m: (min, max) distance the chosen cloth corner should move along the table, m.
        cloth_tolerance_m: cloth success bound on the corner's distance to its goal point, m.
        cameras: the camera rig of ``observe()`` (a mapping is converted to :class:`CameraRigConfig`).
        depth_noise: corrupt observed depth with sensor-like noise (:class:`DepthNoiseConfig` defaults).
    """

    kind: str = "push"
    push_distance_m: tuple[float, float] = (0.08, 0.15)
    push_yaw_rad: tuple[float, float] = (-0.5, 0.5)
    position_tolerance_m: float = 0.03
    yaw_tolerance_rad: float = 0.35
    max_object_extent_m: float = 0.15
    table_margin_m: float = 0.05
    drawer_open_m: tuple[float, float] = (0.06, 0.10)
    drawer_tolerance_m: float = 0.02
    cloth_distance_m: tuple[float, float] = (0.08, 0.15)
    cloth_tolerance_m: float = 0.03
    cameras: CameraRigConfig = field(default_factory=CameraRigConfig)
    depth_noise: bool = False

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind: expected one of {KINDS}, got {self.kind!r}")
        for name in ("push_distance_m", "drawer_open_m", "cloth_distance_m"):
            setattr(self, name, require_range(name, getattr(self, name)))
        self.push_yaw_rad = require_range("push_yaw_rad", self.push_yaw_rad, -math.pi, strict=False)
        if self.push_yaw_rad[1] > math.pi:
            raise ValueError(f"push_yaw_rad: expected a range within [-pi, pi] rad, got {self.push_yaw_rad}")
        for name in ("position_tolerance_m", "yaw_tolerance_rad", "max_object_extent_m",
                     "drawer_tolerance_m", "cloth_tolerance_m"):
            setattr(self, name, require_positive(name, getattr(self, name)))
        m = self.table_margin_m
        if isinstance(m, bool) or not isinstance(m, (int, float)) or not 0.0 <= m < math.inf:
            raise ValueError(f"table_margin_m: expected a finite number >= 0 m, got {m!r}")
        if isinstance(self.cameras, Mapping):
            self.cameras = CameraRigConfig(**self.cameras)
        if not isinstance(self.cameras, CameraRigConfig):
            raise TypeError(f"cameras: expected a CameraRigConfig or a mapping of its fields, got "
                            f"{type(self.cameras).__name__}")
        if not isinstance(self.depth_noise, bool):
            raise TypeError(f"depth_noise: expected a bool, got {self.depth_noise!r}")


class TaskEnv:
    """A simulated table-top task: reset to a goal, observe, execute joint trajectories, evaluate.

    Args:
        scene: the scene (robot, objects, drawer, cloth, physics and control periods).
        task: the task kind, goal ranges, tolerances and cameras.

    Raises:
        TypeError: wrong config types.
        ValueError: a task the scene cannot hold (drawer task without ``include_drawer``, cloth task
            without ``include_cloth``, push task with ``n_objects`` (0, 0)).
    """

    def __init__(self, scene: SceneConfig, task: TaskConfig) -> None:
        if not isinstance(scene, SceneConfig):
            raise TypeError(f"scene: expected a SceneConfig, got {type(scene).__name__}")
        if not isinstance(task, TaskConfig):
            raise TypeError(f"task: expected a TaskConfig, got {type(task).__name__}")
        if task.kind == "drawer" and not scene.include_drawer:
            raise ValueError("scene.include_drawer: the drawer task needs a scene with a drawer, got False")
        if task.kind == "cloth" and not scene.include_cloth:
            raise ValueError("scene.include_cloth: the cloth task needs a scene with a cloth, got False")
        if task.kind == "push" and scene.n_objects[1] < 1:
            raise ValueError(f"scene.n_objects: the push task needs at least one object, got {scene.n_objects}")
        self.config = task
        self._sim = SimEnv(scene)
        self._task: Task | None = None
        self._rig: tuple[np.ndarray, np.ndarray] | None = None
        self._noise_rng: np.random.Generator | None = None

    def reset(self, seed: int | None = None) -> Task:
        """Build the scene of ``seed`` (the scene config's seed if None), draw the cameras and the goal.

        Raises:
            ValueError: the scene drawn from this seed admits no goal (message names the seed).
        """
        seed = self._sim.config.seed if seed is None else require_int("seed", seed, 0)
        self._task = None
        self._sim.reset(seed)
        cams, goal, noise = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3))
        x, y, _ = self._sim.config.table_placement(self._sim.robot.name)
        self._rig = sample_cameras(self.config.cameras, (x, y, self._sim.scene.table_top_z), cams)
        self._noise_rng = noise
        self._task = _SAMPLERS[self.config.kind](self._sim, self.config, goal, seed)
        return self._task

    def _require_reset(self) -> Task:
        if self._task is None:
            raise RuntimeError("TaskEnv: call reset() before using the environment")
        return self._task

    def workspace_box(self, margin_m: float = 0.05, height_m: float = 0.6
                      ) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
        """World-frame box over this scene's table: its xy extent grown by ``margin_m`` on every side,
        from ``margin_m`` below the table top to ``height_m`` above it (the planner's crop), m.

        Returns:
            (min corner, max corner), each (x, y, z) m, world frame.
        """
        require_positive("margin_m", margin_m)
        require_positive("height_m", height_m)
        config = self._sim.config
        x, y, _ = config.table_placement(self._sim.robot.name)
        top = self._sim.scene.table_top_z
        hx, hy = config.table_size_m[0] / 2 + margin_m, config.table_size_m[1] / 2 + margin_m
        return (x - hx, y - hy, top - margin_m), (x + hx, y + hy, top + height_m)

    @property
    def task(self) -> Task:
        """The goal drawn by the last :meth:`reset`."""
        return self._require_reset()

    @property
    def sim(self) -> SimEnv:
        """The wrapped simulator (``get_state``/``set_state`` for model-based planning, body poses, ...)."""
        return self._sim

    @property
    def robot(self) -> Robot:
        """The robot model (float64), joint order of :meth:`execute` and :meth:`joint_positions`."""
        return self._sim.robot

    @property
    def cameras(self) -> tuple[np.ndarray, np.ndarray]:
        """K (V, 3, 3) intrinsics, pixels, and T_world_cam (V, 4, 4) OpenCV optical frames, m (copies)."""
        self._require_reset()
        assert self._rig is not None
        return self._rig[0].copy(), self._rig[1].copy()

    @property
    def serials(self) -> list[str]:
        """Camera serials of :meth:`observe`: ``sim_front_left``, ``sim_front_right``, ``sim_top``."""
        return [f"sim_{name}" for name in VIEW_ORDER[:self.config.cameras.n_views]]

    def observe(self) -> SceneCapture:
        """Render the V cameras at the current state: RGB, z-depth (m, 0 = no return; noisy if
        ``depth_noise``), intrinsics, poses, serials, ``timestamp_s`` = simulated time, s."""
        self._require_reset()
        assert self._rig is not None and self._noise_rng is not None
        sim, cam = self._sim, self.config.cameras
        K, T = self._rig
        rgb, depth, _ = render_views(sim.model, sim.data, K, T, cam.height, cam.width)
        if self.config.depth_noise:
            depth = add_depth_noise(depth, DepthNoiseConfig(), self._noise_rng)
        t = float(sim.data.time)
        return SceneCapture(tuple(RGBDFrame(rgb[v], depth[v], K[v], T[v], serial, t)
                                  for v, serial in enumerate(self.serials)))

    def execute(self, q_traj: torch.Tensor, gripper: torch.Tensor | None = None) -> torch.Tensor:
        """Track ``q_traj`` (S, J) (rad or m, one target per control step; optional ``gripper`` (S,) or
        (S, G) openings in [0, 1]); returns the (S, J) simulated joint positions (see ``SimEnv.execute``)."""
        self._require_reset()
        return self._sim.execute(q_traj, gripper)

    def joint_positions(self) -> torch.Tensor:
        """(J,) simulated joint positions in ``robot.joint_names`` order, rad or m, float64."""
        self._require_reset()
        return self._sim.joint_positions()

    def object_poses(self) -> dict[str, torch.Tensor]:
        """Body name -> (4, 4) ``T_world_body`` (m, float64) of every free object and drawer part."""
        self._require_reset()
        return self._sim.object_poses()

    def evaluate(self) -> TaskOutcome:
        """Score the true simulator state against the goal of the last reset."""
        task, sim = self._require_reset(), self._sim
        if task.kind == "push":
            return push_outcome(task, sim.body_poses([task.target])[0].numpy())
        if task.kind == "drawer":
            joint = sim.model.joint("drawer_slide")
            return drawer_outcome(task, float(sim.data.qpos[joint.qposadr[0]]))
        assert task.cloth_vertex is not None
        return cloth_outcome(task, sim.flex_vertices("cloth")[task.cloth_vertex].numpy())
