# Copyright (c) davpt-seg contributors. All rights reserved.
"""Original Google ViT ``.npz`` files -> timm ViT keys (source ``'jax'``)."""
import re
from collections import OrderedDict
from typing import Dict, List, Mapping, Optional, Set, Tuple

import numpy as np
import torch

from ..errors import ConversionError

__all__ = ['jax_to_timm']

_JAX_BLOCK_RE = re.compile(r'^Transformer/encoderblock_(\d+)/(.+)$')


def _n2t(a: np.ndarray, key: str, name: str) -> torch.Tensor:
    if a.dtype.kind != 'f':
        raise ConversionError(
            f'{name}: array {key!r} has dtype {a.dtype}; expected floating '
            'point (bfloat16 .npz files are not supported)')
    return torch.from_numpy(np.ascontiguousarray(a))


class _Arrays:
    """The ``.npz`` arrays, recording which ones were used."""

    def __init__(self, arrays: Dict[str, np.ndarray], name: str) -> None:
        self.arrays = arrays
        self.name = name
        self.used: Set[str] = set()

    def __contains__(self, key: str) -> bool:
        return key in self.arrays

    def get(self, key: str) -> np.ndarray:
        if key not in self.arrays:
            raise ConversionError(f'{self.name}: missing array {key!r} '
                                  '(incomplete JAX ViT checkpoint)')
        self.used.add(key)
        return self.arrays[key]

    def tensor(self, key: str) -> torch.Tensor:
        return _n2t(self.get(key), key, self.name)


def _check_layout(arrays: Mapping[str, np.ndarray],
                  name: str) -> Dict[str, np.ndarray]:
    """Strip a leading ``opt/target/``; reject big_vision and hybrid
    layouts."""
    w = dict(arrays)
    if any(k.startswith('opt/target/') for k in w):
        w = {k[len('opt/target/'):]: v for k, v in w.items()
             if k.startswith('opt/target/')}
    keys = set(w)
    if any(k.startswith('params/') for k in keys) or 'pos_embedding' in keys \
            or any(k.startswith('Transformer/encoderblock/') for k in keys):
        raise ConversionError(
            f'{name}: big_vision-style JAX layout (params/, pos_embedding or '
            'stacked Transformer/encoderblock/) is not supported; only the '
            'original google-research/vision_transformer .npz layout is')
    if 'conv_root/kernel' in keys:
        raise ConversionError(
            f'{name}: hybrid R50+ViT checkpoints are not supported by '
            "mmseg's VisionTransformer")
    return w


def _embeddings(arr: _Arrays, sd: Dict[str, torch.Tensor]) -> None:
    """Patch embedding (HWIO kernel -> OIHW), class token, positions."""
    kernel = arr.get('embedding/kernel')
    if kernel.ndim != 4:
        raise ConversionError(
            f"{arr.name}: 'embedding/kernel' has shape {kernel.shape}; "
            'expected a 4-D HWIO convolution kernel')
    sd['patch_embed.proj.weight'] = _n2t(
        kernel, 'embedding/kernel', arr.name).permute(3, 2, 0, 1)
    if 'embedding/bias' in arr:
        sd['patch_embed.proj.bias'] = arr.tensor('embedding/bias')
    sd['cls_token'] = arr.tensor('cls')
    sd['pos_embed'] = arr.tensor('Transformer/posembed_input/pos_embedding')


def _block_indices(keys: Set[str], name: str) -> List[int]:
    """Indices of the ``Transformer/encoderblock_N`` blocks (contiguous)."""
    depths = sorted({int(m.group(1)) for m in map(_JAX_BLOCK_RE.match, keys)
                     if m})
    if not depths:
        raise ConversionError(
            f"{name}: no 'Transformer/encoderblock_N/*' arrays; not a ViT "
            'checkpoint')
    missing = sorted(set(range(depths[-1] + 1)) - set(depths))
    if missing:
        raise ConversionError(
            f'{name}: missing transformer block(s) {missing} '
            f'(found encoderblock_{{{depths[0]}..{depths[-1]}}})')
    return depths


def _qkv(arr: _Arrays, mha: str, i: int, tp: str, num_heads: Optional[int],
         sd: Dict[str, torch.Tensor]) -> int:
    """query/key/value kernels [D, heads, head_dim] -> ``attn.qkv.weight``
    [3D, D] (biases [heads, head_dim] -> [3D]); returns the head count."""
    name = arr.name
    qkv_w, qkv_b = [], []
    for n in ('query', 'key', 'value'):
        k = arr.tensor(mha + n + '/kernel')
        if k.ndim != 3:
            raise ConversionError(
                f'{name}: {mha}{n}/kernel has shape {tuple(k.shape)}; '
                'expected (embed_dims, heads, head_dim)')
        if num_heads is None:
            num_heads = k.shape[1]
        elif k.shape[1] != num_heads:
            raise ConversionError(
                f'{name}: {mha}{n}/kernel has {k.shape[1]} heads but '
                f'earlier blocks have {num_heads}')
        qkv_w.append(k.flatten(1).T)
        if mha + n + '/bias' in arr:
            qkv_b.append(arr.tensor(mha + n + '/bias').reshape(-1))
    try:
        sd[tp + 'attn.qkv.weight'] = torch.cat(qkv_w)
        if qkv_b:
            sd[tp + 'attn.qkv.bias'] = torch.cat(qkv_b)
    except RuntimeError as e:
        raise ConversionError(
            f'{name}: inconsistent query/key/value shapes in block {i}: '
            f'{e}') from None
    return num_heads


def _block(arr: _Arrays, i: int, num_heads: Optional[int],
           sd: Dict[str, torch.Tensor]) -> int:
    """Block ``i``: LayerNorms, attention (:func:`_qkv`, output kernel
    [heads, head_dim, D] -> [D, D]) and MLP (kernels transposed); returns
    the head count."""
    jp = f'Transformer/encoderblock_{i}/'
    mha = jp + 'MultiHeadDotProductAttention_1/'
    tp = f'blocks.{i}.'
    for ln, dst in (('LayerNorm_0', 'norm1'), ('LayerNorm_2', 'norm2')):
        sd[tp + dst + '.weight'] = arr.tensor(jp + ln + '/scale')
        sd[tp + dst + '.bias'] = arr.tensor(jp + ln + '/bias')
    num_heads = _qkv(arr, mha, i, tp, num_heads, sd)
    out = arr.tensor(mha + 'out/kernel')
    if out.ndim != 3:
        raise ConversionError(
            f'{arr.name}: {mha}out/kernel has shape {tuple(out.shape)}; '
            'expected (heads, head_dim, embed_dims)')
    sd[tp + 'attn.proj.weight'] = out.reshape(-1, out.shape[-1]).T
    sd[tp + 'attn.proj.bias'] = arr.tensor(mha + 'out/bias')
    for r in range(2):
        dense = jp + f'MlpBlock_3/Dense_{r}/'
        sd[tp + f'mlp.fc{r + 1}.weight'] = arr.tensor(dense + 'kernel').T
        sd[tp + f'mlp.fc{r + 1}.bias'] = arr.tensor(dense + 'bias')
    return num_heads


def jax_to_timm(arrays: Mapping[str, np.ndarray], name: str = '<npz>'
                ) -> Tuple[Dict[str, torch.Tensor], int, List[str]]:
    """Map an original Google ViT ``.npz`` to timm's key names.

    A re-implementation of the classic-layout branch of
    ``timm.models.vision_transformer._load_weights`` (without building a
    timm model, so the depth and widths are free and every array is
    checked): ``embedding/kernel`` HWIO -> conv OIHW; ``cls`` and
    ``Transformer/posembed_input/pos_embedding`` as is; per block
    ``LayerNorm_0``/``_2`` -> ``norm1``/``norm2``, the attention kernels
    flattened, transposed and concatenated into ``attn.qkv``,
    ``out/kernel`` -> ``attn.proj``, ``MlpBlock_3/Dense_{0,1}`` ->
    ``mlp.fc{1,2}`` transposed; ``Transformer/encoder_norm`` -> ``norm``;
    ``head/*`` and ``pre_logits/*`` dropped. A leading ``opt/target/`` is
    removed; big_vision layouts and hybrid R50+ViT files are rejected.

    Args:
        arrays (Mapping[str, ndarray]): The ``.npz`` contents.
        name (str): Name used in error messages.

    Returns:
        tuple: ``(state_dict, num_heads, dropped_keys)``.

    Raises:
        ConversionError: On unsupported layouts, missing arrays or
            inconsistent shapes.
    """
    arr = _Arrays(_check_layout(arrays, name), name)
    keys = set(arr.arrays)
    sd: Dict[str, torch.Tensor] = OrderedDict()
    _embeddings(arr, sd)
    num_heads = None
    for i in _block_indices(keys, name):
        num_heads = _block(arr, i, num_heads, sd)
    if 'Transformer/encoder_norm/scale' in arr:
        sd['norm.weight'] = arr.tensor('Transformer/encoder_norm/scale')
        sd['norm.bias'] = arr.tensor('Transformer/encoder_norm/bias')
    dropped = sorted(k for k in keys - arr.used
                     if k.startswith(('head/', 'pre_logits/')))
    unknown = sorted(keys - arr.used - set(dropped))
    if unknown:
        raise ConversionError(
            f'{name}: unexpected arrays in a JAX ViT checkpoint (not '
            f"representable in mmseg's VisionTransformer): "
            f"{', '.join(unknown[:10])}"
            + (f' (+{len(unknown) - 10} more)' if len(unknown) > 10 else ''))
    return sd, num_heads, dropped
