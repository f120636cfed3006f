"""Robots: URDF loading, batched differentiable forward kinematics and Jacobians, inverse kinematics,
surface sampling and robot point flows (the action representation of pointworld)."""
