# Copyright (c) davpt-seg contributors. Apache-2.0.
"""Make a checkpoint that does not fit the model an error, not a warning.

mmengine loads checkpoints (``load_from``, ``--resume``, ``tools/test.py``)
with ``strict=False``, which only *logs* shape mismatches and leaves those
tensors as they were: testing a 150-class checkpoint on a 59-class config
reports an mIoU of randomly initialised heads without any error.
"""
import re
from typing import Dict, List

import torch
import torch.nn as nn
from mmengine.hooks import Hook
from mmengine.model import BaseTTAModel, is_model_wrapper
from mmseg.registry import HOOKS


def _unwrap(model: nn.Module) -> nn.Module:
    while is_model_wrapper(model) or isinstance(model, BaseTTAModel):
        model = model.module
    return model


def checkpoint_mismatches(model: nn.Module,
                          state_dict: Dict[str, torch.Tensor]) -> List[str]:
    """``'key: checkpoint (shape) vs model (shape)'`` for every tensor of
    ``state_dict`` (keys as mmengine revises them: a leading ``module.``
    removed) whose shape differs from the model's; ``['no tensor ...']`` if
    none of its keys is in the model."""
    own = _unwrap(model).state_dict()
    ckpt = {re.sub(r'^module\.', '', k): v for k, v in state_dict.items()
            if isinstance(v, torch.Tensor)}
    common = [k for k in ckpt if k in own]
    if ckpt and not common:
        return [f'no tensor of the checkpoint is in the model (its keys '
                f'start like {sorted(ckpt)[:3]}; the model\'s like '
                f'{sorted(own)[:3]})']
    return [f'{k}: checkpoint {tuple(ckpt[k].shape)} vs model '
            f'{tuple(own[k].shape)}' for k in sorted(common)
            if tuple(ckpt[k].shape) != tuple(own[k].shape)]


@HOOKS.register_module()
class CheckpointShapeCheckHook(Hook):
    """Raise ``RuntimeError`` when a checkpoint loaded through the runner
    (``load_from``, ``--resume``, ``tools/test.py``) has a tensor whose shape
    differs from the model's, or no tensor of the model at all (missing keys
    are allowed: prompt-only checkpoints leave out the frozen ViT).

    ``tools/train.py`` and ``tools/test.py`` add it to every config.
    """

    priority = 'VERY_HIGH'

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        state = checkpoint.get('state_dict', checkpoint)
        problems = checkpoint_mismatches(runner.model, state)
        if not problems:
            return
        hint = ''
        if any(re.search(r'conv_seg|class_mapping\.(mapping|feat)', p)
               for p in problems):
            hint = (' The number of classes differs: check num_classes of '
                    'the decode/auxiliary heads and of model.backbone.')
        source = getattr(runner, '_load_from', None) or \
            'the latest checkpoint of the work dir'
        shown = '\n  '.join(problems[:12])
        more = f'\n  (+{len(problems) - 12} more)' if len(problems) > 12 \
            else ''
        raise RuntimeError(
            f'The checkpoint {source} does not fit the model built from the '
            f'config (mmengine would only warn and keep those tensors '
            f'unloaded):\n  {shown}{more}\n{hint}'.rstrip())
