# Copyright (c) davpt-seg contributors. Apache-2.0.
"""What ``tools/train.py`` and ``tools/test.py`` do between the command line
and the ``Runner``: the shared arguments, the config edits each flag makes,
and checks and fixes applied when a run is launched (call them yourself if
you build a ``Runner`` another way).
"""
import argparse
import datetime
import gc
import logging
import os
import os.path as osp
from typing import List, Optional

import torch
from mmengine.config import Config, DictAction
from mmengine.logging import print_log

from .dist_failure import announce_rank, name_failed_peers


#: norm layer types that only work on GPUs (torch's and mmcv's SyncBN)
SYNC_BN_TYPES = ('SyncBN', 'MMSyncBN')
#: seconds a collective of CPU processes (gloo) waits for a peer before it
#: fails, unless the config (``env_cfg.dist_cfg.timeout``) or
#: ``--dist-timeout`` says otherwise (torch's gloo default is 30 min)
CPU_DIST_TIMEOUT = 300.0


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


def gloo_threads() -> List[str]:
    """Names of this process's gloo threads (``pt_gloo_runloop``,
    ``gloo_tcp_loop``; from /proc, empty elsewhere)."""
    names = []
    try:
        tasks = os.listdir('/proc/self/task')
    except OSError:
        return names
    for tid in tasks:
        try:
            with open(f'/proc/self/task/{tid}/comm') as f:
                name = f.read().strip()
        except OSError:
            continue
        if 'gloo' in name:
            names.append(name)
    return sorted(names)


def close_process_group() -> None:
    """Wait for every rank, then tear the default process group down for
    good (nothing if there is none). Call it once the Runner is gone (as
    :func:`run_runner` does).

    ``destroy_process_group`` only forgets the group: its gloo threads live
    on while anything still holds it -- a finished Runner's DDP wrapper
    does, until the garbage collector breaks the Runner's reference cycles.
    A gloo thread that drops the last reference to a finished collective's
    tensors while the interpreter finalizes aborts the process
    (``terminate called without an active exception``, SIGABRT: Python
    ends a thread that wants the GIL then, and the thread is inside a C++
    destructor; see docs/distributed.md). Hence: collect the garbage, then
    destroy the group, whose C++ destructor joins the threads. The order
    matters: freed from ``destroy_process_group``, the group's destructor
    runs without the GIL, so a worker thread that needs it can finish; freed
    last by the DDP wrapper's reducer, it joins its threads holding the GIL,
    and the process can hang. A warning says when threads are left
    (something else still holds the group).
    """
    import torch.distributed as dist
    if not (dist.is_available() and dist.is_initialized()):
        return
    dist.barrier()
    gc.collect()
    dist.destroy_process_group()
    left = gloo_threads()
    if left:
        print_log(
            f'the process group is destroyed but {len(left)} gloo threads '
            f'are left ({", ".join(left)}): something still holds the group '
            '(a DDP model, a process group object). The process can abort '
            '(SIGABRT) or hang at exit; drop those references before '
            'close_process_group().', logger='current',
            level=logging.WARNING)


def run_runner(cfg: Config, method: str) -> None:
    """Build the Runner of ``cfg`` (``RUNNERS.build`` when it sets
    ``runner_type``), call its ``method`` (``'train'``, ``'test'``), drop
    it and :func:`close_process_group`.

    In a distributed run, a collective that fails because a rank died or
    hangs raises :class:`~davpt_seg.engine.dist_failure.PeerFailureError`
    naming that rank (see
    :func:`~davpt_seg.engine.dist_failure.name_failed_peers`).
    """
    with name_failed_peers():
        _run(cfg, method)
        close_process_group()


def _run(cfg: Config, method: str) -> None:
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner
    runner = Runner.from_cfg(cfg) if 'runner_type' not in cfg \
        else RUNNERS.build(cfg)
    announce_rank()  # the process group exists once the Runner does
    getattr(runner, method)()
    # returning drops the Runner (and its DDP wrapper, which holds the
    # process group) for close_process_group's garbage collection


# -- command line -------------------------------------------------------------


def parse_launch_args(parser: argparse.ArgumentParser,
                      argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Add the arguments both tools take last, parse ``argv`` and set
    ``LOCAL_RANK`` from ``--local_rank`` unless the environment has one.

    The arguments: ``--cfg-options``, ``--launcher``, ``--dist-timeout``
    and ``--local_rank`` (``torch.distributed.launch`` passes it; torchrun
    sets ``LOCAL_RANK``).
    """
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
    parser.add_argument(
        '--dist-timeout',
        type=float,
        metavar='SECONDS',
        help='timeout of each collective operation of a distributed run '
        '(env_cfg.dist_cfg.timeout): how long a rank waits for a peer that '
        'hangs or is gone before it fails. Default: the config\'s, else '
        f'{CPU_DIST_TIMEOUT:g} s for CPU processes (gloo), torch\'s '
        'default (30 min for gloo, 10 min for NCCL) on GPUs')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def load_config(args: argparse.Namespace) -> Config:
    """``args.config`` with ``--cfg-options``, ``--launcher``, the work
    dir (CLI > config > ./work_dirs/<config name>), as mmseg's tools do,
    and ``--dist-timeout`` (``env_cfg.dist_cfg.timeout``)."""
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    if getattr(args, 'dist_timeout', None) is not None:
        dist_cfg_of(cfg)['timeout'] = args.dist_timeout
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(args.config))[0])
    return cfg


# -- config edits of the flags ------------------------------------------------


def dist_cfg_of(cfg: Config):
    """``cfg.env_cfg.dist_cfg`` (the ``init_process_group`` arguments),
    created if missing, to edit in place (``Config.setdefault`` returns a
    detached copy of what it creates)."""
    if cfg.get('env_cfg') is None:
        cfg.env_cfg = dict()
    if cfg.env_cfg.get('dist_cfg') is None:
        cfg.env_cfg.dist_cfg = dict()
    return cfg.env_cfg.dist_cfg


def enable_amp(cfg: Config) -> None:
    """``--amp``: ``OptimWrapper`` becomes ``AmpOptimWrapper`` with a dynamic
    loss scale (a config that already has AMP is left, with a warning)."""
    optim_wrapper = cfg.optim_wrapper.type
    if optim_wrapper == 'AmpOptimWrapper':
        print_log('AMP training is already enabled in your config.',
                  logger='current', level=logging.WARNING)
        return
    assert optim_wrapper == 'OptimWrapper', (
        '`--amp` is only supported when the optimizer wrapper type is '
        f'`OptimWrapper` but got {optim_wrapper}.')
    cfg.optim_wrapper.type = 'AmpOptimWrapper'
    cfg.optim_wrapper.loss_scale = 'dynamic'


def enable_gradient_checkpointing(cfg: Config) -> None:
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


def set_resume(cfg: Config, resume: Optional[str]) -> None:
    """``--resume [CKPT]``: ``'auto'`` resumes from the latest checkpoint in
    the work dir, a path from that file, ``None`` changes nothing."""
    if resume is None:
        return
    cfg.resume = True
    if resume != 'auto':
        cfg.load_from = resume


def enable_visualization(cfg: Config, show: bool, show_dir: Optional[str],
                         wait_time: float) -> None:
    """``--show`` / ``--show-dir``: turn on drawing in the visualization
    hook. With ``--show-dir`` the visualizer saves under that directory and
    every image is drawn (``interval=1``) unless the config sets an
    interval itself (mmseg's ``SegVisualizationHook`` defaults to 50, which
    draws nothing on a split of fewer than 50 images)."""
    if 'visualization' not in cfg.default_hooks:
        raise RuntimeError(
            'VisualizationHook must be included in default_hooks. Refer to '
            'usage "visualization=dict(type=\'VisualizationHook\')"')
    visualization_hook = cfg.default_hooks['visualization']
    visualization_hook['draw'] = True
    if show:
        visualization_hook['show'] = True
        visualization_hook['wait_time'] = wait_time
    if show_dir:
        cfg.visualizer['save_dir'] = show_dir
        interval = visualization_hook.setdefault('interval', 1)
        if interval != 1:
            print_log(
                f'--show-dir: the config draws every {interval}th test '
                'image (default_hooks.visualization.interval); '
                '--cfg-options default_hooks.visualization.interval=1 '
                'draws all', logger='current', level=logging.WARNING)


def enable_tta(cfg: Config, config: str) -> None:
    """``--tta``: test with the config's ``tta_pipeline`` and ``tta_model``
    (wrapping ``cfg.model``); ``SystemExit`` if ``config`` has none."""
    if 'tta_pipeline' not in cfg or 'tta_model' not in cfg:
        raise SystemExit(f'--tta: {config} defines no tta_pipeline '
                         '/ tta_model')
    cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline
    cfg.tta_model.module = cfg.model
    cfg.model = cfg.tta_model


def keep_predictions(cfg: Config, out: str) -> None:
    """``--out DIR``: the test evaluator writes its predictions to ``out``
    (created here)."""
    cfg.test_evaluator['output_dir'] = out
    cfg.test_evaluator['keep_results'] = True
    # mmseg's IoUMetric creates it on rank 0 only: in a distributed test
    # the other ranks could write their first prediction before that.
    os.makedirs(out, exist_ok=True)


def add_checkpoint_check(cfg: Config) -> None:
    """Checkpoints that do not fit the model are an error (mmengine loads
    with ``strict=False`` and only warns): see CheckpointShapeCheckHook."""
    hooks = list(cfg.get('custom_hooks') or [])
    if not any(h.get('type') == 'CheckpointShapeCheckHook' for h in hooks):
        hooks.append(dict(type='CheckpointShapeCheckHook'))
    cfg.custom_hooks = hooks


def use_gloo_without_gpus(cfg: Config) -> None:
    """Distributed runs on a machine without CUDA: CPU processes with gloo.

    Without CUDA (``torch.cuda.is_available()`` is False, or
    ``CUDA_VISIBLE_DEVICES=-1``) and a launcher other than ``none``:

    * the backend is switched to ``gloo`` (nccl needs GPUs), with a
      collective timeout of :data:`CPU_DIST_TIMEOUT` seconds unless the
      config sets ``env_cfg.dist_cfg.timeout``;
    * for ``--launcher pytorch`` (``tools/dist_*.sh``, torchrun) the process
      group is initialised here from torchrun's environment, because
      mmengine's ``init_dist`` calls ``torch.cuda.set_device`` first, which
      fails without a GPU (the Runner then finds the group initialised);
    * the model is wrapped in ``MMDistributedDataParallel`` with
      ``device_ids=None`` (DDP refuses device ids for a CPU module) and
      mmengine's defaults ``broadcast_buffers=False``,
      ``find_unused_parameters=False`` unless the config sets them;
    * SyncBN norm configs become BN (:func:`sync_bn_to_bn`, logged): SyncBN
      only works on GPUs.

    ``--launcher slurm`` needs CUDA (mmengine sets the device); ``mpi`` works.
    """
    if cfg.launcher == 'none' or torch.cuda.is_available():
        return
    dist_cfg = dist_cfg_of(cfg)
    if dist_cfg.get('backend', 'nccl') != 'gloo':
        print_log('No CUDA device: using the gloo backend for the '
                  'distributed run', logger='current', level=logging.WARNING)
        dist_cfg['backend'] = 'gloo'
    dist_cfg.setdefault('timeout', CPU_DIST_TIMEOUT)
    if cfg.launcher == 'slurm':
        raise SystemExit('--launcher slurm needs CUDA devices; for CPU '
                         'processes use tools/dist_train.sh / torchrun '
                         '(--launcher pytorch)')
    sync_bn_to_bn(cfg)
    wrapper = dict(cfg.get('model_wrapper_cfg') or {})
    wrapper.setdefault('type', 'MMDistributedDataParallel')
    if wrapper['type'] in ('MMDistributedDataParallel',
                           'DistributedDataParallel'):
        wrapper['device_ids'] = None
        wrapper.setdefault('broadcast_buffers', False)
        wrapper.setdefault('find_unused_parameters',
                           cfg.get('find_unused_parameters', False))
    cfg.model_wrapper_cfg = wrapper
    if cfg.launcher == 'pytorch':
        _init_gloo_process_group(dist_cfg)


def _init_gloo_process_group(dist_cfg: dict) -> None:
    """Initialise the default gloo process group from torchrun's
    environment and ``dist_cfg`` (``timeout`` in seconds), unless it is."""
    import torch.distributed as torch_dist
    if torch_dist.is_initialized():
        return
    kwargs = {k: v for k, v in dist_cfg.items() if k != 'backend'}
    if kwargs.get('timeout') is not None:
        kwargs['timeout'] = datetime.timedelta(seconds=kwargs['timeout'])
    torch_dist.init_process_group(backend='gloo', **kwargs)
