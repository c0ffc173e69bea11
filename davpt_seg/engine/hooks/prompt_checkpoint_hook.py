# Copyright (c) davpt-seg contributors. Apache-2.0.
"""Prompt-only checkpoints: everything but the frozen pretrained ViT.

A full SETR ViT-L checkpoint is ~1.2 GB, of which ~1.1 GB is the frozen,
public pretrained backbone. A prompt-only checkpoint keeps the rest: the
trainable parameters (prompts, K/V offsets, heads), all buffers (heads'
BatchNorm statistics, the class->prompt mapping and centroids), optimizer,
scheduler and meta. For ADE20K SETR-PUP (13.6M trainable parameters)
that is ~105 MiB with SGD's momentum (one tensor per trainable parameter;
AdamW keeps two: ~157 MiB), ~53 MiB without the optimizer state
(``PromptOnlyCheckpointHook(save_optimizer=False)``). The checkpoint
records the pretrained file (``model.backbone.init_cfg``) and a SHA-256 of
the dropped weights. Loading one restores the frozen weights from
``init_cfg``'s file, or from the recorded one where ``init_cfg`` was
cleared (``init_model``), and checks the fingerprint (see
``PromptedVisionTransformer._load_from_state_dict``), so ``tools/test.py``,
``--resume`` and ``mmseg.apis.init_model`` work unchanged.
"""
import copy
import os.path as osp
from collections import OrderedDict
from typing import List

import torch.nn as nn
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmseg.registry import HOOKS

from davpt_seg.models.backbones import PromptedVisionTransformer
from davpt_seg.models.backbones.prompted_vit import (
    PRETRAINED_RECORD, frozen_weights_sha256, frozen_weights_summary)


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
    return [f'backbone.{name}' for name in backbone.frozen_state_keys()]


def pretrained_record(backbone: PromptedVisionTransformer,
                      frozen: dict) -> dict:
    """What a prompt-only checkpoint records about its dropped weights:
    ``init_cfg``'s path as written and made absolute (against the current
    directory, as mmengine resolves it), its ``prefix``, and the SHA-256 of
    the frozen tensors ``frozen`` (names relative to the backbone), and
    their rounding-tolerant summary (see ``frozen_weights_summary``)."""
    path = backbone._pretrained_path()
    local = '://' not in path
    return dict(
        checkpoint=path,
        abs_checkpoint=osp.abspath(osp.expanduser(path)) if local else path,
        prefix=backbone.init_cfg.get('prefix'),
        sha256=frozen_weights_sha256(frozen),
        summary=frozen_weights_summary(frozen),
        num_tensors=len(frozen))


def make_prompt_only(checkpoint: dict, segmentor: nn.Module) -> dict:
    """Drop the frozen backbone weights from an mmengine checkpoint dict (in
    place), record it in ``meta['davpt_prompt_only']`` and record where they
    come from in ``state_dict._metadata['backbone']`` (see
    ``PromptedVisionTransformer._load_from_state_dict`` for why there)."""
    model = segmentor.module if is_model_wrapper(segmentor) else segmentor
    state = checkpoint['state_dict']
    keys = frozen_backbone_keys(model)
    absent = [k for k in keys if k not in state]
    if absent:
        raise ValueError(
            f'the checkpoint lacks {len(absent)} of the {len(keys)} frozen '
            f'backbone tensors (e.g. {absent[0]}): it is not a full '
            'checkpoint of this model (already prompt-only, or another '
            'config?)')
    record = pretrained_record(
        model.backbone, {k[len('backbone.'):]: state[k] for k in keys})
    metadata = getattr(state, '_metadata', None)
    if metadata is None:  # a plain dict: give it the model's metadata
        metadata = copy.deepcopy(model.state_dict()._metadata)
    if not isinstance(state, OrderedDict):
        state = checkpoint['state_dict'] = OrderedDict(state)
    for k in keys:
        del state[k]
    entry = dict(metadata.get('backbone') or
                 dict(version=model.backbone._version))
    entry[PRETRAINED_RECORD] = record
    metadata['backbone'] = entry
    state._metadata = metadata
    checkpoint.setdefault('meta', {})['davpt_prompt_only'] = dict(
        pretrained=record['checkpoint'],
        pretrained_abs=record['abs_checkpoint'],
        pretrained_sha256=record['sha256'],
        dropped_keys=len(keys))
    return checkpoint


@HOOKS.register_module()
class PromptOnlyCheckpointHook(Hook):
    """Save every checkpoint prompt-only (see module docstring).

    Add ``dict(type='PromptOnlyCheckpointHook')`` to ``custom_hooks``; the
    config's ``model.backbone.init_cfg`` must name the pretrained file.

    Args:
        save_optimizer (bool): keep the optimizer state (SGD momentum: as
            large as the trainable parameters; AdamW's: twice). Without it a
            checkpoint is about half the size and serves testing,
            inference and fine-tuning (``load_from``), but cannot be resumed
            (mmengine's resume restores the optimizer). Equivalent to
            ``default_hooks.checkpoint.save_optimizer=False``. Default: True.
    """

    priority = 'VERY_LOW'

    def __init__(self, save_optimizer: bool = True) -> None:
        self.save_optimizer = save_optimizer

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        make_prompt_only(checkpoint, runner.model)
        if not self.save_optimizer:
            checkpoint.pop('optimizer', None)
