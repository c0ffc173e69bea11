# Copyright (c) davpt-seg contributors. Apache-2.0.
"""Make a checkpoint that does not fit the model an error, not a warning.

mmengine loads checkpoints (``load_from``, ``--resume``, ``tools/test.py``)
with ``strict=False``, which only *logs* shape mismatches and leaves those
tensors as they were: testing a 150-class checkpoint on a 59-class config
reports an mIoU of randomly initialised heads without any error.

Fine-tuning on another dataset (reuse the backbone and prompts, re-init the
heads' classifiers) is the one opt-out: ``allow_head_mismatch``.
"""
import logging
import re
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn as nn
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import BaseTTAModel, is_model_wrapper
from mmengine.optim import OptimWrapper, OptimWrapperDict
from mmseg.registry import HOOKS

#: state-dict prefixes of the heads (``allow_head_mismatch`` drops those of
#: their tensors whose shapes differ)
HEAD_PREFIXES = ('decode_head.', 'auxiliary_head.')


def unwrap_model(model: nn.Module) -> nn.Module:
    """The segmentor inside DDP / test-time-augmentation wrappers."""
    while is_model_wrapper(model) or isinstance(model, BaseTTAModel):
        model = model.module
    return model


def _revise(key: str) -> str:
    return re.sub(r'^module\.', '', key)


def _mismatched(model: nn.Module, state_dict: Dict[str, torch.Tensor]
                ) -> Tuple[List[Tuple[str, str, tuple, tuple]], bool]:
    """``([(checkpoint key, model key, checkpoint shape, model shape)],
    disjoint)`` for the tensors whose shapes differ; ``disjoint`` is True
    when no tensor of ``state_dict`` is in the model."""
    own = unwrap_model(model).state_dict()
    ckpt = {k: v for k, v in state_dict.items()
            if isinstance(v, torch.Tensor)}
    common = [k for k in ckpt if _revise(k) in own]
    if ckpt and not common:
        return [], True
    return [(k, _revise(k), tuple(ckpt[k].shape),
             tuple(own[_revise(k)].shape)) for k in sorted(common)
            if tuple(ckpt[k].shape) != tuple(own[_revise(k)].shape)], False


def checkpoint_mismatches(model: nn.Module,
                          state_dict: Dict[str, torch.Tensor]) -> List[str]:
    """``'key: checkpoint (shape) vs model (shape)'`` for every tensor of
    ``state_dict`` (keys as mmengine revises them: a leading ``module.``
    removed) whose shape differs from the model's; ``['no tensor ...']`` if
    none of its keys is in the model."""
    mismatched, disjoint = _mismatched(model, state_dict)
    if disjoint:
        own = unwrap_model(model).state_dict()
        ckpt = sorted(_revise(k) for k, v in state_dict.items()
                      if isinstance(v, torch.Tensor))
        return [f'no tensor of the checkpoint is in the model (its keys '
                f'start like {ckpt[:3]}; the model\'s like '
                f'{sorted(own)[:3]})']
    return [f'{key}: checkpoint {a} vs model {b}'
            for _, key, a, b in mismatched]


def drop_head_mismatches(model: nn.Module,
                         state_dict: Dict[str, torch.Tensor]) -> List[str]:
    """Delete from ``state_dict`` (in place) the heads' tensors whose shapes
    differ from ``model``'s. Returns the deleted keys."""
    mismatched, _ = _mismatched(model, state_dict)
    drop = [k for k, key, _, _ in mismatched if key.startswith(HEAD_PREFIXES)]
    for k in drop:
        del state_dict[k]
    return sorted(drop)


def head_mismatch_allowed(runner, allowed: Optional[bool] = None) -> bool:
    """Whether the checkpoint being loaded may differ from the model in the
    heads (and ``DAVPTHook``'s mapping): ``allowed`` (None reads the config
    key ``allow_head_mismatch``, default False), only when training from
    ``load_from`` (not resuming, not testing)."""
    if allowed is None:
        allowed = bool(runner.cfg.get('allow_head_mismatch', False))
    # training = the runner has built its optimizer wrapper (train() does so
    # before loading; test() never); resume restores a run of this very
    # model, whose shapes must fit
    training = isinstance(runner.optim_wrapper,
                          (OptimWrapper, OptimWrapperDict))
    return allowed and training and not runner.cfg.get('resume', False)


@HOOKS.register_module()
class CheckpointShapeCheckHook(Hook):
    """Raise ``RuntimeError`` when a checkpoint loaded through the runner
    (``load_from``, ``--resume``, ``tools/test.py``) has a tensor whose shape
    differs from the model's, or no tensor of the model at all (missing keys
    are allowed: prompt-only checkpoints leave out the frozen ViT).

    ``tools/train.py`` and ``tools/test.py`` add it to every config.

    Fine-tuning on another dataset: with ``allow_head_mismatch``, a
    ``load_from`` checkpoint at the start of training (not ``--resume``, not
    testing) may differ in the heads: their mismatched tensors (the
    classifiers ``conv_seg`` for another class count) are dropped and keep
    their fresh initialisation, and so is the class->prompt mapping if its
    class count differs (``DAVPTHook`` builds a new one). The dropped keys
    are logged. The backbone, prompts and the heads' matching tensors load
    as usual; any other mismatch is still an error.

    Args:
        allow_head_mismatch (bool, optional): see above. None (default)
            reads the config key ``allow_head_mismatch`` (default False),
            so that ``allow_head_mismatch = True`` in a config works with
            the hook ``tools/train.py`` adds.
    """

    priority = 'VERY_HIGH'

    def __init__(self, allow_head_mismatch: Optional[bool] = None) -> None:
        self.allow_head_mismatch = allow_head_mismatch

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        state = checkpoint.get('state_dict', checkpoint)
        if head_mismatch_allowed(runner, self.allow_head_mismatch):
            dropped = drop_head_mismatches(runner.model, state)
            if dropped:
                print_log(
                    'allow_head_mismatch: not loading these tensors of '
                    f'{getattr(runner, "_load_from", None)} (head tensors '
                    'of another shape keep their fresh initialisation; a '
                    'class->prompt mapping of another class count is '
                    f'rebuilt by DAVPTHook): {", ".join(dropped)}',
                    logger='current', level=logging.WARNING)
        problems = checkpoint_mismatches(runner.model, state)
        if not problems:
            return
        hint = ''
        if any('conv_seg' in p for p in problems):
            hint = (' The number of classes differs: check num_classes of '
                    'the decode/auxiliary heads. To '
                    'fine-tune on another dataset (reuse the backbone and '
                    'prompts, re-initialise the mismatched head tensors and '
                    'the class->prompt mapping), set '
                    '`allow_head_mismatch = True` in the config (training '
                    'from load_from only).')
        source = getattr(runner, '_load_from', None) or \
            'the latest checkpoint of the work dir'
        shown = '\n  '.join(problems[:12])
        more = f'\n  (+{len(problems) - 12} more)' if len(problems) > 12 \
            else ''
        raise RuntimeError(
            f'The checkpoint {source} does not fit the model built from the '
            f'config (mmengine would only warn and keep those tensors '
            f'unloaded):\n  {shown}{more}\n{hint}'.rstrip())
