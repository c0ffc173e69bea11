# Copyright (c) davpt-seg contributors. Apache-2.0.
"""Prompt-only checkpoints: everything but the frozen pretrained ViT.

A full SETR ViT-L checkpoint is ~1.2 GB, of which ~1.1 GB is the frozen,
public pretrained backbone. A prompt-only checkpoint keeps the rest: the
trainable parameters (prompts, K/V offsets, heads), all buffers (heads'
BatchNorm statistics, the class->prompt mapping and centroids), optimizer,
scheduler and meta -- a few tens of MB. Loading one restores the frozen
weights from ``model.backbone.init_cfg`` (see
``PromptedVisionTransformer._load_from_state_dict``), so ``tools/test.py``,
``--resume`` and ``mmseg.apis.init_model`` work unchanged.
"""
from typing import List

import torch.nn as nn
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmseg.registry import HOOKS

from davpt_seg.models.backbones import PromptedVisionTransformer


def frozen_backbone_keys(segmentor: nn.Module) -> List[str]:
    """State-dict keys (``backbone.*``) of the frozen pretrained weights:
    the backbone's parameters with ``requires_grad=False``."""
    if is_model_wrapper(segmentor):
        segmentor = segmentor.module
    backbone = getattr(segmentor, 'backbone', None)
    if not isinstance(backbone, PromptedVisionTransformer):
        raise TypeError('prompt-only checkpoints need a '
                        'PromptedVisionTransformer backbone, got '
                        f'{type(backbone).__name__}')
    if backbone._pretrained_path() is None:
        raise ValueError(
            'prompt-only checkpoints need model.backbone.init_cfg='
            "dict(type='Pretrained', checkpoint=PATH): the dropped frozen "
            'weights are restored from that file when loading')
    return [f'backbone.{name}' for name, p in backbone.named_parameters()
            if not p.requires_grad]


def make_prompt_only(checkpoint: dict, segmentor: nn.Module) -> dict:
    """Drop the frozen backbone weights from an mmengine checkpoint dict (in
    place) and record it in ``meta['davpt_prompt_only']``."""
    state = checkpoint['state_dict']
    dropped = [k for k in frozen_backbone_keys(segmentor) if k in state]
    for k in dropped:
        del state[k]
    model = segmentor.module if is_model_wrapper(segmentor) else segmentor
    checkpoint.setdefault('meta', {})['davpt_prompt_only'] = dict(
        pretrained=model.backbone._pretrained_path(),
        dropped_keys=len(dropped))
    return checkpoint


@HOOKS.register_module()
class PromptOnlyCheckpointHook(Hook):
    """Save every checkpoint prompt-only (see module docstring).

    Add ``dict(type='PromptOnlyCheckpointHook')`` to ``custom_hooks``; the
    config's ``model.backbone.init_cfg`` must name the pretrained file.
    """

    priority = 'VERY_LOW'

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        make_prompt_only(checkpoint, runner.model)
