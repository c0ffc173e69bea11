# Copyright (c) davpt-seg contributors. Apache-2.0.
"""Worker process of :func:`davpt_seg.bench.cost.measure_memory` (not a
user command)::

    python -m davpt_seg.bench.cost.memory_worker --preset P --device D \\
        --threads T --amp-dtype A --mem-warmup W --mem-steps S --rows a,b

prints one ``MEMORY_JSON <row> {...}`` line per row (``MEMORY_FAILED
<row>`` for a row whose child failed). On CPU every row runs in a forked
child; on CUDA the parent starts one worker per row.
"""
import argparse
import os
import sys


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--preset', required=True)
    p.add_argument('--device', required=True)
    p.add_argument('--threads', type=int, required=True)
    p.add_argument('--amp-dtype', default='float16')
    p.add_argument('--mem-warmup', type=int, required=True)
    p.add_argument('--mem-steps', type=int, required=True)
    p.add_argument('--rows', required=True, help='comma-separated row ids')
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    os.environ.setdefault('OMP_NUM_THREADS', str(args.threads))
    from davpt_seg.bench.cost import (fork_per_row, preset_config,
                                      print_row_memory, setup_process)
    device = setup_process(args.threads, args.device)
    preset = preset_config(args.preset, args.mem_warmup, args.mem_steps)
    rows = args.rows.split(',')
    if device.type == 'cuda':
        for vid in rows:
            print_row_memory(vid, preset, device, args.amp_dtype)
    else:
        fork_per_row(rows, preset, device, args.amp_dtype)
    sys.stdout.flush()


if __name__ == '__main__':
    main()
