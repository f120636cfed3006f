"""The robot descriptions shipped with pointworld (``urdfs/`` in the repository, ``pointworld/urdfs`` installed).

Each robot ``NAME`` lives in ``urdfs/NAME/NAME.urdf`` with its meshes in ``urdfs/NAME/meshes/``,
referenced from the URDF as ``package://NAME/meshes/<link>.stl`` (or ``.obj``). The files are generated
by ``scripts/make_robot_assets.py``; ``urdfs/README.md`` gives the source of every kinematic number,
the joint lists and limits.

- ``franka_panda``: Franka Emika Panda, 7 arm joints + 1 finger joint (the second finger mimics it).
- ``bimanual``: pedestal + torso with two Panda-kinematics arms and grippers (``left_*``/``right_*``), J = 16.
- ``flying_gripper``: a free-floating Panda hand, virtual joints x, y, z, roll, pitch, yaw + finger, J = 7,
  with T_base_hand = Trans(x, y, z) @ rpy_to_matrix(roll, pitch, yaw); the three angles are continuous.
- ``ur5e_gripper``: Universal Robots UR5e (published DH) with a parallel gripper, J = 7.

Gripper convention (all four): one actuated prismatic finger joint, 0 = closed, its upper limit = open,
metres per finger; the other finger is a ``<mimic>`` of it (multiplier 1, offset 0).
"""

from __future__ import annotations

from pathlib import Path

#: Names of the shipped robots, accepted by :func:`shipped_urdf_path` (and ``load_robot``).
SHIPPED_ROBOTS: tuple[str, ...] = ("franka_panda", "bimanual", "flying_gripper", "ur5e_gripper")

# pointworld/urdfs is a symlink to ../urdfs in the repository and a real folder in an installed wheel.
_URDF_ROOT = Path(__file__).resolve().parent.parent / "urdfs"


def _check_name(name: object) -> str:
    if not isinstance(name, str):
        raise TypeError(f"name: expected a shipped robot name (str), got {type(name).__name__}")
    if name not in SHIPPED_ROBOTS:
        raise ValueError(f"name: expected one of the shipped robots {', '.join(SHIPPED_ROBOTS)}; got {name!r}")
    return name


def shipped_urdf_path(name: str) -> Path:
    """Path of the URDF file of the shipped robot ``name``.

    Args:
        name: one of :data:`SHIPPED_ROBOTS`, e.g. ``"franka_panda"``.

    Returns:
        ``.../urdfs/<name>/<name>.urdf``. Its meshes use ``package://<name>/...`` paths, resolved with
        :func:`shipped_package_map`.

    Raises:
        TypeError: ``name`` is not a string.
        ValueError: ``name`` is not a shipped robot (the message lists them).
        FileNotFoundError: the installation lacks the file (a broken install).
    """
    path = _URDF_ROOT / _check_name(name) / f"{name}.urdf"
    if not path.is_file():
        raise FileNotFoundError(f"shipped robot {name!r}: URDF file {path} is missing (broken installation?)")
    return path


def shipped_package_map() -> dict[str, Path]:
    """Package name -> directory for resolving ``package://`` mesh paths of the shipped robots.

    Returns:
        ``{"franka_panda": .../urdfs/franka_panda, ...}``, one entry per name in :data:`SHIPPED_ROBOTS`
        (``package://franka_panda/meshes/x.stl`` -> ``.../urdfs/franka_panda/meshes/x.stl``).
    """
    return {name: _URDF_ROOT / name for name in SHIPPED_ROBOTS}


def is_shipped_urdf(path: str | Path) -> bool:
    """Whether ``path`` is a file inside the shipped ``urdfs/`` folder (symlinks resolved).

    The loader resolves ``package://<shipped robot>/...`` names with :func:`shipped_package_map` only
    for such files, so a user URDF never silently picks up a shipped mesh.
    """
    return Path(path).resolve().is_relative_to(_URDF_ROOT.resolve())
