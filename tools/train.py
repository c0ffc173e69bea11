# Copyright (c) davpt-seg contributors. Apache-2.0.
"""Train a segmentor (mmseg's tools/train.py, plus davpt_seg).

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]] [--amp]
        [--with-cp] [--cfg-options k=v ...] [--launcher none|pytorch|slurm|mpi]
"""
import argparse
import logging
import os
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

import torch  # noqa: E402
from mmengine.config import Config, DictAction  # noqa: E402
from mmengine.logging import print_log  # noqa: E402
from mmengine.registry import RUNNERS  # noqa: E402
from mmengine.runner import Runner  # noqa: E402

import davpt_seg  # noqa: F401,E402  (registration, safe checkpoint loading)
from davpt_seg.engine.launch import (  # noqa: E402
    close_process_group, sync_bn_to_bn)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Train a segmentor')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument(
        '--resume',
        nargs='?',
        const='auto',
        default=None,
        help='resume from CKPT, or (no value) from the latest checkpoint in '
        'the work dir')
    parser.add_argument(
        '--amp',
        action='store_true',
        default=False,
        help='enable automatic-mixed-precision training (GPU)')
    parser.add_argument(
        '--with-cp',
        action='store_true',
        default=False,
        help='gradient checkpointing to save memory: the backbone\'s '
        'per-layer with_cp and the heads\' (CheckpointEncoderDecoder)')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override settings in the config, key=value (xxx=yyy format)')
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='job launcher')
    # torch.distributed.launch passes --local-rank; torchrun sets LOCAL_RANK
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def use_gloo_without_gpus(cfg):
    """Distributed runs on a machine without CUDA: CPU processes with gloo.

    Without CUDA (``torch.cuda.is_available()`` is False, or
    ``CUDA_VISIBLE_DEVICES=-1``) and a launcher other than ``none``:

    * the backend is switched to ``gloo`` (nccl needs GPUs);
    * for ``--launcher pytorch`` (``tools/dist_*.sh``, torchrun) the process
      group is initialised here from torchrun's environment, because
      mmengine's ``init_dist`` calls ``torch.cuda.set_device`` first, which
      fails without a GPU (the Runner then finds the group initialised);
    * the model is wrapped in ``MMDistributedDataParallel`` with
      ``device_ids=None`` (DDP refuses device ids for a CPU module) and
      mmengine's defaults ``broadcast_buffers=False``,
      ``find_unused_parameters=False`` unless the config sets them;
    * SyncBN norm configs become BN (``sync_bn_to_bn``, logged): SyncBN
      only works on GPUs.

    ``--launcher slurm`` needs CUDA (mmengine sets the device); ``mpi`` works.
    """
    if cfg.launcher == 'none' or torch.cuda.is_available():
        return
    dist_cfg = cfg.setdefault('env_cfg', {}).setdefault('dist_cfg', {})
    if dist_cfg.get('backend', 'nccl') != 'gloo':
        print_log('No CUDA device: using the gloo backend for the '
                  'distributed run', logger='current', level=logging.WARNING)
        dist_cfg['backend'] = 'gloo'
    if cfg.launcher == 'slurm':
        raise SystemExit('--launcher slurm needs CUDA devices; for CPU '
                         'processes use tools/dist_train.sh / torchrun '
                         '(--launcher pytorch)')
    sync_bn_to_bn(cfg)
    wrapper = cfg.get('model_wrapper_cfg') or {}
    wrapper = dict(wrapper)
    wrapper.setdefault('type', 'MMDistributedDataParallel')
    if wrapper['type'] in ('MMDistributedDataParallel',
                           'DistributedDataParallel'):
        wrapper['device_ids'] = None
        wrapper.setdefault('broadcast_buffers', False)
        wrapper.setdefault('find_unused_parameters',
                           cfg.get('find_unused_parameters', False))
    cfg.model_wrapper_cfg = wrapper
    if cfg.launcher == 'pytorch':
        import datetime

        import torch.distributed as torch_dist
        if not torch_dist.is_initialized():
            kwargs = {k: v for k, v in dist_cfg.items() if k != 'backend'}
            if kwargs.get('timeout') is not None:
                kwargs['timeout'] = datetime.timedelta(
                    seconds=kwargs['timeout'])
            torch_dist.init_process_group(backend='gloo', **kwargs)


def add_checkpoint_check(cfg):
    """Checkpoints that do not fit the model are an error (mmengine loads
    with ``strict=False`` and only warns): see CheckpointShapeCheckHook."""
    hooks = list(cfg.get('custom_hooks') or [])
    if not any(h.get('type') == 'CheckpointShapeCheckHook' for h in hooks):
        hooks.append(dict(type='CheckpointShapeCheckHook'))
    cfg.custom_hooks = hooks


def load_config(args) -> Config:
    """``args.config`` with ``--cfg-options``, ``--launcher`` and the work
    dir (CLI > config > ./work_dirs/<config name>), as mmseg's tools do."""
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(args.config))[0])
    return cfg


def enable_gradient_checkpointing(cfg):
    """``--with-cp``: recompute the backbone's layers (its ``with_cp``) and
    the heads' losses (``CheckpointEncoderDecoder``) in the backward pass.
    Checkpoint keys do not change, so runs with and without it share
    checkpoints."""
    model = cfg.model
    if model.get('type') not in ('EncoderDecoder', 'CheckpointEncoderDecoder'):
        raise SystemExit(
            '--with-cp supports EncoderDecoder segmentors (it switches them '
            f"to CheckpointEncoderDecoder), not {model.get('type')!r}")
    model.type = 'CheckpointEncoderDecoder'
    model.checkpoint_heads = True
    model.backbone.with_cp = True


def main(argv=None):
    args = parse_args(argv)
    cfg = load_config(args)

    if args.amp:
        optim_wrapper = cfg.optim_wrapper.type
        if optim_wrapper == 'AmpOptimWrapper':
            print_log('AMP training is already enabled in your config.',
                      logger='current', level=logging.WARNING)
        else:
            assert optim_wrapper == 'OptimWrapper', (
                '`--amp` is only supported when the optimizer wrapper type is '
                f'`OptimWrapper` but got {optim_wrapper}.')
            cfg.optim_wrapper.type = 'AmpOptimWrapper'
            cfg.optim_wrapper.loss_scale = 'dynamic'

    if args.with_cp:
        enable_gradient_checkpointing(cfg)

    if args.resume == 'auto':
        cfg.resume = True
    elif args.resume is not None:
        cfg.resume = True
        cfg.load_from = args.resume

    use_gloo_without_gpus(cfg)
    add_checkpoint_check(cfg)
    runner = Runner.from_cfg(cfg) if 'runner_type' not in cfg \
        else RUNNERS.build(cfg)
    runner.train()
    close_process_group()


if __name__ == '__main__':
    main()
