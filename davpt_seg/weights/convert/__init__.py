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
            :mod:`davpt_seg.weights.convert.dinov2`.
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

    from davpt_seg.weights.convert import convert_file, format_summary
    result = convert_file('B_16.npz', img_size=(512, 512))
    print(format_summary(result))
    torch.save(result.state_dict, 'vit_b16_512_mmseg.pth')

``tools/convert_weights.py`` wraps this as a command line tool.
"""

from .convert import convert_file, convert_state_dict
from .detect import detect_source
from .dinov2 import add_register_tokens, dinov2_to_timm, fold_layer_scale
from .files import load_source_file
from .jax import jax_to_timm
from .spec import SOURCES, ConversionResult, ViTSpec
from .summary import format_summary
from .timm import timm_to_mmseg, validate_timm

__all__ = [
    'SOURCES', 'ViTSpec', 'ConversionResult', 'load_source_file',
    'detect_source', 'jax_to_timm', 'dinov2_to_timm', 'fold_layer_scale',
    'add_register_tokens', 'validate_timm', 'timm_to_mmseg',
    'convert_state_dict', 'convert_file', 'format_summary'
]
