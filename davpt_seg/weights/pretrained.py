# Copyright (c) davpt-seg contributors. Apache-2.0.
"""Strict loading of pretrained ViT weights into the prompted backbone.

:func:`load_pretrained` takes mmseg-format ViT weights (see
:mod:`davpt_seg.weights.convert` for timm / JAX / MAE / MoCo v3 / DINOv2),
resizes a square position grid to the backbone's (:func:`resize_pos_embed`)
and refuses any missing, unexpected or mis-shaped key with one
:class:`PretrainedMismatchError` that lists them all.
"""
import math
from typing import Dict, List, Mapping, NamedTuple, Optional

import torch
import torch.nn as nn
from mmengine.logging import print_log

from .errors import PretrainedMismatchError
from .io import load_weights
from .pos_embed import resize_pos_embed

__all__ = [
    'PretrainedFile', 'pretrained_file', 'select_backbone_weights',
    'register_hint', 'load_pretrained', 'load_pretrained_file'
]

_PATCH_BIAS = 'patch_embed.projection.bias'


class PretrainedFile(NamedTuple):
    """The pretrained file of ``init_cfg=dict(type='Pretrained', ...)``."""
    path: str
    prefix: Optional[str] = None


def pretrained_file(init_cfg: Optional[dict]) -> Optional[PretrainedFile]:
    """``init_cfg``'s pretrained ``checkpoint`` and ``prefix``; None unless
    it is a ``dict(type='Pretrained', checkpoint=...)`` (``KeyError``
    without ``checkpoint``, as mmengine's ``PretrainedInit``)."""
    if not (isinstance(init_cfg, dict)
            and init_cfg.get('type') == 'Pretrained'):
        return None
    return PretrainedFile(init_cfg['checkpoint'], init_cfg.get('prefix'))


def select_backbone_weights(state_dict: Mapping[str, torch.Tensor],
                            prefix: Optional[str] = None
                            ) -> Dict[str, torch.Tensor]:
    """The backbone's weights in a checkpoint: unnested from
    ``'state_dict'`` / ``'model'``; with ``prefix`` (e.g. ``'backbone.'``)
    only the keys under it, stripped. A full segmentor checkpoint (keys
    under ``backbone.``) is detected when no ``prefix`` is given."""
    for nest in ('state_dict', 'model'):
        if nest in state_dict and isinstance(state_dict[nest], dict):
            state_dict = state_dict[nest]
    if prefix is None and any(k.startswith('backbone.') for k in state_dict):
        prefix = 'backbone.'
    if prefix:
        state_dict = {k[len(prefix):]: v for k, v in state_dict.items()
                      if k.startswith(prefix)}
    return dict(state_dict)


def _fit_pos_embed(backbone: nn.Module,
                   state_dict: Dict[str, torch.Tensor]) -> None:
    """Resize ``state_dict['pos_embed']`` [1, 1 + g * g, C] to the
    backbone's grid (in place) if it is a square grid of the right width
    (mmseg's rule); any other mismatch is reported by the key checks."""
    pos = state_dict.get('pos_embed')
    if pos is None:
        return
    target = backbone.pos_embed
    grid = int(math.sqrt(pos.shape[1] - 1))
    if pos.shape == target.shape or pos.ndim != 3 or \
            grid * grid != pos.shape[1] - 1 or \
            pos.shape[-1] != target.shape[-1]:
        return
    print_log(f'Resize the pos_embed shape from {tuple(pos.shape)} '
              f'to {tuple(target.shape)}', logger='current')
    h, w = backbone.img_size
    patch = backbone.patch_size
    state_dict['pos_embed'] = resize_pos_embed(
        pos, (grid, grid), (h // patch, w // patch), backbone.interpolate_mode)


def register_hint(state_dict: Mapping[str, torch.Tensor],
                  num_register_tokens: int) -> List[str]:
    """A line for load errors where the checkpoint's register tokens
    (``register_tokens`` [1, R, C]) do not fit ``num_register_tokens``."""
    reg = state_dict.get('register_tokens')
    have = reg.shape[1] if isinstance(reg, torch.Tensor) and \
        reg.ndim == 3 else 0
    if have == num_register_tokens:
        return []
    if have:
        return [f'  the checkpoint has {have} register tokens (DINOv2 '
                f'with registers): set num_register_tokens={have} '
                f'(now {num_register_tokens})']
    return [f'  the backbone has num_register_tokens='
            f'{num_register_tokens} but the checkpoint has no '
            "'register_tokens': use DINOv2-with-registers weights or set "
            'num_register_tokens=0']


def _mismatch_lines(state_dict: Mapping[str, torch.Tensor],
                    expected: Mapping[str, torch.Tensor], ignored: set
                    ) -> List[str]:
    """``'  missing keys: ...'`` / unexpected / shape lines (at most 8
    keys each); empty if ``state_dict`` fits ``expected``."""
    unexpected = sorted(k for k in state_dict
                        if k not in expected and k not in ignored)
    missing = sorted(k for k in expected if k not in state_dict)
    mismatched = sorted(
        f'{k}: checkpoint {tuple(v.shape)} vs model '
        f'{tuple(expected[k].shape)}' for k, v in state_dict.items()
        if k in expected and tuple(v.shape) != tuple(expected[k].shape))
    lines = []
    for title, items in (('missing keys', missing),
                         ('unexpected keys', unexpected),
                         ('shape mismatches', mismatched)):
        if items:
            shown = ', '.join(items[:8])
            more = f' (+{len(items) - 8} more)' if len(items) > 8 else ''
            lines.append(f'  {title}: {shown}{more}')
    return lines


def load_pretrained(backbone: nn.Module,
                    state_dict: Mapping[str, torch.Tensor],
                    source: str = '<state_dict>',
                    prefix: Optional[str] = None) -> int:
    """Load mmseg-format ViT weights into ``backbone``, strictly.

    Args:
        backbone (PromptedVisionTransformer): The model to load into.
        state_dict (Mapping[str, Tensor]): Plain or nested weights (see
            :func:`select_backbone_weights`).
        source (str): Name of the weights in messages (their file).
        prefix (str, optional): Only keys under it are used.

    Returns:
        int: The number of pretrained tensors loaded.

    Raises:
        PretrainedMismatchError: A missing key other than the backbone's own
            (prompts, K/V offsets, mapping), an unexpected key other than an
            unused final norm, a shape mismatch, or a patch-embedding bias
            with ``patch_bias=False``.
    """
    state_dict = select_backbone_weights(state_dict, prefix)
    _fit_pos_embed(backbone, state_dict)
    own = set(backbone.own_state_keys())
    expected = {k: v for k, v in backbone.state_dict().items()
                if k not in own}
    if _PATCH_BIAS in state_dict and _PATCH_BIAS not in expected:
        raise PretrainedMismatchError(
            f'{source} has a patch-embedding bias '
            '(patch_embed.projection.bias) but the backbone is built with '
            'patch_bias=False (mmseg\'s default), so the pretrained bias '
            'would be dropped and, with a frozen backbone, never learned '
            'back. Set model.backbone.patch_bias=True in the config.')
    unused = set() if backbone.final_norm else {'ln1.weight', 'ln1.bias'}
    lines = _mismatch_lines(state_dict, expected, own | unused)
    if lines:
        raise PretrainedMismatchError('\n'.join(
            [f'{source} does not match {type(backbone).__name__}:'] + lines +
            register_hint(state_dict, backbone.num_register_tokens) +
            ['  Convert timm/JAX/MAE/MoCo v3/DINOv2 weights with '
             'tools/convert_weights.py and check embed_dims, '
             'num_layers, patch_size and patch_bias.']))
    backbone.load_state_dict(
        {k: v for k, v in state_dict.items() if k in expected}, strict=False)
    print_log(f'Loaded {len(expected)} pretrained backbone tensors from '
              f'{source}', logger='current')
    return len(expected)


def load_pretrained_file(backbone: nn.Module, file: PretrainedFile) -> None:
    """Read ``file`` (:func:`~davpt_seg.weights.io.load_weights`) and load
    it with ``backbone.load_pretrained`` (which records the source)."""
    weights = load_weights(file.path, map_location='cpu')
    backbone.load_pretrained(weights, source=file.path, prefix=file.prefix)
