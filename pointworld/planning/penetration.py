"""Contact proxy of the planner: robot points that come too close to static scene points (e.g. the table).

The scene cloud samples surfaces only, so this is a proxy for collisions, not a signed distance (keep the
robot out of the table with :func:`pointworld.planning.cost_terms.workspace_cost` as well). The exact
nearest distance of each robot point is computed against the static points around it only: robot
points are sorted along a z-order curve and ranked in chunks, each against the static points inside
the chunk's own box grown by the margin, at most ``PENETRATION_CHUNK_ELEMENTS`` pairs at a time.
"""

from __future__ import annotations

import math

import torch

from pointworld.geometry.checks import (
    require_dtype,
    require_floating,
    require_positive,
    require_shape,
)
from pointworld.geometry.pointcloud import crop_box_mask
from pointworld.model.features import nearest_robot_distance
from pointworld.model.serialization import z_order_encode

#: Largest query x reference pair count :func:`penetration_cost` ranks at once (64 MB in float32).
PENETRATION_CHUNK_ELEMENTS: int = 2**24
#: Robot points per spatially sorted chunk of :func:`penetration_cost` (small chunks = tight boxes).
_QUERY_CHUNK: int = 4096
#: Bits per axis of the z-order sort of the robot points in :func:`penetration_cost`.
_Z_DEPTH: int = 10

def _nearest_distance(queries: torch.Tensor, reference: torch.Tensor, margin: float) -> torch.Tensor:
    """(Q,) distance, m, from each query (Q, 3) to the nearest reference point (R, 3); inf where none
    lies within ``margin`` of the query chunk's box. Queries are sorted along a z-order curve and
    handled in chunks, each against the reference points inside its own box (+ margin) only."""
    lo = queries.amin(0)
    span = (queries.amax(0) - lo).amax().clamp_min(torch.finfo(queries.dtype).tiny)
    grid = ((queries - lo) / span * (2**_Z_DEPTH - 1)).long().clamp(0, 2**_Z_DEPTH - 1)  # rounding only
    order = torch.argsort(z_order_encode(grid, _Z_DEPTH))
    ordered = queries[order]
    distance = torch.full_like(ordered[:, 0], math.inf)
    chunk = max(1, min(_QUERY_CHUNK, PENETRATION_CHUNK_ELEMENTS // reference.shape[0]))
    for start in range(0, ordered.shape[0], chunk):
        q = ordered[start:start + chunk]
        local = reference[crop_box_mask(reference, q.amin(0) - margin, q.amax(0) + margin)]
        if local.shape[0]:
            ones = torch.ones(1, local.shape[0], dtype=torch.bool, device=q.device)
            distance[start:start + q.shape[0]] = nearest_robot_distance(q[None], local[None, None], ones,
                                                                        chunk=q.shape[0])[0, 0]
    return torch.empty_like(distance).index_copy_(0, order, distance)


def penetration_cost(robot_points: torch.Tensor, scene_points: torch.Tensor, static: torch.Tensor,
                     margin_m: float = 0.01) -> torch.Tensor:
    """Proxy for collisions: robot points closer than ``margin_m`` to static scene points.

    The scene cloud only samples surfaces, so a robot point deeper than ``margin_m`` behind a
    surface is not seen: this is a contact proxy, not a signed distance (keep the robot out of the
    table with :func:`workspace_cost` as well). Per robot point the violation is
    ``max(0, margin_m - d) / margin_m`` in [0, 1], d the distance to the nearest static point.
    Only robot points inside the static points' bounding box (+ margin) are ranked, sorted along a
    z-order curve and in chunks, each against the static points inside the chunk's own box
    (+ margin), at most ``PENETRATION_CHUNK_ELEMENTS`` pairs at a time (exact nearest distance, see
    :func:`pointworld.model.features.nearest_robot_distance`).

    Args:
        robot_points: (K, T+1, M, 3) robot surface points per step, m, world frame (finite).
        scene_points: (N, 3) scene points, m, world frame; same dtype as ``robot_points``.
        static: (N,) bool, True for points the robot must keep clear of (e.g. the table).
        margin_m: contact distance, m, > 0.

    Returns:
        cost: (K,) mean violation over the T+1 steps and M robot points, dimensionless in [0, 1]
        (1 = every robot point sits on a static point at every step).
    """
    require_shape("robot_points", require_floating("robot_points", robot_points), (None, None, None, 3),
                  max_leading=0)
    require_shape("scene_points", require_dtype("scene_points", scene_points, robot_points.dtype), (None, 3),
                  max_leading=0)
    static = require_shape("static", require_dtype("static", static, torch.bool), (scene_points.shape[0],),
                           max_leading=0).to(scene_points.device)
    margin = require_positive("margin_m", margin_m)
    K = robot_points.shape[0]
    flat = robot_points.reshape(-1, 3)
    violation = flat.new_zeros(flat.shape[0])
    reference = scene_points[static]
    if flat.shape[0] and reference.shape[0]:
        reference = reference[crop_box_mask(reference, flat.amin(0) - margin, flat.amax(0) + margin)]
    if flat.shape[0] and reference.shape[0]:
        near = crop_box_mask(flat, reference.amin(0) - margin, reference.amax(0) + margin)
        queries = flat[near]
        if queries.shape[0]:
            d = _nearest_distance(queries, reference, margin)
            violation = violation.masked_scatter(near, (margin - d).clamp_min(0) / margin)
    if violation.numel() == 0:
        return robot_points.new_zeros(K)
    return violation.view(K, -1).mean(-1)
