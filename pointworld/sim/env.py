"""A small MuJoCo environment: build a seeded table-top scene, execute joint trajectories, read poses.

Control model: ``execute`` takes one joint target per control step (every ``control_dt_s``); within a
control step the servo target moves linearly from the previous target to the new one (with the matching
velocity feed-forward), and physics runs ``control_dt_s / timestep_s`` steps. The robot is gravity
compensated, so the simulated joints follow the commanded trajectory within a few mm at the links
(see :mod:`pointworld.sim.robot_mjcf`).
"""

from __future__ import annotations

from pathlib import Path

import mujoco
import numpy as np
import torch

from pointworld.geometry.checks import require_floating, require_int, require_shape
from pointworld.robot.assets import SHIPPED_ROBOTS, shipped_urdf_path
from pointworld.robot.model import Robot
from pointworld.robot.urdf import load_robot
from pointworld.sim.config import SceneConfig
from pointworld.sim.robot_mjcf import (
    RobotIndex,
    add_robot_servos,
    disable_self_collision,
    set_finger_friction,
    servo_control,
    urdf_to_spec,
)
from pointworld.sim.scene import SceneBuild, build_scene

#: What ``get_state``/``set_state`` save and restore (everything ``mj_step`` reads).
_STATE = mujoco.mjtState.mjSTATE_INTEGRATION
_PANDA_ARM = (0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785, 0.04)
#: Start configuration of each shipped robot (``Robot.joint_names`` order), rad or m; grippers open.
HOME_Q: dict[str, tuple[float, ...]] = {
    "franka_panda": _PANDA_ARM,
    "bimanual": _PANDA_ARM + _PANDA_ARM,
    "flying_gripper": (0.45, 0.0, 0.45, np.pi, 0.0, 0.0, 0.04),
    "ur5e_gripper": (0.0, -1.9, 1.9, -1.57, -1.57, 0.0, 0.0425),
}


class SimEnv:
    """A table-top scene with one robot, stepped by MuJoCo.

    Args:
        config: the scene configuration (robot, objects, physics and control periods).

    Call :meth:`reset` before anything else. ``model``/``data`` are the live MuJoCo objects.
    """

    def __init__(self, config: SceneConfig) -> None:
        if not isinstance(config, SceneConfig):
            raise TypeError(f"config: expected a SceneConfig, got {type(config).__name__}")
        self.config = config
        self.robot: Robot = load_robot(config.robot).to(torch.float64)
        self._urdf = shipped_urdf_path(config.robot) if config.robot in SHIPPED_ROBOTS else Path(config.robot)
        home = HOME_Q.get(config.robot)
        q = torch.zeros(self.robot.num_joints, dtype=torch.float64) if home is None else torch.tensor(home)
        self.home_q = self.robot.clamp_to_limits(q.to(torch.float64)).numpy()
        self.model: mujoco.MjModel | None = None
        self.data: mujoco.MjData | None = None
        self.scene: SceneBuild | None = None
        self.index: RobotIndex | None = None
        self._target = self.home_q.copy()

    def reset(self, seed: int | None = None) -> None:
        """Build a new scene from ``seed`` (``config.seed`` if None), put the robot at its home pose
        with the servo targets there, and let the objects settle for 0.2 s."""
        seed = self.config.seed if seed is None else require_int("seed", seed, 0)
        rng = np.random.default_rng(seed)
        c = self.config
        spec = urdf_to_spec(self._urdf)
        add_robot_servos(spec, self.robot, kp_revolute=c.kp_revolute, kp_prismatic=c.kp_prismatic,
                         damping_ratio=c.damping_ratio, armature=c.armature)
        set_finger_friction(spec, self.robot, c.finger_friction)
        if not c.robot_self_collision:
            disable_self_collision(spec, self.robot)
        self.scene = build_scene(spec, self.robot.name, c, rng)
        self.model = self.scene.spec.compile()
        self.data = mujoco.MjData(self.model)
        self.index = RobotIndex.build(self.model, self.robot)
        self._set_robot_state(self.home_q)
        self._target = self.home_q.copy()
        self.data.ctrl[self.index.actuator] = self.home_q
        for _ in range(round(0.2 / c.timestep_s)):
            mujoco.mj_step(self.model, self.data)
        mujoco.mj_forward(self.model, self.data)

    def _set_robot_state(self, q: np.ndarray) -> None:
        assert self.model is not None and self.data is not None and self.index is not None
        self.data.qpos[self.index.qpos] = q
        for follower, (leader, mult, offset) in self.robot.mimic.items():
            adr = self.model.jnt_qposadr[self.model.joint(follower).id]
            self.data.qpos[adr] = mult * q[self.robot.joint_names.index(leader)] + offset
        self.data.qvel[:] = 0.0
        mujoco.mj_forward(self.model, self.data)

    def _require_reset(self) -> tuple[mujoco.MjModel, mujoco.MjData, RobotIndex]:
        if self.model is None or self.data is None or self.index is None:
            raise RuntimeError("SimEnv: call reset() before using the environment")
        return self.model, self.data, self.index

    def joint_positions(self) -> torch.Tensor:
        """(J,) simulated joint positions in ``robot.joint_names`` order, rad or m, float64."""
        _, data, index = self._require_reset()
        return torch.from_numpy(data.qpos[index.qpos].copy())

    def execute(self, q_traj: torch.Tensor, gripper: torch.Tensor | None = None) -> torch.Tensor:
        """Track a joint trajectory, one target per control step.

        Args:
            q_traj: (S, J) joint targets at the end of each of S control steps, rad or m, in
                ``robot.joint_names`` order (gripper joints included).
            gripper: optional (S,) or (S, G) gripper opening in [0, 1] (1 = open) for the G grippers
                (mimic leaders, in joint order); it replaces the gripper entries of ``q_traj`` by
                ``opening * upper limit``. A closed command on a grasped object squeezes with at most
                the URDF effort of the finger joint.

        Returns:
            (S, J) simulated joint positions at the end of each control step, float64.

        Raises:
            JointMismatchError: the last dim of ``q_traj`` is not J.
            ValueError: other wrong shapes, non-finite values, targets outside the joint limits,
                or a gripper value outside [0, 1].
        """
        model, data, index = self._require_reset()
        q_traj = self.robot.check_joint_limits(q_traj, "q_traj")
        require_shape("q_traj", q_traj, (None, self.robot.num_joints), max_leading=0)
        targets = q_traj.detach().to("cpu", torch.float64).numpy().copy()
        if gripper is not None:
            targets[:, index.gripper] = self._gripper_targets(gripper, targets.shape[0])
        substeps, dt = self.config.substeps, self.config.control_dt_s
        out = np.empty_like(targets)
        for s, goal in enumerate(targets):
            start, velocity = self._target, (goal - self._target) / dt
            for k in range(substeps):
                alpha = (k + 1) / substeps
                data.ctrl[index.actuator] = servo_control(index, start + alpha * (goal - start), velocity)
                mujoco.mj_step(model, data)
            mujoco.mj_forward(model, data)  # mj_step leaves xpos/xmat one step behind qpos
            self._target = goal
            out[s] = data.qpos[index.qpos]
        data.ctrl[index.actuator] = self._target  # hold still afterwards
        return torch.from_numpy(out)

    def _gripper_targets(self, gripper: torch.Tensor, steps: int) -> np.ndarray:
        index = self._require_reset()[2]
        g = require_floating("gripper", gripper).detach().to("cpu", torch.float64).numpy()
        g = g[:, None] if g.ndim == 1 else g
        if g.ndim != 2 or g.shape[0] != steps or g.shape[1] not in (1, len(index.gripper)):
            raise ValueError(f"gripper: expected shape ({steps},) or ({steps}, {len(index.gripper)}), "
                             f"got {tuple(gripper.shape)}")
        if not np.all(np.isfinite(g)) or g.min() < 0.0 or g.max() > 1.0:
            raise ValueError(f"gripper: expected openings in [0, 1], got values in [{g.min()}, {g.max()}]")
        return np.broadcast_to(g, (steps, len(index.gripper))) * index.gripper_upper

    def get_state(self) -> np.ndarray:
        """Snapshot of everything that determines how the simulation continues.

        Returns:
            (P + J,) float64: MuJoCo's integration state (``mj_getState`` with ``mjSTATE_INTEGRATION``:
            time, qpos, qvel, actuator and plugin state, warm start, controls, applied forces, mocap,
            active equalities; P = ``mj_stateSize``) followed by the J servo targets ``execute``
            interpolates from, rad or m. Valid only for the scene of the current ``reset``.
        """
        model, data, _ = self._require_reset()
        size = mujoco.mj_stateSize(model, _STATE)
        state = np.empty(size + self._target.shape[0], dtype=np.float64)
        mujoco.mj_getState(model, data, state[:size], _STATE)
        state[size:] = self._target
        return state

    def set_state(self, state: np.ndarray) -> None:
        """Restore a :meth:`get_state` snapshot of the same scene (then recompute the derived
        quantities with ``mj_forward``): executing the same commands afterwards reproduces the
        original continuation exactly.

        Args:
            state: (P + J,) snapshot from :meth:`get_state` (numpy or torch), float.

        Raises:
            ValueError: wrong size (e.g. a snapshot of another scene) or non-finite values.
        """
        model, data, _ = self._require_reset()
        size = mujoco.mj_stateSize(model, _STATE)
        value = state.detach().cpu().numpy() if isinstance(state, torch.Tensor) else state
        arr = np.asarray(value, dtype=np.float64)
        expected = (size + self._target.shape[0],)
        if arr.shape != expected or not np.all(np.isfinite(arr)):
            raise ValueError(f"state: expected a finite array of shape {expected} from get_state() of this "
                             f"scene, got shape {arr.shape}" + ("" if arr.shape != expected else
                                                                " with non-finite values"))
        mujoco.mj_setState(model, data, np.ascontiguousarray(arr[:size]), _STATE)
        self._target = arr[size:].copy()
        mujoco.mj_forward(model, data)

    def body_names(self) -> list[str]:
        """Names of all bodies of the compiled model, in body id order (``world`` first)."""
        model = self._require_reset()[0]
        return [model.body(i).name for i in range(model.nbody)]

    def body_poses(self, names: list[str]) -> torch.Tensor:
        """(len(names), 4, 4) ``T_world_body`` of the named bodies, m, float64 (``ValueError`` for
        unknown names)."""
        model, data, _ = self._require_reset()
        ids = [mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, n) for n in names]
        unknown = [n for n, i in zip(names, ids) if i < 0]
        if unknown:
            raise ValueError(f"names: no bodies named {unknown} in the scene (see body_names())")
        T = np.tile(np.eye(4), (len(ids), 1, 1))
        T[:, :3, :3] = data.xmat[ids].reshape(-1, 3, 3)
        T[:, :3, 3] = data.xpos[ids]
        return torch.from_numpy(T)

    def object_poses(self) -> dict[str, torch.Tensor]:
        """Body name -> (4, 4) ``T_world_body`` (m, float64) of every free object and articulated part."""
        self._require_reset()
        assert self.scene is not None
        names = self.scene.object_names + self.scene.articulated_names
        return dict(zip(names, self.body_poses(names).unbind(0)))

    def flex_vertices(self, name: str = "cloth") -> torch.Tensor:
        """(V, 3) world positions of the vertices of flex ``name`` (e.g. the cloth), m, float64.

        Raises:
            ValueError: the scene has no flex of that name.
        """
        model, data, _ = self._require_reset()
        fid = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_FLEX, name)
        if fid < 0:
            raise ValueError(f"name: the scene has no deformable (flex) named {name!r}; it has "
                             f"{self.scene.deformable_names if self.scene else []}")
        start, count = int(model.flex_vertadr[fid]), int(model.flex_vertnum[fid])
        return torch.from_numpy(data.flexvert_xpos[start:start + count].copy())

    def link_poses(self) -> torch.Tensor:
        """(L, 4, 4) simulated ``T_world_link`` of ``robot.link_names``, m, float64."""
        return self.body_poses(list(self.robot.link_names))
