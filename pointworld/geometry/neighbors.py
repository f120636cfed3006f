"""Nearest neighbours and farthest point sampling on padded batches of point clouds.

Brute force in plain torch (batched matrix products), chunked over queries so memory stays bounded;
works on CPU and CUDA, float32 and float64. Clouds are ``(B, N, 3)`` plus a ``(B, N)`` bool mask.
On CPU, :func:`knn` can find the neighbour indices with Open3D's KD-tree instead (``backend``, see
:mod:`pointworld.geometry.neighbors_open3d`), several times faster on clouds of thousands of points.
"""

from __future__ import annotations

from typing import Literal

import torch

from pointworld.geometry.checks import require_floating, require_int, require_shape
from pointworld.geometry.neighbors_open3d import (
    knn_indices_open3d,
    open3d_unusable_reason,
)
from pointworld.geometry.pointcloud import check_cloud

KnnBackend = Literal["auto", "torch", "open3d"]
_BACKENDS = ("auto", "torch", "open3d")


def _select_backend(backend: object, query: torch.Tensor, points: torch.Tensor) -> str:
    """Resolve ``backend`` to "torch" or "open3d" (see :func:`knn`)."""
    if not isinstance(backend, str) or backend not in _BACKENDS:
        raise ValueError(f"backend: expected one of {_BACKENDS}, got {backend!r}")
    if backend == "torch":
        return backend
    reason = open3d_unusable_reason(query, points)
    if backend == "open3d":
        if reason is not None:
            raise ValueError(f"backend: 'open3d' cannot be used here: {reason}")
        return backend
    needs_grad = torch.is_grad_enabled() and (query.requires_grad or points.requires_grad)
    return "torch" if reason is not None or needs_grad else "open3d"


def _masked_centroid(points: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """(B, 1, 3) mean of the valid points (0 for empty clouds), used to centre coordinates."""
    w = valid.to(points.dtype)[..., None]
    total = torch.where(valid[..., None], points, 0.0).sum(1, keepdim=True)
    return total / w.sum(1, keepdim=True).clamp_min(1.0)


#: On CPU, queries run in blocks of about this many distance entries (cache sized; measured faster).
_CPU_BLOCK_ENTRIES = 1 << 20


def _knn_indices(query: torch.Tensor, points: torch.Tensor, valid: torch.Tensor, k: int,
                 chunk_size: int) -> torch.Tensor:
    """(B, Q, k) indices of the k smallest squared distances (-1 where fewer valid points); no grad.

    Squared distances come from one batched product of augmented vectors,
    ``[-2q, |q|^2, 1] . [p, 1, |p|^2]``; a masked point gets ``|p|^2 = inf`` so it ranks last.
    """
    n_b, n_pts = points.shape[:2]
    with torch.no_grad():
        centre = _masked_centroid(points, valid)
        pts = torch.where(valid[..., None], points - centre, 0.0)  # masked entries may hold NaN
        qry = query - centre
        ones_p, ones_q = pts.new_ones(n_b, n_pts, 1), qry.new_ones(qry.shape[:2] + (1,))
        pts_sq = (pts * pts).sum(-1, keepdim=True).masked_fill_(~valid[..., None], float("inf"))
        pts_aug = torch.cat([pts, ones_p, pts_sq], -1).transpose(1, 2)  # (B, 5, N)
        qry_aug = torch.cat([-2.0 * qry, (qry * qry).sum(-1, keepdim=True), ones_q], -1)  # (B, Q, 5)
        kk = min(k, n_pts)
        step = chunk_size
        if query.device.type == "cpu":
            step = max(1, min(chunk_size, _CPU_BLOCK_ENTRIES // max(1, n_b * n_pts)))
        out = []
        for start in range(0, query.shape[1], step):
            d2 = torch.bmm(qry_aug[:, start:start + step], pts_aug)
            d2_k, idx = torch.topk(d2, kk, dim=-1, largest=False, sorted=True)
            out.append(idx.masked_fill_(~torch.isfinite(d2_k), -1))
        idx = torch.cat(out, 1) if out else query.new_zeros((n_b, 0, kk), dtype=torch.int64)
    if kk < k:
        idx = torch.cat([idx, idx.new_full(idx.shape[:2] + (k - kk,), -1)], -1)
    return idx


def _sorted_distances(query: torch.Tensor, points: torch.Tensor,
                      idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact distances (B, Q, k) to the neighbours ``idx`` (-1 = empty: inf), both sorted by
    (distance, index). The searches return nearly sorted lists, so the sorts run only if needed."""
    found = idx >= 0
    n_b, n_q, k = idx.shape
    gathered = torch.gather(points, 1, idx.clamp_min(0).reshape(n_b, -1, 1).expand(-1, -1, 3))
    diff = query[:, :, None, :] - gathered.reshape(n_b, n_q, k, 3)
    if not bool(found.all()):
        diff = torch.where(found[..., None], diff, 1.0)  # keeps gradients finite for empty slots
    dist = torch.where(found, torch.linalg.vector_norm(diff, dim=-1), float("inf"))
    d0, d1, i0, i1 = dist[..., :-1], dist[..., 1:], idx[..., :-1], idx[..., 1:]
    if bool(((d0 < d1) | ((d0 == d1) & (i0 <= i1))).all()):
        return dist, idx
    idx, order = torch.sort(idx, dim=-1)  # then a stable sort by distance: equal distances by index
    dist, order2 = torch.sort(torch.gather(dist, -1, order), dim=-1, stable=True)
    return dist, torch.gather(idx, -1, order2)


def knn(query: torch.Tensor, points: torch.Tensor, k: int, points_mask: torch.Tensor | None = None, *,
        chunk_size: int = 2048, backend: KnnBackend = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """The k nearest valid points of every query point (exact).

    Torch backend (brute force): candidates are ranked with ``|q|^2 + |p|^2 - 2 q.p`` on coordinates
    centred at each cloud's centroid; memory about ``B * chunk_size * N`` values at a time. Open3D
    backend: the indices come from one KD-tree per cloud (a Python loop over the B clouds, on the valid
    points only). With either, the returned distances are then recomputed in torch as ``|q - p|``
    (accurate, differentiable) and the k neighbours re-sorted by them, equal distances by index. So
    both backends give identical distances and indices, except where the k-th distance ties with an
    unreturned point's (exact duplicates, or differences at float rounding level): which of the tied
    points fills the last slots may then differ, at the same distance.

    Args:
        query: (B, Q, 3) query positions, m, same frame as ``points``. A non-finite query row gets no
            neighbours (all slots empty).
        points: (B, N, 3) candidate positions, m; finite where ``points_mask`` is True.
        k: number of neighbours, int > 0 (may exceed the number of valid points).
        points_mask: (B, N) bool, True = a real point; None = all real. Masked points are never returned.
        chunk_size: queries handled per step by the torch backend, int > 0.
        backend: "torch" forces the pure-torch search (CPU/CUDA); "open3d" forces Open3D's KD-tree
            (CPU, float32/float64, open3d installed; otherwise ValueError; gradients still flow through
            the recomputed distances); "auto" uses Open3D where it can unless a gradient is being
            recorded (grad mode on and ``query`` or ``points`` requiring grad), else torch.

    Returns:
        dist_m: (B, Q, k) ascending euclidean distances, m; ``inf`` in empty slots (a cloud with fewer
            than k valid points). Differentiable w.r.t. ``query`` and ``points``.
        idx: (B, Q, k) int64 indices into ``points``; -1 in empty slots.
    """
    valid = check_cloud(points, points_mask, mask_name="points_mask")
    require_floating("query", query)
    require_shape("query", query, (None, 3), min_leading=1, max_leading=1)
    if query.shape[0] != points.shape[0]:
        raise ValueError(f"query: expected batch size {points.shape[0]} like points, got shape "
                         f"{tuple(query.shape)}")
    if query.dtype != points.dtype:
        raise TypeError(f"query: expected dtype {points.dtype} like points, got {query.dtype}")
    k, chunk_size = require_int("k", k, 1), require_int("chunk_size", chunk_size, 1)
    backend = _select_backend(backend, query, points)
    if not bool(torch.isfinite(points[valid]).all()):
        raise ValueError("points: expected finite coordinates where points_mask is True, got NaN/inf")
    if backend == "open3d":
        idx = knn_indices_open3d(query, points, valid, k)
    else:
        idx = _knn_indices(query, points, valid, k, chunk_size)
    if points.shape[1] == 0:  # nothing to gather from
        return torch.full(idx.shape, float("inf"), dtype=query.dtype, device=query.device), idx
    return _sorted_distances(query, points, idx)


def _start_index(valid: torch.Tensor, start: str, seed: int | None) -> torch.Tensor:
    """(B,) index of the first sample: the first valid point, or a uniformly random valid point."""
    if start == "first":
        return torch.argmax(valid.to(torch.uint8), dim=-1)  # first True (0 for an empty cloud)
    gen = torch.Generator(device=valid.device).manual_seed(0 if seed is None else int(seed))
    score = torch.rand(valid.shape, generator=gen, device=valid.device)
    return torch.argmax(torch.where(valid, score, -1.0), dim=-1)


def farthest_point_sampling(points: torch.Tensor, n_samples: int, mask: torch.Tensor | None = None, *,
                            start: Literal["first", "random"] = "first",
                            seed: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Iterative farthest point sampling, batched over clouds (a Python loop over samples only).

    Each new sample is the valid, not yet chosen point whose squared distance to the chosen set is
    largest (lowest index on ties). This matches Open3D's ``farthest_point_down_sample`` started at the
    same index, except that once every remaining point is at distance 0 (duplicates) Open3D repeats a
    sample while this function takes the lowest-index unchosen point, so indices stay distinct.

    Args:
        points: (B, N, 3) positions, m, any frame; finite where ``mask`` is True.
        n_samples: S, number of samples per cloud, int > 0.
        mask: (B, N) bool, True = a real point; None = all real. Masked points are never sampled.
        start: "first" starts at the first valid point; "random" at a uniformly random valid point.
        seed: seed of the torch.Generator used by ``start="random"`` (None means 0).

    Returns:
        idx: (B, S) int64 indices into ``points`` in sampling order. A cloud with fewer than S valid
            points fills its extra slots with its first sample (0 when N = 0).
        valid: (B, S) bool, False in those extra slots.
    """
    mask_v = check_cloud(points, mask)
    n_samples = require_int("n_samples", n_samples, 1)
    if start not in ("first", "random"):
        raise ValueError(f"start: expected 'first' or 'random', got {start!r}")
    if not bool(torch.isfinite(points[mask_v]).all()):
        raise ValueError("points: expected finite coordinates where mask is True, got NaN/inf")
    if points.shape[1] == 0:
        empty = torch.zeros(points.shape[0], n_samples, dtype=torch.int64, device=points.device)
        return empty, empty.bool()
    pts = torch.where(mask_v[..., None], points, 0.0).detach().transpose(1, 2).contiguous()  # (B, 3, N)
    # Remaining distance of every point; -1 marks chosen points, -2 masked ones (never the maximum).
    dist = torch.where(mask_v, torch.inf, -2.0).to(pts.dtype)
    current = _start_index(mask_v, start, seed)
    idx = torch.empty(points.shape[0], n_samples, dtype=torch.int64, device=points.device)
    batch = torch.arange(points.shape[0], device=points.device)
    for s in range(n_samples):
        idx[:, s] = current
        dist[batch, current] = -1.0
        chosen = pts[batch, :, current]  # (B, 3)
        d2 = (pts - chosen[:, :, None]).square().sum(1)
        dist = torch.where(dist >= 0.0, torch.minimum(dist, d2), dist)
        current = torch.argmax(dist, dim=-1)
    ok = torch.arange(n_samples, device=points.device) < mask_v.sum(-1, keepdim=True)
    return torch.where(ok, idx, idx[:, :1]), ok
