# Copyright (c) davpt-seg contributors. All rights reserved.
"""Convert pretrained ViT checkpoints to the keys of mmseg's ViT.

The DA-VPT backbone uses exactly the parameter names of mmseg's
:class:`mmseg.models.backbones.VisionTransformer`. This module turns the
common public ViT checkpoints into a plain ``{key: tensor}`` dict with those
names:

==========  ============================================================
source      layout
==========  ============================================================
``timm``    timm / PyTorch ``VisionTransformer`` state dicts (``.pth``,
            ``.bin``, ``.safetensors``), possibly nested under
            ``'state_dict'`` / ``'model'`` and/or prefixed by ``module.``.
``jax``     the original Google ViT ``.npz`` files (``embedding/kernel``,
            ``cls``, ``Transformer/encoderblock_{i}/...``).
``mae``     MAE checkpoints: ``{'model': timm-like keys + decoder_*,
            mask_token}``; fine-tuned ones may carry ``fc_norm`` instead
            of ``norm``. Encoder-only releases (no decoder) are plain timm
            layout and are detected as ``timm``.
``mocov3``  MoCo v3 checkpoints: ``{'state_dict': {'module.base_encoder.*',
            'module.momentum_encoder.*', 'module.predictor.*'}}``.
``dinov2``  DINOv2 (and DINOv2 with registers), in timm names or the
            facebookresearch/dinov2 release's: LayerScale is folded
            exactly into ``attn.proj`` / ``mlp.fc2``, register tokens
            become ``register_tokens``, ``mask_token`` is dropped. See
            :mod:`davpt_seg.utils.convert_dinov2`.
==========  ============================================================

Every source is first brought to timm's key names (the de-facto standard),
validated there against a strict ViT schema (contiguous blocks, consistent
shapes, no unknown keys), and then renamed to mmseg's keys with the mapping
of mmseg's ``tools/model_converters/vit2mmseg.py``::

    cls_token, pos_embed      -> unchanged
    patch_embed.proj.*        -> patch_embed.projection.*
    norm_pre.*                -> ln_pre.*                  (pre_norm=True)
    blocks.{i}.norm1.*        -> layers.{i}.ln1.*
    blocks.{i}.attn.qkv.W/b   -> layers.{i}.attn.attn.in_proj_weight/_bias
    blocks.{i}.attn.proj.*    -> layers.{i}.attn.attn.out_proj.*
    blocks.{i}.norm2.*        -> layers.{i}.ln2.*
    blocks.{i}.mlp.fc1.*      -> layers.{i}.ffn.layers.0.0.*
    blocks.{i}.mlp.fc2.*      -> layers.{i}.ffn.layers.1.*
    norm.* (or fc_norm.*)     -> ln1.*                     (final_norm=True)

Classifier heads, MAE decoders, MoCo v3 projection heads, predictors and
momentum encoders are dropped. Biases that the source model does not have
(e.g. ``qkv_bias=False`` or a bias-free patch embedding) are written as
zeros: this is numerically identical and keeps one key set, so configs always
use ``qkv_bias=True`` and ``patch_bias=True`` (mmseg's ``qkv_bias=False``
would also drop the attention output bias, which timm models do have).

All these models use ``LayerNorm(eps=1e-6)``; configs must set
``norm_cfg=dict(type='LN', eps=1e-6)`` (mmseg's default eps is 1e-5).

Example::

    from davpt_seg.utils.vit_convert import convert_file, format_summary
    result = convert_file('B_16.npz', img_size=(512, 512))
    print(format_summary(result))
    torch.save(result.state_dict, 'vit_b16_512_mmseg.pth')

``tools/convert_weights.py`` wraps this as a command line tool.
"""
import math
import os
import os.path as osp
import re
import zipfile
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    'SOURCES', 'ConversionError', 'ViTSpec', 'ConversionResult',
    'load_source_file', 'detect_source', 'jax_to_timm', 'timm_to_mmseg',
    'resize_pos_embed', 'convert_state_dict', 'convert_file',
    'format_summary'
]

#: Source formats understood by :func:`convert_state_dict`.
SOURCES = ('timm', 'jax', 'mae', 'mocov3', 'dinov2')

_TORCH_EXTS = ('.pth', '.pt', '.bin', '.tar', '.ckpt')
_BLOCK_RE = re.compile(r'^blocks\.(\d+)\.(.+)$')
_JAX_BLOCK_RE = re.compile(r'^Transformer/encoderblock_(\d+)/(.+)$')

# Per-block timm key -> mmseg key (both relative to the block). Shapes are
# checked in ``_validate_timm``.
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
# Keys a block may lack (zeros are written instead, see module docstring).
_OPTIONAL_BLOCK_KEYS = ('attn.qkv.bias', )

# Classifier / pooling heads: never part of the backbone.
_HEAD_PREFIXES = ('head.', 'head_dist.', 'pre_logits.', 'attn_pool.')

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


class ConversionError(ValueError):
    """A checkpoint cannot be read or is not a ViT this converter handles.

    The message always names the offending file (or ``'<state dict>'``) and
    the mismatch.
    """


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


# --------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------
def _sniff_container(path: str) -> str:
    """Guess the container of ``path``: 'npz', 'safetensors' or 'torch'.

    The extension decides where it is unambiguous; otherwise the first bytes
    are inspected (a zip of ``.npy`` members is an ``.npz``; an 8-byte length
    followed by ``{`` is a safetensors header; anything else goes to torch).
    """
    lower = path.lower()
    if lower.endswith(('.npz', '.npy')):
        return 'npz'
    if lower.endswith('.safetensors'):
        return 'safetensors'
    if lower.endswith(_TORCH_EXTS):
        return 'torch'
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
            if names and all(n.endswith('.npy') for n in names):
                return 'npz'
            return 'torch'
        with open(path, 'rb') as f:
            head = f.read(9)
        if len(head) == 9 and head[8:9] == b'{':
            return 'safetensors'
    except OSError:
        pass
    return 'torch'


def _load_npz(path: str) -> Dict[str, np.ndarray]:
    """Read every array of an ``.npz`` file (no pickles allowed)."""
    try:
        npz = np.load(path, allow_pickle=False)
    except Exception as e:  # zipfile.BadZipFile, ValueError, EOFError, ...
        raise ConversionError(
            f'{path}: cannot read as a NumPy .npz archive (corrupt or '
            f'truncated file?): {type(e).__name__}: {e}') from None
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise ConversionError(f'{path}: expected an .npz archive of named '
                              'arrays, got a single .npy array')
    try:
        return {k: npz[k] for k in npz.files}
    except Exception as e:  # a member is corrupt / truncated / pickled
        raise ConversionError(
            f'{path}: cannot read the arrays of this .npz archive (corrupt '
            f'or truncated file?): {type(e).__name__}: {e}') from None
    finally:
        npz.close()


def _training_checkpoint_advice(path: str) -> str:
    """What to do with a checkpoint written by mmengine instead of
    converting it (command-line answers)."""
    return (
        f'{path} is a training checkpoint written by mmengine (it holds '
        'mmengine HistoryBuffer logs), not pretrained ViT weights: it is '
        'already in this project\'s format and needs no conversion. Test it '
        'with `tools/test.py CONFIG CHECKPOINT`, continue its run with '
        '`tools/train.py CONFIG --resume CHECKPOINT`, start a new run from '
        'its weights with `--cfg-options load_from=CHECKPOINT`, or shrink '
        'it with `tools/extract_prompts.py CONFIG CHECKPOINT OUT`.')


def _load_tensor_file(path: str, container: str) -> Any:
    """Load a ``.pth``-like or ``.safetensors`` file, tensors only.

    Files with an extension known to the project's tensor-only loader
    (:func:`davpt_seg.utils.checkpoint.load_weights`: ``.pth``, ``.pt``,
    ``.bin``, ``.ckpt``, ``.tar``, ``.safetensors``) go through it, so all
    pretrained weights are read one way. Files with other names are read
    according to the sniffed ``container`` with ``safetensors`` or
    ``torch.load(weights_only=True)``.
    """
    from davpt_seg.utils.checkpoint import (SAFETENSORS_EXTENSIONS,
                                            TORCH_EXTENSIONS, CheckpointError,
                                            UnsafeCheckpointError,
                                            load_weights)
    if path.lower().endswith(TORCH_EXTENSIONS + SAFETENSORS_EXTENSIONS):
        try:
            return load_weights(path, map_location='cpu')
        except UnsafeCheckpointError as e:
            if any(g.startswith('mmengine.') for g in e.unsafe_globals):
                raise ConversionError(_training_checkpoint_advice(path)) \
                    from None
            msg = str(e)
            raise ConversionError(
                msg if path in msg else f'{path}: {msg}') from None
        except CheckpointError as e:
            msg = str(e)
            raise ConversionError(
                msg if path in msg else f'{path}: {msg}') from None
    try:
        if container == 'safetensors':
            from safetensors.torch import load_file
            return load_file(path, device='cpu')
        return torch.load(path, map_location='cpu', weights_only=True)
    except Exception as e:  # UnpicklingError, RuntimeError, EOFError, ...
        first = str(e).strip().splitlines()[0] if str(e).strip() else ''
        how = 'safetensors' if container == 'safetensors' else \
            'torch.load(weights_only=True)'
        raise ConversionError(
            f'{path}: cannot read with {how} (corrupt, truncated, or holding '
            f'Python objects other than tensors): {type(e).__name__}: '
            f'{first}') from None


def load_source_file(path: str) -> Tuple[Any, str]:
    """Safely load a checkpoint file for conversion.

    ``.npz`` files are read with ``numpy.load(allow_pickle=False)``;
    ``.safetensors`` and ``.pth``-like files with
    :func:`davpt_seg.utils.checkpoint.load_weights` (safetensors /
    ``torch.load(weights_only=True)``), so no code stored in the file can
    run. Files with other extensions are sniffed (see ``_sniff_container``).

    Args:
        path (str): The checkpoint file.

    Returns:
        tuple: ``(obj, container)`` where ``container`` is ``'npz'`` (``obj``
        maps names to ndarrays) or ``'torch'`` / ``'safetensors'`` (``obj`` is
        what the file holds, usually a possibly nested dict of tensors).

    Raises:
        ConversionError: If the file is missing, unreadable, corrupt or
            truncated.
    """
    path = os.fspath(path)
    if not osp.isfile(path):
        raise ConversionError(f'{path}: no such file')
    if osp.getsize(path) == 0:
        raise ConversionError(f'{path}: file is empty')
    container = _sniff_container(path)
    if container == 'npz':
        return _load_npz(path), container
    return _load_tensor_file(path, container), container


# --------------------------------------------------------------------------
# Format detection and source-specific flattening
# --------------------------------------------------------------------------
def _is_tensor_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(
        isinstance(v, torch.Tensor) for v in obj.values())


def _unwrap(obj: Any, name: str) -> Dict[str, torch.Tensor]:
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
        from davpt_seg.utils.convert_dinov2 import is_dinov2_keys
        if is_dinov2_keys(keys):  # before MAE: DINOv2 has a mask_token too
            return 'dinov2'
        if 'mask_token' in keyset or any(
                k.startswith('decoder_') for k in keys):
            return 'mae'
        return 'timm'
    return None


def _describe_unknown(keys: Sequence[str]) -> str:
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
    if container == 'npz' or (isinstance(obj, Mapping) and obj and all(
            isinstance(v, np.ndarray) for v in obj.values())):
        keys = list(obj)
        if any(k.endswith('embedding/kernel') for k in keys):
            return 'jax'
        raise ConversionError(
            f'{name}: cannot detect the checkpoint format: an .npz file but '
            f"not a JAX ViT (no 'embedding/kernel'; keys: "
            f"{', '.join(sorted(keys)[:8])})")
    sd = _unwrap(obj, name)
    source = _looks_like(list(sd))
    if source is None:
        raise ConversionError(
            f'{name}: cannot detect the checkpoint format; expected '
            "timm/MAE/DINOv2 ViT keys ('patch_embed.proj.weight', "
            "'blocks.N.*'), MoCo v3 keys ('module.base_encoder.*') or a JAX "
            ".npz, but "
            f'{_describe_unknown(list(sd))}')
    return source


def _n2t(a: np.ndarray, key: str, name: str) -> torch.Tensor:
    if a.dtype.kind != 'f':
        raise ConversionError(
            f'{name}: array {key!r} has dtype {a.dtype}; expected floating '
            'point (bfloat16 .npz files are not supported)')
    return torch.from_numpy(np.ascontiguousarray(a))


def jax_to_timm(arrays: Mapping[str, np.ndarray], name: str = '<npz>'
                ) -> Tuple[Dict[str, torch.Tensor], int, List[str]]:
    """Map an original Google ViT ``.npz`` to timm's key names.

    This is a direct re-implementation of the classic-layout branch of
    ``timm.models.vision_transformer._load_weights`` (without building a
    timm model, so the depth and widths are free and every array is checked):

    * ``embedding/kernel`` is HWIO ``(p, p, C, D)`` -> conv OIHW via
      ``transpose(3, 2, 0, 1)``; ``embedding/bias`` as is;
    * ``cls`` ``(1, 1, D)`` and
      ``Transformer/posembed_input/pos_embedding`` ``(1, 1 + N, D)`` as is;
    * per block ``Transformer/encoderblock_{i}/``: ``LayerNorm_0`` ->
      ``norm1``, ``LayerNorm_2`` -> ``norm2`` (``scale`` -> ``weight``);
      ``MultiHeadDotProductAttention_1/{query,key,value}/kernel``
      ``(D, heads, head_dim)`` are flattened to ``(D, D)``, transposed and
      concatenated into ``attn.qkv.weight`` (biases ``(heads, head_dim)``
      flattened and concatenated); ``.../out/kernel`` ``(heads, head_dim, D)``
      -> ``attn.proj.weight`` ``(D, D)`` via reshape + transpose;
      ``MlpBlock_3/Dense_{0,1}/kernel`` ``(in, out)`` -> ``mlp.fc{1,2}``
      transposed;
    * ``Transformer/encoder_norm`` -> ``norm``; ``head/*`` and
      ``pre_logits/*`` are dropped.

    A leading ``opt/target/`` prefix (some Google checkpoints) is removed.
    big_vision layouts (``params/``, stacked ``encoderblock/``) and hybrid
    R50+ViT files are rejected with a clear error.

    Args:
        arrays (Mapping[str, ndarray]): The ``.npz`` contents.
        name (str): Name used in error messages.

    Returns:
        tuple: ``(state_dict, num_heads, dropped_keys)``.

    Raises:
        ConversionError: On unsupported layouts, missing arrays or
            inconsistent shapes.
    """
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

    used = set()

    def get(key: str) -> np.ndarray:
        if key not in w:
            raise ConversionError(f'{name}: missing array {key!r} '
                                  '(incomplete JAX ViT checkpoint)')
        used.add(key)
        return w[key]

    def t(key: str) -> torch.Tensor:
        return _n2t(get(key), key, name)

    sd: Dict[str, torch.Tensor] = OrderedDict()
    kernel = get('embedding/kernel')
    if kernel.ndim != 4:
        raise ConversionError(
            f"{name}: 'embedding/kernel' has shape {kernel.shape}; expected "
            'a 4-D HWIO convolution kernel')
    sd['patch_embed.proj.weight'] = _n2t(
        kernel, 'embedding/kernel', name).permute(3, 2, 0, 1)
    if 'embedding/bias' in w:
        sd['patch_embed.proj.bias'] = t('embedding/bias')
    sd['cls_token'] = t('cls')
    sd['pos_embed'] = t('Transformer/posembed_input/pos_embedding')

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

    num_heads = None
    for i in depths:
        jp = f'Transformer/encoderblock_{i}/'
        mha = jp + 'MultiHeadDotProductAttention_1/'
        tp = f'blocks.{i}.'
        for ln, dst in (('LayerNorm_0', 'norm1'), ('LayerNorm_2', 'norm2')):
            sd[tp + dst + '.weight'] = t(jp + ln + '/scale')
            sd[tp + dst + '.bias'] = t(jp + ln + '/bias')
        qkv_w, qkv_b = [], []
        for n in ('query', 'key', 'value'):
            k = t(mha + n + '/kernel')
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
            if mha + n + '/bias' in w:
                qkv_b.append(t(mha + n + '/bias').reshape(-1))
        try:
            sd[tp + 'attn.qkv.weight'] = torch.cat(qkv_w)
            if qkv_b:
                sd[tp + 'attn.qkv.bias'] = torch.cat(qkv_b)
        except RuntimeError as e:
            raise ConversionError(
                f'{name}: inconsistent query/key/value shapes in block {i}: '
                f'{e}') from None
        out = t(mha + 'out/kernel')
        if out.ndim != 3:
            raise ConversionError(
                f'{name}: {mha}out/kernel has shape {tuple(out.shape)}; '
                'expected (heads, head_dim, embed_dims)')
        sd[tp + 'attn.proj.weight'] = out.reshape(-1, out.shape[-1]).T
        sd[tp + 'attn.proj.bias'] = t(mha + 'out/bias')
        for r in range(2):
            dense = jp + f'MlpBlock_3/Dense_{r}/'
            sd[tp + f'mlp.fc{r + 1}.weight'] = t(dense + 'kernel').T
            sd[tp + f'mlp.fc{r + 1}.bias'] = t(dense + 'bias')
    if 'Transformer/encoder_norm/scale' in w:
        sd['norm.weight'] = t('Transformer/encoder_norm/scale')
        sd['norm.bias'] = t('Transformer/encoder_norm/bias')

    dropped = sorted(k for k in keys - used
                     if k.startswith(('head/', 'pre_logits/')))
    unknown = sorted(keys - used - set(dropped))
    if unknown:
        raise ConversionError(
            f'{name}: unexpected arrays in a JAX ViT checkpoint (not '
            f"representable in mmseg's VisionTransformer): "
            f"{', '.join(unknown[:10])}"
            + (f' (+{len(unknown) - 10} more)' if len(unknown) > 10 else ''))
    return sd, num_heads, dropped


def _select(sd: Dict[str, torch.Tensor], source: str, name: str
            ) -> Tuple[Dict[str, torch.Tensor], List[str], List[str]]:
    """Reduce a torch state dict of ``source`` layout to timm backbone keys.

    Returns ``(state_dict, dropped_keys, notes)``.
    """
    dropped, notes = [], []
    if source == 'mocov3':
        enc = 'base_encoder.'
        if not any(k.startswith(enc) for k in sd):
            raise ConversionError(
                f"{name}: no 'base_encoder.' keys; not a MoCo v3 checkpoint "
                f'({_describe_unknown(list(sd))})')
        dropped = sorted(k for k in sd if not k.startswith(enc))
        sd = {k[len(enc):]: v for k, v in sd.items() if k.startswith(enc)}
    elif source == 'mae':
        extra = {k for k in sd
                 if k.startswith('decoder_') or k == 'mask_token'}
        dropped += sorted(extra)
        sd = {k: v for k, v in sd.items() if k not in extra}
    heads = sorted(k for k in sd if k.startswith(_HEAD_PREFIXES))
    dropped += heads
    sd = {k: v for k, v in sd.items() if not k.startswith(_HEAD_PREFIXES)}
    has_norm = any(k.startswith('norm.') for k in sd)
    fc_norm = [k for k in sd if k.startswith('fc_norm.')]
    if fc_norm and has_norm:
        dropped += sorted(fc_norm)
        sd = {k: v for k, v in sd.items() if not k.startswith('fc_norm.')}
    elif fc_norm:
        sd = {('norm.' + k[len('fc_norm.'):]
               if k.startswith('fc_norm.') else k): v for k, v in sd.items()}
        notes.append(
            "final norm taken from 'fc_norm' (the source has no token-level "
            "'norm'; fc_norm was trained on pooled features, here it is "
            'applied per token)')
    return sd, dropped, notes


# --------------------------------------------------------------------------
# Validation and renaming
# --------------------------------------------------------------------------
def _shape(t: torch.Tensor) -> Tuple[int, ...]:
    return tuple(t.shape)


def _validate_timm(sd: Mapping[str, torch.Tensor], name: str,
                   num_heads: Optional[int] = None) -> ViTSpec:
    """Check a timm-named ViT state dict and infer its architecture.

    Raises:
        ConversionError: Naming ``name`` and every problem found: missing or
            unknown keys, missing blocks, inconsistent shapes.
    """
    keys = set(sd)
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
                f'({_describe_unknown(list(keys))})')

    proj = sd['patch_embed.proj.weight']
    if proj.ndim != 4 or proj.shape[-1] != proj.shape[-2]:
        raise ConversionError(
            f"{name}: 'patch_embed.proj.weight' has shape {_shape(proj)}; "
            'expected (embed_dims, in_channels, p, p) with square patches')
    dims, in_ch, patch = proj.shape[0], proj.shape[1], proj.shape[-1]

    problems: List[str] = []

    def expect(key: str, shape: Tuple[int, ...]):
        if key not in sd:
            problems.append(f'missing {key}')
        elif _shape(sd[key]) != shape:
            problems.append(f'{key} has shape {_shape(sd[key])}, expected '
                            f'{shape}')

    expect('cls_token', (1, 1, dims))
    pos = sd['pos_embed']
    if pos.ndim != 3 or pos.shape[0] != 1 or pos.shape[2] != dims:
        problems.append(f'pos_embed has shape {_shape(pos)}, expected '
                        f'(1, 1 + grid_h * grid_w, {dims})')
        grid = (0, 0)
    else:
        n = pos.shape[1] - 1
        side = math.isqrt(max(n, 0))
        if side * side == n and n > 0:
            grid = (side, side)
        elif math.isqrt(pos.shape[1])**2 == pos.shape[1]:
            raise ConversionError(
                f'{name}: pos_embed has {pos.shape[1]} positions = a square '
                'grid without a class-token position (timm no_embed_class); '
                "mmseg's VisionTransformer needs one for the class token")
        else:
            raise ConversionError(
                f'{name}: pos_embed has {pos.shape[1]} positions; expected '
                '1 (class token) + a square grid of patches')
    if 'patch_embed.proj.bias' in keys:
        expect('patch_embed.proj.bias', (dims, ))
    for norm in ('norm', 'norm_pre'):
        if any(k.startswith(norm + '.') for k in keys):
            expect(f'{norm}.weight', (dims, ))
            expect(f'{norm}.bias', (dims, ))

    blocks: Dict[int, Dict[str, torch.Tensor]] = {}
    for k in keys:
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
    for i in range(depth):
        block = blocks[i]
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

    known = {'patch_embed.proj.weight', 'patch_embed.proj.bias', 'cls_token',
             'pos_embed', 'norm.weight', 'norm.bias', 'norm_pre.weight',
             'norm_pre.bias'}
    for k in sorted(keys - known):
        if not _BLOCK_RE.match(k):
            problems.append(f'unexpected {k}')
    if num_heads is not None and dims % num_heads:
        problems.append(f'embed_dims {dims} is not divisible by '
                        f'{num_heads} heads')
    bad_dtype = sorted(k for k, v in sd.items() if not v.is_floating_point())
    if bad_dtype:
        problems.append(f'non-floating-point tensors: {bad_dtype[:4]}')
    if problems:
        shown = '\n  '.join(problems[:12])
        more = f'\n  (+{len(problems) - 12} more)' if len(problems) > 12 \
            else ''
        raise ConversionError(
            f'{name}: not a consistent ViT state dict (embed_dims {dims}, '
            f'depth {depth}, patch {patch}):\n  {shown}{more}')
    return ViTSpec(
        depth=depth,
        embed_dims=dims,
        mlp_hidden=hidden,
        patch_size=patch,
        in_channels=in_ch,
        pos_grid=grid,
        num_heads=num_heads,
        patch_bias='patch_embed.proj.bias' in keys,
        qkv_bias=qkv_bias,
        final_norm='norm' if 'norm.weight' in keys else None,
        pre_norm='norm_pre.weight' in keys,
        dtype=proj.dtype)


def timm_to_mmseg(sd: Mapping[str, torch.Tensor], depth: int
                  ) -> 'OrderedDict[str, torch.Tensor]':
    """Rename a validated timm ViT state dict to mmseg's keys.

    Missing q/k/v and patch-embedding biases are filled with zeros (see the
    module docstring). Output order follows mmseg's module order.

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


def resize_pos_embed(pos_embed: torch.Tensor, src_grid: Tuple[int, int],
                     dst_grid: Tuple[int, int],
                     mode: str = 'bilinear') -> torch.Tensor:
    """Resize a ``(1, 1 + h * w, C)`` position embedding to another grid.

    Same computation as mmseg's ``VisionTransformer.resize_pos_embed``: the
    class-token position is kept and the patch grid is interpolated with
    ``F.interpolate(..., align_corners=False)``. Computed in float32 and cast
    back to the input dtype.

    Args:
        pos_embed (Tensor): Position embedding with a class-token position.
        src_grid (tuple[int, int]): ``(h, w)`` of ``pos_embed``.
        dst_grid (tuple[int, int]): Target ``(h, w)``.
        mode (str): ``'bilinear'`` (default), ``'bicubic'`` or ``'nearest'``.

    Returns:
        Tensor: Position embedding of shape ``(1, 1 + H * W, C)``.
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


# --------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------
_COMPATIBLE = {'timm': ('timm', ), 'mae': ('mae', 'timm'),
               'mocov3': ('mocov3', ), 'jax': ('jax', ),
               'dinov2': ('dinov2', )}


def convert_state_dict(obj: Any,
                       source: str = 'auto',
                       img_size: Union[int, Sequence[int], None] = None,
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
    if source != 'auto' and source not in SOURCES:
        raise ConversionError(f"unknown source {source!r}; choose 'auto' or "
                              f"one of {', '.join(SOURCES)}")
    detected = source == 'auto'
    if detected:
        source = detect_source(obj, container, name)
    else:
        try:
            looks = detect_source(obj, container, name)
        except ConversionError:
            looks = None  # let the source-specific checks explain
        if looks is not None and looks not in _COMPATIBLE[source]:
            raise ConversionError(
                f'{name}: --source {source} was given but the file looks like '
                f'a {looks} checkpoint (use --source {looks} or auto)')

    notes: List[str] = []
    num_heads = None
    if source == 'jax':
        if not (isinstance(obj, Mapping) and obj and all(
                isinstance(v, np.ndarray) for v in obj.values())):
            raise ConversionError(
                f'{name}: --source jax expects a NumPy .npz file')
        sd, num_heads, dropped = jax_to_timm(obj, name)
    else:
        if container == 'npz':
            raise ConversionError(
                f'{name}: an .npz file can only be converted with --source '
                'jax (or auto)')
        sd, dropped, notes = _select(_unwrap(obj, name), source, name)
    registers = None
    if source == 'dinov2':
        from davpt_seg.utils.convert_dinov2 import dinov2_to_timm
        sd, registers, more_dropped, more_notes = dinov2_to_timm(sd, name)
        dropped += more_dropped
        notes += more_notes
    spec = _validate_timm(sd, name, num_heads)

    if patch_size is not None and int(patch_size) != spec.patch_size:
        raise ConversionError(
            f'{name}: the weights have patch size {spec.patch_size} but '
            f'--patch-size {patch_size} was given (patch embeddings are not '
            'resampled)')
    out = timm_to_mmseg(sd, spec.depth)
    if registers is not None:
        from davpt_seg.utils.convert_dinov2 import add_register_tokens
        out = add_register_tokens(out, registers)
        spec.num_register_tokens = registers.shape[1]
    src_grid = spec.pos_grid
    if img_size is not None:
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
        if dst_grid != src_grid:
            out['pos_embed'] = resize_pos_embed(out['pos_embed'], src_grid,
                                                dst_grid, interpolate_mode)
            spec.pos_grid = dst_grid
        if any(s % spec.patch_size for s in img_size):
            notes.append(f'img_size {img_size} is not a multiple of the '
                         f'patch size {spec.patch_size}; grid {dst_grid} '
                         "follows mmseg's floor division")
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
    for k, v in out.items():
        v = v.detach().contiguous()
        if v.untyped_storage().nbytes() != v.numel() * v.element_size():
            v = v.clone()  # do not save a larger shared storage
        out[k] = v
    return ConversionResult(
        state_dict=out,
        source=source,
        detected=detected,
        spec=spec,
        src_pos_grid=src_grid,
        name=name,
        dropped=list(dropped),
        notes=notes)


def convert_file(path: str,
                 source: str = 'auto',
                 img_size: Union[int, Sequence[int], None] = None,
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


def _summarise_keys(keys: Sequence[str]) -> str:
    groups: Dict[str, int] = OrderedDict()
    for k in keys:
        g = re.sub(r'\.\d+\..*$|\..*$|/.*$', '', k) or k
        groups[g] = groups.get(g, 0) + 1
    return ', '.join(f'{g}* ({n})' for g, n in groups.items())


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
    s = result.spec
    how = 'detected' if result.detected else 'given'
    if s.num_heads is not None:
        heads = f'{s.num_heads} (from the weights)'
        cfg_heads = s.num_heads
    else:
        cfg_heads = max(s.embed_dims // 64, 1)
        heads = (f'unknown (not stored in {result.source} weights); '
                 f'{cfg_heads} = embed_dims // 64 (the standard ViT choice) '
                 'is assumed below, check the model card')
    grid = f'{s.pos_grid[0]}x{s.pos_grid[1]} (+ class token)'
    if s.pos_grid != result.src_pos_grid:
        grid += (f', resized from {result.src_pos_grid[0]}x'
                 f'{result.src_pos_grid[1]} ({interpolate_mode})')
    ratio = s.mlp_ratio
    ratio_s = str(int(ratio)) if ratio == int(ratio) else f'{ratio:.4g}'
    final = {'norm': 'yes (ln1.*), configs set final_norm=True',
             None: 'none, configs set final_norm=False'}[s.final_norm]
    bias = ('present' if s.patch_bias else 'absent in the source (zeros '
            'written)') + ('; configs must set patch_bias=True (mmseg\'s '
                           'VisionTransformer defaults to patch_bias=False)')
    img = tuple(g * s.patch_size for g in s.pos_grid)
    lines = [
        f'Converted {result.name}' + (f' -> {dst}' if dst else ''),
        f'  source format : {result.source} ({how})',
        f'  depth         : {s.depth}',
        f'  embed dims    : {s.embed_dims} (MLP hidden {s.mlp_hidden}, '
        f'mlp_ratio {ratio_s})',
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
    if result.dropped:
        lines.append(f'  dropped       : {len(result.dropped)} tensors: '
                     f'{_summarise_keys(result.dropped)}')
    for note in result.notes:
        lines.append(f'  note          : {note}')
    lines.append(
        '  backbone cfg  : dict(img_size={}, patch_size={}, embed_dims={}, '
        'num_layers={}, num_heads={}, mlp_ratio={}, qkv_bias=True, '
        'patch_bias=True, final_norm={}, pre_norm={}, with_cls_token=True, '
        "norm_cfg=dict(type='LN', eps=1e-6){})".format(
            img, s.patch_size, s.embed_dims, s.depth, cfg_heads, ratio_s,
            s.final_norm is not None, s.pre_norm,
            f', num_register_tokens={s.num_register_tokens}'
            if s.num_register_tokens else ''))
    return '\n'.join(lines)
