# Copyright (c) davpt-seg contributors. All rights reserved.
"""Which source format a loaded checkpoint is in."""
import re
from typing import Any, Dict, Mapping, Optional, Sequence

import numpy as np
import torch

from ..errors import ConversionError
from .dinov2 import is_dinov2_keys

__all__ = ['is_array_dict', 'unwrap_state_dict', 'describe_unknown',
           'detect_source']


def _is_tensor_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(
        isinstance(v, torch.Tensor) for v in obj.values())


def is_array_dict(obj: Any) -> bool:
    """Whether ``obj`` is a non-empty mapping of names to ndarrays (what
    an ``.npz`` file holds)."""
    return isinstance(obj, Mapping) and bool(obj) and all(
        isinstance(v, np.ndarray) for v in obj.values())


def unwrap_state_dict(obj: Any, name: str) -> Dict[str, torch.Tensor]:
    """Find the state dict inside a torch checkpoint and strip ``module.``.

    Descends through ``'state_dict'`` / ``'model'`` / ``'module'`` wrappers,
    keeps tensor entries only and removes a DistributedDataParallel
    ``'module.'`` prefix shared by all keys.
    """
    if not isinstance(obj, Mapping):
        raise ConversionError(
            f'{name}: expected a state dict (a mapping of names to tensors), '
            f'got {type(obj).__name__}')
    for _ in range(3):
        if _is_tensor_dict(obj):
            break
        for wrapper in ('state_dict', 'model', 'module'):
            if isinstance(obj.get(wrapper), Mapping):
                obj = obj[wrapper]
                break
        else:
            break
    sd = {k: v for k, v in obj.items()
          if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if not sd:
        keys = ', '.join(map(str, list(obj)[:8]))
        raise ConversionError(
            f'{name}: no tensors found (top-level keys: {keys}); expected a '
            "state dict, possibly nested under 'state_dict' or 'model'")
    if all(k.startswith('module.') for k in sd):
        sd = {k[len('module.'):]: v for k, v in sd.items()}
    return sd


def _looks_like(keys: Sequence[str]) -> Optional[str]:
    """Classify torch state-dict keys (``module.`` already stripped)."""
    keyset = set(keys)
    if any(k.startswith(('base_encoder.', 'momentum_encoder.'))
           for k in keys):
        return 'mocov3'
    if 'patch_embed.proj.weight' in keyset and any(
            k.startswith('blocks.') for k in keys):
        if is_dinov2_keys(keys):  # before MAE: DINOv2 has a mask_token too
            return 'dinov2'
        if 'mask_token' in keyset or any(
                k.startswith('decoder_') for k in keys):
            return 'mae'
        return 'timm'
    return None


def describe_unknown(keys: Sequence[str]) -> str:
    """Explain what a non-ViT key set looks like, for error messages."""
    keyset = set(keys)
    sample = ', '.join(sorted(keys)[:8])
    if any(k.startswith('layers.') and '.attn.attn.in_proj' in k
           for k in keys):
        return ('it already uses mmseg VisionTransformer keys '
                f'(e.g. {sample}); no conversion is needed')
    if 'conv1.weight' in keyset or any(
            re.match(r'^layer\d+\.', k) for k in keys):
        return f'it looks like a CNN (ResNet-style keys: {sample})'
    if any('embedding/kernel' in k for k in keys):
        return f'it looks like a JAX checkpoint (keys: {sample})'
    return f'unrecognised keys: {sample}'


def detect_source(obj: Any, container: str = 'torch',
                  name: str = '<state dict>') -> str:
    """Detect the source format of a loaded checkpoint.

    Args:
        obj: What :func:`load_source_file` returned (or an in-memory state
            dict / dict of ndarrays).
        container (str): ``'npz'``, ``'torch'`` or ``'safetensors'``.
        name (str): Name used in error messages.

    Returns:
        str: One of :data:`SOURCES`.

    Raises:
        ConversionError: If the format cannot be recognised.
    """
    if container == 'npz' or is_array_dict(obj):
        keys = list(obj)
        if any(k.endswith('embedding/kernel') for k in keys):
            return 'jax'
        raise ConversionError(
            f'{name}: cannot detect the checkpoint format: an .npz file but '
            f"not a JAX ViT (no 'embedding/kernel'; keys: "
            f"{', '.join(sorted(keys)[:8])})")
    sd = unwrap_state_dict(obj, name)
    source = _looks_like(list(sd))
    if source is None:
        raise ConversionError(
            f'{name}: cannot detect the checkpoint format; expected '
            "timm/MAE/DINOv2 ViT keys ('patch_embed.proj.weight', "
            "'blocks.N.*'), MoCo v3 keys ('module.base_encoder.*') or a JAX "
            ".npz, but "
            f'{describe_unknown(list(sd))}')
    return source
