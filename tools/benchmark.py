# Copyright (c) davpt-seg contributors. Apache-2.0.
"""Cost of DA-VPT against VPT-Deep, full fine-tuning and mmseg's stock ViT.

One command, one process, one input batch: every variant is built through
mmseg's registry from the stock SETR-PUP ADE20K config, resized by
``--preset``, and timed round-robin after warm-up; each row's peak memory is
then measured in a fresh process::

    OMP_NUM_THREADS=2 python tools/benchmark.py --preset cpu-small --amp
    python tools/benchmark.py --preset vitl-512 --amp            # on a GPU
    python tools/benchmark.py --preset ade20k-hook  # the hook alone

``--preset ade20k-hook`` times DAVPTHook's main-process work per iteration
at ADE20K's label shape apart from the model and writes ``hook_cost.json``
and ``hook_cost.md`` instead (:mod:`davpt_seg.bench.cost.hook_cost`).

Writes ``benchmark.json`` and ``benchmark.md`` to ``--out-dir``. The rows,
measurements and targets are described in ``docs/benchmark_cpu.md``; the
code is :mod:`davpt_seg.bench.cost`.
"""
import argparse
import os
import os.path as osp
import sys

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--preset', default='cpu-small',
                   help="model size: a key of davpt_seg.bench.cost.PRESETS "
                   "('tiny' is for the tests; default: %(default)s), or "
                   "'ade20k-hook' (the hook's own cost, HOOK_PRESETS)")
    p.add_argument('--device', default='auto',
                   help="'auto' (cuda if available), 'cpu' or 'cuda'")
    p.add_argument('--threads', type=int, default=2,
                   help='torch CPU threads (also OMP_NUM_THREADS of the '
                   'memory subprocesses)')
    p.add_argument('--amp', action='store_true',
                   help='add AMP rows (CUDA: AmpOptimWrapper with '
                   '--amp-dtype; CPU: bf16 autocast)')
    p.add_argument('--amp-dtype', default='float16',
                   choices=('float16', 'bfloat16'),
                   help='CUDA AMP dtype (CPU always uses bfloat16)')
    p.add_argument('--reps', type=int, default=None,
                   help='timed repetitions (default: the preset\'s)')
    p.add_argument('--warmup', type=int, default=None)
    p.add_argument('--no-memory', action='store_true',
                   help='skip the per-row memory subprocesses')
    p.add_argument('--only', nargs='+', default=None,
                   help='time only these rows (debugging; the JSON then '
                   'lacks rows)')
    p.add_argument('--profile', default=None, metavar='ROW',
                   help='also print a torch.profiler table of one step of '
                   'ROW')
    p.add_argument('--out-dir', default=None,
                   help='default: work_dirs/benchmark/<preset>-<device>')
    p.add_argument('--memory-only', action='store_true',
                   help='only measure (and print) the peak memory of the '
                   'rows, no timing, no files')
    p.add_argument('--mem-warmup', type=int, default=None,
                   help="steps before the memory measurement (default: the "
                   "preset's)")
    p.add_argument('--mem-steps', type=int, default=None,
                   help="measured steps, the peak is the worst (default: the "
                   "preset's)")
    return p


def main(argv=None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    # Before torch starts its OpenMP pool (imported with davpt_seg).
    os.environ.setdefault('OMP_NUM_THREADS', str(args.threads))
    if ROOT not in sys.path:  # run as a script from anywhere
        sys.path.insert(0, ROOT)
    from davpt_seg.bench.cost import (HOOK_PRESETS, PRESETS, Options,
                                      measure_memory, memory_table,
                                      run_benchmark, setup_process,
                                      write_report)
    if args.preset not in {**PRESETS, **HOOK_PRESETS}:
        parser.error(f'--preset {args.preset!r}: not one of '
                     f'{list(PRESETS) + list(HOOK_PRESETS)}')
    device = setup_process(args.threads, args.device)
    if args.preset in HOOK_PRESETS:
        hook_benchmark(args, device)
        return
    opts = Options(preset=args.preset, threads=args.threads, amp=args.amp,
                   amp_dtype=args.amp_dtype, warmup=args.warmup,
                   reps=args.reps, memory=not args.no_memory,
                   only=args.only, profile=args.profile,
                   mem_warmup=args.mem_warmup, mem_steps=args.mem_steps)
    try:
        ids = opts.rows()
    except ValueError as e:
        parser.error(f'--only: {e}')
    if args.memory_only:
        print(memory_table(ids, measure_memory(
            ids, args.preset, opts.preset_cfg(), device, args.threads,
            args.amp_dtype)))
        return
    result = run_benchmark(opts, device)
    out_dir = args.out_dir or osp.join('work_dirs', 'benchmark',
                                       f'{args.preset}-{device.type}')
    print(write_report(result, out_dir))
    print(f'[benchmark] wrote {out_dir}/benchmark.json and benchmark.md '
          f"in {result['meta']['total_s']:.0f} s", flush=True)


def hook_benchmark(args, device) -> None:
    """``--preset ade20k-hook``: hook_cost.json and hook_cost.md."""
    import json
    from davpt_seg.bench.cost import hook_markdown, run_hook_benchmark
    result = run_hook_benchmark(args.preset, device, args.warmup, args.reps)
    out_dir = args.out_dir or osp.join('work_dirs', 'benchmark',
                                       f'{args.preset}-{device.type}')
    os.makedirs(out_dir, exist_ok=True)
    with open(osp.join(out_dir, 'hook_cost.json'), 'w') as f:
        json.dump(result, f, indent=1)
    md = hook_markdown(result)
    with open(osp.join(out_dir, 'hook_cost.md'), 'w') as f:
        f.write(md)
    print(md)
    print(f'[benchmark] wrote {out_dir}/hook_cost.json and hook_cost.md')


if __name__ == '__main__':
    main()
