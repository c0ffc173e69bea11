"""The SIGABRT of issue #19 without the project: 2 gloo processes that do
what the end of a training run does (DDP steps, all_reduce, broadcast,
``broadcast_object_list``), then end in one of three ways:

* ``--mode old``: barrier and ``destroy_process_group`` with the DDP model
  still referenced until the interpreter exits (as the Runner was in the
  old tools): a gloo thread can outlive the main thread into finalization;
* ``--mode old-drop``: the same, then the model is dropped: its reducer
  frees the group holding the GIL, which can deadlock;
* ``--mode new``: the model is dropped, then ``close_process_group``.

A developer tool, not collected by pytest (docs/distributed.md)::

    OMP_NUM_THREADS=1 PYTHONPATH=.:tests nice -n 15 \\
        python -m helpers.gloo_exit_race --trials 80 --mode old

On 2 busy cores, of 80 trials: ``old`` aborted 12 (``terminate called
without an active exception``; rank 0 or rank 1), ``old-drop`` hung 4
(killed after TRIAL_TIMEOUT), ``new`` failed none. ``--cores DIR`` keeps a
core dump of the first abort there (``gdb python DIR/rank*/core``).
"""
import argparse
import os
import resource
import subprocess
import sys
from pathlib import Path

from .processes import free_port

TRIAL_TIMEOUT = 120  # s: a trial still running then hangs


def rank_main(rank: int, port: int, mode: str) -> None:
    import torch
    import torch.distributed as dist
    import torch._dynamo  # noqa: F401 (imported after init, it pins the group)
    from davpt_seg.engine.launch import close_process_group
    dist.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{port}',
                            rank=rank, world_size=2)
    model = torch.nn.parallel.DistributedDataParallel(torch.nn.Sequential(
        torch.nn.Linear(64, 64), torch.nn.BatchNorm1d(64),
        torch.nn.Linear(64, 8)))
    for _ in range(3):
        model(torch.randn(16, 64)).sum().backward()
        dist.all_reduce(torch.ones(8))
        dist.broadcast(torch.zeros(100), 0)
    for _ in range(5):
        objects = [dict(a=list(range(100)))] if rank == 0 else [None]
        dist.broadcast_object_list(objects, 0)
    if mode == 'new':
        del model
        close_process_group()
        return
    dist.barrier()
    dist.destroy_process_group()
    if mode == 'old':
        _KEPT.append(model)  # until the interpreter exits


_KEPT = []


def trial(port: int, mode: str, cores: Path = None) -> list:
    """Both ranks' exit codes (and their output if one failed)."""
    procs = []
    for rank in (0, 1):
        cwd = cores / f'rank{rank}' if cores else None
        if cwd:
            cwd.mkdir(parents=True, exist_ok=True)
        procs.append(subprocess.Popen(
            [sys.executable, '-m', 'helpers.gloo_exit_race', '--rank',
             str(rank), '--port', str(port), '--mode', mode], cwd=cwd,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            preexec_fn=_cores if cores else None))
    results = []
    try:
        for p in procs:
            out = p.communicate(timeout=TRIAL_TIMEOUT)[0]
            results.append((p.returncode, out))
        return results
    except subprocess.TimeoutExpired:  # the old way can also deadlock
        for p in procs:
            p.kill()
        return [(p.wait(), f'hung: killed after {TRIAL_TIMEOUT} s')
                for p in procs]


def _cores():
    resource.setrlimit(resource.RLIMIT_CORE, (resource.RLIM_INFINITY, ) * 2)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--mode', choices=['old', 'old-drop', 'new'],
                        default='new')
    parser.add_argument('--trials', type=int, default=80)
    parser.add_argument('--cores', type=Path)
    parser.add_argument('--rank', type=int, help=argparse.SUPPRESS)
    parser.add_argument('--port', type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rank is not None:
        rank_main(args.rank, args.port, args.mode)
        return 0
    os.environ['PYTHONPATH'] = os.pathsep.join(sys.path)
    failed = 0
    for i in range(args.trials):
        results = trial(free_port(), args.mode,
                        args.cores if not failed else None)
        if any(rc != 0 for rc, _ in results):
            failed += 1
            print(f'trial {i}: exit codes {[rc for rc, _ in results]}: '
                  f'{" | ".join(out.strip()[-200:] for _, out in results)}',
                  flush=True)
    print(f'--mode {args.mode}: {failed}/{args.trials} trials failed')
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
