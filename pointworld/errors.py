"""Project error types.

All derive from :class:`PointworldError` and from the built-in type a caller would expect
(``ValueError`` for bad data, ``FileNotFoundError`` for missing files, ``RuntimeError`` for hardware),
so ``except ValueError`` keeps working for callers that do not know our types.
"""

from __future__ import annotations


class PointworldError(Exception):
    """Base class of every error raised on purpose by pointworld."""


class EmptyCloudError(PointworldError, ValueError):
    """A point cloud has no points left (e.g. after a workspace crop) where some are required."""


class CaptureFormatError(PointworldError, ValueError):
    """A scene capture on disk is missing files, truncated or does not follow the documented format."""


class CalibrationError(PointworldError, ValueError):
    """A calibration file is missing, corrupt, or lacks the camera that was asked for."""


class CameraNotFoundError(PointworldError, RuntimeError):
    """No camera with the requested serial is connected (or none at all)."""


class BoardNotFoundError(PointworldError, RuntimeError):
    """The calibration board was not detected, or too few of its corners were seen."""


class URDFError(PointworldError, ValueError):
    """A URDF is malformed or unsupported: bad XML, a joint naming a missing link, several roots, a
    kinematic cycle, a cyclic or dangling ``<mimic>``, an unsupported joint type."""


class MeshNotFoundError(PointworldError, FileNotFoundError):
    """A mesh referenced by a URDF could not be found; the message names the file and every
    location that was tried (package map, search paths, the URDF's directory)."""


class JointMismatchError(PointworldError, ValueError):
    """Joint names or a joint vector do not match the robot's actuated joints."""


class EpisodeFormatError(PointworldError, ValueError):
    """An episode file (HDF5) or a dataset's metadata (JSON) is missing, truncated, corrupt, of another
    format or version, or does not follow the schema in ``pointworld/data/SCHEMA.md``."""


class CheckpointError(PointworldError, ValueError):
    """A checkpoint file is not a pointworld checkpoint, is truncated or corrupt, of another format or a
    newer version, lacks required entries, or does not match the architecture it declares."""
