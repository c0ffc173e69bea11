"""Run the 2-process SyncBN toy training of
``test_launch_edges.test_two_cpu_processes_train_a_sync_bn_config`` again and
again, the way the test does (``tools/dist_train.sh``, gloo, no CUDA), and
report every run that does not exit cleanly. A developer tool (issue #19),
not collected by pytest::

    cd <repo> && OMP_NUM_THREADS=1 PYTHONPATH=.:tests \\
        nice -n 15 python -m helpers.ddp_loop --runs 30 --out /tmp/ddp_loop

Each run gets its own directory under ``--out`` (its work dir, its log,
``run.log``, and the working directory of its processes, so core dumps land
there with ``--cores``). ``--debug`` adds what torch can say about the
process group (``TORCH_DISTRIBUTED_DEBUG=DETAIL``,
``TORCH_CPP_LOG_LEVEL=INFO``, ``PYTHONFAULTHANDLER=1``). ``--load N``
starts N busy-looping processes for the duration (the failure was seen
under load). Exit status 1 if any run failed.
"""
import argparse
import multiprocessing
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from davpt_seg.datasets import generate_toy_dataset
from . import ROOT
from .processes import free_port, subprocess_env
from .toy_run import toy_run_config

ITERS = 2
NUM_VAL = 24
SYNC_BN = ("model = dict(decode_head=dict(norm_cfg=dict(type='SyncBN', "
           "requires_grad=True)))\n")
#: what a failed run's log is searched for
MARKERS = ('Signal 6 (SIGABRT)', 'terminate called', 'Fatal Python error',
           'ChildFailedError', 'Traceback')
DEBUG_ENV = dict(TORCH_DISTRIBUTED_DEBUG='INFO', TORCH_CPP_LOG_LEVEL='INFO',
                 PYTHONFAULTHANDLER='1')


def prepare(out: Path, num_val: int, extra: str) -> Path:
    """The toy data and the test's config under ``out``; the config path."""
    data = out / 'toy8'
    if not data.exists():
        generate_toy_dataset(data, num_train=8, num_val=num_val)
    cfg = out / 'sync_bn.py'
    cfg.write_text(toy_run_config(data, ITERS, checkpoint_interval=ITERS,
                                  extra=SYNC_BN + extra))
    return cfg


def _cores_unlimited():
    resource.setrlimit(resource.RLIMIT_CORE, (resource.RLIM_INFINITY,
                                              resource.RLIM_INFINITY))


def run_once(cfg: Path, run_dir: Path, env: dict, cores: bool,
             timeout: float, extra_args=()) -> dict:
    """One ``tools/dist_train.sh cfg 2`` run in ``run_dir``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    args = ['bash', str(ROOT / 'tools' / 'dist_train.sh'), str(cfg), '2',
            '--work-dir', str(run_dir / 'work'), *extra_args]
    t0 = time.time()
    with open(run_dir / 'run.log', 'w') as log:
        try:
            proc = subprocess.run(
                args, cwd=run_dir, env=env, stdout=log,
                stderr=subprocess.STDOUT, timeout=timeout,
                preexec_fn=_cores_unlimited if cores else None)
            rc = proc.returncode
        except subprocess.TimeoutExpired:
            rc = 'timeout'
    text = (run_dir / 'run.log').read_text(errors='replace')
    found = [m for m in MARKERS if m in text]
    ckpt = (run_dir / 'work' / f'iter_{ITERS}.pth').is_file()
    return dict(rc=rc, seconds=time.time() - t0, markers=found, ckpt=ckpt,
                cores=sorted(p.name for p in run_dir.rglob('core*')
                             if p.is_file()))


def _burn():
    os.nice(19)  # as little as possible from anyone else's processes
    while True:
        pass


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--runs', type=int, default=30)
    parser.add_argument('--out', type=Path, default=Path('/tmp/ddp_loop'))
    parser.add_argument('--debug', action='store_true')
    parser.add_argument('--cores', action='store_true')
    parser.add_argument('--load', type=int, default=0)
    parser.add_argument('--stop-on-fail', action='store_true')
    parser.add_argument('--keep', action='store_true',
                        help='keep the work dirs of passing runs')
    parser.add_argument('--timeout', type=float, default=300)
    parser.add_argument('--num-val', type=int, default=NUM_VAL)
    parser.add_argument('--extra', default='',
                        help='config text appended to the test config')
    parser.add_argument('train_args', nargs='*',
                        help='more tools/train.py arguments (after --)')
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    cfg = prepare(args.out, args.num_val, args.extra)
    env = dict(subprocess_env(CUDA_VISIBLE_DEVICES=''),
               **(DEBUG_ENV if args.debug else {}))
    burners = [multiprocessing.Process(target=_burn, daemon=True)
               for _ in range(args.load)]
    for b in burners:
        b.start()
    failed, t0 = [], time.time()
    try:
        for i in range(args.runs):
            env['PORT'] = str(free_port())
            run_dir = args.out / f'run{i:03d}'
            r = run_once(cfg, run_dir, env, args.cores, args.timeout,
                         args.train_args)
            ok = r['rc'] == 0 and r['ckpt'] and not r['markers']
            print(f'run {i:3d}: {"ok  " if ok else "FAIL"} rc={r["rc"]} '
                  f'{r["seconds"]:.1f}s markers={r["markers"]} '
                  f'cores={r["cores"]}', flush=True)
            if not ok:
                failed.append(i)
                if args.stop_on_fail:
                    break
            elif not args.keep:
                subprocess.run(['rm', '-rf', str(run_dir)])
    finally:
        for b in burners:
            b.terminate()
    done = i + 1
    print(f'{done - len(failed)}/{done} runs passed in '
          f'{time.time() - t0:.0f}s; failed: {failed}', flush=True)
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
