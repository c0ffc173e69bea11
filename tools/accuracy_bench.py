# Copyright (c) davpt-seg contributors. Apache-2.0.
"""Real-data accuracy bench: DA-VPT and its baselines on CamVid.

    python tools/accuracy_bench.py --data-root ../shared/data/camvid \\
        --weights ../shared/data/weights/dinov2_vits14_imgfocus.pth \\
        [--variants heads,vpt,davpt,davptplus,full] [--seeds 0,1,2] \\
        [--preset cpu|gpu|smoke] [--iters N] [--eval-split val|test] \\
        [--jobs N] [--threads T] [--work-dir DIR] \\
        [--eval-split select --lrs 0.003,0.01,0.03 | --lr-from RESULTS.json..]

Each variant x seed is trained with ``tools/train.py`` on the shipped
``configs/camvid`` config with the preset's data, resolution and schedule
(written to ``WORK_DIR/configs``), its last checkpoint
evaluated with ``tools/test.py`` on ``--eval-split``; the report is
``WORK_DIR/results.{json,md,png}``. Resumable: a finished run is not rerun, a
killed one continues from its last checkpoint. ``--jobs N`` runs N of them
side by side (one GPU, or the CPU), each with ``OMP_NUM_THREADS`` /
``MKL_NUM_THREADS`` = ``--threads`` (default: cores / N) and at most
threads - 1 data workers (the preset's number at most); the report records
the setting.

The selection protocol (``configs/camvid/splits/README.md``): ``--eval-split
select`` trains on train minus the held-out sequence and tests on it;
``--lrs`` makes each variant one row per base learning rate
(``variant@lrX``); ``--lr-from`` takes each variant's best learning rate
(highest mean mIoU) from such runs' ``results.json`` files, which must have
been evaluated on ``select``; a lever row (``vpt_gated``, ``davpt_gated``,
``davpt_patchmap``, ``davpt_gated_patchmap``) without rows of its own takes
the rate chosen for the variant it modifies. ``--preset smoke`` without
``--data-root`` generates CamVid-layout toy data and uses a tiny random ViT.
"""
import argparse
import json
import os
import os.path as osp
import platform
import subprocess
import sys
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor

import torch

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if ROOT not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, ROOT)

from davpt_seg.bench import (EVAL_SPLITS, PRESETS, VARIANTS,  # noqa: E402
                             chosen_lrs, preset_config, selection_scores,
                             format_markdown, latest_valid_checkpoint,
                             median_step_time, read_mapping_log,
                             read_prompt_gate,
                             plot_results, read_test_metrics,
                             read_train_log, summarise)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--data-root', help='CamVid in the SegNet layout '
                        '(train/, trainannot/, val/, valannot/[, test/])')
    parser.add_argument('--weights', help='pretrained DINOv2 ViT-S/14 '
                        '(timm or official names; converted once)')
    parser.add_argument('--variants', default=','.join(VARIANTS),
                        help='comma-separated; also davpt_kpp, davpt_g4, '
                        'vpt_gated, davpt_gated, davpt_patchmap, '
                        'davpt_gated_patchmap (default: %(default)s)')
    parser.add_argument('--seeds', default='0,1,2',
                        help='comma-separated (default: %(default)s)')
    parser.add_argument('--preset', default='cpu', choices=sorted(PRESETS))
    parser.add_argument('--iters', type=int,
                        help='training iterations (default: the preset\'s)')
    parser.add_argument('--eval-split', default='val', choices=EVAL_SPLITS,
                        help="'select': train minus the held-out sequence, "
                        'tested on it (for choosing settings)')
    parser.add_argument('--lrs', help='comma-separated base learning rates: '
                        'one row per variant and value')
    parser.add_argument('--lr-from', metavar='RESULTS_JSON', nargs='+',
                        help='each variant\'s learning rate: its best one '
                        'in these --eval-split select runs (a lever row '
                        'without rows takes its base variant\'s)')
    parser.add_argument('--jobs', type=int, default=1,
                        help='runs side by side (default: %(default)s)')
    parser.add_argument('--threads', type=int,
                        help='OMP/MKL threads of each run (default: cores '
                        '/ jobs)')
    parser.add_argument('--work-dir', default='work_dirs/accuracy_bench')
    parser.add_argument('--report-only', action='store_true',
                        help='write the report from the finished runs only '
                        '(train and test nothing)')
    args = parser.parse_args(argv)
    args.variants = [v for v in args.variants.split(',') if v]
    args.seeds = [int(s) for s in args.seeds.split(',') if s != '']
    if not args.variants or not args.seeds:
        parser.error('--variants and --seeds must not be empty')
    if args.iters is not None and args.iters < 1:
        parser.error('--iters must be >= 1')
    if args.jobs < 1 or (args.threads is not None and args.threads < 1):
        parser.error('--jobs and --threads must be >= 1')
    if args.lrs and args.lr_from:
        parser.error('--lrs and --lr-from exclude each other')
    args.lrs = [float(x) for x in args.lrs.split(',')] if args.lrs else None
    return args


def job_resources(args, preset) -> dict:
    """Threads and data workers of each run: ``--threads`` (default cores
    / jobs) and at most threads - 1 workers (the preset's at most; 0 stays
    0)."""
    threads = args.threads or max(1, (os.cpu_count() or 1) // args.jobs)
    workers = min(preset.num_workers, max(1, threads - 1))
    return dict(jobs=args.jobs, threads_per_job=threads,
                workers_per_job=workers)


def prepare_data(args) -> str:
    """The data root: ``--data-root`` (checked), or generated toy data for
    the smoke preset."""
    if args.data_root is None:
        if args.preset != 'smoke':
            sys.exit('error: --data-root is required (CamVid in the SegNet '
                     'layout, e.g. ../shared/data/camvid)')
        from davpt_seg.datasets.camvid_like import generate_camvid_like
        root = osp.join(args.work_dir, 'smoke_data')
        generate_camvid_like(root, dict(train=8, val=4, test=4), img_size=64)
        return root
    folder = 'train' if args.eval_split == 'select' else args.eval_split
    needed = ['train', 'trainannot', folder, folder + 'annot']
    missing = [d for d in needed if not osp.isdir(osp.join(args.data_root, d))]
    if missing:
        sys.exit(f'error: {args.data_root} lacks {", ".join(missing)} '
                 '(expected the SegNet CamVid layout)')
    return args.data_root


def prepare_weights(args):
    """Converted weights in ``WORK_DIR/weights`` (None: random ViT, smoke
    preset only)."""
    if args.weights is None:
        if args.preset != 'smoke':
            sys.exit('error: --weights is required (a DINOv2 ViT-S/14 '
                     'checkpoint, e.g. ../shared/data/weights/'
                     'dinov2_vits14_imgfocus.pth)')
        return None
    if not osp.isfile(args.weights):
        sys.exit(f'error: --weights {args.weights}: no such file')
    dst = osp.join(args.work_dir, 'weights',
                   osp.splitext(osp.basename(args.weights))[0] + '_mmseg.pth')
    if not osp.isfile(dst):
        from davpt_seg.weights.convert import convert_file
        result = convert_file(args.weights, source='auto')
        os.makedirs(osp.dirname(dst), exist_ok=True)
        torch.save(dict(result.state_dict), dst + '.tmp')
        os.replace(dst + '.tmp', dst)
        print(f'converted {args.weights} -> {dst}', flush=True)
    return dst


def run_tool(args, tool: str, cmd_args, log_path: str) -> None:
    """Run ``tools/<tool>`` in a subprocess (its output to ``log_path``)
    with the run's thread count."""
    env = dict(os.environ)
    env['OMP_NUM_THREADS'] = env['MKL_NUM_THREADS'] = str(args.threads)
    cmd = [sys.executable, osp.join(ROOT, 'tools', tool)] + cmd_args
    with open(log_path, 'a', encoding='utf-8') as log:
        code = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT,
                               env=env, cwd=ROOT)
    if code != 0:
        sys.exit(f'error: {" ".join(cmd)} failed ({code}); see {log_path}')


def count_params(config: str):
    """(trainable, total) parameters of the config's model, as built."""
    from mmengine.config import Config
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules

    from davpt_seg.engine.hooks.param_report_hook import parameter_report
    register_all_modules(init_default_scope=True)
    counts = parameter_report(MODELS.build(Config.fromfile(config).model))
    return counts['trainable'], counts['total']


def one_run(args, row: tuple, seed: int, config: str, iters: int) -> dict:
    """Train (or resume) and test one row (name, variant, lr) x seed;
    returns its record, cached in ``RUN_DIR/result.json``."""
    name, base, lr = row
    variant = name  # the report's row label
    run_dir = osp.join(args.work_dir, 'runs', f'{name}_seed{seed}')
    result_file = osp.join(run_dir, 'result.json')
    if osp.isfile(result_file):
        print(f'{variant} seed {seed}: done before, skipped', flush=True)
        with open(result_file, encoding='utf-8') as f:
            return json.load(f)
    os.makedirs(run_dir, exist_ok=True)
    log = osp.join(run_dir, 'bench.log')
    ckpt = osp.join(run_dir, f'iter_{iters}.pth')
    start = time.time()
    if not zipfile.is_zipfile(ckpt):  # missing or truncated
        # mmengine's own auto-resume trusts ``last_checkpoint``, which names
        # a truncated file if the run was killed while saving.
        resume = latest_valid_checkpoint(run_dir)
        print(f'{variant} seed {seed}: training' +
              (f' (resuming {osp.basename(resume)})' if resume else ''),
              flush=True)
        run_tool(args, 'train.py', [
            config, '--work-dir', run_dir, '--cfg-options',
            f'randomness.seed={seed}'] + (['--resume', resume] if resume
                                           else []), log)
    run_tool(args, 'test.py', [config, ckpt, '--work-dir',
                               osp.join(run_dir, 'test')], log)
    metrics = read_test_metrics(osp.join(run_dir, 'test'))
    entries = read_train_log(run_dir)
    trainable, total = count_params(config)
    record = dict(
        variant=variant, base_variant=base, lr=lr, seed=seed, iters=iters,
        mIoU=metrics['mIoU'],
        aAcc=metrics['aAcc'], mAcc=metrics['mAcc'],
        class_iou={k[4:]: v for k, v in metrics.items()
                   if k.startswith('IoU.')},
        trainable_params=trainable, total_params=total,
        step_time=median_step_time(entries),
        loss_curve={str(e['step']): e['loss'] for e in entries},
        mapping_updates=read_mapping_log(run_dir),
        prompt_gate=read_prompt_gate(ckpt),
        wall_time_s=round(time.time() - start, 1))
    with open(result_file + '.tmp', 'w', encoding='utf-8') as f:
        json.dump(record, f, indent=1)
    os.replace(result_file + '.tmp', result_file)
    print(f"{variant} seed {seed}: mIoU {record['mIoU']:.2f} "
          f"({record['wall_time_s']:.0f} s)", flush=True)
    return record


def main(argv=None) -> int:
    args = parse_args(argv)
    preset = PRESETS[args.preset]
    iters = args.iters or preset.iters
    os.makedirs(osp.join(args.work_dir, 'configs'), exist_ok=True)
    data_root = prepare_data(args)
    weights = prepare_weights(args)
    resources = job_resources(args, preset)
    args.threads = resources['threads_per_job']
    chosen, inherited, grid = {}, {}, None
    if args.lr_from:
        try:
            scores = selection_scores(args.lr_from)
            chosen, inherited = chosen_lrs(scores, args.variants)
        except ValueError as err:
            sys.exit(f'error: --lr-from: {err}')
        grid = {v: {f'{lr:g}': m for lr, m in sorted(row.items())}
                for v, row in scores.items()}
    rows = []  # (name, variant, base lr)
    for variant in args.variants:
        if args.lrs:
            rows += [(f'{variant}@lr{lr:g}', variant, lr) for lr in args.lrs]
        else:
            rows.append((variant, variant, chosen.get(variant)))
    split_files = smoke_split_files(args, data_root) \
        if args.preset == 'smoke' and args.eval_split == 'select' else None
    configs = {}
    for name, variant, lr in rows:
        configs[name] = osp.join(args.work_dir, 'configs', f'{name}.py')
        preset_config(variant, preset, data_root, weights, args.eval_split,
                      iters, resources['workers_per_job'], lr, split_files
                      ).dump(configs[name])
    start = time.time()
    todo = []
    for seed in args.seeds:  # seed-major: every variant of a seed first
        for row in rows:
            if args.report_only and not osp.isfile(osp.join(
                    args.work_dir, 'runs', f'{row[0]}_seed{seed}',
                    'result.json')):
                print(f'{row[0]} seed {seed}: not finished, left out')
                continue
            todo.append((row, seed))
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        runs = list(pool.map(
            lambda rs: one_run(args, rs[0], rs[1], configs[rs[0][0]], iters),
            todo))
    if not runs:
        sys.exit('error: no finished run to report')
    results = dict(
        runs=runs, summary=summarise(runs),
        classes=list(_class_names()),
        settings=dict(
            preset=args.preset, iters=iters, eval_split=args.eval_split,
            batch_size=preset.batch_size, crop=list(preset.crop),
            scale=list(preset.scale), data_root=osp.abspath(data_root),
            weights=args.weights, variants=args.variants, seeds=args.seeds,
            lr_grid=args.lrs, lr_chosen=chosen or None,
            lr_chosen_from=args.lr_from, lr_inherited=inherited or None,
            lr_grid_scores=grid,
            **resources,
            command=' '.join([osp.relpath(__file__, ROOT)] +
                             (argv if argv is not None else sys.argv[1:]))),
        machine=dict(
            platform=platform.platform(), processor=platform.processor(),
            cpu_count=os.cpu_count(), torch=torch.__version__,
            cuda=torch.cuda.is_available(),
            threads=args.threads),
        time=dict(this_invocation_s=round(time.time() - start, 1),
                  sum_of_run_wall_times_s=round(
                      sum(r['wall_time_s'] for r in runs), 1)))
    out = osp.join(args.work_dir, 'results')
    with open(out + '.json', 'w', encoding='utf-8') as f:
        json.dump(results, f, indent=1)
    with open(out + '.md', 'w', encoding='utf-8') as f:
        f.write(format_markdown(results))
    plot_results(results, out + '.png')
    print(format_markdown(results))
    print(f'wrote {out}.json, {out}.md, {out}.png')
    return 0


def smoke_split_files(args, data_root: str) -> dict:
    """The smoke data's selection split (its first quarter of train),
    written next to the generated data."""
    names = sorted(osp.splitext(f)[0] for f in os.listdir(
        osp.join(data_root, 'train')))
    cut = max(1, len(names) // 4)
    files = {}
    for key, part in (('select', names[:cut]), ('train', names[cut:])):
        files[key] = osp.join(data_root, f'{key}_split.txt')
        with open(files[key], 'w', encoding='utf-8') as f:
            f.write('\n'.join(part) + '\n')
    return files


def _class_names():
    from davpt_seg.datasets import CamVidDataset
    return CamVidDataset.METAINFO['classes']


if __name__ == '__main__':
    sys.exit(main())
