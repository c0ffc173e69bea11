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
:mod:`davpt_seg.weights.prompt_only`), so ``tools/test.py``, ``--resume``
and ``mmseg.apis.init_model`` work unchanged.
"""
from mmengine.hooks import Hook
from mmseg.registry import HOOKS

from davpt_seg.weights.prompt_only import make_prompt_only


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
