"""Simulation with MuJoCo: table-top scenes for data generation and closed-loop testing.

- :mod:`pointworld.sim.config`: :class:`SceneConfig` (robot, objects, table, physics/control periods).
- :mod:`pointworld.sim.robot_mjcf`: a URDF robot into an ``MjSpec`` with stiff position servos
  (velocity feed-forward), gravity compensation and mimic joints as equality constraints.
- :mod:`pointworld.sim.scene`: table, seeded random rigid objects (box, cylinder, sphere, L, T, cross)
  and a drawer, named for segmentation (``object_000``, ``drawer``, ``drawer_handle``, ``table``).
- :mod:`pointworld.sim.env`: :class:`SimEnv` — reset(seed), execute a joint trajectory, read joint
  positions and body poses.

Imports ``mujoco`` (the ``sim`` extra); may use :mod:`pointworld.geometry` and :mod:`pointworld.robot`.
"""
