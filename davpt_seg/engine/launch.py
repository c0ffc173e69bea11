# Copyright (c) davpt-seg contributors. Apache-2.0.
"""Checks and config fixes applied when a run is launched (``tools/train.py``,
``tools/test.py``; call them yourself if you build a ``Runner`` another way).
"""
import logging
from typing import List

from mmengine.logging import print_log


#: norm layer types that only work on GPUs (torch's and mmcv's SyncBN)
SYNC_BN_TYPES = ('SyncBN', 'MMSyncBN')


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
