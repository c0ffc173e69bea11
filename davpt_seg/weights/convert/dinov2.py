# Copyright (c) davpt-seg contributors. All rights reserved.
"""DINOv2-family checkpoints (LayerScale, register tokens) -> timm ViT keys.

Part of :mod:`davpt_seg.weights.convert` (source ``'dinov2'``): this module
brings a DINOv2 state dict to the plain timm ViT layout that
``validate_timm`` / ``timm_to_mmseg`` understand, plus the register tokens.
Two namings are accepted:

* timm (``vit_{s,b,l}_patch14_dinov2``, ``vit_*_patch14_reg4_dinov2``):
  ``cls_token``, ``pos_embed``, ``reg_token`` [1, R, C],
  ``blocks.N.{norm1, attn.qkv, attn.proj, ls1.gamma, norm2, mlp.fc1,
  mlp.fc2, ls2.gamma}.*``, ``norm.*``. timm's register models use
  ``no_embed_class``: ``pos_embed`` is [1, H * W, C] without a class-token
  position (timm folded it into ``cls_token``).
* the facebookresearch/dinov2 release: the same block names, ``pos_embed``
  [1, 1 + H * W, C], ``register_tokens`` [1, R, C] and ``mask_token``
  [1, C]; FSDP-chunked files (``blocks.<chunk>.<N>.*``) are un-chunked.

What happens to each part:

* LayerScale is folded into the projection before it, exactly:
  ``x + gamma * (W h + b) = x + (diag(gamma) W) h + gamma * b``, so
  ``attn.proj`` / ``mlp.fc2`` get weight rows and bias scaled by ``gamma``
  (computed in float64, rounded once to the source dtype).
* A missing class-token position gets a zero entry: the token enters the
  first block as ``cls_token + 0`` as in the source (exact, also after the
  grid is resized, since the class position is never resized).
* ``reg_token`` / ``register_tokens`` become ``register_tokens`` [1, R, C]
  (``PromptedVisionTransformer(num_register_tokens=R)``; registers carry no
  position embedding, as in DINOv2 and timm).
* ``mask_token`` (masked-image-modelling pretraining only) is dropped.

The SwiGLU MLP of ViT-g/14 cannot be expressed by mmseg's FFN and is
rejected. DeiT III (timm LayerScale ViTs with ``no_embed_class``) has the
same layout and takes the same path.
"""
import math
import re
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import torch

from ..errors import ConversionError

__all__ = ['REGISTER_KEYS', 'is_dinov2_keys', 'dinov2_to_timm',
           'fold_layer_scale', 'add_register_tokens']

#: Names of the register tokens: timm's, then the official release's.
REGISTER_KEYS = ('reg_token', 'register_tokens')

_CHUNKED_RE = re.compile(r'^blocks\.(\d+)\.(\d+)\.(.+)$')
_LS_RE = re.compile(r'^blocks\.(\d+)\.ls([12])\.gamma$')
_BLOCK_IDX = re.compile(r'^blocks\.(\d+)\.')
# LayerScale name -> the projection it scales.
_LS_TARGET = {'1': 'attn.proj', '2': 'mlp.fc2'}


def is_dinov2_keys(keys: Sequence[str]) -> bool:
    """Whether state-dict keys are DINOv2-like: LayerScale gammas
    (``blocks.*.ls1.gamma``) or register tokens."""
    return any(k in REGISTER_KEYS or (k.startswith('blocks.') and k.endswith(
        ('.ls1.gamma', '.ls2.gamma'))) for k in keys)


def _unchunk(sd: Dict[str, torch.Tensor], name: str
             ) -> Tuple[Dict[str, torch.Tensor], bool]:
    """``blocks.<chunk>.<N>.*`` (FSDP ``block_chunks``) -> ``blocks.N.*``.

    Returns ``(state_dict, was_chunked)``.
    """
    chunked = [k for k in sd if _CHUNKED_RE.match(k)]
    if not chunked:
        return sd, False
    out = {}
    for k, v in sd.items():
        m = _CHUNKED_RE.match(k)
        if m is None and k.startswith('blocks.'):
            raise ConversionError(
                f'{name}: mixes chunked (blocks.<chunk>.<N>.*) and plain '
                f'(blocks.<N>.*) block keys, e.g. {k!r} and {chunked[0]!r}')
        new = f'blocks.{m.group(2)}.{m.group(3)}' if m else k
        if new in out:
            raise ConversionError(
                f'{name}: block key {new!r} occurs in two chunks')
        out[new] = v
    return out, True


def _pop_registers(sd: Dict[str, torch.Tensor], name: str
                   ) -> Optional[torch.Tensor]:
    """Remove and check the register tokens; [1, R, C] or None."""
    found = [k for k in REGISTER_KEYS if k in sd]
    if not found:
        return None
    if len(found) > 1:
        raise ConversionError(
            f'{name}: has both {found[0]!r} and {found[1]!r}; expected one '
            'set of register tokens')
    reg = sd.pop(found[0])
    proj = sd.get('patch_embed.proj.weight')
    dims = proj.shape[0] if proj is not None else reg.shape[-1]
    if reg.ndim != 3 or reg.shape[0] != 1 or reg.shape[2] != dims \
            or reg.shape[1] == 0:
        raise ConversionError(
            f'{name}: {found[0]} has shape {tuple(reg.shape)}; expected '
            f'(1, num_registers, {dims})')
    return reg


def _add_class_position(sd: Dict[str, torch.Tensor], name: str
                        ) -> Optional[str]:
    """Give a ``no_embed_class`` ``pos_embed`` [1, H*W, C] a zero
    class-token position; returns a note, or None if nothing changed."""
    pos = sd.get('pos_embed')
    if pos is None or pos.ndim != 3:
        return None  # validate_timm reports it
    n = pos.shape[1]
    if n > 1 and math.isqrt(n)**2 == n:
        sd['pos_embed'] = torch.cat([pos.new_zeros(1, 1, pos.shape[2]), pos],
                                    dim=1)
        side = math.isqrt(n)
        return (f'pos_embed has no class-token position ({side}x{side} '
                'grid only, timm no_embed_class: cls_token already holds '
                'it); a zero position was written for it (exact)')
    return None


def _check_mlp(sd: Mapping[str, torch.Tensor], name: str) -> None:
    """Reject SwiGLU MLPs (DINOv2 ViT-g/14) with a clear message."""
    swiglu = sorted(k for k in sd if '.mlp.w12.' in k or '.mlp.w3.' in k)
    fc1, fc2 = sd.get('blocks.0.mlp.fc1.weight'), \
        sd.get('blocks.0.mlp.fc2.weight')
    packed = fc1 is not None and fc2 is not None and fc1.ndim == 2 and \
        fc2.ndim == 2 and fc1.shape[0] == 2 * fc2.shape[1]
    if swiglu or packed:
        what = swiglu[0] if swiglu else (
            f'blocks.0.mlp.fc1.weight {tuple(fc1.shape)} = 2 x the input of '
            f'mlp.fc2 {tuple(fc2.shape)}')
        raise ConversionError(
            f'{name}: a SwiGLU MLP (DINOv2 ViT-g/14 style; {what}) cannot '
            "be expressed by mmseg's VisionTransformer FFN")


def fold_layer_scale(sd: Mapping[str, torch.Tensor], name: str
                     ) -> Tuple[Dict[str, torch.Tensor], int]:
    """Fold every ``blocks.N.ls{1,2}.gamma`` into the projection before it.

    ``attn.proj.{weight [C, C], bias [C]}`` and ``mlp.fc2.{weight [C, hidden],
    bias [C]}`` become ``gamma[:, None] * weight`` and ``gamma * bias``; a
    missing bias is taken as zero (and stays zero). LayerScale must be in
    every block (both gammas) or in none.

    Returns:
        tuple: ``(state_dict without ls keys, number of gammas folded)``.
    """
    gammas = {k: v for k, v in sd.items() if _LS_RE.match(k)}
    if not gammas:
        return dict(sd), 0
    blocks = {int(m.group(1)) for m in map(_BLOCK_IDX.match, sd) if m}
    missing = [f'blocks.{i}.ls{j}.gamma' for i in sorted(blocks)
               for j in '12' if f'blocks.{i}.ls{j}.gamma' not in gammas]
    if missing:
        raise ConversionError(
            f'{name}: LayerScale must be in every block (ls1 and ls2) to be '
            f"folded; missing {', '.join(missing[:6])}"
            + (f' (+{len(missing) - 6} more)' if len(missing) > 6 else ''))
    out = {k: v for k, v in sd.items() if k not in gammas}
    for key, gamma in gammas.items():
        m = _LS_RE.match(key)
        target = f'blocks.{m.group(1)}.{_LS_TARGET[m.group(2)]}'
        weight = out.get(target + '.weight')
        if weight is None or weight.ndim != 2 or gamma.shape != (
                weight.shape[0], ):
            got = None if weight is None else tuple(weight.shape)
            raise ConversionError(
                f'{name}: {key} has shape {tuple(gamma.shape)} but '
                f'{target}.weight has shape {got}; expected gamma (C,) for a '
                'weight (C, in)')
        g = gamma.double()
        out[target + '.weight'] = (g[:, None] * weight.double()).to(
            weight.dtype)
        if target + '.bias' in out:
            out[target + '.bias'] = (g * out[target + '.bias'].double()).to(
                weight.dtype)
    return out, len(gammas)


def dinov2_to_timm(sd: Mapping[str, torch.Tensor], name: str = '<state dict>'
                   ) -> Tuple[Dict[str, torch.Tensor], Optional[torch.Tensor],
                              List[str], List[str]]:
    """Reduce a DINOv2-family state dict to plain timm ViT keys.

    Args:
        sd (Mapping[str, Tensor]): ``module.``-free weights in timm or
            official DINOv2 names, heads already removed.
        name (str): Name of the input used in messages.

    Returns:
        tuple: ``(state_dict, register_tokens [1, R, C] or None,
        dropped_keys, notes)``; ``state_dict`` has no LayerScale, register
        or mask tokens and a class-token position in ``pos_embed``.

    Raises:
        ConversionError: Inconsistent LayerScale / registers, SwiGLU MLPs.
    """
    sd, chunked = _unchunk(dict(sd), name)
    notes: List[str] = []
    dropped: List[str] = []
    if chunked:
        notes.append('FSDP-chunked blocks (blocks.<chunk>.<N>.*) renamed '
                     'to blocks.<N>.*')
    if 'mask_token' in sd:
        dropped.append('mask_token')
        del sd['mask_token']
        notes.append('mask_token dropped (only used by masked-image '
                     'pretraining)')
    _check_mlp(sd, name)
    registers = _pop_registers(sd, name)
    pos_note = _add_class_position(sd, name)
    if pos_note:
        notes.append(pos_note)
    sd, folded = fold_layer_scale(sd, name)
    if folded:
        notes.append(f'LayerScale folded into attn.proj / mlp.fc2 ({folded} '
                     'gammas; weight rows and biases scaled, exact)')
    notes.append("DINOv2 resizes its position grid bicubically: set "
                 "interpolate_mode='bicubic' in the backbone config (and "
                 '--interpolate-mode bicubic with --img-size)')
    if registers is not None:
        notes.append(f'{registers.shape[1]} register tokens -> '
                     "'register_tokens': configs must set "
                     f'num_register_tokens={registers.shape[1]}')
    return sd, registers, dropped, notes


def add_register_tokens(out: Mapping[str, torch.Tensor],
                        registers: Optional[torch.Tensor]
                        ) -> 'Dict[str, torch.Tensor]':
    """Insert ``register_tokens`` after ``cls_token`` / ``pos_embed`` of
    mmseg-named weights (a new ordered dict; unchanged if None)."""
    if registers is None:
        return out
    result = type(out)()
    for k, v in out.items():
        result[k] = v
        if k == 'pos_embed':
            result['register_tokens'] = registers
    if 'register_tokens' not in result:
        result['register_tokens'] = registers
    return result
