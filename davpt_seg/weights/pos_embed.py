# Copyright (c) davpt-seg contributors. Apache-2.0.
"""The one position-embedding resize of pretrained weights (loader and
converter)."""
from typing import Tuple

import torch
import torch.nn.functional as F

__all__ = ['resize_pos_embed']


def resize_pos_embed(pos_embed: torch.Tensor, src_grid: Tuple[int, int],
                     dst_grid: Tuple[int, int],
                     mode: str = 'bilinear') -> torch.Tensor:
    """Resize a ``(1, 1 + h * w, C)`` position embedding to another grid.

    mmseg's ``VisionTransformer.resize_pos_embed`` computation: the
    class-token position is kept and the patch grid is interpolated with
    ``F.interpolate(..., align_corners=False)``; equal to it for float32
    input (exactly). Unlike it, this computes in float32 and casts back to
    the input dtype, and also takes ``'nearest'`` (mmseg passes
    ``align_corners=False``, which ``F.interpolate`` refuses there).

    Args:
        pos_embed (Tensor): [1, 1 + h * w, C] with a class-token position.
        src_grid (tuple[int, int]): ``(h, w)`` of ``pos_embed``.
        dst_grid (tuple[int, int]): Target ``(H, W)``.
        mode (str): ``'bilinear'`` (default), ``'bicubic'`` or ``'nearest'``.

    Returns:
        Tensor: [1, 1 + H * W, C]; ``pos_embed`` itself if the grids are
        equal.
    """
    if tuple(src_grid) == tuple(dst_grid):
        return pos_embed
    dims = pos_embed.shape[-1]
    cls_pos = pos_embed[:, :1]
    grid = pos_embed[:, 1:].float().reshape(1, src_grid[0], src_grid[1],
                                            dims).permute(0, 3, 1, 2)
    align = None if mode in ('nearest', 'area') else False
    grid = F.interpolate(
        grid, size=tuple(dst_grid), mode=mode, align_corners=align)
    grid = grid.flatten(2).transpose(1, 2).to(pos_embed.dtype)
    return torch.cat([cls_pos, grid], dim=1)
