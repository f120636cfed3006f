"""The written contract of pointworld: frames, units, dimension letters.

Every module follows these rules; docstrings refer to them instead of repeating them.

Units
    SI inside the library: metres, radians, seconds. Anything else carries a suffix in its name:
    ``depth_mm``, ``uv_px``, ``timeout_s``, ``voxel_size_m``. Raw sensor depth scales never leave
    :mod:`pointworld.capture`.

Transforms
    ``T_a_b`` is a ``(..., 4, 4)`` homogeneous matrix with ``p_a = T_a_b @ p_b`` (column vectors).
    Compose by matching inner letters: ``T_world_link = T_world_base @ T_base_link``.

Frames
    ``world`` (the robot base unless configured otherwise), ``base``, ``cam`` = OpenCV optical frame
    (+x right, +y down, +z forward). Names carry their frame: ``points_world``, ``points_cam``.

Quaternions
    Scalar-first ``(w, x, y, z)``; sources in ``(x, y, z, w)`` order are converted at the boundary.

Pixels
    ``uv_px[..., 0]`` is the column (u, along +x), ``uv_px[..., 1]`` the row (v, along +y); the
    centre of the top-left pixel is at ``(0, 0)`` as in OpenCV.

Dimension letters
    B batch, N scene points, M robot points, L links, J joints, T time steps, K planner samples,
    V camera views, H W image height/width, C channels.

Point clouds
    At the API a batch of clouds is a padded ``(B, N, 3)`` tensor plus a ``(B, N)`` bool mask
    (True = a real point). Colors are float in ``[0, 1]``, ``(B, N, 3)``.
"""

from __future__ import annotations

#: Scale of 16-bit depth PNGs written by :mod:`pointworld.capture` (1 unit = 1 mm).
DEPTH_PNG_SCALE_M: float = 0.001

#: Default voxel size of the scene cloud, as in the reference system.
DEFAULT_VOXEL_SIZE_M: float = 0.015
