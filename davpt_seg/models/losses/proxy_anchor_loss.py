# Copyright (c) davpt-seg contributors. All rights reserved.
"""Proxy-Anchor metric loss with externally owned proxies (DA-VPT)."""
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmseg.registry import MODELS
from torch import Tensor

_POS_NORMS = ('all', 'positive')


@MODELS.register_module()
class ProxyAnchorLoss(nn.Module):
    r"""Proxy-Anchor loss between features and prompt proxies.

    This is the metric loss :math:`\mathcal{L}_{ML}` of DA-VPT. Unlike the
    original Proxy-Anchor loss (`Kim et al., CVPR 2020
    <https://arxiv.org/abs/2003.13911>`_) the module owns no parameters: the
    proxies are the (per-layer) proxy prompt tokens and are passed to
    :meth:`forward`, so their gradient flows straight back to the prompts.

    With :math:`\hat z_i = z_i / \lVert z_i \rVert` (features) and
    :math:`\hat p_k = r \cdot P_k / \lVert P_k \rVert` (proxies, with
    ``r = scale``), :math:`s_{ik} = \hat z_i \cdot \hat p_k` and

    .. math::

        \mathrm{pos}_k &= \log\Big(1 + \sum_{i: y_i = k}
            e^{-\alpha (s_{ik} - \delta)}\Big), \\
        \mathrm{neg}_k &= \log\Big(1 + \sum_{i: y_i \neq k,\, y_i \neq -1}
            e^{\alpha (s_{ik} + \delta)}\Big), \\
        \mathcal{L} &= \frac{1}{D_{pos}} \sum_k \mathrm{pos}_k
            + \frac{1}{K} \sum_k \mathrm{neg}_k,

    where an empty sum gives a zero term, and :math:`D_{pos} = K`
    (``pos_norm='all'``, as in the DA-VPT code) or the number of proxies
    with at least one positive in the batch (``pos_norm='positive'``, as in
    the original Proxy-Anchor loss and ``pytorch-metric-learning``). Samples
    labelled ``-1`` take no part in the loss.

    The loss is computed as ``logsumexp`` over each proxy column with a zero
    appended (the ``1 +``), after replacing the masked-out entries with
    ``-inf``. The appended zero keeps every column finite, so neither the
    value nor the gradient can overflow or become NaN, whatever
    ``alpha * scale`` is. Batches with nothing to compare (e.g. all labels
    ``-1``) give an exact zero that is still connected to ``features`` and
    ``proxies``, so ``backward()`` gives zero gradients and DDP sees the
    proxies as used. The forward pass never synchronises with the device
    except for the label range check (``check_labels``).

    Precision: fp16 / bf16 inputs are upcast and the loss is computed and
    returned in float32 (float64 inputs stay float64). Autocast is disabled
    inside the loss so that the similarity matmul is not run in half
    precision, where ``alpha * scale`` would amplify the rounding error.

    Args:
        alpha (float): Scaling factor :math:`\alpha` (inverse temperature)
            applied to the similarities. Must be > 0. Defaults to 32.0.
        delta (float): Margin :math:`\delta`, in the units of
            :math:`s_{ik}`, i.e. of ``scale * cos``. Defaults to 0.1.
        scale (float): Norm :math:`r` given to the L2-normalised proxies,
            so :math:`s_{ik} = r \cos(z_i, P_k)`. Must be > 0. Defaults to
            5.0 (DA-VPT segmentation); use 1.0 for the plain cosine
            Proxy-Anchor loss.
        pos_norm (str): Divisor of the positive sum: ``'all'`` divides by
            the number of proxies ``K`` (DA-VPT), ``'positive'`` by the
            number of proxies with at least one positive sample in the batch
            (original Proxy-Anchor). Defaults to ``'all'``.
        eps (float): Lower bound on the norms in the L2 normalisation, as in
            :func:`torch.nn.functional.normalize`. Must be > 0. Defaults to
            1e-12.
        check_labels (bool): Check that every label is -1 or a proxy
            index (``ValueError`` otherwise). On a GPU the check is a host
            sync per call; DA-VPT's targets are valid by construction, so
            its default metric loss turns it off. Defaults to True.
    """

    def __init__(self,
                 alpha: float = 32.0,
                 delta: float = 0.1,
                 scale: float = 5.0,
                 pos_norm: str = 'all',
                 eps: float = 1e-12,
                 check_labels: bool = True) -> None:
        super().__init__()
        if not alpha > 0:
            raise ValueError(f'alpha must be > 0, but got {alpha}')
        if not scale > 0:
            raise ValueError(f'scale must be > 0, but got {scale}')
        if pos_norm not in _POS_NORMS:
            raise ValueError(f'pos_norm must be one of {_POS_NORMS}, '
                             f'but got {pos_norm!r}')
        if not eps > 0:
            raise ValueError(f'eps must be > 0, but got {eps}')
        delta = float(delta)
        if delta != delta or abs(delta) == float('inf'):
            raise ValueError(f'delta must be finite, but got {delta}')
        self.alpha = float(alpha)
        self.delta = delta
        self.scale = float(scale)
        self.pos_norm = pos_norm
        self.eps = float(eps)
        self.check_labels = bool(check_labels)

    def extra_repr(self) -> str:
        return (f'alpha={self.alpha}, delta={self.delta}, '
                f'scale={self.scale}, pos_norm={self.pos_norm!r}, '
                f'eps={self.eps}, check_labels={self.check_labels}')

    @staticmethod
    def _check_inputs(features: Tensor, labels: Tensor, proxies: Tensor,
                      check_labels: bool = True) -> None:
        """Check shapes, dtypes and (``check_labels``) the label range."""
        if features.dim() != 2:
            raise ValueError('features must have shape (B, C), but got '
                             f'{tuple(features.shape)}')
        if proxies.dim() != 2:
            raise ValueError('proxies must have shape (K, C), but got '
                             f'{tuple(proxies.shape)}')
        if proxies.size(0) == 0:
            raise ValueError('proxies must contain at least one proxy (K>0)')
        if features.size(1) != proxies.size(1):
            raise ValueError(
                f'features have {features.size(1)} channels but proxies '
                f'have {proxies.size(1)}')
        if not (features.is_floating_point() and proxies.is_floating_point()):
            raise TypeError('features and proxies must be floating point, '
                            f'but got {features.dtype} and {proxies.dtype}')
        if labels.dim() != 1 or labels.size(0) != features.size(0):
            raise ValueError(
                f'labels must have shape ({features.size(0)},) to match '
                f'features, but got {tuple(labels.shape)}')
        if labels.is_floating_point() or labels.is_complex() \
                or labels.dtype == torch.bool:
            raise TypeError(
                f'labels must be an integer tensor, but got {labels.dtype}')
        num_proxies = proxies.size(0)
        if check_labels and labels.numel() > 0 and bool(
            ((labels < -1) | (labels >= num_proxies)).any()):
            bad = labels[(labels < -1) | (labels >= num_proxies)]
            raise ValueError(
                f'labels must be proxy indices in [0, {num_proxies}) or -1 '
                f'(ignored), but got {bad.unique().tolist()}')

    def forward(self, features: Tensor, labels: Tensor,
                proxies: Tensor) -> Tensor:
        """Compute the loss.

        Args:
            features (Tensor): Features :math:`z`, shape (B, C). They are
                L2-normalised inside.
            labels (Tensor): Integer proxy index of every sample, shape
                (B, ). Values in ``[0, K)``, or ``-1`` to leave the sample
                out of the loss entirely.
            proxies (Tensor): Proxies :math:`P` (e.g. the proxy prompt
                tokens of a layer), shape (K, C). They are L2-normalised and
                multiplied by ``scale`` inside.

        Returns:
            Tensor: Scalar loss, float32 (float64 if an input is float64).
        """
        self._check_inputs(features, labels, proxies, self.check_labels)
        dtype = torch.promote_types(
            torch.promote_types(features.dtype, proxies.dtype), torch.float32)
        num_proxies = proxies.size(0)

        with torch.autocast(device_type=features.device.type, enabled=False):
            feats = F.normalize(features.to(dtype), dim=1, eps=self.eps)
            prox = F.normalize(proxies.to(dtype), dim=1, eps=self.eps)
            sim = feats @ (self.scale * prox).t()  # (B, K)

            labels = labels.to(device=sim.device, dtype=torch.long)
            proxy_ids = torch.arange(num_proxies, device=sim.device)
            pos_mask = labels[:, None] == proxy_ids[None, :]  # (B, K)
            valid = (labels >= 0)[:, None]  # (B, 1)
            neg_mask = valid & ~pos_mask  # (B, K)

            pos_term = self._masked_log1p_sum_exp(
                -self.alpha * (sim - self.delta), pos_mask)  # (K, )
            neg_term = self._masked_log1p_sum_exp(
                self.alpha * (sim + self.delta), neg_mask)  # (K, )

            if self.pos_norm == 'all':
                pos_loss = pos_term.sum() / num_proxies
            else:
                # No proxy with a positive -> the sum is exactly 0 and so is
                # the loss; clamping avoids 0/0 without a host sync.
                num_with_pos = pos_mask.any(dim=0).sum().clamp(min=1)
                pos_loss = pos_term.sum() / num_with_pos.to(dtype)
            neg_loss = neg_term.sum() / num_proxies
        return pos_loss + neg_loss

    @staticmethod
    def _masked_log1p_sum_exp(logits: Tensor, mask: Tensor) -> Tensor:
        """``log(1 + sum_i exp(logits[i, k]))`` over ``mask[:, k]``.

        Masked-out entries are replaced with ``-inf`` (``masked_fill`` passes
        no gradient to them) and a zero row is appended, so every column has
        a finite maximum and both value and gradient are finite. A column
        with an empty mask gives exactly ``log(1) = 0``.

        Args:
            logits (Tensor): Shape (B, K).
            mask (Tensor): Boolean, shape (B, K); True = included.

        Returns:
            Tensor: Shape (K, ).
        """
        logits = logits.masked_fill(~mask, float('-inf'))
        zeros = logits.new_zeros((1, logits.size(1)))
        return torch.logsumexp(torch.cat([logits, zeros], dim=0), dim=0)
