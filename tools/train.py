# Copyright (c) davpt-seg contributors. Apache-2.0.
"""Train a segmentor (mmseg's tools/train.py, plus davpt_seg).

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]] [--amp]
        [--with-cp] [--cfg-options k=v ...] [--launcher none|pytorch|slurm|mpi]
        [--dist-timeout SECONDS]
"""
import argparse

import davpt_seg.compat
from davpt_seg.engine.dist_failure import record_error
from davpt_seg.engine.launch import (add_checkpoint_check, enable_amp,
                                     enable_gradient_checkpointing,
                                     load_config, parse_launch_args,
                                     run_runner, set_resume,
                                     use_gloo_without_gpus)


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
    return parse_launch_args(parser, argv)


def main(argv=None):
    args = parse_args(argv)
    davpt_seg.compat.install()
    cfg = load_config(args)
    if args.amp:
        enable_amp(cfg)
    if args.with_cp:
        enable_gradient_checkpointing(cfg)
    set_resume(cfg, args.resume)
    use_gloo_without_gpus(cfg)
    add_checkpoint_check(cfg)
    run_runner(cfg, 'train')


if __name__ == '__main__':
    record_error(main)()  # torchrun's failure summary quotes the error
