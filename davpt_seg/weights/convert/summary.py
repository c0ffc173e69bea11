# Copyright (c) davpt-seg contributors. All rights reserved.
"""Human-readable summary of a conversion and the matching backbone
config (what ``tools/convert_weights.py`` prints)."""
import re
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence, Tuple

from .spec import ConversionResult, ViTSpec

__all__ = ['format_summary']


def _summarise_keys(keys: Sequence[str]) -> str:
    groups: Dict[str, int] = OrderedDict()
    for k in keys:
        g = re.sub(r'\.\d+\..*$|\..*$|/.*$', '', k) or k
        groups[g] = groups.get(g, 0) + 1
    return ', '.join(f'{g}* ({n})' for g, n in groups.items())


def _heads(s: ViTSpec, source: str) -> Tuple[str, int]:
    """The heads line and the head count for the config."""
    if s.num_heads is not None:
        return f'{s.num_heads} (from the weights)', s.num_heads
    cfg_heads = max(s.embed_dims // 64, 1)
    return (f'unknown (not stored in {source} weights); '
            f'{cfg_heads} = embed_dims // 64 (the standard ViT choice) '
            'is assumed below, check the model card'), cfg_heads


def _ratio(s: ViTSpec) -> str:
    ratio = s.mlp_ratio
    return str(int(ratio)) if ratio == int(ratio) else f'{ratio:.4g}'


def _spec_lines(result: ConversionResult, dst: Optional[str],
                interpolate_mode: str, heads: str) -> List[str]:
    """The ``  field : value`` lines."""
    s = result.spec
    how = 'detected' if result.detected else 'given'
    grid = f'{s.pos_grid[0]}x{s.pos_grid[1]} (+ class token)'
    if s.pos_grid != result.src_pos_grid:
        grid += (f', resized from {result.src_pos_grid[0]}x'
                 f'{result.src_pos_grid[1]} ({interpolate_mode})')
    final = {'norm': 'yes (ln1.*), configs set final_norm=True',
             None: 'none, configs set final_norm=False'}[s.final_norm]
    bias = ('present' if s.patch_bias else 'absent in the source (zeros '
            'written)') + ('; configs must set patch_bias=True (mmseg\'s '
                           'VisionTransformer defaults to patch_bias=False)')
    lines = [
        f'Converted {result.name}' + (f' -> {dst}' if dst else ''),
        f'  source format : {result.source} ({how})',
        f'  depth         : {s.depth}',
        f'  embed dims    : {s.embed_dims} (MLP hidden {s.mlp_hidden}, '
        f'mlp_ratio {_ratio(s)})',
        f'  num heads     : {heads}',
        f'  patch size    : {s.patch_size} ({s.in_channels} input channels)',
        f'  pos grid      : {grid}',
        f'  final norm    : {final}',
        f'  patch bias    : {bias}',
        f'  dtype         : {str(s.dtype).replace("torch.", "")}',
        f'  tensors       : {len(result.state_dict)}',
    ]
    if s.num_register_tokens:
        lines.insert(-2, f'  registers     : {s.num_register_tokens} '
                     '(register_tokens, no position embedding)')
    return lines


def _config_line(s: ViTSpec, cfg_heads: int) -> str:
    """The backbone config for these weights."""
    img = tuple(g * s.patch_size for g in s.pos_grid)
    return (
        '  backbone cfg  : dict(img_size={}, patch_size={}, embed_dims={}, '
        'num_layers={}, num_heads={}, mlp_ratio={}, qkv_bias=True, '
        'patch_bias=True, final_norm={}, pre_norm={}, with_cls_token=True, '
        "norm_cfg=dict(type='LN', eps=1e-6){})".format(
            img, s.patch_size, s.embed_dims, s.depth, cfg_heads, _ratio(s),
            s.final_norm is not None, s.pre_norm,
            f', num_register_tokens={s.num_register_tokens}'
            if s.num_register_tokens else ''))


def format_summary(result: ConversionResult, dst: Optional[str] = None,
                   interpolate_mode: str = 'bilinear') -> str:
    """Describe a conversion and the matching backbone config.

    Args:
        result (ConversionResult): What :func:`convert_file` returned.
        dst (str, optional): Where the weights were saved.
        interpolate_mode (str): The pos-embed interpolation used.

    Returns:
        str: A multi-line, human-readable summary.
    """
    heads, cfg_heads = _heads(result.spec, result.source)
    lines = _spec_lines(result, dst, interpolate_mode, heads)
    if result.dropped:
        lines.append(f'  dropped       : {len(result.dropped)} tensors: '
                     f'{_summarise_keys(result.dropped)}')
    for note in result.notes:
        lines.append(f'  note          : {note}')
    lines.append(_config_line(result.spec, cfg_heads))
    return '\n'.join(lines)
