# Copyright (c) davpt-seg contributors. All rights reserved.
"""Spherical (cosine) k-means used to build the class -> prompt mapping.

See §4.2 of the DA-VPT algorithm reference. The rows are optionally
standardised with a parameter-free layer norm, points are assigned to the
centroid of highest cosine similarity and centroids are re-estimated as the
plain mean of their (standardised) members.

The cold start defaults to the reference's ``k`` random rows. An opt-in
spherical k-means++ seeding (``init='k-means++'``) and ``n_init`` restarts are
available for a more reliable cold start. They are hand-written rather than
taken from scikit-learn (``KMeans``/``kmeans_plusplus``) or faiss because those
would be new dependencies, are Euclidean, seed from NumPy/their own RNG instead
of the supplied ``torch.Generator`` (which keeps rank 0's k-means
deterministic and resume-safe) and would move the data off its device; the
seeding is ~20 lines on top of the existing Lloyd loop.

Algorithm of :func:`cosine_kmeans` (§4.2 of the reference):

1. ``Z = layer_norm(features)`` (per-row standardisation, no affine) when
   ``norm='layer'``; ``Z = features`` when ``norm='none'``.
2. Centroids start from ``init_centroids`` (warm start) or, for a cold
   start, from ``k`` distinct rows of ``Z`` drawn with ``generator``:
   uniformly at random (``init='random'``, the reference) or by spherical
   k-means++ seeding (``init='k-means++'``: each further row is drawn with
   probability proportional to its cosine distance ``1 - cos`` to the
   nearest row already chosen).
3. Repeat at most ``max_iter`` times: assign every row to the centroid of
   highest cosine similarity, then move every centroid to the mean of its
   rows (an empty cluster keeps its centroid). Stop as soon as the total
   centroid shift ``sum_m ||c_m - c'_m||_2`` is below ``tol``.
4. A cold start runs steps 2-3 ``n_init`` times (consecutive draws from
   ``generator``) and keeps the run with the lowest within-cluster cosine
   distortion ``sum_j (1 - cos(Z_j, c_{a_j}))`` (the first one on ties).

The defaults ``init='random', n_init=1`` reproduce the reference exactly.
A warm start ignores ``init`` and ``n_init`` (it runs once, from
``init_centroids``); they are still validated.

The returned centroids are always the ones that produced the returned
assignment: on convergence these are the centroids before the last
(negligible) move; if ``max_iter`` is reached without convergence, the
points are assigned once more to the latest centroids.
"""
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

NORMS = ('layer', 'none')
INITS = ('random', 'k-means++')


def assign_clusters(points: Tensor, centroids: Tensor) -> Tensor:
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


def _generator_device(generator: Optional[torch.Generator]) -> torch.device:
    """Device on which random draws with ``generator`` have to be made."""
    return generator.device if generator is not None else torch.device('cpu')


def _init_random(points: Tensor, k: int,
                 generator: Optional[torch.Generator]) -> Tensor:
    """Reference cold start: ``k`` distinct rows drawn uniformly at random.

    Args:
        points (Tensor): Points of shape (N, C), ``N >= k``.
        k (int): Number of centroids.
        generator (torch.Generator, optional): Random generator.

    Returns:
        Tensor: Initial centroids of shape (k, C).
    """
    index = torch.randperm(
        points.size(0),
        generator=generator,
        device=_generator_device(generator))[:k]
    return points[index.to(points.device)]


def kmeans_plusplus_init(points: Tensor, k: int,
                          generator: Optional[torch.Generator]) -> Tensor:
    """Spherical k-means++ seeding: ``k`` distinct rows of ``points``.

    The first row is drawn uniformly; every further row is drawn with
    probability proportional to its cosine distance ``1 - cos`` to the nearest
    row chosen so far (on the unit sphere ``1 - cos = ||x - y||^2 / 2``, so
    this is the D^2 weighting of Euclidean k-means++). Chosen rows get weight
    0, so the rows are distinct; if every remaining row has zero distance
    (e.g. all rows are parallel), the next row is drawn uniformly among the
    rows not yet chosen.

    Args:
        points (Tensor): Points of shape (N, C), ``N >= k``.
        k (int): Number of centroids.
        generator (torch.Generator, optional): Random generator; all draws are
            made on its device.

    Returns:
        Tensor: Initial centroids of shape (k, C).
    """
    num_points = points.size(0)
    rand_device = _generator_device(generator)
    unit = F.normalize(points, dim=1)
    chosen = torch.zeros(num_points, dtype=torch.bool, device=rand_device)
    index = torch.randint(
        num_points, (1, ), generator=generator, device=rand_device)
    indices = [index]
    chosen[index] = True
    min_dist = torch.full((num_points, ),
                          float('inf'),
                          device=points.device)
    for _ in range(1, k):
        sim = unit @ unit[index.to(points.device)].squeeze(0)
        min_dist = torch.minimum(min_dist, (1 - sim).clamp(min=0))
        weights = min_dist.to(rand_device).masked_fill(chosen, 0)
        if not bool(weights.sum() > 0):
            weights = (~chosen).to(weights.dtype)
        index = torch.multinomial(weights, 1, generator=generator)
        indices.append(index)
        chosen[index] = True
    return points[torch.cat(indices).to(points.device)]


def _lloyd(points: Tensor, centroids: Tensor, max_iter: int,
           tol: float) -> Tuple[Tensor, Tensor]:
    """Lloyd iterations from ``centroids``; see :func:`cosine_kmeans` step 3.

    On an accelerator without host syncs: the convergence test is a device
    flag, and once it is set the centroids and assignment stop changing
    (the remaining iterations recompute them unchanged), which gives the
    result of stopping at that iteration. On the CPU, where reading the
    flag costs nothing, the loop stops there.

    Returns:
        tuple[Tensor, Tensor]: Centroids (k, C) and the assignment (N, ) they
        produce.
    """
    done = torch.zeros((), dtype=torch.bool, device=points.device)
    assignment = None
    for _ in range(max_iter):
        current = assign_clusters(points, centroids)
        new_centroids = _update(points, current, centroids)
        converged = (new_centroids - centroids).norm(dim=1).sum() < tol
        assignment = current if assignment is None else torch.where(
            done, assignment, current)
        done = done | converged
        centroids = torch.where(done, centroids, new_centroids)
        if points.device.type == 'cpu' and bool(done):
            return centroids, assignment
    return centroids, torch.where(done, assignment,
                                  assign_clusters(points, centroids))


def _distortion(points: Tensor, centroids: Tensor,
                assignment: Tensor) -> Tensor:
    """Within-cluster cosine distortion ``sum_j (1 - cos(z_j, c_{a_j}))``."""
    sim = (F.normalize(points, dim=1) *
           F.normalize(centroids, dim=1)[assignment]).sum(dim=1)
    return (1 - sim).sum()


def _check_args(features: Tensor, k: int, norm: str, max_iter: int,
                tol: float, init: str, n_init: int) -> None:
    if features.dim() != 2:
        raise ValueError('`features` must have shape (N, C), got '
                         f'{tuple(features.shape)}.')
    if not isinstance(k, int) or k < 1:
        raise ValueError(f'`k` must be a positive integer, got {k!r}.')
    if norm not in NORMS:
        raise ValueError(f'`norm` must be one of {NORMS}, got {norm!r}.')
    if max_iter < 1:
        raise ValueError(f'`max_iter` must be >= 1, got {max_iter}.')
    if tol < 0:
        raise ValueError(f'`tol` must be >= 0, got {tol}.')
    if init not in INITS:
        raise ValueError(f'`init` must be one of {INITS}, got {init!r}.')
    if isinstance(n_init, bool) or not isinstance(n_init, int) or n_init < 1:
        raise ValueError(
            f'`n_init` must be an integer >= 1, got {n_init!r}.')


def cosine_kmeans(
        features: Tensor,
        k: int,
        init_centroids: Optional[Tensor] = None,
        norm: str = 'layer',
        max_iter: int = 20,
        tol: float = 1e-4,
        generator: Optional[torch.Generator] = None,
        init: str = 'random',
        n_init: int = 1) -> Tuple[Tensor, Tensor]:
    """Spherical k-means with an optional warm start (the algorithm: see
    the module doc). Float32 on the device of ``features``, one (N, k)
    similarity matrix per iteration.

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
        init (str): Cold-start seeding, ``'random'`` (reference) or
            ``'k-means++'`` (spherical k-means++). Ignored for a warm start.
            Defaults to 'random'.
        n_init (int): Number of cold-start runs; the one with the lowest
            within-cluster cosine distortion is returned. Ignored for a warm
            start. Defaults to 1.

    Returns:
        tuple[Tensor, Tensor]:

        - centroids (Tensor): Final centroids, shape (k, C), float32, in the
          normalised space.
        - assignment (Tensor): Cluster index of every row, shape (N, ),
          dtype long, values in ``[0, k)``.
    """
    _check_args(features, k, norm, max_iter, tol, init, n_init)
    num_points, channels = features.shape
    points = features.detach().float()
    if norm == 'layer':
        points = F.layer_norm(points, (channels, ))

    if init_centroids is None:
        if num_points < k:
            raise ValueError(
                f'Cold-start k-means needs at least k={k} points, got '
                f'{num_points}. Pass `init_centroids` or reduce `k`.')
        init_fn = _init_random if init == 'random' else kmeans_plusplus_init
        best = None
        for _ in range(n_init):
            result = _lloyd(points, init_fn(points, k, generator), max_iter,
                            tol)
            if n_init == 1:
                return result
            distortion = _distortion(points, *result)
            if best is None or distortion < best[0]:
                best = (distortion, result)
        return best[1]

    if tuple(init_centroids.shape) != (k, channels):
        raise ValueError(
            f'`init_centroids` must have shape ({k}, {channels}), got '
            f'{tuple(init_centroids.shape)}.')
    centroids = init_centroids.detach().to(
        device=points.device, dtype=torch.float32)
    return _lloyd(points, centroids, max_iter, tol)
