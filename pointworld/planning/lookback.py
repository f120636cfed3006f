"""Back off and look again: retrace the executed joint path when the goal object drops out of view.

In a push, the arm often ends a chunk of execution between the cameras and the object it pushes: the
next observation holds no point of the goal selection, and the closed loop cannot build a goal. The
object is usually still there. :class:`ExecutedPath` keeps the measured joint path of an episode as
one segment per executed chunk, and :meth:`ExecutedPath.retract` drives the robot back along the last
segment, in reverse, so that the cameras see the scene as they did before that chunk, with the robot
where it was (and whatever it pushed left where it went). The gripper holds its opening throughout.

The motion is the executed one reversed, so it respects the joint and velocity limits the plan did,
and it clears the object the way the arm came in. A real arm driver behind
:class:`~pointworld.planning.closed_loop.RobotInterface` gets the same behaviour.
Letters: S control steps of a chunk, J joints.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from pointworld.geometry.checks import require_floating, require_shape

if TYPE_CHECKING:
    from pointworld.planning.closed_loop import RobotInterface
    from pointworld.robot.model import Robot


class ExecutedPath:
    """The measured joint path of an episode, chunk by chunk (caches tensors only).

    Args:
        q_start: (J,) measured joint positions before the first execution, rad or m.
    """

    def __init__(self, q_start: torch.Tensor) -> None:
        require_shape("q_start", require_floating("q_start", q_start), (None,), max_leading=0)
        self._end = q_start.detach().to("cpu", torch.float64).clone()
        self._segments: list[torch.Tensor] = []

    @property
    def chunks(self) -> int:
        """Executed chunks that can still be retraced."""
        return len(self._segments)

    def record(self, measured: torch.Tensor) -> None:
        """Append a chunk: ``measured`` (S, J), the joint positions after each of its control steps."""
        require_shape("measured", require_floating("measured", measured), (None, self._end.shape[0]),
                      max_leading=0)
        if measured.shape[0] == 0:
            return
        measured = measured.detach().to("cpu", torch.float64)
        self._segments.append(torch.cat([self._end[None], measured]))
        self._end = measured[-1].clone()

    def retract(self, robot: RobotInterface, model: Robot) -> bool:
        """Drive ``robot`` back along the last recorded chunk, in reverse, and forget that chunk.

        The targets are the chunk's measured positions from the second-to-last one back to its start
        (S targets for S executed steps), clamped into ``model``'s joint limits (a measured position can
        sit a hair past a soft limit); the gripper holds ``robot.gripper_open()``.

        Returns:
            False (and nothing moves) when every chunk has been retraced already: the robot is back where
            the episode started.
        """
        if not self._segments:
            return False
        segment = self._segments.pop()
        targets = model.clamp_to_limits(segment[:-1].flip(0))
        opening = torch.full((targets.shape[0],), float(robot.gripper_open()), dtype=torch.float64)
        measured = robot.execute(targets, opening)
        self._end = measured[-1].detach().to("cpu", torch.float64).clone()
        return True
