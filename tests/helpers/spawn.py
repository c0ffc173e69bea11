"""Run a function in N local processes (gloo tests of collectives)."""
import time

import pytest
import torch
import torch.multiprocessing as mp

from .processes import free_port


def spawn_workers(fn, nprocs, out_dir, timeout=120, attempts=3):
    """Run ``fn(rank, nprocs, init_method, out_dir)`` in ``nprocs`` processes.

    Retries with a new port if the chosen one was taken in the meantime and
    kills the workers if they do not finish within ``timeout`` seconds.

    ``fork`` is used where available (the CPU test process has no CUDA
    context and no extra threads) because ``spawn`` re-imports torch, mmseg
    and this module in every worker, which takes 5-20 s on a small machine.
    """
    if ('fork' in mp.get_all_start_methods()
            and not torch.cuda.is_initialized()):
        start_method = 'fork'
    else:
        start_method = 'spawn'
    for attempt in range(attempts):
        init_method = f'tcp://127.0.0.1:{free_port()}'
        context = mp.start_processes(
            fn,
            args=(nprocs, init_method, str(out_dir)),
            nprocs=nprocs,
            join=False,
            start_method=start_method)
        deadline = time.monotonic() + timeout
        try:
            while not context.join(timeout=1):
                if time.monotonic() > deadline:
                    pytest.fail(f'distributed workers timed out ({timeout}s)')
            return
        except mp.ProcessRaisedException as exc:
            if ('address already in use' in str(exc).lower()
                    and attempt + 1 < attempts):
                continue
            raise
        finally:
            for process in context.processes:
                if process.is_alive():
                    process.kill()
                    process.join()
