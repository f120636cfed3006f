"""A URDF robot as a MuJoCo model: import through ``MjSpec``, stiff position servos, gravity compensation.

How the URDF reaches MuJoCo:

- Mesh names (``package://``, relative, absolute) are resolved with the robot module's
  :class:`~pointworld.robot.urdf_meshes.MeshResolver` (same rules as ``load_robot``) and written as
  absolute paths into a copy of the XML, which gets a ``<mujoco><compiler strippath="false"
  fusestatic="false" discardvisual="true"/></mujoco>`` element: every URDF link stays a MuJoCo body of
  the same name (fixed links too, e.g. ``panda_link8``), only collision geometry is kept (MuJoCo takes
  the convex hull of each mesh for contacts).
- The root link is welded to the world at the origin (MuJoCo's URDF import adds no root joint); URDF
  ``<mimic>`` joints become MuJoCo joint-equality constraints (``q_f = offset + multiplier q_l``).
- Every actuated joint of ``Robot.joint_names`` gets a position servo with velocity feed-forward:
  ``tau = kp (q_d - q) + kv (qdot_d - qdot)``, realised as one affine actuator
  ``tau = kp ctrl - kp q - kv qdot`` driven with ``ctrl = q_d + (kv / kp) qdot_d``
  (:func:`servo_control`). ``kv = 2 zeta sqrt(kp M_jj)`` from the joint-space inertia diagonal at q = 0.
  Forces stay within the URDF effort limits (MuJoCo ``actuatorfrcrange``).
- Every robot body has ``gravcomp = 1``, so gravity never pulls the arm off its trajectory.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import mujoco
import numpy as np
from lxml import etree

from pointworld.errors import URDFError
from pointworld.robot.assets import is_shipped_urdf, shipped_package_map
from pointworld.robot.model import Robot
from pointworld.robot.urdf_meshes import MeshResolver


def urdf_to_spec(urdf_path: str | Path, *, search_paths: Sequence[str | Path] = (),
                 package_map: Mapping[str, str | Path] | None = None) -> mujoco.MjSpec:
    """Parse a URDF file into a MuJoCo ``MjSpec`` (no actuators yet; see :func:`add_robot_servos`).

    Args:
        urdf_path: the ``.urdf`` file (a shipped robot's file resolves the shipped packages).
        search_paths, package_map: as in :func:`pointworld.robot.urdf.load_robot`.

    Returns:
        A spec whose bodies and joints carry the URDF link and joint names.

    Raises:
        URDFError: the file is not a ``<robot>`` or has a ``floating``/``planar`` joint (use
            virtual prismatic + revolute joints instead, as the shipped ``flying_gripper`` does).
        MeshNotFoundError: a mesh cannot be resolved.
    """
    path = Path(urdf_path)
    root = etree.fromstring(path.read_bytes())
    if root.tag != "robot":
        raise URDFError(f"urdf_path {str(path)!r}: expected a <robot> root element, got <{root.tag}>")
    bad = [j.get("name") for j in root.iter("joint") if j.get("type") in ("floating", "planar")]
    if bad:
        raise URDFError(f"urdf_path {str(path)!r}: floating/planar joints {bad} are not supported in "
                        f"simulation; model them as prismatic + revolute joints")
    shipped = shipped_package_map() if is_shipped_urdf(path) else None
    resolver = MeshResolver(path, search_paths, package_map, None, shipped)
    for visual in root.iter("visual"):
        visual.getparent().remove(visual)
    for mesh in root.iter("mesh"):
        mesh.set("filename", str(resolver.resolve(mesh.get("filename", "")).resolve()))
    for old in root.findall("mujoco"):
        root.remove(old)
    extra = etree.SubElement(root, "mujoco")
    etree.SubElement(extra, "compiler", strippath="false", fusestatic="false", discardvisual="true",
                     balanceinertia="true")
    return mujoco.MjSpec.from_string(etree.tostring(root, encoding="unicode"))


def add_robot_servos(spec: mujoco.MjSpec, robot: Robot, *, kp_revolute: float, kp_prismatic: float,
                     damping_ratio: float, armature: float) -> None:
    """Add gravity compensation, joint armature and one servo per actuated joint to a robot spec.

    Call on the spec returned by :func:`urdf_to_spec` before adding anything else (the damping
    gains come from the robot's own inertia, computed from a compile of the spec as it is).

    Args:
        spec: the robot's spec (modified in place); actuators are named ``act_<joint>``.
        robot: the same URDF loaded with ``load_robot`` (joint names and order).
        kp_revolute, kp_prismatic: position gains, N m/rad and N/m.
        damping_ratio: zeta of ``kv = 2 zeta sqrt(kp M_jj)``.
        armature: rotor inertia added to every joint (also mimic followers), kg m^2 or kg.
    """
    for body in spec.bodies:
        if body.name != "world":
            body.gravcomp = 1.0
    for joint in spec.joints:
        joint.armature = armature
    model = spec.compile()
    for name in robot.joint_names:
        joint = model.joint(name)
        if joint.id < 0:
            raise URDFError(f"robot: joint {name!r} is missing from the MuJoCo model")
        prismatic = int(model.jnt_type[joint.id]) == mujoco.mjtJoint.mjJNT_SLIDE
        kp = kp_prismatic if prismatic else kp_revolute
        dof = int(model.jnt_dofadr[joint.id])
        kv = 2.0 * damping_ratio * float(np.sqrt(kp * model.dof_M0[dof]))
        act = spec.add_actuator(name=f"act_{name}", target=name, trntype=mujoco.mjtTrn.mjTRN_JOINT)
        act.gaintype = mujoco.mjtGain.mjGAIN_FIXED
        act.biastype = mujoco.mjtBias.mjBIAS_AFFINE
        act.gainprm[0] = kp
        act.biasprm[0:3] = [0.0, -kp, -kv]
        act.ctrllimited = False


def set_finger_friction(spec: mujoco.MjSpec, robot: Robot, friction: float) -> None:
    """Set the sliding friction of every geom on a robot link whose name contains ``finger``.

    Args:
        spec: the robot's spec (modified in place).
        robot: the same robot (its link names select the geoms).
        friction: sliding friction coefficient (> 0); torsional and rolling keep MuJoCo's defaults.
    """
    fingers = {name for name in robot.link_names if "finger" in name}
    for geom in spec.geoms:
        if geom.parent.name in fingers:
            geom.friction[0] = friction


def disable_self_collision(spec: mujoco.MjSpec, robot: Robot) -> None:
    """Stop the robot's links from colliding with each other (they still collide with everything else).

    Robot geoms get ``contype = 2, conaffinity = 1``; MuJoCo collides two geoms when ``contype`` of
    one and ``conaffinity`` of the other share a bit, so robot-robot pairs never do while robot-scene
    pairs (scene geoms keep the default 1/1) still do. Call before adding scene geoms.

    Args:
        spec: the robot's spec (modified in place).
        robot: the same robot (its link names select the geoms).
    """
    links = set(robot.link_names)
    for geom in spec.geoms:
        if geom.parent.name in links:
            geom.contype, geom.conaffinity = 2, 1


@dataclass(frozen=True)
class RobotIndex:
    """Where the robot lives in a compiled model (arrays index ``qpos``, ``qvel``, ``ctrl``, bodies).

    Attributes:
        qpos: (J,) qpos addresses of ``Robot.joint_names``.
        dof: (J,) dof addresses of the same joints.
        actuator: (J,) actuator ids of their servos.
        kv_over_kp: (J,) velocity feed-forward factor of each servo, s.
        body: (L,) body ids of ``Robot.link_names``.
        gripper: (G,) positions in the joint vector of the gripper joints (mimic leaders).
        gripper_upper: (G,) their open limit, m.
    """

    qpos: np.ndarray
    dof: np.ndarray
    actuator: np.ndarray
    kv_over_kp: np.ndarray
    body: np.ndarray
    gripper: np.ndarray
    gripper_upper: np.ndarray

    @classmethod
    def build(cls, model: mujoco.MjModel, robot: Robot) -> RobotIndex:
        """Look up ``robot``'s joints, servos and links in ``model`` (built by :func:`add_robot_servos`)."""
        jids = [model.joint(n).id for n in robot.joint_names]
        acts = [model.actuator(f"act_{n}").id for n in robot.joint_names]
        leaders = sorted({robot.joint_names.index(v[0]) for v in robot.mimic.values()})
        upper = robot.limits_float64[1] if robot.limits_float64 is not None else robot.upper
        return cls(qpos=np.array([model.jnt_qposadr[j] for j in jids], dtype=np.int64),
                   dof=np.array([model.jnt_dofadr[j] for j in jids], dtype=np.int64),
                   actuator=np.array(acts, dtype=np.int64),
                   kv_over_kp=np.array([-model.actuator_biasprm[a, 2] / model.actuator_gainprm[a, 0]
                                        for a in acts]),
                   body=np.array([model.body(n).id for n in robot.link_names], dtype=np.int64),
                   gripper=np.array(leaders, dtype=np.int64),
                   gripper_upper=np.array([float(upper[i]) for i in leaders]))


def servo_control(index: RobotIndex, q_target: np.ndarray, qdot_target: np.ndarray) -> np.ndarray:
    """Actuator controls that make the servos track ``q_target`` with velocity ``qdot_target``.

    Args:
        index: the robot's :class:`RobotIndex`.
        q_target: (J,) desired joint positions, rad or m.
        qdot_target: (J,) desired joint velocities, rad/s or m/s.

    Returns:
        (J,) controls for ``data.ctrl[index.actuator]``.
    """
    return q_target + index.kv_over_kp * qdot_target
