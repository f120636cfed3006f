"""A scene-flow "predictor" that asks the simulator itself: the exact answer the world model approximates.

:class:`SimOracle` stands in for a learned :class:`pointworld.model.inputs.FlowPredictor` in closed-loop
simulated experiments (an upper bound for the planner, and a check of the planning stack without a
trained model). It works on joint trajectories, not on robot point flows, so it exposes
:meth:`SimOracle.predict_joints`; the planner calls that hook instead of ``predict`` when a predictor has
it (see :mod:`pointworld.planning.planner`).

Binding (:meth:`SimOracle.bind`): every point of an observed cloud is tied to the body it was seen on,
looked up in a segmentation image of the same cameras at the same simulator state through the point's
``(view_index, pixel_index)``; cloth points follow the flex vertices
(:func:`pointworld.sim.ground_truth.bind_flex_points`). Robot points follow their links; pixels with no
body (-1) stay where they are.

Prediction (:meth:`SimOracle.predict_joints`): for each of K candidates, restore the bind-time state
(``SimEnv.set_state``), execute its T steps exactly as :class:`pointworld.planning.closed_loop.SimRobot`
would (``TaskEnv.execute(q[1:], gripper_open[1:])``, one step at a time, which MuJoCo runs identically to
one call of T steps), record every body pose and flex vertex per step, and move the bound points with
:func:`pointworld.sim.ground_truth.track_points`. The state is restored at the end, so the simulator is
left exactly as it was (``get_state`` is bit-identical), and executing a candidate afterwards makes the
observed points follow the predicted trajectories exactly. ``log_var`` is 0 (no uncertainty).
"""

from __future__ import annotations

import numpy as np
import torch

from pointworld.geometry.checks import require_floating, require_shape
from pointworld.geometry.fusion import FusedCloud
from pointworld.model.inputs import ActionInput, Prediction, SceneInput
from pointworld.sim.ground_truth import (
    FlexBinding,
    bind_flex_points,
    record_clip,
    track_points,
)
from pointworld.sim.render import render_views
from pointworld.sim.task import TaskEnv


def gripper_command(env: TaskEnv, gripper_open: torch.Tensor) -> torch.Tensor | None:
    """The ``gripper`` argument of ``TaskEnv.execute`` for a planned opening (one convention for the
    oracle and :class:`~pointworld.planning.closed_loop.SimRobot`, so both command the same thing).

    Args:
        env: the task environment.
        gripper_open: (S,) planned opening per step in [0, 1] (mean over the robot's grippers).

    Returns:
        ``gripper_open`` for a robot with one gripper (the simulator sets the finger target to
        opening x upper limit); None for several grippers (a mean opening cannot command each of them,
        so the per-gripper targets already in the joint trajectory are used).
    """
    if env.sim.index is None:
        raise RuntimeError("env: call reset() before executing")
    return gripper_open if len(env.sim.index.gripper) == 1 else None


class SimOracle:
    """Predict the flow of observed scene points by executing candidate joint trajectories in the simulator.

    Args:
        env: a reset :class:`TaskEnv`; its cameras must be the ones that produced the clouds to bind.

    Call :meth:`bind` with each new observation (at the simulator state it was taken at), then
    :meth:`predict_joints` any number of times.
    """

    def __init__(self, env: TaskEnv) -> None:
        if not isinstance(env, TaskEnv):
            raise TypeError(f"env: expected a TaskEnv, got {type(env).__name__}")
        self.env = env
        self._points: torch.Tensor | None = None  # (N, 3) float64 bound points, m, world
        self._body_id: np.ndarray | None = None  # (N,) int32
        self._flex: FlexBinding | None = None
        self._state: np.ndarray | None = None  # simulator state at bind time

    @property
    def num_points(self) -> int:
        """N, the number of bound points (0 before :meth:`bind`)."""
        return 0 if self._points is None else int(self._points.shape[0])

    @property
    def body_id(self) -> np.ndarray:
        """(N,) int32 body id of each bound point (-1: no body; flex points: the flex's body)."""
        if self._body_id is None:
            raise RuntimeError("SimOracle: call bind() first")
        return self._body_id.copy()

    @property
    def flex_binding(self) -> FlexBinding:
        """How the bound cloth (flex) points follow the flex vertices (see ``bind_flex_points``)."""
        if self._flex is None:
            raise RuntimeError("SimOracle: call bind() first")
        return self._flex

    def bind(self, cloud: FusedCloud, segmentation: np.ndarray | None = None) -> None:
        """Tie the points of ``cloud`` to simulator bodies at the current state.

        Args:
            cloud: N points fused from an observation of ``env`` taken at the current simulator state
                (``points_world`` (N, 3) m, world frame; ``view_index`` (N,) into the env's cameras;
                ``pixel_index`` (N,) flat ``row * W + col``).
            segmentation: optional (V, H, W) int body id per pixel of those views (-1 = none); None
                renders it now with the env's cameras.

        Raises:
            TypeError: ``cloud`` is not a FusedCloud.
            ValueError: a view or pixel index outside the cameras' images, a segmentation of the wrong
                shape, or an empty cloud.
        """
        if not isinstance(cloud, FusedCloud):
            raise TypeError(f"cloud: expected a FusedCloud, got {type(cloud).__name__}")
        sim, cams = self.env.sim, self.env.config.cameras
        K, T_world_cam = self.env.cameras
        shape = (K.shape[0], cams.height, cams.width)
        if segmentation is None:
            segmentation = render_views(sim.model, sim.data, K, T_world_cam, cams.height, cams.width)[2]
        seg = np.asarray(segmentation)
        if seg.shape != shape or not np.issubdtype(seg.dtype, np.integer):
            raise ValueError(f"segmentation: expected integer body ids of shape {shape} (V, H, W), got "
                             f"{seg.dtype} {seg.shape}")
        view = cloud.view_index.detach().cpu().numpy().astype(np.int64)
        pixel = cloud.pixel_index.detach().cpu().numpy().astype(np.int64)
        if view.size == 0:
            raise ValueError("cloud: expected at least one point, got an empty cloud")
        if view.min() < 0 or view.max() >= shape[0] or pixel.min() < 0 or pixel.max() >= shape[1] * shape[2]:
            raise ValueError(f"cloud: view_index must be in [0, {shape[0]}) and pixel_index in "
                             f"[0, {shape[1] * shape[2]}) for the env's cameras, got views "
                             f"[{view.min()}, {view.max()}] and pixels [{pixel.min()}, {pixel.max()}]")
        body = seg.reshape(shape[0], -1)[view, pixel].astype(np.int32)
        points = cloud.points_world.detach().cpu().to(torch.float64)
        self._flex = bind_flex_points(sim.model, sim.data, points.numpy(), body)
        self._points, self._body_id, self._state = points, body, sim.get_state()

    def predict_joints(self, q: torch.Tensor, gripper_open: torch.Tensor) -> Prediction:
        """Flow of the bound points under K candidate joint trajectories, by simulation.

        Args:
            q: (K, T+1, J) joint trajectories, rad or m, ``robot.joint_names`` order; step 0 is the
                current state (not executed), steps 1..T are the targets of the T control steps.
            gripper_open: (K, T+1) gripper opening commands in [0, 1] (1 = open); step 0 not executed.

        Returns:
            Prediction with ``displacement`` (K, T, N, 3) of every bound point from t = 0, m, world
            frame, and ``log_var`` (K, T, N) zeros; dtype and device of ``q``.

        Raises:
            RuntimeError: :meth:`bind` was not called, or the simulator moved since (re-bind).
            ValueError: wrong shapes, targets (steps 1..T) outside the joint limits, openings outside
                [0, 1]; nothing is simulated then.
        """
        if self._points is None or self._state is None:
            raise RuntimeError("SimOracle: call bind() with an observation before predict_joints()")
        sim = self.env.sim
        saved = sim.get_state()
        if not np.array_equal(saved, self._state):
            raise RuntimeError("SimOracle: the simulator state changed since bind(); bind the new observation")
        self.env.robot.check_joint_positions(q, "q")
        require_shape("q", q, (None, None, self.env.robot.num_joints), max_leading=0)
        K, steps = q.shape[:2]
        if steps < 2:
            raise ValueError(f"q: expected T + 1 >= 2 steps, got {steps}")
        require_floating("gripper_open", gripper_open)
        require_shape("gripper_open", gripper_open, (K, steps), max_leading=0)
        q64 = self.env.robot.check_joint_limits(q.detach().to("cpu", torch.float64)[:, 1:], "q")
        g64 = gripper_open.detach().to("cpu", torch.float64)[:, 1:]
        if not bool(torch.isfinite(g64).all()) or bool((g64 < 0).any()) or bool((g64 > 1).any()):
            raise ValueError(f"gripper_open: expected openings in [0, 1] at steps 1..T, got values in "
                             f"[{float(g64.min()):.4g}, {float(g64.max()):.4g}]")
        poses, verts = [], []
        try:
            for k in range(K):
                sim.set_state(saved)
                rec = record_clip(sim, q64[k], gripper_command(self.env, g64[k]))
                poses.append(rec.body_poses if k == 0 else rec.body_poses[1:])
                verts.append(rec.flex_vertices if k == 0 else rec.flex_vertices[1:])
        finally:
            sim.set_state(saved)
        # All candidates start from the same state, so the K blocks share frame 0: track them as one
        # clip of 1 + K T frames (track_points measures every frame's motion relative to frame 0).
        positions, _ = track_points(self._points, self._body_id, torch.cat(poses), self._flex, torch.cat(verts))
        moved = positions[1:].reshape(K, steps - 1, -1, 3)
        displacement = (moved - self._points).to(device=q.device, dtype=q.dtype)
        return Prediction(displacement, torch.zeros(displacement.shape[:-1], dtype=q.dtype, device=q.device))

    def predict(self, scene: SceneInput, action: ActionInput) -> Prediction:
        """Not supported: robot point flows do not determine the joint commands the simulator needs.

        Raises:
            TypeError: always; call :meth:`predict_joints` (the planner does when a predictor has it).
        """
        raise TypeError("SimOracle.predict: the oracle needs joint trajectories, not robot point flows; call "
                        "predict_joints(q (K, T+1, J), gripper_open (K, T+1)) instead")
