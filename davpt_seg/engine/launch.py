# Copyright (c) davpt-seg contributors. Apache-2.0.
"""Checks and config fixes applied when a run is launched (``tools/train.py``,
``tools/test.py``; call them yourself if you build a ``Runner`` another way).
"""
import logging
from typing import List

from mmengine.logging import print_log

from davpt_seg.models.backbones import PromptedVisionTransformer

#: norm layer types that only work on GPUs (torch's and mmcv's SyncBN)
SYNC_BN_TYPES = ('SyncBN', 'MMSyncBN')


def check_davpt_hook(runner) -> None:
    """Raise ``ValueError`` if the model has a DA-VPT backbone but the runner
    has no ``DAVPTHook``.

    A ``PromptedVisionTransformer`` with ``num_classes`` holds the
    class->prompt mapping, but the metric losses and the mapping updates live
    in ``DAVPTHook``: without it the run trains as plain VPT, silently (a
    child config's ``custom_hooks`` replaces its base's list, e.g.
    ``custom_hooks = [dict(type='EMAHook')]`` drops the hook). Call after
    the runner is built, before ``runner.train()``.

    Opt-out: ``davpt_hook_optional = True`` in the config (e.g. to train the
    prompts of a DA-VPT checkpoint further without the metric losses).
    """
    if runner.cfg.get('davpt_hook_optional', False):
        return
    backbones = [m for m in runner.model.modules()
                 if isinstance(m, PromptedVisionTransformer)
                 and m.class_mapping is not None]
    if not backbones:
        return
    from .hooks import DAVPTHook
    if any(isinstance(h, DAVPTHook) for h in runner.hooks):
        return
    hooks = [type(h).__name__ for h in runner.hooks]
    raise ValueError(
        f'The backbone is DA-VPT (num_classes={backbones[0].num_classes}: '
        'class->prompt mapping and metric losses) but the runner has no '
        f'DAVPTHook (hooks: {", ".join(hooks)}), so it would train as plain '
        'VPT. Add it to the config, e.g.\n'
        "  custom_hooks = [dict(type='DAVPTHook', background_ids=()), ...]\n"
        '(a child config\'s custom_hooks replaces the whole list of its '
        'base: repeat the DAVPTHook entry of the base config there). For '
        'plain VPT set model.backbone.num_classes=None; to train a DA-VPT '
        'backbone without the hook on purpose, set '
        '`davpt_hook_optional = True` in the config.')


def sync_bn_to_bn(cfg) -> List[str]:
    """Replace every SyncBN norm config in ``cfg.model`` (nested dicts and
    lists, e.g. ``decode_head.norm_cfg``) with plain BN, in place, for
    process groups without GPUs: ``torch.nn.SyncBatchNorm`` raises
    "SyncBatchNorm layers only work with GPU modules" in training. Batch
    statistics are then per process (as with BN on one GPU per process).

    It works on the config because the model is wrapped in DDP as soon as
    the runner is built, too late to swap modules. Returns the dotted paths
    of the replaced configs (also logged as a warning).
    """
    replaced = []

    def visit(node, path):
        if isinstance(node, dict):
            if node.get('type') in SYNC_BN_TYPES:
                node['type'] = 'BN'
                replaced.append(path)
            for k, v in node.items():
                visit(v, f'{path}.{k}')
        elif isinstance(node, (list, tuple)):
            for i, v in enumerate(node):
                visit(v, f'{path}.{i}')

    visit(cfg.model, 'model')
    if replaced:
        print_log(
            'No CUDA device: SyncBN needs GPUs, using BN (per-process batch '
            f'statistics) for {len(replaced)} norm layer config(s): '
            f'{", ".join(replaced)}', logger='current',
            level=logging.WARNING)
    return replaced


def close_process_group() -> None:
    """Wait for every rank, then destroy the default process group, if any.

    Without it, a gloo process can abort at interpreter exit
    (``terminate called without an active exception``, SIGABRT) while its
    communication threads are still alive, failing a finished run."""
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
