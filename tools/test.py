# Copyright (c) davpt-seg contributors. Apache-2.0.
"""Test (and evaluate) a segmentor (mmseg's tools/test.py, plus davpt_seg).

    python tools/test.py CONFIG CHECKPOINT [--tta] [--work-dir DIR]
        [--out DIR] [--show] [--show-dir DIR] [--cfg-options k=v ...]
        [--launcher none|pytorch|slurm|mpi]

``--tta`` evaluates multi-scale + flip with the config's ``tta_pipeline``
(mmseg's ratios 0.5-1.75 for the dataset configs).

``--show-dir DIR`` paints every test image (unless the config sets
``default_hooks.visualization.interval``; mmseg's hook defaults to every
50th) with mmseg's ``SegVisualizationHook``: the ground truth (where the
split has it) beside the prediction, written by the visualizer's
``LocalVisBackend`` as ``DIR/vis_data/vis_image/test_<image file>_0.png``
(``DIR/vis_data`` also gets the run's config and a JSON of the metrics).
"""
import argparse
import logging
import os
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from mmengine.config import DictAction  # noqa: E402
from mmengine.logging import print_log  # noqa: E402
from mmengine.runner import Runner  # noqa: E402

import davpt_seg  # noqa: F401,E402  (registration, safe checkpoint loading)
from davpt_seg.engine.launch import close_process_group  # noqa: E402
from tools.train import (add_checkpoint_check, load_config,  # noqa: E402
                         use_gloo_without_gpus)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='MMSeg test (and eval) a model')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument(
        '--work-dir',
        help='if specified, the evaluation metric results will be dumped '
        'into the directory as json')
    parser.add_argument(
        '--out',
        type=str,
        help='the directory to save the output prediction for offline '
        'evaluation')
    parser.add_argument(
        '--show', action='store_true', help='show prediction results')
    parser.add_argument(
        '--show-dir',
        help='paint the ground truth and prediction of every test image '
        '(unless the config sets default_hooks.visualization.interval) into '
        'SHOW_DIR/vis_data/vis_image/test_<image file>_0.png')
    parser.add_argument(
        '--wait-time', type=float, default=2, help='the interval of show (s)')
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
        '--tta', action='store_true', help='multi-scale + flip test')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def trigger_visualization_hook(cfg, args):
    """``--show`` / ``--show-dir``: turn on drawing in the visualization
    hook. With ``--show-dir`` the visualizer saves under that directory and
    every image is drawn (``interval=1``) unless the config sets an
    interval itself (mmseg's ``SegVisualizationHook`` defaults to 50, which
    draws nothing on a split of fewer than 50 images)."""
    default_hooks = cfg.default_hooks
    if 'visualization' in default_hooks:
        visualization_hook = default_hooks['visualization']
        visualization_hook['draw'] = True
        if args.show:
            visualization_hook['show'] = True
            visualization_hook['wait_time'] = args.wait_time
        if args.show_dir:
            visualizer = cfg.visualizer
            visualizer['save_dir'] = args.show_dir
            interval = visualization_hook.setdefault('interval', 1)
            if interval != 1:
                print_log(
                    f'--show-dir: the config draws every {interval}th test '
                    'image (default_hooks.visualization.interval); '
                    '--cfg-options default_hooks.visualization.interval=1 '
                    'draws all', logger='current', level=logging.WARNING)
    else:
        raise RuntimeError(
            'VisualizationHook must be included in default_hooks. Refer to '
            'usage "visualization=dict(type=\'VisualizationHook\')"')
    return cfg


def main(argv=None):
    args = parse_args(argv)
    cfg = load_config(args)

    if args.show or args.show_dir:
        cfg = trigger_visualization_hook(cfg, args)

    if args.tta:
        if 'tta_pipeline' not in cfg or 'tta_model' not in cfg:
            raise SystemExit(f'--tta: {args.config} defines no tta_pipeline '
                             '/ tta_model')
        cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline
        cfg.tta_model.module = cfg.model
        cfg.model = cfg.tta_model

    if args.out is not None:
        cfg.test_evaluator['output_dir'] = args.out
        cfg.test_evaluator['keep_results'] = True
        # mmseg's IoUMetric creates it on rank 0 only: in a distributed test
        # the other ranks could write their first prediction before that.
        os.makedirs(args.out, exist_ok=True)

    if not osp.isfile(args.checkpoint):
        raise SystemExit(f'checkpoint not found: {args.checkpoint}')
    cfg.load_from = args.checkpoint
    use_gloo_without_gpus(cfg)
    add_checkpoint_check(cfg)
    runner = Runner.from_cfg(cfg)
    runner.test()
    close_process_group()
    if args.show_dir:
        print_log('painted images in '
                  f"{osp.join(args.show_dir, 'vis_data', 'vis_image')}",
                  logger='current')


if __name__ == '__main__':
    main()
