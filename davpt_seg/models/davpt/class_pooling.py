# Copyright (c) davpt-seg contributors. Apache-2.0.
"""Per-class features pooled under the class masks on the patch grid: the
``mapping_feature='class_patches'`` statistics of the class->prompt mapping
(``docs/class_mapping.md``).

Each image contributes, for every class covering at least ``min_patches``
patches of it, the mean of the patch tokens labelled with that class. A
patch takes the label at its centre pixel. All of it is batched tensor
work on the tokens' device (no host sync).
"""
from typing import Sequence, Tuple

import torch
from torch import Tensor


def labels_on_grid(labels: Tensor, hw_shape: Tuple[int, int]) -> Tensor:
    """[B, h, w] labels at the centre pixel of each patch of an (h, w) grid
    laid over [B, H, W] ``labels`` (row ``i`` takes pixel row
    ``floor((i + 0.5) * H / h)``)."""
    h, w = hw_shape
    H, W = labels.shape[-2:]
    rows = ((torch.arange(h, device=labels.device) + 0.5) * H / h).long()
    cols = ((torch.arange(w, device=labels.device) + 0.5) * W / w).long()
    return labels[:, rows][:, :, cols]


def class_pooled_features(tokens: Tensor, grid_labels: Tensor,
                          num_classes: int, ignore_index: int = 255,
                          background_ids: Sequence[int] = (),
                          min_patches: int = 1) -> Tuple[Tensor, Tensor]:
    """Mean patch token of each class in each image.

    Args:
        tokens (Tensor): [B, h, w, C] patch tokens.
        grid_labels (Tensor): [B, h, w] class ids per patch
            (:func:`labels_on_grid`); ``ignore_index`` and any value outside
            ``0..num_classes-1`` count for no class.
        num_classes (int): K.
        ignore_index (int): label of ignored pixels.
        background_ids (Sequence[int]): classes never pooled.
        min_patches (int): fewest patches of a class in an image for it to
            count (smaller ones are skipped).
    Returns:
        (Tensor [B, K, C] float32 means (zero where not valid),
        Tensor [B, K] bool valid).
    """
    if min_patches < 1:
        raise ValueError(f'min_patches must be >= 1, got {min_patches}')
    B, h, w, C = tokens.shape
    if tuple(grid_labels.shape) != (B, h, w):
        raise ValueError(f'grid_labels {tuple(grid_labels.shape)} do not fit '
                         f'the tokens {tuple(tokens.shape)}')
    labels = grid_labels.reshape(B, h * w).long()
    outside = (labels < 0) | (labels >= num_classes) | \
        (labels == ignore_index)
    labels = labels.masked_fill(outside, num_classes)  # a dropped column
    one_hot = torch.nn.functional.one_hot(labels, num_classes + 1)
    one_hot = one_hot[..., :num_classes].to(torch.float32)  # [B, N, K]
    counts = one_hot.sum(1)  # [B, K]
    sums = one_hot.transpose(1, 2) @ tokens.reshape(B, h * w, C).float()
    valid = counts >= min_patches
    if background_ids:
        valid[:, list(background_ids)] = False
    means = sums / counts.clamp_min(1).unsqueeze(-1)
    return means * valid.unsqueeze(-1), valid
