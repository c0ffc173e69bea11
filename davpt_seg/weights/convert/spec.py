# Copyright (c) davpt-seg contributors. All rights reserved.
"""What a conversion infers and returns."""
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import torch

__all__ = ['SOURCES', 'ViTSpec', 'ConversionResult']

#: Source formats understood by :func:`convert_state_dict`.
SOURCES = ('timm', 'jax', 'mae', 'mocov3', 'dinov2')


@dataclass
class ViTSpec:
    """Architecture of a converted ViT, inferred from its weights.

    Attributes:
        depth (int): Number of transformer blocks (``num_layers``).
        embed_dims (int): Token width.
        mlp_hidden (int): Hidden width of the MLP (``feedforward_channels``).
        patch_size (int): Side of the square patches.
        in_channels (int): Input channels of the patch embedding.
        pos_grid (tuple[int, int]): Patch grid of ``pos_embed`` (class-token
            position not counted).
        num_heads (int, optional): Attention heads; only stored by JAX files.
        patch_bias (bool): Whether the source had a patch-embedding bias.
        qkv_bias (bool): Whether the source had q/k/v biases.
        final_norm (str, optional): Source key of the final norm
            (``'norm'`` or ``'fc_norm'``), None if absent.
        pre_norm (bool): Whether the source had a pre-transformer norm.
        dtype (torch.dtype): Dtype of the weights.
        num_register_tokens (int): Register tokens (DINOv2 with registers).
    """
    depth: int
    embed_dims: int
    mlp_hidden: int
    patch_size: int
    in_channels: int
    pos_grid: Tuple[int, int]
    num_heads: Optional[int] = None
    patch_bias: bool = True
    qkv_bias: bool = True
    final_norm: Optional[str] = 'norm'
    pre_norm: bool = False
    dtype: torch.dtype = torch.float32
    num_register_tokens: int = 0

    @property
    def mlp_ratio(self) -> float:
        """``mlp_hidden / embed_dims`` (an int for all standard ViTs)."""
        return self.mlp_hidden / self.embed_dims


@dataclass
class ConversionResult:
    """Output of :func:`convert_state_dict` / :func:`convert_file`.

    Attributes:
        state_dict (OrderedDict[str, Tensor]): Weights with mmseg's keys.
        source (str): The source format used (one of :data:`SOURCES`).
        detected (bool): True if ``source`` was detected, not given.
        spec (ViTSpec): Architecture inferred from the weights.
        src_pos_grid (tuple[int, int]): Patch grid before any resizing.
        name (str): Name of the input (file path) used in messages.
        dropped (list[str]): Source keys that were dropped (heads, decoders,
            momentum encoders, ...).
        notes (list[str]): Human-readable remarks for the summary.
    """
    state_dict: 'OrderedDict[str, torch.Tensor]'
    source: str
    detected: bool
    spec: ViTSpec
    src_pos_grid: Tuple[int, int]
    name: str = '<state dict>'
    dropped: List[str] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)
