"""Surface normals and statistical outlier removal from k-nearest-neighbour statistics.

Both work on padded batches ``points: (B, N, 3)`` with ``mask: (B, N)`` bool and use the exact
:func:`pointworld.geometry.neighbors.knn` (brute force in torch, or Open3D's KD-tree on CPU: same
neighbours), where every point counts as its own nearest neighbour (distance 0), as in Open3D.
:func:`outliers_and_normals` chains both from one shared neighbour search.
"""

from __future__ import annotations

import math

import torch

from pointworld.geometry.checks import require_finite, require_floating, require_int
from pointworld.geometry.neighbors import KnnBackend, knn
from pointworld.geometry.pointcloud import check_cloud


def _check_viewpoint(points: torch.Tensor, viewpoint: torch.Tensor | None) -> None:
    if viewpoint is None:
        return
    require_floating("viewpoint", viewpoint)
    if tuple(viewpoint.shape) not in ((points.shape[0], 3), tuple(points.shape)):
        raise ValueError(f"viewpoint: expected shape ({points.shape[0]}, 3) or {tuple(points.shape)}, "
                         f"got {tuple(viewpoint.shape)}")
    require_finite("viewpoint", viewpoint)


def _check_std_ratio(std_ratio: object) -> float:
    if not (isinstance(std_ratio, (int, float)) and 0 < std_ratio < float("inf")):
        raise ValueError(f"std_ratio: expected a finite number > 0, got {std_ratio!r}")
    return float(std_ratio)


def _neighbour_covariance(points: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Covariance (B, N, 3, 3) of each point's neighbours (slots with idx -1 ignored) and their count."""
    n_b, n_q, k = idx.shape
    found = (idx >= 0)[..., None].to(points.dtype)  # (B, N, k, 1)
    nbr = torch.gather(points, 1, idx.clamp_min(0).reshape(n_b, -1, 1).expand(-1, -1, 3))
    nbr = nbr.reshape(n_b, n_q, k, 3) * found
    count = found.sum(2)  # (B, N, 1)
    mean = nbr.sum(2) / count.clamp_min(1.0)
    centred = (nbr - mean[:, :, None, :]) * found
    cov = centred.transpose(-1, -2) @ centred / count[..., None].clamp_min(1.0)
    return cov, count[..., 0]


def _smallest_eigenvector(cov: torch.Tensor) -> torch.Tensor:
    """Unit eigenvector (..., 3) of the smallest eigenvalue of symmetric PSD matrices (..., 3, 3).

    Closed form, several times faster than batched ``torch.linalg.eigh`` on CPU: the eigenvalue from the
    trigonometric solution of the characteristic cubic (on the matrix scaled to entries in [-1, 1]),
    the vector as the largest cross product of two rows of ``A - lambda I``. Where that eigenvalue is
    repeated to rounding level (points on a line, or all identical) the cross products vanish and a
    vector of its eigenspace is returned: orthogonal to the largest row, or the z axis if ``A`` is
    a multiple of the identity.
    """
    dtype = cov.dtype
    cov = cov.double()  # float32 would lose ~1e-4 of accuracy where the two smallest eigenvalues are close
    eps, tiny = torch.finfo(cov.dtype).eps, torch.finfo(cov.dtype).tiny
    a = cov / cov.abs().amax((-1, -2), keepdim=True).clamp_min(tiny)
    eye = torch.eye(3, dtype=cov.dtype, device=cov.device)
    q = torch.diagonal(a, dim1=-2, dim2=-1).mean(-1)[..., None, None]
    c = a - q * eye
    p = torch.sqrt((c * c).sum((-1, -2)) / 6.0)[..., None, None]
    r = (torch.linalg.det(c / p.clamp_min(tiny)) / 2.0).clamp(-1.0, 1.0)[..., None, None]
    lam = q + 2.0 * p * torch.cos(torch.acos(r) / 3.0 + 2.0 * math.pi / 3.0)
    m = a - lam * eye
    rows = m.unbind(-2)
    cross = torch.stack([torch.linalg.cross(rows[i], rows[j]) for i, j in ((0, 1), (0, 2), (1, 2))], -2)
    best = torch.gather(cross, -2, (cross * cross).sum(-1).argmax(-1)[..., None, None].expand(
        *cross.shape[:-2], 1, 3))[..., 0, :]
    row = torch.gather(m, -2, (m * m).sum(-1).argmax(-1)[..., None, None].expand(
        *m.shape[:-2], 1, 3))[..., 0, :]
    axis = torch.nn.functional.one_hot(row.abs().argmin(-1), 3).to(cov.dtype)
    ortho = torch.linalg.cross(row, axis)  # the line case: any vector orthogonal to the row
    floor = (64.0 * eps) ** 2
    vec = torch.where(((ortho * ortho).sum(-1) > floor)[..., None], ortho, eye[2])
    vec = torch.where(((best * best).sum(-1) > floor)[..., None], best, vec)
    return (vec / torch.linalg.vector_norm(vec, dim=-1, keepdim=True)).to(dtype)


def _orient(normals: torch.Tensor, points: torch.Tensor, viewpoint: torch.Tensor | None) -> torch.Tensor:
    """Flip normals toward the viewpoint, or make each one's largest-magnitude component positive."""
    if viewpoint is not None:
        vp = viewpoint[:, None, :] if viewpoint.dim() == 2 else viewpoint
        flip = ((vp - points) * normals).sum(-1) < 0
    else:
        major = torch.argmax(normals.abs(), dim=-1, keepdim=True)  # first axis wins ties
        flip = torch.gather(normals, -1, major)[..., 0] < 0
    return torch.where(flip[..., None], -normals, normals)


def _normals_from_neighbours(points: torch.Tensor, valid: torch.Tensor, idx: torch.Tensor,
                             viewpoint: torch.Tensor | None) -> torch.Tensor:
    """(B, N, 3) oriented PCA normals from neighbour indices (B, N, k); 0 where invalid or < 3 neighbours."""
    cov, count = _neighbour_covariance(points, idx)
    normals = _orient(_smallest_eigenvector(cov), points, viewpoint)
    ok = valid & (count >= 3)
    return torch.where(ok[..., None], normals, 0.0)


def _inliers_from_distances(dist: torch.Tensor, idx: torch.Tensor, valid: torch.Tensor,
                            std_ratio: float) -> torch.Tensor:
    """(B, N) inliers by Open3D's rule from sorted neighbour distances (B, N, k) (see below)."""
    found = idx >= 0
    n_found = found.sum(-1).clamp_min(1).to(dist.dtype)
    avg = torch.where(found, dist, 0.0).sum(-1) / n_found  # (B, N)
    counted = valid & (avg > 0)
    n_valid = valid.sum(-1, keepdim=True).to(dist.dtype)
    cloud_mean = torch.where(counted, avg, 0.0).sum(-1, keepdim=True) / n_valid.clamp_min(1.0)
    sq_sum = torch.where(counted, (avg - cloud_mean) ** 2, 0.0).sum(-1, keepdim=True)
    std = torch.sqrt(sq_sum / (n_valid - 1.0))  # NaN for a single point: no inliers, as in Open3D
    return counted & (avg < cloud_mean + std_ratio * std)


def estimate_normals(points: torch.Tensor, mask: torch.Tensor | None = None, *, k: int = 16,
                     viewpoint: torch.Tensor | None = None, chunk_size: int = 2048,
                     backend: KnnBackend = "auto") -> torch.Tensor:
    """Unit surface normals by PCA of each point's k nearest neighbours (the point itself included).

    The normal is the eigenvector of the smallest eigenvalue of the neighbours' covariance (closed-form
    3x3 solution, computed in float64), i.e. what Open3D's ``estimate_normals(KDTreeSearchParamKNN(k))``
    computes, up to sign. Sign: toward ``viewpoint`` when given (``dot(n, viewpoint - p) >= 0``);
    otherwise the component of largest magnitude is made positive (the first such axis on ties).

    Args:
        points: (B, N, 3) positions, m, any frame; finite where ``mask`` is True.
        mask: (B, N) bool, True = a real point; None = all real. Masked points are not neighbours.
        k: neighbours per point, int > 0; clouds with fewer valid points use all of them.
        viewpoint: (B, 3) one sensor position per cloud or (B, N, 3) one per point, m, same frame.
        chunk_size: queries per kNN step (memory about ``B * chunk_size * N`` values).
        backend: kNN search, "auto", "torch" or "open3d" (see :func:`pointworld.geometry.neighbors.knn`).

    Returns:
        normals: (B, N, 3) unit vectors, same frame; 0 for masked points and for points with fewer than
            3 neighbours (the plane is undefined).
    """
    valid = check_cloud(points, mask)
    k = require_int("k", k, 1)
    _check_viewpoint(points, viewpoint)
    if points.shape[1] == 0:
        return torch.zeros_like(points)
    query = torch.where(valid[..., None], points, 0.0).detach()  # only indices are used: no gradient
    _, idx = knn(query, points.detach(), k, valid, chunk_size=chunk_size, backend=backend)
    return _normals_from_neighbours(points, valid, idx, viewpoint)


def statistical_outlier_mask(points: torch.Tensor, mask: torch.Tensor | None = None, *, k: int = 20,
                             std_ratio: float = 2.0, chunk_size: int = 2048,
                             backend: KnnBackend = "auto") -> torch.Tensor:
    """Inliers by Open3D's ``remove_statistical_outlier`` rule, per cloud.

    For each valid point, ``d`` = mean distance to its k nearest valid points, the point itself included
    (fewer when the cloud has fewer than k points). Over the cloud: ``mean`` of the positive ``d`` summed
    and divided by the number of valid points, ``std`` = sqrt(sum over positive ``d`` of
    ``(d - mean)^2`` / (n_valid - 1)) (sample std). Inlier: ``0 < d < mean + std_ratio * std``
    (so exact duplicates of k-1 others, with ``d = 0``, and clouds of one point are all outliers).

    Args:
        points: (B, N, 3) positions, m, any frame; finite where ``mask`` is True.
        mask: (B, N) bool, True = a real point; None = all real. Masked points are never inliers.
        k: neighbours per point (Open3D's ``nb_neighbors``), int > 0.
        std_ratio: threshold in standard deviations, finite > 0.
        chunk_size: queries per kNN step (memory about ``B * chunk_size * N`` values).
        backend: kNN search, "auto", "torch" or "open3d" (see :func:`pointworld.geometry.neighbors.knn`).

    Returns:
        inliers: (B, N) bool.
    """
    valid = check_cloud(points, mask)
    k = require_int("k", k, 1)
    std_ratio = _check_std_ratio(std_ratio)
    query = torch.where(valid[..., None], points, 0.0).detach()  # the result is boolean: no gradient
    dist, idx = knn(query, points.detach(), k, valid, chunk_size=chunk_size, backend=backend)
    return _inliers_from_distances(dist, idx, valid, std_ratio)


def _first_inlier_neighbours(idx: torch.Tensor, inliers: torch.Tensor,
                             k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first k inlier entries of sorted neighbour lists (B, N, K), and where they are the k nearest
    inliers: the list holds every valid point, or it holds k inliers (every point outside the list is
    at least as far as its last entry, so only an exact tie with that entry could change the choice)."""
    n_b, n_q = idx.shape[:2]
    keep = (idx >= 0) & torch.gather(inliers, 1, idx.clamp_min(0).reshape(n_b, -1)).reshape(idx.shape)
    rank = keep.cumsum(-1)
    slot = torch.where(keep & (rank <= k), rank - 1, k)  # column k collects the unused entries
    first = idx.new_full((n_b, n_q, k + 1), -1).scatter_(-1, slot, torch.where(slot < k, idx, -1))
    return first[..., :k], (idx[..., -1] < 0) | (rank[..., -1] >= k)


def _search_rows(points: torch.Tensor, inliers: torch.Tensor, rows: torch.Tensor, idx: torch.Tensor,
                 chunk_size: int, backend: KnnBackend) -> torch.Tensor:
    """``idx`` (B, N, k) with the rows where ``rows`` (B, N) is True replaced by a kNN search among the
    inliers (only those rows are searched: moved to the front, the padding rows are NaN queries)."""
    n_rows = rows.sum(-1)
    order = torch.argsort((~rows).to(torch.uint8), dim=-1, stable=True)[:, :int(n_rows.max())]
    used = torch.arange(order.shape[1], device=rows.device) < n_rows[:, None]
    query = torch.gather(points, 1, order[..., None].expand(-1, -1, 3))
    query = torch.where(used[..., None], query, float("nan"))  # a NaN query gets no neighbours
    _, found = knn(query, points, idx.shape[-1], inliers, chunk_size=chunk_size, backend=backend)
    slots = order[..., None].expand(-1, -1, idx.shape[-1])
    found = torch.where(used[..., None], found, torch.gather(idx, 1, slots))
    return idx.scatter(1, slots, found)


def outliers_and_normals(points: torch.Tensor, mask: torch.Tensor | None = None, *, outlier_k: int = 20,
                         std_ratio: float = 2.0, normals_k: int = 16, viewpoint: torch.Tensor | None = None,
                         chunk_size: int = 2048, backend: KnnBackend = "auto"
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """Statistical outlier removal, then normals of the inliers among the inliers, from one kNN search.

    The result is that of ``inliers = statistical_outlier_mask(points, mask, k=outlier_k,
    std_ratio=std_ratio)`` followed by ``estimate_normals(points, inliers, k=normals_k,
    viewpoint=viewpoint)`` (the same neighbours, hence the same numbers, except where distances tie
    exactly or at float rounding level). One search of ``max(outlier_k, normals_k)`` neighbours over
    all valid points serves both; a point whose list does not prove which ``normals_k`` inliers are
    nearest (more than ``max(outlier_k, normals_k) - normals_k`` outliers among its neighbours) is
    searched again among the inliers.

    Args:
        points: (B, N, 3) positions, m, any frame; finite where ``mask`` is True.
        mask: (B, N) bool, True = a real point; None = all real.
        outlier_k: neighbours of the outlier statistic (Open3D's ``nb_neighbors``), int > 0.
        std_ratio: outlier threshold in standard deviations, finite > 0.
        normals_k: neighbours per normal, int > 0.
        viewpoint: (B, 3) or (B, N, 3) sensor positions, m, same frame (see :func:`estimate_normals`).
        chunk_size, backend: kNN settings (see :func:`pointworld.geometry.neighbors.knn`).

    Returns:
        inliers: (B, N) bool, as :func:`statistical_outlier_mask`.
        normals: (B, N, 3) unit normals, same frame; 0 at outliers, masked points and points with
            fewer than 3 inlier neighbours.
    """
    valid = check_cloud(points, mask)
    outlier_k, normals_k = require_int("outlier_k", outlier_k, 1), require_int("normals_k", normals_k, 1)
    std_ratio = _check_std_ratio(std_ratio)
    _check_viewpoint(points, viewpoint)
    if points.shape[1] == 0:
        return valid.clone(), torch.zeros_like(points)
    query, data = torch.where(valid[..., None], points, 0.0).detach(), points.detach()
    dist, idx = knn(query, data, max(outlier_k, normals_k), valid, chunk_size=chunk_size, backend=backend)
    inliers = _inliers_from_distances(dist[..., :outlier_k], idx[..., :outlier_k], valid, std_ratio)
    nbr, certain = _first_inlier_neighbours(idx, inliers, normals_k)
    redo = inliers & ~certain
    if bool(redo.any()):
        nbr = _search_rows(data, inliers, redo, nbr, chunk_size, backend)
    return inliers, _normals_from_neighbours(points, inliers, nbr, viewpoint)
