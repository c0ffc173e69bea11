# Copyright (c) davpt-seg contributors. Apache-2.0.
"""How much a prompted backbone departs from its frozen self: per layer,
the share of the image patches' attention that goes to the prompts, and
the cosine between the backbone's output features with and without its
prompts (``tools/prompt_influence.py``, ``docs/prompt_attention.md``)."""
import copy
from typing import Dict, List, Sequence

import torch
import torch.nn.functional as F
from mmseg.registry import MODELS

from davpt_seg.models.backbones import PromptedVisionTransformer

#: Backbone arguments that turn a prompted config into its frozen ViT.
NO_PROMPTS = dict(num_prompts=0, num_proxy_prompts=0, guided_layers=[],
                  tune_kv_bias=False, gated_prompts=False)


def frozen_reference(cfg, device: str = 'cpu') -> torch.nn.Module:
    """The config's backbone without prompts (and K/V biases), its
    pretrained weights loaded by ``init_weights``, in eval mode.

    Raises:
        ValueError: the backbone's ``init_cfg`` names no pretrained file
            (the reference would be a random ViT).
    """
    backbone_cfg = copy.deepcopy(cfg.model.backbone)
    if not (backbone_cfg.get('init_cfg') or {}).get('checkpoint'):
        raise ValueError(
            'frozen_reference: model.backbone.init_cfg names no pretrained '
            'checkpoint, so the frozen reference would be a random ViT')
    backbone_cfg.update(NO_PROMPTS)
    backbone = MODELS.build(backbone_cfg)
    backbone.init_weights()
    return backbone.to(device).eval()


@torch.no_grad()
def prompt_attention_share(backbone: PromptedVisionTransformer,
                           inputs: torch.Tensor) -> List[float]:
    """Per layer: the attention probability mass that image-patch queries
    put on the layer's prompt keys, averaged over images, heads and
    patches (0 for a layer without prompts; with ``gated_prompts`` the
    weight of the prompts' own softmax, ``tanh(gate)`` averaged over the
    heads, which may be negative).

    Args:
        inputs (Tensor): [B, 3, H, W] normalised images.
    """
    backbone.eval()
    with backbone.capture_attention() as capture:
        backbone(inputs)
    shares = []
    for layer in range(len(backbone.layers)):
        attn, lay = capture.attn[layer], capture.layout[layer]
        mass = attn[:, :, lay.patches][..., lay.prompts].sum(-1)
        shares.append(float(mass.mean()) if mass.numel() else 0.)
    return shares


@torch.no_grad()
def output_cosine(backbone: torch.nn.Module, reference: torch.nn.Module,
                  inputs: torch.Tensor, out_indices: Sequence[int]
                  ) -> Dict[int, float]:
    """Per output layer: the mean cosine over images and patches between
    ``backbone``'s and ``reference``'s patch features ([B, C, h, w] maps
    of the same ``out_indices``)."""
    backbone.eval()
    ours, theirs = backbone(inputs), reference(inputs)
    return {int(i): float(F.cosine_similarity(a, b, dim=1).mean())
            for i, a, b in zip(out_indices, ours, theirs)}


def influence(backbone: PromptedVisionTransformer,
              reference: torch.nn.Module, inputs: torch.Tensor) -> dict:
    """Both measurements of ``backbone`` on ``inputs``."""
    return dict(
        attention_to_prompts=prompt_attention_share(backbone, inputs),
        output_cosine=output_cosine(backbone, reference, inputs,
                                    backbone.out_indices))
