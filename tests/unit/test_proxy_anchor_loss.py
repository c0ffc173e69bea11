"""Tests for :class:`davpt_seg.models.losses.ProxyAnchorLoss`."""
import math

import pytest
import torch

import davpt_seg  # noqa: F401  (registration)
from davpt_seg.models.losses import ProxyAnchorLoss

pml_losses = pytest.importorskip('pytorch_metric_learning.losses')

DTYPE = torch.float64


def _leaf(t):
    return t.detach().clone().requires_grad_(True)


def _ours(loss_fn, features, labels, proxies):
    """Loss value and gradients w.r.t. (features, proxies)."""
    f, p = _leaf(features), _leaf(proxies)
    loss = loss_fn(f, labels, p)
    loss.backward()
    return loss.detach(), f.grad, p.grad


def _naive_loss(features, labels, proxies, alpha, delta, scale, pos_norm):
    """Direct transcription of the formula: loops over proxies and samples,
    no masking tricks, no logsumexp. Autograd-able, for float64 inputs."""
    num_proxies = proxies.size(0)
    labels = labels.tolist()
    z = [features[i] / features[i].norm() for i in range(features.size(0))]
    p = [scale * proxies[k] / proxies[k].norm() for k in range(num_proxies)]
    pos_sum = features.new_zeros(())
    neg_sum = features.new_zeros(())
    num_with_pos = 0
    for k in range(num_proxies):
        pos_terms, neg_terms = [], []
        for i, y in enumerate(labels):
            s_ik = torch.dot(z[i], p[k])
            if y == k:
                pos_terms.append(torch.exp(-alpha * (s_ik - delta)))
            elif y != -1:
                neg_terms.append(torch.exp(alpha * (s_ik + delta)))
        if pos_terms:
            num_with_pos += 1
            pos_sum = pos_sum + torch.log(1 + sum(pos_terms))
        if neg_terms:
            neg_sum = neg_sum + torch.log(1 + sum(neg_terms))
    if pos_norm == 'all':
        pos_div = num_proxies
    else:
        pos_div = max(num_with_pos, 1)
    return pos_sum / pos_div + neg_sum / num_proxies


def _random_case(seed, batch, num_proxies, channels, labels=None,
                 ignore_frac=0.0):
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(batch, channels, generator=g, dtype=DTYPE)
    proxies = torch.randn(num_proxies, channels, generator=g, dtype=DTYPE)
    if labels is None:
        labels = torch.randint(0, num_proxies, (batch, ), generator=g)
        if ignore_frac > 0:
            drop = torch.rand(batch, generator=g) < ignore_frac
            labels[drop] = -1
    else:
        labels = torch.as_tensor(labels, dtype=torch.long)
    return features, labels, proxies


# (seed, B, K, C, fixed labels or None)
PML_CASES = [
    (0, 16, 5, 8, None),  # usually every proxy has a positive
    (1, 4, 10, 16, None),  # B < K: several proxies have no positive
    (2, 2, 10, 32, None),  # DA-VPT seg per-GPU batch
    (3, 7, 6, 4, [3] * 7),  # one-class batch
    (4, 1, 3, 5, [2]),  # single sample
    (5, 12, 4, 6, [0, 0, 1, 1, 0, 1, 0, 0, 1, 1, 1, 0]),  # proxies 2, 3 empty
    (6, 32, 20, 64, None),
]


@pytest.mark.parametrize('seed,batch,num_proxies,channels,labels', PML_CASES)
@pytest.mark.parametrize('alpha,delta', [(32.0, 0.1), (8.0, 0.3)])
def test_matches_pytorch_metric_learning(seed, batch, num_proxies, channels,
                                         labels, alpha, delta):
    """``pos_norm='positive', scale=1`` is pml's ProxyAnchorLoss.

    pml (2.9.0, ``losses/proxy_anchor_loss.py``) uses ``CosineSimilarity``
    (both embeddings and proxies L2-normalised by ``F.normalize``), an
    ``add_one`` masked logsumexp over the batch dim per proxy (empty columns
    set to 0), and a ``DivisorReducer`` that divides the **sum of pos terms
    by the number of proxies with >= 1 positive in the batch** and the **sum
    of neg terms by num_classes (all K)**. Its negatives for proxy k are all
    samples with label != k (pml has no ignore label, so no -1 here).
    """
    features, labels, proxies = _random_case(seed, batch, num_proxies,
                                             channels, labels)
    ours = ProxyAnchorLoss(
        alpha=alpha, delta=delta, scale=1.0, pos_norm='positive')
    loss, f_grad, p_grad = _ours(ours, features, labels, proxies)

    pml = pml_losses.ProxyAnchorLoss(
        num_classes=num_proxies,
        embedding_size=channels,
        margin=delta,
        alpha=alpha)
    pml.proxies.data = proxies.clone()
    f = _leaf(features)
    pml_value = pml(f, labels)
    pml_value.backward()

    assert pml.proxies.dtype == DTYPE
    torch.testing.assert_close(loss, pml_value.detach(), rtol=1e-10,
                               atol=1e-12)
    torch.testing.assert_close(f_grad, f.grad, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(p_grad, pml.proxies.grad, rtol=1e-9,
                               atol=1e-12)


@pytest.mark.parametrize('pos_norm', ['all', 'positive'])
@pytest.mark.parametrize('seed', [0, 1, 2])
def test_ignored_samples_equal_removed(pos_norm, seed):
    """Samples labelled -1 are exactly equivalent to removing them."""
    features, labels, proxies = _random_case(
        seed, 24, 6, 8, ignore_frac=0.4)
    keep = labels >= 0
    assert 0 < int(keep.sum()) < labels.numel()
    loss_fn = ProxyAnchorLoss(pos_norm=pos_norm)

    loss, f_grad, p_grad = _ours(loss_fn, features, labels, proxies)
    loss_k, f_grad_k, p_grad_k = _ours(loss_fn, features[keep], labels[keep],
                                       proxies)

    torch.testing.assert_close(loss, loss_k, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(f_grad[keep], f_grad_k, rtol=1e-10, atol=0)
    assert torch.count_nonzero(f_grad[~keep]) == 0
    torch.testing.assert_close(p_grad, p_grad_k, rtol=1e-10, atol=1e-14)


NAIVE_CASES = [
    (0, 16, 10, 8, None, 0.0),
    (1, 2, 10, 16, None, 0.0),  # seg per-GPU batch
    (2, 20, 5, 6, None, 0.3),  # with ignored samples
    (3, 6, 4, 8, [1] * 6, 0.0),  # one-class batch: every neg_k of k=1 empty
    (4, 5, 3, 8, [-1] * 5, 0.0),  # nothing to compare
    (5, 5, 3, 8, [2, -1, -1, -1, -1], 0.0),  # one valid sample
    (6, 1, 7, 8, [0], 0.0),  # single sample
]


@pytest.mark.parametrize('seed,batch,num_proxies,channels,labels,ignore',
                         NAIVE_CASES)
@pytest.mark.parametrize(
    'kwargs',
    [
        dict(),  # defaults: alpha=32, delta=0.1, scale=5, pos_norm='all'
        dict(pos_norm='positive'),
        dict(alpha=4.0, delta=-0.2, scale=2.0),
    ])
def test_matches_naive_formula(seed, batch, num_proxies, channels, labels,
                               ignore, kwargs):
    features, labels, proxies = _random_case(seed, batch, num_proxies,
                                             channels, labels, ignore)
    loss_fn = ProxyAnchorLoss(**kwargs)
    cfg = dict(alpha=32.0, delta=0.1, scale=5.0, pos_norm='all')
    cfg.update(kwargs)
    loss, f_grad, p_grad = _ours(loss_fn, features, labels, proxies)

    f, p = _leaf(features), _leaf(proxies)
    ref = _naive_loss(f, labels, p, **cfg)
    if ref.requires_grad:  # the naive sum is a constant when nothing counts
        ref.backward()
    f_ref = f.grad if f.grad is not None else torch.zeros_like(f)
    p_ref = p.grad if p.grad is not None else torch.zeros_like(p)

    assert loss.dtype == DTYPE
    torch.testing.assert_close(loss, ref.detach(), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(f_grad, f_ref, rtol=1e-8, atol=1e-12)
    torch.testing.assert_close(p_grad, p_ref, rtol=1e-8, atol=1e-12)


def test_defaults():
    loss_fn = ProxyAnchorLoss()
    assert (loss_fn.alpha, loss_fn.delta, loss_fn.scale, loss_fn.pos_norm) \
        == (32.0, 0.1, 5.0, 'all')
    assert list(loss_fn.parameters()) == []
    assert 'pos_norm' in repr(loss_fn)


@pytest.mark.parametrize('pos_norm', ['all', 'positive'])
@pytest.mark.parametrize('batch', [0, 1, 4])
def test_nothing_to_compare_gives_connected_zero(pos_norm, batch):
    features = torch.randn(batch, 8, requires_grad=True)
    proxies = torch.randn(5, 8, requires_grad=True)
    labels = torch.full((batch, ), -1, dtype=torch.long)
    loss = ProxyAnchorLoss(pos_norm=pos_norm)(features, labels, proxies)
    assert loss.dim() == 0 and loss.dtype == torch.float32
    assert loss.item() == 0.0
    assert loss.requires_grad
    loss.backward()
    assert features.grad is not None and proxies.grad is not None
    assert torch.count_nonzero(features.grad) == 0
    assert torch.count_nonzero(proxies.grad) == 0


def test_single_sample():
    torch.manual_seed(0)
    proxies = torch.randn(3, 8, requires_grad=True)
    # Anti-aligned with its own proxy so that pos_1 is far from zero (with
    # alpha*scale = 160 a well-placed sample can round the loss to 0 in
    # float32, since log(1 + x) == 0 for x < 2**-24).
    features = (-proxies[1:2] + 0.1 * torch.randn(1, 8)).detach()
    features.requires_grad_(True)
    loss = ProxyAnchorLoss()(features, torch.tensor([1]), proxies)
    loss.backward()
    assert torch.isfinite(loss) and loss.item() > 0
    assert torch.isfinite(features.grad).all()
    assert torch.isfinite(proxies.grad).all()
    # The negatives of proxy 1 are empty: only pos_1 and neg_0, neg_2 count.
    assert proxies.grad[1].abs().sum() > 0


@pytest.mark.parametrize('pos_norm', ['all', 'positive'])
def test_huge_alpha_scale_is_finite(pos_norm):
    torch.manual_seed(0)
    loss_fn = ProxyAnchorLoss(alpha=64.0, scale=10.0, pos_norm=pos_norm)
    proxies = torch.randn(4, 16)
    # Worst case: positives anti-aligned and negatives aligned with their
    # proxies, so every exponent is about +alpha*scale = 640 (exp overflows
    # float32 and float64 would be needed for a naive sum).
    features = torch.cat([-proxies, proxies]).clone().requires_grad_(True)
    labels = torch.tensor([0, 1, 2, 3, 1, 2, 3, 0])
    p = proxies.clone().requires_grad_(True)
    loss = loss_fn(features, labels, p)
    loss.backward()
    assert torch.isfinite(loss)
    # Dominant terms: each positive ~ alpha*(scale+delta); the negatives are
    # at cos=1 for their own proxy -> ~ alpha*(scale+delta) as well.
    assert loss.item() > 64.0 * 10.0
    assert torch.isfinite(features.grad).all()
    assert torch.isfinite(p.grad).all()


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_half_inputs_compute_in_float32(dtype):
    torch.manual_seed(0)
    features = torch.randn(6, 8).to(dtype)
    proxies = torch.randn(4, 8).to(dtype)
    labels = torch.tensor([0, 1, 1, -1, 3, 0])
    f = features.clone().requires_grad_(True)
    p = proxies.clone().requires_grad_(True)
    loss = ProxyAnchorLoss()(f, labels, p)
    assert loss.dtype == torch.float32
    ref = ProxyAnchorLoss()(features.float(), labels, proxies.float())
    torch.testing.assert_close(loss, ref)
    loss.backward()
    assert f.grad.dtype == dtype and p.grad.dtype == dtype
    assert torch.isfinite(f.grad.float()).all()


def test_zero_norm_inputs_are_finite():
    features = torch.zeros(3, 4, requires_grad=True)
    proxies = torch.zeros(2, 4, requires_grad=True)
    loss = ProxyAnchorLoss()(features, torch.tensor([0, 1, 0]), proxies)
    loss.backward()
    # s = 0 everywhere: every pos_k and neg_k are log(1 + n exp(alpha*delta)).
    expected = (math.log1p(2 * math.exp(3.2)) + math.log1p(math.exp(3.2)) +
                math.log1p(math.exp(3.2)) + math.log1p(2 * math.exp(3.2))) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert torch.isfinite(features.grad).all()
    assert torch.isfinite(proxies.grad).all()


@pytest.mark.parametrize('kwargs', [
    dict(alpha=0.0),
    dict(alpha=-1.0),
    dict(scale=0.0),
    dict(scale=-5.0),
    dict(pos_norm='mean'),
    dict(pos_norm=None),
    dict(eps=0.0),
    dict(delta=float('nan')),
])
def test_bad_options_raise(kwargs):
    (name, ) = kwargs
    with pytest.raises(ValueError, match=f'^{name} must be'):
        ProxyAnchorLoss(**kwargs)


@pytest.mark.parametrize('bad', [-2, 5, 100])
def test_bad_labels_raise(bad):
    features = torch.randn(3, 8)
    proxies = torch.randn(5, 8)
    labels = torch.tensor([0, bad, -1])
    with pytest.raises(ValueError, match=r'\[0, 5\) or -1'):
        ProxyAnchorLoss()(features, labels, proxies)


def test_bad_shapes_raise():
    loss_fn = ProxyAnchorLoss()
    with pytest.raises(ValueError, match='8 channels but proxies have 7'):
        loss_fn(torch.randn(3, 8), torch.tensor([0, 1, 2]), torch.randn(4, 7))
    with pytest.raises(ValueError, match=r'labels must have shape \(3,\)'):
        loss_fn(torch.randn(3, 8), torch.tensor([0, 1]), torch.randn(4, 8))
    with pytest.raises(ValueError,
                       match=r'features must have shape \(B, C\)'):
        loss_fn(torch.randn(3, 2, 8), torch.tensor([0, 1, 2]),
                torch.randn(4, 8))
    with pytest.raises(ValueError, match='at least one proxy'):
        loss_fn(torch.randn(3, 8), torch.tensor([-1, -1, -1]),
                torch.randn(0, 8))
    with pytest.raises(TypeError, match='labels must be an integer'):
        loss_fn(torch.randn(3, 8), torch.tensor([0., 1., 2.]),
                torch.randn(4, 8))


def test_build_from_registry():
    from mmseg.registry import MODELS
    loss_fn = MODELS.build(dict(type='ProxyAnchorLoss'))
    assert isinstance(loss_fn, ProxyAnchorLoss)
    loss_fn = MODELS.build(
        dict(type='ProxyAnchorLoss', alpha=16, pos_norm='positive'))
    assert loss_fn.alpha == 16.0 and loss_fn.pos_norm == 'positive'
