"""Embodiment-agnostic MPC planning with a point-flow world model.

Modules (import them directly; this package imports nothing on its own):

- :mod:`pointworld.planning.noise`: colored sampling noise, clipped candidate actions, warm-start shifts.
- :mod:`pointworld.planning.optimizers`: MPPI and CEM over (T, D) action sequences; pure functions
  without robot or model knowledge.
- :mod:`pointworld.planning.action_space`: the joint-delta action space, candidate actions (K, T, D) ->
  joint trajectories within the robot's limits.
- :mod:`pointworld.planning.ee_action_space`: end-effector deltas -> joint trajectories by batched IK.
- :mod:`pointworld.planning.goals`: point selections and point goals (targets in the world frame),
  goals from simulated tasks.
- :mod:`pointworld.planning.goal_file`: goal files (JSON/YAML) -> point goals.
- :mod:`pointworld.planning.cost_terms`: batched cost terms (goal, keep-still, workspace, joint limits,
  smoothness, uncertainty, reach); :mod:`pointworld.planning.penetration`: the contact proxy.
- :mod:`pointworld.planning.costs`: cost weights and their weighted total (units and defaults).
- :mod:`pointworld.planning.observation`: RGB-D capture -> fused scene cloud -> model input.
- :mod:`pointworld.planning.rollout`: evaluation of candidate actions (actions -> robot point flows ->
  predicted scene flow -> costs) with per-phase timings.
- :mod:`pointworld.planning.planner`: the MPC planner (optimizer over the rollout, warm starts).
- :mod:`pointworld.planning.oracle`: a simulator-backed flow predictor for reference runs.
- :mod:`pointworld.planning.tracking`: perception-only tracking of the goal points across replans.
- :mod:`pointworld.planning.closed_loop`: observe / plan / execute / track loops on a robot interface.
- :mod:`pointworld.planning.benchmark`: closed-loop benchmark over simulated tasks.
"""
