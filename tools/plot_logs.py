# Copyright (c) davpt-seg contributors. Apache-2.0.
"""Training curves (losses, DA-VPT losses, mIoU) from mmengine logs.

    python tools/plot_logs.py WORK_DIR_OR_JSON [...] --out FILE.png \
        [--keys loss decode.loss_ce loss_davpt_token loss_davpt_cls mIoU] \
        [--labels NAME ...] [--smooth N]

Each argument is a work dir (all its ``*/vis_data/scalars.json``: one per
run, resumed runs merged by iteration, the later run winning) or one
``scalars.json``; several arguments are drawn as separate curves (e.g.
VPT-Deep vs DA-VPT). One subplot per key. mmseg's
``tools/analysis_tools/analyze_logs.py`` also reads these files and any key,
but needs seaborn, draws each resumed run's file as a separate curve and
drops a training point that shares its step with a validation line.
"""
import argparse
import os
import os.path as osp

from davpt_seg.analysis.logs import (find_scalar_files,
                                     load_scalars, plot_curves)

DEFAULT_KEYS = ['loss', 'decode.loss_ce', 'loss_davpt_token',
                'loss_davpt_cls']


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Plot mmengine scalar logs')
    parser.add_argument('logs', nargs='+', metavar='WORK_DIR_OR_JSON')
    parser.add_argument('--out', required=True, help='output PNG')
    parser.add_argument('--keys', nargs='+', default=DEFAULT_KEYS)
    parser.add_argument('--labels', nargs='+', default=None,
                        help='one curve label per log (default: the path)')
    parser.add_argument('--smooth', type=int, default=1,
                        help='moving average over N logged points')
    parser.add_argument('--title', default='')
    args = parser.parse_args(argv)
    if args.labels is not None and len(args.labels) != len(args.logs):
        parser.error(f'{len(args.labels)} labels for {len(args.logs)} logs')
    return args


def main(argv=None):
    args = parse_args(argv)
    labels = args.labels or [osp.normpath(p) for p in args.logs]
    runs = {}
    for label, path in zip(labels, args.logs):
        files = find_scalar_files(path)
        runs[label] = load_scalars(files)
        print(f'{label}: {len(files)} log file(s)')
    os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
    missing = plot_curves(runs, args.keys, args.out, args.smooth, args.title)
    if missing:
        print(f'not in any log (skipped): {", ".join(missing)}')
    print(f'-> {args.out}')


if __name__ == '__main__':
    main()
