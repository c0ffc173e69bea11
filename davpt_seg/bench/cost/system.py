# Copyright (c) davpt-seg contributors. Apache-2.0.
"""Process set-up and machine facts of the cost benchmark."""
import os
import platform
import time

import torch
from mmengine.logging import MMLogger
from mmseg.utils import register_all_modules

import davpt_seg  # noqa: F401  (registers the components)
from davpt_seg.compat import install


def setup_process(threads: int, device: str = 'auto') -> torch.device:
    """Torch threads, :func:`davpt_seg.compat.install`, mmseg's registry as
    default scope, a quiet logger; ``device`` 'auto' is CUDA if available,
    else the CPU."""
    os.environ.setdefault('OMP_NUM_THREADS', str(threads))
    torch.set_num_threads(threads)
    install()
    register_all_modules(init_default_scope=True)
    MMLogger.get_instance('davpt_benchmark', log_level='ERROR')
    if device == 'auto':
        device = 'cuda' if torch.cuda.is_available() else 'cpu'
    return torch.device(device)


def cpu_load_snapshot() -> tuple:
    """(wall s, busy CPU s of the whole machine or None, CPU s of this
    process)."""
    try:
        with open('/proc/stat') as f:
            fields = [int(x) for x in f.readline().split()[1:]]
        busy = sum(fields[:8]) - fields[3] - fields[4]  # minus idle, iowait
        busy /= os.sysconf('SC_CLK_TCK')
    except (OSError, ValueError, IndexError):
        busy = None
    return time.perf_counter(), busy, time.process_time()


def other_cpu_load(a: tuple, b: tuple):
    """Mean number of CPUs that other processes kept busy between two
    :func:`cpu_load_snapshot` (Linux only; None elsewhere)."""
    if a[1] is None or b[1] is None or b[0] <= a[0]:
        return None
    others = (b[1] - a[1]) - (b[2] - a[2])
    return dict(cpus_busy_by_others=max(0., others / (b[0] - a[0])),
                cpus=os.cpu_count())


def cpu_model_name() -> str:
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or 'unknown CPU'


def device_name(device: torch.device) -> str:
    if device.type == 'cuda':
        return torch.cuda.get_device_name(device)
    return f'{cpu_model_name()}, {os.cpu_count()} logical CPUs'
