# Copyright (c) davpt-seg contributors. All rights reserved.
"""Entry points: :func:`convert_state_dict` and :func:`convert_file`."""
import os
from typing import Any, List, Optional, Sequence, Tuple, Union

from ..errors import ConversionError
from ..pos_embed import resize_pos_embed
from .detect import detect_source, is_array_dict, unwrap_state_dict
from .dinov2 import add_register_tokens, dinov2_to_timm
from .files import load_source_file
from .jax import jax_to_timm
from .selection import select_backbone
from .spec import SOURCES, ConversionResult, ViTSpec
from .timm import timm_to_mmseg, validate_timm

__all__ = ['convert_state_dict', 'convert_file']

ImgSize = Union[int, Sequence[int], None]

# Sources a file detected as the key may be converted as.
_COMPATIBLE = {'timm': ('timm', ), 'mae': ('mae', 'timm'),
               'mocov3': ('mocov3', ), 'jax': ('jax', ),
               'dinov2': ('dinov2', )}


def _resolve_source(obj: Any, source: str, container: str,
                    name: str) -> Tuple[str, bool]:
    """``(source, detected)``: ``'auto'`` detected; a given source must not
    contradict what the file looks like."""
    if source != 'auto' and source not in SOURCES:
        raise ConversionError(f"unknown source {source!r}; choose 'auto' or "
                              f"one of {', '.join(SOURCES)}")
    if source == 'auto':
        return detect_source(obj, container, name), True
    try:
        looks = detect_source(obj, container, name)
    except ConversionError:
        looks = None  # let the source-specific checks explain
    if looks is not None and looks not in _COMPATIBLE[source]:
        raise ConversionError(
            f'{name}: --source {source} was given but the file looks like '
            f'a {looks} checkpoint (use --source {looks} or auto)')
    return source, False


def _to_timm(obj: Any, source: str, container: str, name: str):
    """Bring ``obj`` to timm backbone keys. Returns ``(state_dict,
    num_heads or None, register_tokens or None, dropped, notes)``."""
    if source == 'jax':
        if not is_array_dict(obj):
            raise ConversionError(
                f'{name}: --source jax expects a NumPy .npz file')
        sd, num_heads, dropped = jax_to_timm(obj, name)
        return sd, num_heads, None, dropped, []
    if container == 'npz':
        raise ConversionError(
            f'{name}: an .npz file can only be converted with --source '
            'jax (or auto)')
    sd, dropped, notes = select_backbone(
        unwrap_state_dict(obj, name), source, name)
    registers = None
    if source == 'dinov2':
        sd, registers, more_dropped, more_notes = dinov2_to_timm(sd, name)
        dropped += more_dropped
        notes += more_notes
    return sd, None, registers, dropped, notes


def _resize_to(out: dict, spec: ViTSpec, img_size: ImgSize,
               interpolate_mode: str, name: str) -> List[str]:
    """Resize ``out['pos_embed']`` to the grid of ``img_size`` (updates
    ``spec.pos_grid``); returns notes."""
    if isinstance(img_size, int):
        img_size = (img_size, img_size)
    img_size = tuple(int(s) for s in img_size)
    if len(img_size) == 1:
        img_size = img_size * 2
    if len(img_size) != 2 or min(img_size) < spec.patch_size:
        raise ConversionError(
            f'{name}: invalid img_size {img_size} for patch size '
            f'{spec.patch_size}')
    dst_grid = (img_size[0] // spec.patch_size,
                img_size[1] // spec.patch_size)
    if dst_grid != spec.pos_grid:
        out['pos_embed'] = resize_pos_embed(out['pos_embed'], spec.pos_grid,
                                            dst_grid, interpolate_mode)
        spec.pos_grid = dst_grid
    if any(s % spec.patch_size for s in img_size):
        return [f'img_size {img_size} is not a multiple of the '
                f'patch size {spec.patch_size}; grid {dst_grid} '
                "follows mmseg's floor division"]
    return []


def _config_notes(spec: ViTSpec) -> List[str]:
    """What the backbone config must say about these weights."""
    notes = []
    if not spec.patch_bias:
        notes.append('the source has no patch-embedding bias; zeros written')
    if not spec.qkv_bias:
        notes.append('the source has no q/k/v biases; zeros written '
                     '(keep qkv_bias=True in configs)')
    if spec.final_norm is None:
        notes.append('the source has no final norm: configs must set '
                     'final_norm=False')
    if spec.pre_norm:
        notes.append("the source has a pre-norm ('norm_pre' -> 'ln_pre'): "
                     'configs must set pre_norm=True')
    if spec.mlp_hidden % spec.embed_dims:
        notes.append(f'MLP width {spec.mlp_hidden} is not an integer multiple '
                     f'of embed_dims {spec.embed_dims}; mmseg\'s '
                     'VisionTransformer (feedforward = mlp_ratio * '
                     'embed_dims) cannot build it exactly')
    if spec.pos_grid[0] != spec.pos_grid[1]:
        notes.append('non-square pos_embed grid: configs must set img_size='
                     f'{tuple(g * spec.patch_size for g in spec.pos_grid)} '
                     "exactly (mmseg's init-time resize assumes square)")
    return notes


def _compact(out: dict) -> None:
    """Detach and make every tensor own exactly its bytes (in place), so no
    larger shared storage is saved."""
    for k, v in out.items():
        v = v.detach().contiguous()
        if v.untyped_storage().nbytes() != v.numel() * v.element_size():
            v = v.clone()
        out[k] = v


def convert_state_dict(obj: Any,
                       source: str = 'auto',
                       img_size: ImgSize = None,
                       patch_size: Optional[int] = None,
                       interpolate_mode: str = 'bilinear',
                       name: str = '<state dict>',
                       container: str = 'torch') -> ConversionResult:
    """Convert an in-memory checkpoint to mmseg ``VisionTransformer`` keys.

    Args:
        obj: A (possibly nested) state dict of tensors, or a mapping of
            names to ndarrays for ``source='jax'``.
        source (str): ``'auto'`` or one of :data:`SOURCES`.
        img_size (int | tuple[int, int], optional): If given, ``pos_embed``
            is resized to the ``img_size // patch_size`` grid.
        patch_size (int, optional): Expected patch size; checked against the
            weights (patch embeddings are never resampled). Defaults to the
            patch size of the weights.
        interpolate_mode (str): Interpolation for resizing ``pos_embed``.
        name (str): Name of the input used in messages (e.g. its path).
        container (str): ``'npz'``, ``'torch'`` or ``'safetensors'``; only
            used for detection.

    Returns:
        ConversionResult: The mmseg-named tensors and what was inferred.

    Raises:
        ConversionError: If the format is unknown / does not match
            ``source`` or the weights are not a consistent ViT.
    """
    source, detected = _resolve_source(obj, source, container, name)
    sd, num_heads, registers, dropped, notes = _to_timm(
        obj, source, container, name)
    spec = validate_timm(sd, name, num_heads)
    if patch_size is not None and int(patch_size) != spec.patch_size:
        raise ConversionError(
            f'{name}: the weights have patch size {spec.patch_size} but '
            f'--patch-size {patch_size} was given (patch embeddings are not '
            'resampled)')
    out = timm_to_mmseg(sd, spec.depth)
    if registers is not None:
        out = add_register_tokens(out, registers)
        spec.num_register_tokens = registers.shape[1]
    src_grid = spec.pos_grid
    if img_size is not None:
        notes += _resize_to(out, spec, img_size, interpolate_mode, name)
    notes += _config_notes(spec)
    _compact(out)
    return ConversionResult(
        state_dict=out, source=source, detected=detected, spec=spec,
        src_pos_grid=src_grid, name=name, dropped=list(dropped), notes=notes)


def convert_file(path: str,
                 source: str = 'auto',
                 img_size: ImgSize = None,
                 patch_size: Optional[int] = None,
                 interpolate_mode: str = 'bilinear') -> ConversionResult:
    """Load ``path`` safely and convert it (see :func:`convert_state_dict`).

    Raises:
        ConversionError: With the file name, if it cannot be read or is not
            a supported ViT.
    """
    path = os.fspath(path)
    obj, container = load_source_file(path)
    return convert_state_dict(
        obj,
        source=source,
        img_size=img_size,
        patch_size=patch_size,
        interpolate_mode=interpolate_mode,
        name=path,
        container=container)


