"""Simulation with MuJoCo: table-top scenes for data generation and closed-loop testing.

- :mod:`pointworld.sim.config`: :class:`SceneConfig` (robot, objects, table, physics/control periods).
- :mod:`pointworld.sim.robot_mjcf`: a URDF robot into an ``MjSpec`` with stiff position servos
  (velocity feed-forward), gravity compensation and mimic joints as equality constraints.
- :mod:`pointworld.sim.scene`: table, seeded random rigid objects (box, cylinder, sphere, L, T, cross),
  a drawer and a flex cloth, named for segmentation (``object_000``, ``drawer``, ``drawer_handle``,
  ``table``, ``cloth``).
- :mod:`pointworld.sim.env`: :class:`SimEnv` — reset(seed), execute a joint trajectory, read joint
  positions, body poses and cloth vertices.
- :mod:`pointworld.sim.cameras`: randomized camera rigs around nominal viewpoints of the table.
- :mod:`pointworld.sim.render`: headless RGB, z-depth and body segmentation; sensor-like depth noise.
- :mod:`pointworld.sim.ground_truth`: scene points from rendered views and their ground-truth
  trajectories over a clip (rigid bodies and cloth vertices).
- :mod:`pointworld.sim.task` + :mod:`pointworld.sim.task_goals`: :class:`TaskEnv` for the planner — reset
  to a seeded push / drawer / cloth task (goal = move the points in a box by a rigid motion), observe a
  ``SceneCapture`` from the configured cameras, execute joint trajectories, evaluate success; the
  simulator state can be saved and restored (``SimEnv.get_state``/``set_state``) for oracle planning.

Imports ``mujoco`` (the ``sim`` extra); may use :mod:`pointworld.geometry`, :mod:`pointworld.robot` and the
frame types of :mod:`pointworld.capture`.
Headless rendering defaults to EGL: ``MUJOCO_GL`` and ``PYOPENGL_PLATFORM`` are set to ``egl`` here,
before any module of this package imports MuJoCo, unless the environment already chose a backend.
"""

import os

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])
