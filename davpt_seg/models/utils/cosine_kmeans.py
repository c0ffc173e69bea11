# Copyright (c) davpt-seg contributors. All rights reserved.
"""Spherical (cosine) k-means used to build the class -> prompt mapping.

See §4.2 of the DA-VPT algorithm reference. The rows are optionally
standardised with a parameter-free layer norm, points are assigned to the
centroid of highest cosine similarity and centroids are re-estimated as the
plain mean of their (standardised) members.
"""
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

_NORMS = ('layer', 'none')


def _assign(points: Tensor, centroids: Tensor) -> Tensor:
    """Assign every point to the centroid of highest cosine similarity.

    Args:
        points (Tensor): Points of shape (N, C).
        centroids (Tensor): Centroids of shape (k, C).

    Returns:
        Tensor: Cluster index of every point, shape (N, ), dtype long.
    """
    sim = F.normalize(points, dim=1) @ F.normalize(centroids, dim=1).t()
    return sim.argmax(dim=1)


def _update(points: Tensor, assignment: Tensor, centroids: Tensor) -> Tensor:
    """Re-estimate every centroid as the mean of its assigned points.

    A cluster without points keeps its previous centroid.

    Args:
        points (Tensor): Points of shape (N, C).
        assignment (Tensor): Cluster index of every point, shape (N, ).
        centroids (Tensor): Current centroids of shape (k, C).

    Returns:
        Tensor: New centroids of shape (k, C).
    """
    k = centroids.size(0)
    sums = torch.zeros_like(centroids).index_add_(0, assignment, points)
    counts = torch.bincount(assignment, minlength=k).to(points.dtype)
    means = sums / counts.clamp(min=1).unsqueeze(1)
    return torch.where((counts > 0).unsqueeze(1), means, centroids)


def cosine_kmeans(
        features: Tensor,
        k: int,
        init_centroids: Optional[Tensor] = None,
        norm: str = 'layer',
        max_iter: int = 20,
        tol: float = 1e-4,
        generator: Optional[torch.Generator] = None) -> Tuple[Tensor, Tensor]:
    """Spherical k-means with an optional warm start.

    The computation runs in float32 on the device of ``features`` and is fully
    vectorised: one (N, k) similarity matrix per iteration.

    Algorithm (§4.2 of the reference):

    1. ``Z = layer_norm(features)`` (per-row standardisation, no affine) when
       ``norm='layer'``; ``Z = features`` when ``norm='none'``.
    2. Centroids start from ``init_centroids`` (warm start) or from ``k``
       distinct rows of ``Z`` drawn at random with ``generator`` (cold start).
    3. Repeat at most ``max_iter`` times: assign every row to the centroid of
       highest cosine similarity, then move every centroid to the mean of its
       rows (an empty cluster keeps its centroid). Stop as soon as the total
       centroid shift ``sum_m ||c_m - c'_m||_2`` is below ``tol``.

    The returned centroids are always the ones that produced the returned
    assignment: on convergence these are the centroids before the last
    (negligible) move; if ``max_iter`` is reached without convergence, the
    points are assigned once more to the latest centroids.

    Args:
        features (Tensor): Points to cluster, shape (N, C).
        k (int): Number of clusters.
        init_centroids (Tensor, optional): Warm-start centroids of shape
            (k, C), in the normalised space (e.g. the centroids returned by a
            previous call with the same ``norm``). ``None`` means cold start,
            which needs ``N >= k``. Defaults to None.
        norm (str): ``'layer'`` to standardise every row with a
            parameter-free layer norm first, ``'none'`` to skip it.
            Defaults to 'layer'.
        max_iter (int): Maximum number of assignment/update iterations.
            Defaults to 20.
        tol (float): Convergence threshold on the summed L2 centroid shift.
            Defaults to 1e-4.
        generator (torch.Generator, optional): Random generator for the cold
            start initialisation; the same generator state gives the same
            result. Unused for a warm start. Defaults to None (global RNG).

    Returns:
        tuple[Tensor, Tensor]:

        - centroids (Tensor): Final centroids, shape (k, C), float32, in the
          normalised space.
        - assignment (Tensor): Cluster index of every row, shape (N, ),
          dtype long, values in ``[0, k)``.
    """
    if features.dim() != 2:
        raise ValueError('`features` must have shape (N, C), got '
                         f'{tuple(features.shape)}.')
    if not isinstance(k, int) or k < 1:
        raise ValueError(f'`k` must be a positive integer, got {k!r}.')
    if norm not in _NORMS:
        raise ValueError(f'`norm` must be one of {_NORMS}, got {norm!r}.')
    if max_iter < 1:
        raise ValueError(f'`max_iter` must be >= 1, got {max_iter}.')
    if tol < 0:
        raise ValueError(f'`tol` must be >= 0, got {tol}.')

    num_points, channels = features.shape
    points = features.detach().float()
    if norm == 'layer':
        points = F.layer_norm(points, (channels, ))

    if init_centroids is None:
        if num_points < k:
            raise ValueError(
                f'Cold-start k-means needs at least k={k} points, got '
                f'{num_points}. Pass `init_centroids` or reduce `k`.')
        perm_device = generator.device if generator is not None else 'cpu'
        index = torch.randperm(
            num_points, generator=generator, device=perm_device)[:k]
        centroids = points[index.to(points.device)]
    else:
        if tuple(init_centroids.shape) != (k, channels):
            raise ValueError(
                f'`init_centroids` must have shape ({k}, {channels}), got '
                f'{tuple(init_centroids.shape)}.')
        centroids = init_centroids.detach().to(
            device=points.device, dtype=torch.float32)

    for _ in range(max_iter):
        assignment = _assign(points, centroids)
        new_centroids = _update(points, assignment, centroids)
        shift = (new_centroids - centroids).norm(dim=1).sum()
        if shift < tol:
            return centroids, assignment
        centroids = new_centroids

    return centroids, _assign(points, centroids)
