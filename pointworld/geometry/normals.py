"""Surface normals and statistical outlier removal from k-nearest-neighbour statistics.

Both work on padded batches ``points: (B, N, 3)`` with ``mask: (B, N)`` bool and use the exact
brute-force :func:`pointworld.geometry.neighbors.knn`, where every point counts as its own nearest
neighbour (distance 0), as in Open3D.
"""

from __future__ import annotations

import torch

from pointworld.geometry.checks import require_finite, require_floating, require_shape
from pointworld.geometry.neighbors import knn
from pointworld.geometry.pointcloud import check_cloud


def _check_k(k: object) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or k <= 0:
        raise ValueError(f"k: expected an int > 0, got {k!r}")
    return k


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


def _orient(normals: torch.Tensor, points: torch.Tensor, viewpoint: torch.Tensor | None) -> torch.Tensor:
    """Flip normals toward the viewpoint, or make each one's largest-magnitude component positive."""
    if viewpoint is not None:
        vp = viewpoint[:, None, :] if viewpoint.dim() == 2 else viewpoint
        flip = ((vp - points) * normals).sum(-1) < 0
    else:
        major = torch.argmax(normals.abs(), dim=-1, keepdim=True)  # first axis wins ties
        flip = torch.gather(normals, -1, major)[..., 0] < 0
    return torch.where(flip[..., None], -normals, normals)


def estimate_normals(points: torch.Tensor, mask: torch.Tensor | None = None, *, k: int = 16,
                     viewpoint: torch.Tensor | None = None, chunk_size: int = 2048) -> torch.Tensor:
    """Unit surface normals by PCA of each point's k nearest neighbours (the point itself included).

    The normal is the eigenvector of the smallest eigenvalue of the neighbours' covariance
    (``torch.linalg.eigh``, batched), i.e. what Open3D's ``estimate_normals(KDTreeSearchParamKNN(k))``
    computes, up to sign. Sign: toward ``viewpoint`` when given (``dot(n, viewpoint - p) >= 0``);
    otherwise the component of largest magnitude is made positive (the first such axis on ties).

    Args:
        points: (B, N, 3) positions, m, any frame; finite where ``mask`` is True.
        mask: (B, N) bool, True = a real point; None = all real. Masked points are not neighbours.
        k: neighbours per point, int > 0; clouds with fewer valid points use all of them.
        viewpoint: (B, 3) one sensor position per cloud or (B, N, 3) one per point, m, same frame.
        chunk_size: queries per kNN step (memory about ``B * chunk_size * N`` values).

    Returns:
        normals: (B, N, 3) unit vectors, same frame; 0 for masked points and for points with fewer than
            3 neighbours (the plane is undefined).
    """
    valid = check_cloud(points, mask)
    k = _check_k(k)
    if viewpoint is not None:
        require_floating("viewpoint", viewpoint)
        if tuple(viewpoint.shape) not in ((points.shape[0], 3), tuple(points.shape)):
            raise ValueError(f"viewpoint: expected shape ({points.shape[0]}, 3) or {tuple(points.shape)}, "
                             f"got {tuple(viewpoint.shape)}")
        require_finite("viewpoint", viewpoint)
    if points.shape[1] == 0:
        return torch.zeros_like(points)
    query = torch.where(valid[..., None], points, 0.0)
    _, idx = knn(query, points, k, valid, chunk_size=chunk_size)
    cov, count = _neighbour_covariance(points, idx)
    _, vectors = torch.linalg.eigh(cov)  # eigenvalues ascending
    normals = _orient(vectors[..., 0], points, viewpoint)
    ok = valid & (count >= 3)
    return torch.where(ok[..., None], normals, 0.0)


def statistical_outlier_mask(points: torch.Tensor, mask: torch.Tensor | None = None, *, k: int = 20,
                             std_ratio: float = 2.0, chunk_size: int = 2048) -> torch.Tensor:
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

    Returns:
        inliers: (B, N) bool.
    """
    valid = check_cloud(points, mask)
    k = _check_k(k)
    if not (isinstance(std_ratio, (int, float)) and 0 < std_ratio < float("inf")):
        raise ValueError(f"std_ratio: expected a finite number > 0, got {std_ratio!r}")
    query = torch.where(valid[..., None], points, 0.0)
    dist, idx = knn(query, points, k, valid, chunk_size=chunk_size)
    found = idx >= 0
    n_found = found.sum(-1).clamp_min(1).to(points.dtype)
    avg = torch.where(found, dist, 0.0).sum(-1) / n_found  # (B, N)
    counted = valid & (avg > 0)
    n_valid = valid.sum(-1, keepdim=True).to(points.dtype)
    cloud_mean = torch.where(counted, avg, 0.0).sum(-1, keepdim=True) / n_valid.clamp_min(1.0)
    sq_sum = torch.where(counted, (avg - cloud_mean) ** 2, 0.0).sum(-1, keepdim=True)
    std = torch.sqrt(sq_sum / (n_valid - 1.0))  # NaN for a single point: no inliers, as in Open3D
    return counted & (avg < cloud_mean + std_ratio * std)
