"""Optional kNN index search through Open3D's KD-tree (``open3d.core.nns.NearestNeighborSearch``).

Used by :func:`pointworld.geometry.neighbors.knn` as its fast CPU backend. Only the neighbour
*indices* come from Open3D; ``knn`` recomputes the distances in torch from them, so distances are
identical to the pure-torch path and stay differentiable. Open3D has no batched index, so this module
loops over the B clouds of a batch (one KD-tree per cloud, built on its valid points only); the
search itself runs multi-threaded inside Open3D.
"""

from __future__ import annotations

import functools
from types import ModuleType

import torch

#: dtypes Open3D's nearest-neighbour search accepts.
OPEN3D_DTYPES = (torch.float32, torch.float64)


@functools.lru_cache(maxsize=1)
def _open3d() -> ModuleType | None:
    try:
        import open3d
    except ImportError:  # optional dependency: callers fall back to the torch path
        return None
    return open3d


def open3d_available() -> bool:
    """True if ``open3d`` imports (its tensor nearest-neighbour search is then usable on CPU)."""
    return _open3d() is not None


def open3d_unusable_reason(query: torch.Tensor, points: torch.Tensor) -> str | None:
    """Why the Open3D search cannot serve these tensors, or None if it can."""
    if not open3d_available():
        return "open3d is not installed (or fails to import)"
    if query.device.type != "cpu" or points.device.type != "cpu":
        return f"the open3d backend runs on CPU tensors only, got device {points.device}"
    if points.dtype not in OPEN3D_DTYPES:
        return f"the open3d backend supports float32/float64 only, got dtype {points.dtype}"
    return None


def _cloud_knn(query: torch.Tensor, points: torch.Tensor, k: int) -> torch.Tensor:
    """(Q, min(k, N)) int64 indices into ``points`` (N, 3) of the nearest points of ``query`` (Q, 3)."""
    core = _open3d().core
    # Zero-copy views: the numpy arrays stay referenced here until the search has returned.
    points_np, query_np = points.detach().contiguous().numpy(), query.detach().contiguous().numpy()
    nns = core.nns.NearestNeighborSearch(core.Tensor.from_numpy(points_np), core.int64)
    if not nns.knn_index():
        raise RuntimeError("open3d: building the KD-tree index failed")
    found, _ = nns.knn_search(core.Tensor.from_numpy(query_np), min(k, points_np.shape[0]))
    return torch.from_numpy(found.numpy()).clone()  # own the memory before Open3D frees its result


def knn_indices_open3d(query: torch.Tensor, points: torch.Tensor, valid: torch.Tensor,
                       k: int) -> torch.Tensor:
    """Indices of the k nearest valid points of every query point, searched by Open3D.

    Same contract as the torch search in :mod:`pointworld.geometry.neighbors`: slots beyond the number
    of valid points hold -1, and a query row with a non-finite coordinate gets no neighbours (all -1).
    Ranking uses Open3D's squared distances, so only exact (or float-rounding-level) distance ties may
    be broken differently from the torch path.

    Args:
        query: (B, Q, 3) query positions, m; float32/float64 CPU (gradients are not tracked here).
        points: (B, N, 3) candidate positions, m, same frame; finite where ``valid``.
        valid: (B, N) bool, True = a real point.
        k: neighbours per query, int > 0.

    Returns:
        idx: (B, Q, k) int64 indices into ``points``, ascending distance; -1 in empty slots.
    """
    n_b, n_q = query.shape[:2]
    idx = torch.full((n_b, n_q, k), -1, dtype=torch.int64)
    rows_ok = torch.isfinite(query).all(-1)
    all_valid, all_rows = bool(valid.all()), bool(rows_ok.all())
    for b in range(n_b):  # Open3D builds one index per cloud
        keep = None if all_valid else valid[b].nonzero().squeeze(1)
        rows = None if all_rows else rows_ok[b].nonzero().squeeze(1)
        cand = points[b] if keep is None else points[b].index_select(0, keep)
        qry = query[b] if rows is None else query[b].index_select(0, rows)
        if cand.shape[0] == 0 or qry.shape[0] == 0:
            continue
        found = _cloud_knn(qry, cand, k)
        if keep is not None:
            found = keep[found]
        if rows is None:
            idx[b, :, :found.shape[1]] = found
        else:
            idx[b, rows, :found.shape[1]] = found
    return idx
