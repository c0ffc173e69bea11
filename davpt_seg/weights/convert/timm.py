# Copyright (c) davpt-seg contributors. All rights reserved.
"""timm ViT keys: strict validation (:func:`validate_timm`) and renaming
to mmseg's keys (:func:`timm_to_mmseg`)."""
import math
import re
from collections import OrderedDict
from typing import Dict, List, Mapping, Optional, Tuple

import torch

from ..errors import ConversionError
from .detect import describe_unknown
from .spec import ViTSpec

__all__ = ['validate_timm', 'timm_to_mmseg']

_BLOCK_RE = re.compile(r'^blocks\.(\d+)\.(.+)$')

# Per-block timm key -> mmseg key (both relative to the block).
_BLOCK_KEYS = OrderedDict([
    ('norm1.weight', 'ln1.weight'),
    ('norm1.bias', 'ln1.bias'),
    ('attn.qkv.weight', 'attn.attn.in_proj_weight'),
    ('attn.qkv.bias', 'attn.attn.in_proj_bias'),
    ('attn.proj.weight', 'attn.attn.out_proj.weight'),
    ('attn.proj.bias', 'attn.attn.out_proj.bias'),
    ('norm2.weight', 'ln2.weight'),
    ('norm2.bias', 'ln2.bias'),
    ('mlp.fc1.weight', 'ffn.layers.0.0.weight'),
    ('mlp.fc1.bias', 'ffn.layers.0.0.bias'),
    ('mlp.fc2.weight', 'ffn.layers.1.weight'),
    ('mlp.fc2.bias', 'ffn.layers.1.bias'),
])
# Keys a block may lack (zeros are written instead).
_OPTIONAL_BLOCK_KEYS = ('attn.qkv.bias', )
# Top-level keys besides the blocks.
_KNOWN_KEYS = {'patch_embed.proj.weight', 'patch_embed.proj.bias',
               'cls_token', 'pos_embed', 'norm.weight', 'norm.bias',
               'norm_pre.weight', 'norm_pre.bias'}

# Hints for keys of ViT variants mmseg's VisionTransformer cannot express.
_UNSUPPORTED_HINTS = (
    ('dist_token', 'a distillation token (distilled DeiT)'),
    ('reg_token', 'register tokens'),
    ('.ls1.', 'LayerScale (DeiT III / CaiT style)'),
    ('.ls2.', 'LayerScale (DeiT III / CaiT style)'),
    ('.gamma_1', 'LayerScale (BEiT style)'),
    ('.q_norm.', 'QK-normalisation'),
    ('.k_norm.', 'QK-normalisation'),
    ('q_bias', 'split q/v biases (BEiT style)'),
    ('relative_position', 'relative position biases (BEiT style)'),
    ('patch_embed.backbone', 'a hybrid CNN stem (R50+ViT)'),
    ('patch_embed.norm', 'a normalised patch embedding'),
    ('mlp.norm', 'an MLP norm (scale_mlp_norm)'),
    ('attn.norm', 'an attention norm (scale_attn_norm)'),
    ('.w12.', 'a SwiGLU MLP'),
)


def _shape(t: torch.Tensor) -> Tuple[int, ...]:
    return tuple(t.shape)


def _expect(sd: Mapping[str, torch.Tensor], key: str,
            shape: Tuple[int, ...], problems: List[str]) -> None:
    if key not in sd:
        problems.append(f'missing {key}')
    elif _shape(sd[key]) != shape:
        problems.append(f'{key} has shape {_shape(sd[key])}, expected '
                        f'{shape}')


def _check_variant(keys: set, name: str) -> None:
    """Reject ViT variants mmseg cannot express and incomplete dicts."""
    hints = sorted({h for k in keys for pat, h in _UNSUPPORTED_HINTS
                    if pat in k})
    if hints:
        offending = sorted(k for k in keys
                           if any(p in k for p, _ in _UNSUPPORTED_HINTS))
        raise ConversionError(
            f"{name}: ViT variant not representable in mmseg's "
            f"VisionTransformer: it has {', '.join(hints)} "
            f"(keys: {', '.join(offending[:6])})")
    for key in ('patch_embed.proj.weight', 'cls_token', 'pos_embed'):
        if key not in keys:
            raise ConversionError(
                f'{name}: missing {key!r}; not a (complete) ViT state dict '
                f'({describe_unknown(list(keys))})')


def _pos_grid(pos: torch.Tensor, dims: int, name: str,
              problems: List[str]) -> Tuple[int, int]:
    """Patch grid of ``pos_embed`` [1, 1 + g * g, C]; (0, 0) and a problem
    if its shape is wrong, an error if it is not 1 + a square."""
    if pos.ndim != 3 or pos.shape[0] != 1 or pos.shape[2] != dims:
        problems.append(f'pos_embed has shape {_shape(pos)}, expected '
                        f'(1, 1 + grid_h * grid_w, {dims})')
        return (0, 0)
    n = pos.shape[1] - 1
    side = math.isqrt(max(n, 0))
    if side * side == n and n > 0:
        return (side, side)
    if math.isqrt(pos.shape[1])**2 == pos.shape[1]:
        raise ConversionError(
            f'{name}: pos_embed has {pos.shape[1]} positions = a square '
            'grid without a class-token position (timm no_embed_class); '
            "mmseg's VisionTransformer needs one for the class token")
    raise ConversionError(
        f'{name}: pos_embed has {pos.shape[1]} positions; expected '
        '1 (class token) + a square grid of patches')


def _split_blocks(sd: Mapping[str, torch.Tensor], name: str
                  ) -> List[Dict[str, torch.Tensor]]:
    """``blocks.{i}.*`` as one dict per block (contiguous from 0)."""
    blocks: Dict[int, Dict[str, torch.Tensor]] = {}
    for k in sd:
        m = _BLOCK_RE.match(k)
        if m:
            blocks.setdefault(int(m.group(1)), {})[m.group(2)] = sd[k]
    if not blocks:
        raise ConversionError(f"{name}: no 'blocks.N.*' keys; not a ViT "
                              'state dict')
    depth = max(blocks) + 1
    missing_blocks = sorted(set(range(depth)) - set(blocks))
    if missing_blocks:
        raise ConversionError(
            f'{name}: missing transformer block(s) {missing_blocks} '
            f'(found blocks {sorted(blocks)})')
    return [blocks[i] for i in range(depth)]


def _check_blocks(blocks: List[Dict[str, torch.Tensor]], dims: int,
                  problems: List[str]) -> Tuple[int, bool]:
    """Shapes of every block's tensors; returns ``(mlp_hidden,
    qkv_bias)`` (taken from block 0)."""
    fc1 = blocks[0].get('mlp.fc1.weight')
    hidden = fc1.shape[0] if fc1 is not None and fc1.ndim == 2 else 4 * dims
    qkv_bias = 'attn.qkv.bias' in blocks[0]
    block_shapes = {
        'norm1.weight': (dims, ), 'norm1.bias': (dims, ),
        'attn.qkv.weight': (3 * dims, dims), 'attn.qkv.bias': (3 * dims, ),
        'attn.proj.weight': (dims, dims), 'attn.proj.bias': (dims, ),
        'norm2.weight': (dims, ), 'norm2.bias': (dims, ),
        'mlp.fc1.weight': (hidden, dims), 'mlp.fc1.bias': (hidden, ),
        'mlp.fc2.weight': (dims, hidden), 'mlp.fc2.bias': (dims, ),
    }
    for i, block in enumerate(blocks):
        for sub, shape in block_shapes.items():
            if sub not in block:
                if sub in _OPTIONAL_BLOCK_KEYS and not qkv_bias:
                    continue
                problems.append(f'missing blocks.{i}.{sub}')
            elif _shape(block[sub]) != shape:
                problems.append(f'blocks.{i}.{sub} has shape '
                                f'{_shape(block[sub])}, expected {shape}')
        for sub in sorted(set(block) - set(block_shapes)):
            problems.append(f'unexpected blocks.{i}.{sub}')
    return hidden, qkv_bias


def _check_optional(sd: Mapping[str, torch.Tensor], dims: int,
                    problems: List[str]) -> None:
    """Shapes of the patch-embedding bias and the norms, where present."""
    keys = set(sd)
    if 'patch_embed.proj.bias' in keys:
        _expect(sd, 'patch_embed.proj.bias', (dims, ), problems)
    for norm in ('norm', 'norm_pre'):
        if any(k.startswith(norm + '.') for k in keys):
            _expect(sd, f'{norm}.weight', (dims, ), problems)
            _expect(sd, f'{norm}.bias', (dims, ), problems)


def _check_rest(sd: Mapping[str, torch.Tensor], dims: int,
                num_heads: Optional[int], problems: List[str]) -> None:
    """Unknown top-level keys, the head count, dtypes."""
    for k in sorted(set(sd) - _KNOWN_KEYS):
        if not _BLOCK_RE.match(k):
            problems.append(f'unexpected {k}')
    if num_heads is not None and dims % num_heads:
        problems.append(f'embed_dims {dims} is not divisible by '
                        f'{num_heads} heads')
    bad_dtype = sorted(k for k, v in sd.items() if not v.is_floating_point())
    if bad_dtype:
        problems.append(f'non-floating-point tensors: {bad_dtype[:4]}')


def validate_timm(sd: Mapping[str, torch.Tensor], name: str,
                  num_heads: Optional[int] = None) -> ViTSpec:
    """Check a timm-named ViT state dict and infer its architecture.

    Raises:
        ConversionError: Naming ``name`` and every problem found: missing or
            unknown keys, missing blocks, inconsistent shapes.
    """
    keys = set(sd)
    _check_variant(keys, name)
    proj = sd['patch_embed.proj.weight']
    if proj.ndim != 4 or proj.shape[-1] != proj.shape[-2]:
        raise ConversionError(
            f"{name}: 'patch_embed.proj.weight' has shape {_shape(proj)}; "
            'expected (embed_dims, in_channels, p, p) with square patches')
    dims, in_ch, patch = proj.shape[0], proj.shape[1], proj.shape[-1]
    problems: List[str] = []
    _expect(sd, 'cls_token', (1, 1, dims), problems)
    grid = _pos_grid(sd['pos_embed'], dims, name, problems)
    _check_optional(sd, dims, problems)
    blocks = _split_blocks(sd, name)
    hidden, qkv_bias = _check_blocks(blocks, dims, problems)
    _check_rest(sd, dims, num_heads, problems)
    if problems:
        shown = '\n  '.join(problems[:12])
        more = f'\n  (+{len(problems) - 12} more)' if len(problems) > 12 \
            else ''
        raise ConversionError(
            f'{name}: not a consistent ViT state dict (embed_dims {dims}, '
            f'depth {len(blocks)}, patch {patch}):\n  {shown}{more}')
    return ViTSpec(
        depth=len(blocks), embed_dims=dims, mlp_hidden=hidden,
        patch_size=patch, in_channels=in_ch, pos_grid=grid,
        num_heads=num_heads, patch_bias='patch_embed.proj.bias' in keys,
        qkv_bias=qkv_bias,
        final_norm='norm' if 'norm.weight' in keys else None,
        pre_norm='norm_pre.weight' in keys, dtype=proj.dtype)


def timm_to_mmseg(sd: Mapping[str, torch.Tensor], depth: int
                  ) -> 'OrderedDict[str, torch.Tensor]':
    """Rename a validated timm ViT state dict to mmseg's keys.

    Missing q/k/v and patch-embedding biases are filled with zeros (see
    :mod:`davpt_seg.weights.convert`). Output order follows mmseg's module
    order.

    Args:
        sd (Mapping[str, Tensor]): timm-named weights (already validated).
        depth (int): Number of blocks.

    Returns:
        OrderedDict[str, Tensor]: mmseg-named weights.
    """
    proj = sd['patch_embed.proj.weight']
    dims = proj.shape[0]
    out: 'OrderedDict[str, torch.Tensor]' = OrderedDict()
    out['cls_token'] = sd['cls_token']
    out['pos_embed'] = sd['pos_embed']
    out['patch_embed.projection.weight'] = proj
    out['patch_embed.projection.bias'] = sd.get(
        'patch_embed.proj.bias', proj.new_zeros(dims))
    if 'norm_pre.weight' in sd:
        out['ln_pre.weight'] = sd['norm_pre.weight']
        out['ln_pre.bias'] = sd['norm_pre.bias']
    for i in range(depth):
        for src, dst in _BLOCK_KEYS.items():
            key = f'blocks.{i}.{src}'
            if key in sd:
                value = sd[key]
            else:  # optional q/k/v bias (validated above)
                value = proj.new_zeros(3 * dims)
            out[f'layers.{i}.{dst}'] = value
    if 'norm.weight' in sd:
        out['ln1.weight'] = sd['norm.weight']
        out['ln1.bias'] = sd['norm.bias']
    return out
