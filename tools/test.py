# Copyright (c) davpt-seg contributors. Apache-2.0.
"""Test (and evaluate) a segmentor (mmseg's tools/test.py, plus davpt_seg).

    python tools/test.py CONFIG CHECKPOINT [--tta] [--work-dir DIR]
        [--out DIR] [--show] [--show-dir DIR] [--cfg-options k=v ...]
        [--launcher none|pytorch|slurm|mpi] [--dist-timeout SECONDS]

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
import os.path as osp

from mmengine.logging import print_log

import davpt_seg.compat
from davpt_seg.engine.dist_failure import record_error
from davpt_seg.engine.launch import (add_checkpoint_check, enable_tta,
                                     enable_visualization, keep_predictions,
                                     load_config, parse_launch_args,
                                     run_runner, use_gloo_without_gpus)


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
        '--tta', action='store_true', help='multi-scale + flip test')
    return parse_launch_args(parser, argv)


def main(argv=None):
    args = parse_args(argv)
    davpt_seg.compat.install()
    cfg = load_config(args)
    if args.show or args.show_dir:
        enable_visualization(cfg, args.show, args.show_dir, args.wait_time)
    if args.tta:
        enable_tta(cfg, args.config)
    if args.out is not None:
        keep_predictions(cfg, args.out)
    if not osp.isfile(args.checkpoint):
        raise SystemExit(f'checkpoint not found: {args.checkpoint}')
    cfg.load_from = args.checkpoint
    use_gloo_without_gpus(cfg)
    add_checkpoint_check(cfg)
    run_runner(cfg, 'test')
    if args.show_dir:
        print_log('painted images in '
                  f"{osp.join(args.show_dir, 'vis_data', 'vis_image')}",
                  logger='current')


if __name__ == '__main__':
    record_error(main)()  # torchrun's failure summary quotes the error
