# Copyright (c) davpt-seg contributors. All rights reserved.
"""Tests of ``cosine_kmeans`` and ``ClassPromptMapping`` (CPU only)."""
import importlib
import io
import logging
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as torch_dist
import torch.nn.functional as F

from davpt_seg.models.davpt import ClassPromptMapping, cosine_kmeans
from helpers.spawn import spawn_workers

kmeans_module = importlib.import_module('davpt_seg.models.davpt.kmeans')
mapping_module = importlib.import_module(
    'davpt_seg.models.davpt.mapping')

BUFFER_NAMES = ('mapping', 'centroids', 'has_centroids', 'initialized',
                'num_updates', 'feat_sum', 'feat_count')


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------
def _planted(seed, num_clusters=5, num_per_cluster=12, dims=64, noise=0.3):
    """Noisy points around ``num_clusters`` random directions.

    Returns:
        tuple[Tensor, Tensor]: points (N, dims) and their true cluster (N, ).
    """
    g = torch.Generator().manual_seed(1000 + seed)
    directions = torch.randn(num_clusters, dims, generator=g)
    labels = torch.arange(num_clusters).repeat_interleave(num_per_cluster)
    points = directions[labels] + noise * torch.randn(
        labels.numel(), dims, generator=g)
    return points, labels


def _same_partition(a, b):
    """Whether two label vectors induce the same partition (up to renaming).

    Two partitions are equal iff their co-membership matrices are equal,
    i.e. the contingency table is a permutation matrix.
    """
    return torch.equal(a[:, None] == a[None], b[:, None] == b[None])


def _one_hot_present(class_ids, num_classes):
    """(B, num_classes) bool mask with one present class per image."""
    present = torch.zeros(class_ids.numel(), num_classes, dtype=torch.bool)
    present[torch.arange(class_ids.numel()), class_ids] = True
    return present


def _grouped_class_data(num_classes,
                        groups,
                        dims,
                        images_per_class=3,
                        seed=0,
                        classes=None):
    """Single-label images whose [CLS] depends on the class' group.

    Class ``c`` belongs to group ``groups[c]``; its images are a noisy copy of
    that group's prototype.

    Returns:
        tuple[Tensor, Tensor]: feats (B, dims) and present (B, num_classes).
    """
    g = torch.Generator().manual_seed(seed)
    prototypes = 4 * torch.randn(max(groups) + 1, dims, generator=g)
    if classes is None:
        classes = range(num_classes)
    class_ids = torch.tensor(list(classes)).repeat_interleave(images_per_class)
    group_ids = torch.tensor(groups)[class_ids]
    feats = prototypes[group_ids] + 0.1 * torch.randn(
        class_ids.numel(), dims, generator=g)
    return feats, _one_hot_present(class_ids, num_classes)


# ---------------------------------------------------------------------------
# cosine_kmeans
# ---------------------------------------------------------------------------
@pytest.mark.parametrize('seed', range(5))
def test_kmeans_cold_start_recovers_two_planted_clusters(seed):
    points, labels = _planted(seed, num_clusters=2, num_per_cluster=30)
    g = torch.Generator().manual_seed(seed)
    centroids, assignment = cosine_kmeans(points, 2, generator=g)
    assert centroids.shape == (2, 64)
    assert centroids.dtype == torch.float32
    assert assignment.shape == (60, )
    assert assignment.dtype == torch.long
    assert _same_partition(assignment, labels)


@pytest.mark.parametrize('seed', range(5))
def test_kmeans_recovers_five_planted_clusters(seed):
    """5 directions in 64-d, 60 points, seeded with one point per cluster.

    Plain random-row initialisation (the reference algorithm) can end in a
    local optimum for k >= 3 (one centroid on two clusters, two on one), so
    the initial rows are drawn at random *within* each planted cluster.
    """
    points, labels = _planted(seed)
    g = torch.Generator().manual_seed(seed)
    rows = torch.stack([
        torch.nonzero(labels == j).flatten()[torch.randint(
            12, (1, ), generator=g)].squeeze() for j in range(5)
    ])
    init = F.layer_norm(points[rows], (64, ))
    centroids, assignment = cosine_kmeans(points, 5, init_centroids=init)
    assert _same_partition(assignment, labels)
    # Every centroid points along its cluster's mean direction.
    z = F.layer_norm(points, (64, ))
    for m in range(5):
        cluster_mean = z[assignment == m].mean(dim=0)
        assert F.cosine_similarity(centroids[m], cluster_mean, dim=0) > 0.999


def test_kmeans_warm_start_from_converged_solution_is_stable(monkeypatch):
    points, labels = _planted(0, num_clusters=2, num_per_cluster=30)
    g = torch.Generator().manual_seed(0)
    centroids, assignment = cosine_kmeans(points, 2, generator=g)

    calls = []
    original_assign = kmeans_module.assign_clusters

    def counting_assign(*args):
        calls.append(1)
        return original_assign(*args)

    monkeypatch.setattr(kmeans_module, 'assign_clusters', counting_assign)
    warm_centroids, warm_assignment = cosine_kmeans(
        points, 2, init_centroids=centroids)
    assert torch.equal(warm_assignment, assignment)
    assert torch.allclose(warm_centroids, centroids, atol=1e-4)
    assert 1 <= len(calls) <= 2


def test_kmeans_returned_centroids_produce_returned_assignment():
    # max_iter=1 stops long before convergence.
    points = torch.randn(100, 16, generator=torch.Generator().manual_seed(0))
    for max_iter in (1, 2, 20):
        g = torch.Generator().manual_seed(1)
        centroids, assignment = cosine_kmeans(
            points, 6, max_iter=max_iter, generator=g)
        z = F.layer_norm(points, (16, ))
        assert torch.equal(kmeans_module.assign_clusters(z, centroids),
                           assignment)


def test_kmeans_cold_start_needs_enough_points():
    with pytest.raises(ValueError, match='at least k=5'):
        cosine_kmeans(torch.randn(4, 8), 5)
    # A warm start works with fewer points than clusters.
    centroids, assignment = cosine_kmeans(
        torch.randn(4, 8), 5, init_centroids=torch.randn(5, 8))
    assert centroids.shape == (5, 8)
    assert assignment.shape == (4, )


def test_kmeans_bad_args():
    with pytest.raises(ValueError, match='norm'):
        cosine_kmeans(torch.randn(10, 8), 2, norm='l2')
    with pytest.raises(ValueError, match='shape'):
        cosine_kmeans(torch.randn(10), 2)
    with pytest.raises(ValueError, match='init_centroids'):
        cosine_kmeans(torch.randn(10, 8), 2, init_centroids=torch.randn(3, 8))
    with pytest.raises(ValueError, match='k'):
        cosine_kmeans(torch.randn(10, 8), 0)


def test_kmeans_empty_cluster_keeps_its_centroid():
    g = torch.Generator().manual_seed(0)
    e1, e2 = torch.eye(8)[:2]
    points = torch.cat([
        e1 + 0.05 * torch.randn(10, 8, generator=g),
        e2 + 0.05 * torch.randn(10, 8, generator=g),
    ])
    far = -(e1 + e2)  # no point is closer to it than to e1 or e2
    init = torch.stack([e1, e2, far])
    centroids, assignment = cosine_kmeans(
        points, 3, init_centroids=init, norm='none')
    assert (assignment != 2).all()
    assert torch.equal(centroids[2], far)
    assert torch.equal(assignment, torch.arange(2).repeat_interleave(10))


def test_kmeans_is_deterministic_given_the_generator():
    points = torch.randn(80, 32, generator=torch.Generator().manual_seed(0))
    results = [
        cosine_kmeans(points, 7, generator=torch.Generator().manual_seed(3))
        for _ in range(2)
    ]
    assert torch.equal(results[0][0], results[1][0])
    assert torch.equal(results[0][1], results[1][1])


def test_kmeans_layer_norm_ignores_row_offset_and_scale():
    points = torch.randn(40, 16, generator=torch.Generator().manual_seed(0))
    shifted = 3.0 * points + 5.0
    _, a = cosine_kmeans(points, 4, generator=torch.Generator().manual_seed(0))
    _, b = cosine_kmeans(
        shifted, 4, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b)


def test_kmeans_is_one_vectorised_assignment_per_iteration(monkeypatch):
    """A mapping update clusters ~150 class means of 1024 dims: at most
    ``max_iter + 1`` whole-matrix assignments ([N, k] similarities), never
    a per-point loop. (Its time is in the cost benchmark's
    ``mapping_update_ms`` figure, not asserted here.)"""
    shapes = []
    original_assign = kmeans_module.assign_clusters

    def recording_assign(points, centroids):
        shapes.append((tuple(points.shape), tuple(centroids.shape)))
        return original_assign(points, centroids)

    monkeypatch.setattr(kmeans_module, 'assign_clusters', recording_assign)
    points = torch.randn(150, 1024, generator=torch.Generator().manual_seed(0))
    cosine_kmeans(points, 10, max_iter=20,
                  generator=torch.Generator().manual_seed(0))
    assert 1 <= len(shapes) <= 21
    assert set(shapes) == {((150, 1024), (10, 1024))}


# ---------------------------------------------------------------------------
# cosine_kmeans: cold-start options (init, n_init)
# ---------------------------------------------------------------------------
def _reference_cold_kmeans(points, k, generator, max_iter=20, tol=1e-4):
    """§4.2 of the reference written out: layer norm, randperm, Lloyd."""
    z = F.layer_norm(points.float(), (points.size(1), ))
    c = z[torch.randperm(z.size(0), generator=generator)[:k]]
    for _ in range(max_iter):
        a = (F.normalize(z, dim=1) @ F.normalize(c, dim=1).t()).argmax(dim=1)
        sums = torch.zeros_like(c).index_add_(0, a, z)
        counts = torch.bincount(a, minlength=k).float()
        new_c = torch.where((counts > 0)[:, None],
                            sums / counts.clamp(min=1)[:, None], c)
        if (new_c - c).norm(dim=1).sum() < tol:
            return c, a
        c = new_c
    return c, (F.normalize(z, dim=1) @ F.normalize(c, dim=1).t()).argmax(
        dim=1)


@pytest.mark.parametrize('seed', range(4))
def test_kmeans_default_cold_start_is_the_reference(seed):
    """Defaults == explicit ``init='random', n_init=1`` == §4.2, bit for bit.
    """
    points = torch.randn(150, 64, generator=torch.Generator().manual_seed(0))
    default = cosine_kmeans(
        points, 10, generator=torch.Generator().manual_seed(seed))
    explicit = cosine_kmeans(
        points,
        10,
        generator=torch.Generator().manual_seed(seed),
        init='random',
        n_init=1)
    reference = _reference_cold_kmeans(
        points, 10, torch.Generator().manual_seed(seed))
    for got in (explicit, reference):
        assert torch.equal(default[0], got[0])
        assert torch.equal(default[1], got[1])


def test_kmeans_plusplus_recovers_five_planted_clusters():
    """Cold start on the 5 planted clusters of ``_planted``, seeds 0..49.

    Correct partitions measured (seeds 0..49 / 0..199):

    ==========================  =======  =========
    init, n_init                 50       200
    ==========================  =======  =========
    'random', 1 (reference)      13       62
    'random', 5                  40       166
    'k-means++', 1               42       158
    'k-means++', 5               50       200
    ==========================  =======  =========
    """
    counts = {}
    for init, n_init in (('random', 1), ('k-means++', 5)):
        counts[init] = sum(
            _same_partition(
                cosine_kmeans(
                    points,
                    5,
                    generator=torch.Generator().manual_seed(seed),
                    init=init,
                    n_init=n_init)[1], labels)
            for seed in range(50) for points, labels in [_planted(seed)])
    assert counts['k-means++'] >= 45
    assert counts['random'] < counts['k-means++']


@pytest.mark.parametrize('init, n_init', [('k-means++', 1), ('k-means++', 5),
                                          ('random', 3)])
def test_kmeans_init_options_are_deterministic_given_the_generator(
        init, n_init):
    points = torch.randn(80, 32, generator=torch.Generator().manual_seed(0))
    results = [
        cosine_kmeans(
            points,
            7,
            generator=torch.Generator().manual_seed(3),
            init=init,
            n_init=n_init) for _ in range(2)
    ]
    assert torch.equal(results[0][0], results[1][0])
    assert torch.equal(results[0][1], results[1][1])
    assert results[0][1].min() >= 0 and results[0][1].max() < 7


def test_kmeans_n_init_keeps_the_lowest_distortion_run():
    points = torch.randn(60, 16, generator=torch.Generator().manual_seed(0))
    z = F.layer_norm(points, (16, ))

    def distortion(result):
        centroids, assignment = result
        return (1 - F.cosine_similarity(z, centroids[assignment])).sum()

    for init in ('random', 'k-means++'):
        # The runs of n_init=4 are consecutive draws of one generator.
        g = torch.Generator().manual_seed(1)
        singles = [
            cosine_kmeans(points, 6, generator=g, init=init)
            for _ in range(4)
        ]
        best = cosine_kmeans(
            points,
            6,
            generator=torch.Generator().manual_seed(1),
            init=init,
            n_init=4)
        assert distortion(best) == min(distortion(r) for r in singles)
        assert any(torch.equal(best[1], r[1]) for r in singles)


def test_kmeans_plusplus_seeding():
    # 3 directions, each repeated 4 times: the 3 seeds always come from 3
    # different directions (a repeat of a chosen row has weight 0).
    directions = torch.randn(3, 8, generator=torch.Generator().manual_seed(0))
    points = directions.repeat_interleave(4, dim=0)
    for seed in range(20):
        seeds = kmeans_module.kmeans_plusplus_init(
            points, 3, torch.Generator().manual_seed(seed))
        rows = (seeds[:, None] == directions[None]).all(dim=2).float()
        assert torch.equal(rows.sum(dim=0), torch.ones(3))
    # k = N: every row exactly once.
    points = torch.randn(6, 4, generator=torch.Generator().manual_seed(0))
    seeds = kmeans_module.kmeans_plusplus_init(
        points, 6, torch.Generator().manual_seed(0))
    order = (seeds[:, None] == points[None]).all(dim=2).float().argmax(dim=1)
    assert sorted(order.tolist()) == list(range(6))
    # All rows parallel (zero cosine distance everywhere): distinct rows are
    # still chosen, uniformly among the rows not chosen yet.
    points = torch.arange(1., 6.)[:, None] * torch.ones(5, 4)
    seeds = kmeans_module.kmeans_plusplus_init(
        points, 5, torch.Generator().manual_seed(0))
    assert sorted(seeds[:, 0].tolist()) == [1., 2., 3., 4., 5.]


def test_kmeans_plusplus_keeps_the_existing_guards():
    # Cold start needs N >= k whatever the init.
    with pytest.raises(ValueError, match='at least k=5'):
        cosine_kmeans(torch.randn(4, 8), 5, init='k-means++', n_init=3)
    # Identical rows: the seeds are distinct rows, every row falls into one
    # cluster, the other keeps its centroid (empty-cluster handling).
    row = torch.randn(1, 8, generator=torch.Generator().manual_seed(0))
    centroids, assignment = cosine_kmeans(
        row.expand(6, 8),
        2,
        generator=torch.Generator().manual_seed(0),
        init='k-means++',
        n_init=3)
    assert assignment.unique().numel() == 1
    assert torch.isfinite(centroids).all()


def test_kmeans_warm_start_ignores_init_and_n_init():
    points, _ = _planted(0)
    init = torch.randn(5, 64, generator=torch.Generator().manual_seed(1))
    plain = cosine_kmeans(points, 5, init_centroids=init)
    g = torch.Generator().manual_seed(2)
    state = g.get_state()
    other = cosine_kmeans(
        points,
        5,
        init_centroids=init,
        generator=g,
        init='k-means++',
        n_init=5)
    assert torch.equal(plain[0], other[0])
    assert torch.equal(plain[1], other[1])
    assert torch.equal(g.get_state(), state)  # no random draw at all


@pytest.mark.parametrize('kwargs, match', [
    (dict(init='kmeans++'), 'init'),
    (dict(init=None), 'init'),
    (dict(n_init=0), 'n_init'),
    (dict(n_init=2.0), 'n_init'),
    (dict(n_init=True), 'n_init'),
    # Validated for a warm start too, although unused there.
    (dict(n_init=0, init_centroids=torch.randn(2, 8)), 'n_init'),
])
def test_kmeans_bad_init_args(kwargs, match):
    with pytest.raises(ValueError, match=match):
        cosine_kmeans(torch.randn(10, 8), 2, **kwargs)


# ---------------------------------------------------------------------------
# ClassPromptMapping: construction
# ---------------------------------------------------------------------------
def test_buffers_initial_state():
    module = ClassPromptMapping(7, 3, 5)
    assert list(module.parameters()) == []
    assert set(module.state_dict()) == set(BUFFER_NAMES)
    assert torch.equal(module.mapping, torch.tensor([0, 1, 2, 0, 1, 2, 0]))
    assert module.mapping.dtype == torch.long
    assert module.centroids.shape == (3, 5)
    assert module.centroids.dtype == torch.float32
    assert module.has_centroids.dtype == torch.bool
    assert not module.has_centroids and not module.initialized
    assert module.num_updates.dtype == torch.long
    assert int(module.num_updates) == 0
    assert module.feat_sum.shape == (7, 5)
    assert module.feat_count.shape == (7, )
    assert module.cluster_sizes() == [3, 2, 2]
    assert 'num_classes=7, num_proxy_prompts=3, embed_dims=5' in repr(module)


@pytest.mark.parametrize('kwargs, match', [
    (dict(num_classes=10, num_proxy_prompts=1, embed_dims=4),
     r'num_proxy_prompts \(1\) must be between 2'),
    (dict(num_classes=0, num_proxy_prompts=2, embed_dims=4), 'num_classes'),
    (dict(num_classes=3, num_proxy_prompts=4, embed_dims=4),
     r'and num_classes \(3\)'),
    (dict(num_classes=10, num_proxy_prompts=2, embed_dims=0), 'embed_dims'),
    (dict(num_classes=10, num_proxy_prompts=2, embed_dims=4,
          kmeans_norm='l2'), 'kmeans_norm'),
    (dict(num_classes=10, num_proxy_prompts=2, embed_dims=4,
          unseen='drop'), 'unseen'),
    (dict(num_classes=10, num_proxy_prompts=2, embed_dims=4,
          max_iter=0), 'max_iter'),
    (dict(num_classes=10, num_proxy_prompts=2, embed_dims=4, tol=-1.0), 'tol'),
    (dict(num_classes=10, num_proxy_prompts=2, embed_dims=4,
          init='kmeans++'), 'init'),
    (dict(num_classes=10, num_proxy_prompts=2, embed_dims=4, n_init=0),
     'n_init'),
    (dict(num_classes=10, num_proxy_prompts=2, embed_dims=4,
          n_init=1.5), 'n_init'),
])
def test_bad_args_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ClassPromptMapping(**kwargs)


# ---------------------------------------------------------------------------
# ClassPromptMapping: accumulate
# ---------------------------------------------------------------------------
def test_accumulate_adds_each_image_to_every_present_class():
    module = ClassPromptMapping(4, 2, 3)
    feats = torch.tensor([[1., 2., 3.], [10., 20., 30.], [100., 0., 0.]],
                         requires_grad=True)
    present = torch.tensor([
        [True, True, False, False],  # image 0: classes 0 and 1
        [False, True, False, True],  # image 1: classes 1 and 3
        [False, False, False, False],  # image 2: no class
    ])
    module.accumulate(feats, present)
    expected_sum = torch.tensor([[1., 2., 3.], [11., 22., 33.], [0., 0., 0.],
                                 [10., 20., 30.]])
    assert torch.equal(module.feat_sum, expected_sum)
    assert torch.equal(module.feat_count, torch.tensor([1., 2., 0., 1.]))
    assert not module.feat_sum.requires_grad

    module.accumulate(feats[:1].detach(), present[:1])
    assert torch.equal(module.feat_sum[0], torch.tensor([2., 4., 6.]))
    assert torch.equal(module.feat_count, torch.tensor([2., 3., 0., 1.]))


def test_accumulate_checks_inputs():
    module = ClassPromptMapping(4, 2, 3)
    with pytest.raises(ValueError, match='feats'):
        module.accumulate(torch.zeros(2, 5), torch.zeros(2, 4, dtype=bool))
    with pytest.raises(ValueError, match='bool'):
        module.accumulate(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match='present'):
        module.accumulate(torch.zeros(2, 3), torch.zeros(3, 4, dtype=bool))


# ---------------------------------------------------------------------------
# ClassPromptMapping: update
# ---------------------------------------------------------------------------
def test_update_clusters_classes_by_feature():
    groups = [0, 0, 0, 1, 1, 1]
    module = ClassPromptMapping(6, 2, 16)
    module.accumulate(*_grouped_class_data(6, groups, 16))
    assert module.update() is True
    assert _same_partition(module.mapping, torch.tensor(groups))
    assert module.initialized and module.has_centroids
    assert int(module.num_updates) == 1
    assert not module.feat_sum.any() and not module.feat_count.any()
    assert sorted(module.cluster_sizes()) == [3, 3]
    assert module.centroids.abs().sum() > 0


@pytest.mark.parametrize('unseen', ['random', 'keep'])
def test_update_unseen_classes(unseen):
    num_classes, seen = 40, [0, 1, 2, 3, 4, 5, 6, 7]
    groups = [c % 4 for c in range(num_classes)]
    module = ClassPromptMapping(num_classes, 4, 16, unseen=unseen, seed=3)
    initial = module.mapping.clone()
    module.accumulate(
        *_grouped_class_data(num_classes, groups, 16, classes=seen))
    assert module.update()
    mapping = module.mapping
    assert _same_partition(mapping[seen], torch.tensor(groups)[seen])
    unseen_ids = torch.arange(8, num_classes)
    if unseen == 'keep':
        assert torch.equal(mapping[unseen_ids], initial[unseen_ids])
    else:
        assert not torch.equal(mapping[unseen_ids], initial[unseen_ids])
        assert mapping.min() >= 0 and mapping.max() < 4
        # Deterministic: same seed and data give the same random draws.
        other = ClassPromptMapping(num_classes, 4, 16, unseen=unseen, seed=3)
        other.accumulate(
            *_grouped_class_data(num_classes, groups, 16, classes=seen))
        other.update()
        assert torch.equal(other.mapping, mapping)


def test_update_cold_start_with_too_few_classes_keeps_mapping(monkeypatch):
    messages = []

    def recording_print_log(msg, logger=None, level=logging.INFO):
        messages.append((msg, level))

    monkeypatch.setattr(mapping_module, 'print_log', recording_print_log)
    module = ClassPromptMapping(6, 3, 8)
    initial = module.mapping.clone()
    # 2 seen classes < 3 prompts
    present = _one_hot_present(torch.tensor([0, 0, 1, 1]), 6)
    module.accumulate(torch.randn(4, 8), present)
    assert module.update() is False
    assert torch.equal(module.mapping, initial)
    assert not module.initialized and not module.has_centroids
    assert int(module.num_updates) == 1
    assert not module.feat_count.any()
    assert [level for _, level in messages] == [logging.WARNING]

    # Nothing accumulated at all: no update either, even after a warm start.
    assert module.update() is False
    assert int(module.num_updates) == 2


def test_update_rejects_single_prompt_mapping(monkeypatch):
    groups = [0, 0, 1, 1]
    module = ClassPromptMapping(4, 2, 16)
    module.accumulate(*_grouped_class_data(4, groups, 16))
    assert module.update()
    good_mapping = module.mapping.clone()

    # Identical features for every class: all classes fall in one cluster.
    row = torch.randn(1, 16)
    module.accumulate(row.expand(4, 16), torch.eye(4, dtype=torch.bool))
    assert module.update() is False
    assert torch.equal(module.mapping, good_mapping)
    assert not module.has_centroids
    assert module.initialized  # the old mapping stays valid
    assert int(module.num_updates) == 2

    # The next k-means starts cold.
    init_args = []
    original_kmeans = mapping_module.cosine_kmeans

    def recording_kmeans(*args, **kwargs):
        init_args.append(kwargs['init_centroids'])
        return original_kmeans(*args, **kwargs)

    monkeypatch.setattr(mapping_module, 'cosine_kmeans', recording_kmeans)
    module.accumulate(*_grouped_class_data(4, groups, 16, seed=1))
    assert module.update()
    module.accumulate(*_grouped_class_data(4, groups, 16))
    assert module.update()
    assert init_args[0] is None  # cold
    assert init_args[1] is not None  # warm
    assert _same_partition(module.mapping, torch.tensor(groups))


def test_update_default_is_explicit_random_single_init():
    groups = [c % 4 for c in range(40)]
    modules = [
        ClassPromptMapping(40, 4, 16, seed=3),
        ClassPromptMapping(40, 4, 16, seed=3, init='random', n_init=1),
    ]
    for module in modules:
        assert module.init == 'random' and module.n_init == 1
        for seed in range(2):  # cold start, then a warm start
            module.accumulate(*_grouped_class_data(
                40, groups, 16, seed=seed, classes=range(20)))
            assert module.update()
    for name in BUFFER_NAMES:
        assert torch.equal(
            getattr(modules[0], name), getattr(modules[1], name))
    assert "init='random', n_init=1" in repr(modules[0])


def test_update_kmeans_plusplus_cold_start_and_guards(monkeypatch):
    kwargs_seen = []
    original_kmeans = mapping_module.cosine_kmeans

    def recording_kmeans(*args, **kwargs):
        kwargs_seen.append(kwargs)
        return original_kmeans(*args, **kwargs)

    monkeypatch.setattr(mapping_module, 'cosine_kmeans', recording_kmeans)
    groups = [0, 0, 1, 1, 2, 2]
    module = ClassPromptMapping(6, 3, 16, init='k-means++', n_init=4)
    assert "init='k-means++', n_init=4" in repr(module)

    # Too few seen classes for a cold start: rejected before k-means.
    module.accumulate(torch.randn(2, 16), _one_hot_present(
        torch.tensor([0, 1]), 6))
    assert module.update() is False
    assert not module.initialized and kwargs_seen == []

    # Identical features: k-means++ still seeds distinct rows, every class
    # lands in one cluster and the >= 2 prompts guard rejects the mapping.
    row = torch.randn(1, 16)
    module.accumulate(row.expand(6, 16), torch.eye(6, dtype=torch.bool))
    assert module.update() is False
    assert not module.initialized and not module.has_centroids

    module.accumulate(*_grouped_class_data(6, groups, 16))
    assert module.update()
    assert _same_partition(module.mapping, torch.tensor(groups))
    assert sorted(module.cluster_sizes()) == [2, 2, 2]
    assert all(k['init'] == 'k-means++' and k['n_init'] == 4
               for k in kwargs_seen)
    assert [k['init_centroids'] is None for k in kwargs_seen] == [True, True]


def test_update_warm_start_is_unaffected_by_init_options():
    groups = [0, 1, 2, 0, 1, 2, 0, 1]
    start = ClassPromptMapping(8, 3, 16, seed=5)
    start.accumulate(*_grouped_class_data(8, groups, 16))
    assert start.update() and start.has_centroids
    state = start.state_dict()

    results = []
    for kwargs in (dict(), dict(init='k-means++', n_init=5)):
        module = ClassPromptMapping(8, 3, 16, seed=5, **kwargs)
        module.load_state_dict(state)
        module.accumulate(*_grouped_class_data(
            8, groups, 16, seed=1, classes=range(6)))
        assert module.update()
        results.append(module)
    for name in BUFFER_NAMES:
        assert torch.equal(
            getattr(results[0], name), getattr(results[1], name))


def test_mapping_cfg_reaches_the_mapping():
    from davpt_seg.models.davpt import DAVPTObjective
    objective = DAVPTObjective(
        num_classes=4, num_proxy_prompts=2, embed_dims=32,
        mapping=dict(init='k-means++', n_init=3))
    assert objective.mapping.init == 'k-means++'
    assert objective.mapping.n_init == 3
    with pytest.raises(ValueError, match='n_init'):
        DAVPTObjective(num_classes=4, num_proxy_prompts=2, embed_dims=32,
                       mapping=dict(n_init=0))


def test_state_dict_round_trip_and_resume():
    groups = [0, 1, 2, 0, 1, 2, 0, 1]
    module = ClassPromptMapping(8, 3, 16, seed=5)
    module.accumulate(*_grouped_class_data(8, groups, 16, classes=range(6)))
    assert module.update()
    module.accumulate(*_grouped_class_data(8, groups, 16, seed=1))

    buffer = io.BytesIO()
    torch.save(module.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer)
    assert set(state) == set(BUFFER_NAMES)

    resumed = ClassPromptMapping(8, 3, 16, seed=5)
    resumed.load_state_dict(state, strict=True)
    for name in BUFFER_NAMES:
        assert torch.equal(getattr(resumed, name), getattr(module, name))
    class_ids = torch.tensor([-1, 0, 1, 2, 3, 4, 5, 6, 7])
    assert torch.equal(
        resumed.map_classes(class_ids), module.map_classes(class_ids))

    # Continuing from the checkpoint reproduces the original run exactly.
    assert module.update() == resumed.update()
    for name in BUFFER_NAMES:
        assert torch.equal(getattr(resumed, name), getattr(module, name))


def test_map_classes():
    module = ClassPromptMapping(5, 2, 4)
    module.mapping.copy_(torch.tensor([1, 0, 0, 1, 1]))
    prompt_ids = module.map_classes(torch.tensor([-1, 0, 1, 4, -1, 3]))
    assert torch.equal(prompt_ids, torch.tensor([-1, 1, 0, 1, -1, 1]))
    assert prompt_ids.dtype == torch.long
    assert module.map_classes(torch.tensor([2], dtype=torch.int32)).tolist() \
        == [0]
    assert module.map_classes(torch.zeros(0, dtype=torch.long)).numel() == 0
    with pytest.raises(ValueError, match=r'\[-1, 5\)'):
        module.map_classes(torch.tensor([5]))
    with pytest.raises(ValueError, match=r'\[-1, 5\)'):
        module.map_classes(torch.tensor([-2]))
    with pytest.raises(ValueError, match='integer'):
        module.map_classes(torch.tensor([0.0]))


# ---------------------------------------------------------------------------
# ClassPromptMapping: distributed (2 gloo processes on localhost)
# ---------------------------------------------------------------------------
DIST_WORLD_SIZE = 2
DIST_NUM_CLASSES = 14  # classes 12 and 13 are never seen
DIST_NUM_PROMPTS = 3
DIST_EMBED_DIMS = 32
DIST_SEED = 7


def _dist_data():
    """Per round, per step, per rank: (feats (4, C), present (4, 14)).

    Rank 0 only sees classes 0-5 and rank 1 only classes 6-11; half of the
    images carry a second class.
    """
    g = torch.Generator().manual_seed(123)
    prototypes = 4 * torch.randn(
        DIST_NUM_PROMPTS, DIST_EMBED_DIMS, generator=g)
    rounds = []
    for _ in range(2):
        steps = []
        for _ in range(3):
            per_rank = []
            for rank in range(DIST_WORLD_SIZE):
                first = 6 * rank + torch.randint(6, (4, ), generator=g)
                second = 6 * rank + torch.randint(6, (2, ), generator=g)
                present = _one_hot_present(first, DIST_NUM_CLASSES)
                present[torch.arange(2), second] = True
                feats = prototypes[first % DIST_NUM_PROMPTS] + torch.randn(
                    4, DIST_EMBED_DIMS, generator=g)
                per_rank.append((feats, present))
            steps.append(per_rank)
        rounds.append(steps)
    return rounds


def _run_rounds(module, batches_for_step):
    """Accumulate/update over ``_dist_data``; record the state per round."""
    records = []
    for steps in _dist_data() + [[]]:  # the last round accumulates nothing
        for per_rank in steps:
            module.accumulate(*batches_for_step(per_rank))
        stats = (module.feat_sum.clone(), module.feat_count.clone())
        updated = module.update()
        state = {k: v.clone() for k, v in module.state_dict().items()}
        records.append(dict(updated=updated, stats=stats, state=state))
    return records


def _merge_ranks(per_rank):
    """Concatenate the batches of all ranks: (feats, present)."""
    feats, present = zip(*per_rank)
    return torch.cat(feats), torch.cat(present)


def _new_dist_module():
    return ClassPromptMapping(
        DIST_NUM_CLASSES, DIST_NUM_PROMPTS, DIST_EMBED_DIMS, seed=DIST_SEED)


def _dist_worker(rank, world_size, init_method, out_dir):
    torch.set_num_threads(1)
    torch_dist.init_process_group(
        'gloo',
        init_method=init_method,
        rank=rank,
        world_size=world_size,
        timeout=timedelta(seconds=60))
    try:
        records = _run_rounds(_new_dist_module(),
                              lambda per_rank: per_rank[rank])
        torch.save(records, Path(out_dir) / f'rank{rank}.pt')
        torch_dist.barrier()
    finally:
        torch_dist.destroy_process_group()


@pytest.mark.skipif(
    not torch_dist.is_available(), reason='torch.distributed unavailable')
def test_distributed_ranks_agree_and_match_single_process(tmp_path):
    spawn_workers(_dist_worker, DIST_WORLD_SIZE, tmp_path)
    ranks = [
        torch.load(tmp_path / f'rank{r}.pt') for r in range(DIST_WORLD_SIZE)
    ]

    # Single process that sees every rank's batch at each step.
    reference = _run_rounds(_new_dist_module(), _merge_ranks)

    assert [r['updated'] for r in reference] == [True, True, False]
    for records in ranks:
        assert len(records) == len(reference)
        for got, want, other in zip(records, reference, ranks[0]):
            # All ranks hold bit-identical statistics and buffers.
            assert got['updated'] == other['updated']
            for a, b in zip(got['stats'], other['stats']):
                assert torch.equal(a, b)
            for name in BUFFER_NAMES:
                assert torch.equal(got['state'][name], other['state'][name])
            # ... which equal the single-process run on all the data.
            assert got['updated'] == want['updated']
            for a, b in zip(got['stats'], want['stats']):
                torch.testing.assert_close(a, b)
            for name in ('mapping', 'has_centroids', 'initialized',
                         'num_updates'):
                assert torch.equal(got['state'][name], want['state'][name])
            torch.testing.assert_close(got['state']['centroids'],
                                       want['state']['centroids'])


def test_prompt_classes_and_centroid_similarity():
    m = ClassPromptMapping(num_classes=5, num_proxy_prompts=2, embed_dims=3)
    assert m.centroid_similarity() is None  # no k-means solution yet
    m.mapping.copy_(torch.tensor([1, 0, 1, 1, 0]))
    assert m.prompt_classes() == [[1, 4], [0, 2, 3]]
    assert sorted(sum(m.prompt_classes(), [])) == list(range(5))
    m.centroids.copy_(torch.tensor([[1., 0., 0.], [2., 2., 0.]]))
    m.has_centroids.fill_(True)
    sim = m.centroid_similarity()
    torch.testing.assert_close(
        sim, torch.tensor([[1., 0.5**0.5], [0.5**0.5, 1.]]))


def test_summary_names_cluster_sizes_and_centroid_cosine():
    m = ClassPromptMapping(4, 2, 3, seed=0)
    assert m.summary() == ('cluster sizes [2, 2]; centroid cosine n/a')
    m.accumulate(torch.tensor([[1., 0, 0], [0.9, 0.1, 0], [0, 0, 1.],
                               [0, 0.1, 0.9]]), torch.eye(4, dtype=torch.bool))
    assert m.update()
    sim = m.centroid_similarity()
    off = sim[~torch.eye(2, dtype=torch.bool)]
    assert m.summary() == (
        f'cluster sizes {m.cluster_sizes()}; centroid cosine mean '
        f'{off.mean():.3f} max {off.max():.3f}')
    assert sorted(m.cluster_sizes()) == [2, 2]
