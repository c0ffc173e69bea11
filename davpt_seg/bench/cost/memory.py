# Copyright (c) davpt-seg contributors. Apache-2.0.
"""Peak memory of the rows, each in a fresh process holding only its model.

On CUDA the figure is ``torch.cuda.max_memory_allocated`` over a step; on
CPU it is the peak RSS (``VmHWM``, reset through ``/proc/self/clear_refs``)
above the RSS before the model was built, with glibc told to serve blocks
>= 64 KiB by ``mmap`` (``MALLOC_MMAP_THRESHOLD_``) so that freed tensors
leave the RSS. :func:`measure_memory` starts
``python -m davpt_seg.bench.cost.memory_worker``: on CPU one process that
forks a child per row (:func:`fork_per_row`), on CUDA one process per row
(a CUDA context cannot cross ``fork()``).
"""
import json
import os
import subprocess
import sys
import traceback
from typing import Dict, Sequence

import torch

import davpt_seg
from .build import build_row, make_batch
from .steps import make_step, sync

RESULT_TAG = 'MEMORY_JSON '
FAILED_TAG = 'MEMORY_FAILED '


def proc_status_mib(key: str) -> float:
    """A ``/proc/self/status`` figure (``VmRSS``, ``VmHWM``) in MiB."""
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(key + ':'):
                return int(line.split()[1]) / 1024.  # kB -> MiB
    raise RuntimeError(f'{key} not in /proc/self/status')


def reset_peak_rss() -> None:
    """Reset ``VmHWM`` to the current RSS."""
    with open('/proc/self/clear_refs', 'w') as f:
        f.write('5')


def _used_mib(device: torch.device) -> float:
    if device.type == 'cuda':
        return torch.cuda.memory_allocated() / 2**20
    return proc_status_mib('VmRSS')


def _step_peak_mib(step, device: torch.device) -> float:
    if device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats()
    else:
        reset_peak_rss()
    step()
    sync(device)
    if device.type == 'cuda':
        return torch.cuda.max_memory_allocated() / 2**20
    return proc_status_mib('VmHWM')


def row_memory(vid: str, preset: dict, device: torch.device,
               amp_dtype: str = 'float16') -> Dict[str, float]:
    """Memory of row ``vid`` built in this process, in MiB above what the
    process used before: ``peak`` over the worst of ``mem_steps`` steps
    (after ``mem_warmup``), ``resident`` before that step, ``step_peak``
    their difference."""
    data = make_batch(preset)
    sync(device)
    base = _used_mib(device)
    row = build_row(vid, preset, device, amp_dtype)
    if row.kind == 'infer':
        row.model.eval()
    step = make_step(row, data, device)
    for _ in range(preset['mem_warmup']):
        step()
    peaks, residents = [], []
    for _ in range(preset['mem_steps']):
        sync(device)
        residents.append(_used_mib(device) - base)
        peaks.append(_step_peak_mib(step, device) - base)
    i = max(range(len(peaks)), key=peaks.__getitem__)
    return dict(peak=peaks[i], resident=residents[i],
                step_peak=peaks[i] - residents[i])


def print_row_memory(vid: str, preset: dict, device: torch.device,
                     amp_dtype: str) -> None:
    """:func:`row_memory` as a ``MEMORY_JSON <row> {...}`` line."""
    out = row_memory(vid, preset, device, amp_dtype)
    print(RESULT_TAG + f'{vid} ' + json.dumps(out), flush=True)


def fork_per_row(ids: Sequence[str], preset: dict, device: torch.device,
                 amp_dtype: str) -> None:
    """Fork one child per row from this process, which has imported
    everything but run no torch computation (no OpenMP pool, no CUDA
    context): every row gets a fresh heap without paying for the imports.
    """
    for vid in ids:
        sys.stdout.flush()
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                print_row_memory(vid, preset, device, amp_dtype)
            except BaseException:
                traceback.print_exc()
                code = 1
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            print(FAILED_TAG + vid, flush=True)


def worker_env(threads: int) -> dict:
    """Environment of the worker processes: thread counts, glibc's mmap
    threshold, and this ``davpt_seg`` first on the path."""
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
               MALLOC_MMAP_THRESHOLD_='65536',
               MALLOC_TRIM_THRESHOLD_='65536')
    root = os.path.dirname(os.path.dirname(os.path.abspath(
        davpt_seg.__file__)))
    env['PYTHONPATH'] = os.pathsep.join(
        p for p in (root, env.get('PYTHONPATH')) if p)
    return env


def measure_memory(ids: Sequence[str], preset_name: str, preset: dict,
                   device: torch.device, threads: int,
                   amp_dtype: str = 'float16') -> Dict[str, dict]:
    """Peak memory of every row, each in its own process (module doc).

    Returns:
        dict: row -> {'peak', 'resident', 'step_peak'} in MiB.
    Raises:
        RuntimeError: a row's measurement failed (with the worker's output).
    """
    cmd = [sys.executable, '-m', 'davpt_seg.bench.cost.memory_worker',
           '--preset', preset_name, '--device', str(device), '--threads',
           str(threads), '--amp-dtype', amp_dtype, '--mem-warmup',
           str(preset['mem_warmup']), '--mem-steps', str(preset['mem_steps'])]
    jobs = [list(ids)] if device.type == 'cpu' else [[v] for v in ids]
    env, out = worker_env(threads), {}
    for rows in jobs:
        res = subprocess.run(cmd + ['--rows', ','.join(rows)], env=env,
                             capture_output=True, text=True)
        for line in res.stdout.splitlines():
            if line.startswith(RESULT_TAG):
                vid, js = line[len(RESULT_TAG):].split(' ', 1)
                out[vid] = json.loads(js)
        missing = [v for v in rows if v not in out]
        if missing:
            raise RuntimeError(
                f'memory measurement failed for {missing} (rc '
                f'{res.returncode}):\n{res.stdout[-2000:]}\n'
                f'{res.stderr[-4000:]}')
    return out
