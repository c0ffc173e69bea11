# Copyright (c) davpt-seg contributors. Apache-2.0.
"""The cost benchmark end to end: build the rows, time them round-robin in
one process (the order rotates every repetition), time the mapping costs,
measure memory in fresh processes, and assemble ``benchmark.json``."""
import json
import os
import platform
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import mmengine
import mmseg
import torch
from torch.profiler import ProfilerActivity, profile

from davpt_seg.engine.hooks import parameter_report
from .build import BuiltRow, build_row, make_batch
from .extras import time_initial_pass, time_mapping_update
from .memory import measure_memory
from .presets import SCHEMA_ONLY_PRESETS, preset_config
from .report import markdown
from .stats import (add_ratios, check_schema, evaluate_targets, make_row,
                    summarize)
from .steps import ForwardHookTimer, infer_step, make_step, sync
from .system import cpu_load_snapshot, device_name, other_cpu_load
from .variants import INFER_SOURCE, VARIANTS, select_rows


@dataclass
class Options:
    """What to run (``tools/benchmark.py``'s options; None = the
    preset's)."""
    preset: str = 'cpu-small'
    threads: int = 2
    amp: bool = False
    amp_dtype: str = 'float16'
    warmup: Optional[int] = None
    reps: Optional[int] = None
    memory: bool = True
    only: Optional[Sequence[str]] = None
    profile: Optional[str] = None
    mem_warmup: Optional[int] = None
    mem_steps: Optional[int] = None

    def preset_cfg(self) -> dict:
        return preset_config(self.preset, self.mem_warmup, self.mem_steps)

    def rows(self) -> List[str]:
        return select_rows(self.amp, self.only)


def log(msg: str) -> None:
    print(f'[benchmark] {msg}', flush=True)


def build_rows(ids: Sequence[str], preset: dict, device: torch.device,
               amp_dtype: str) -> Dict[str, BuiltRow]:
    """Every row's objects; an inference row whose training source row is
    among ``ids`` reuses that row's model instead."""
    return {vid: build_row(vid, preset, device, amp_dtype) for vid in ids
            if not (VARIANTS[vid].kind == 'infer'
                    and INFER_SOURCE[vid] in ids)}


def row_steps(ids: Sequence[str], rows: Dict[str, BuiltRow], data: dict,
              device: torch.device) -> Tuple[dict, dict]:
    """Per row: the step callable and (total, trainable) parameters of the
    network it runs (0 trainable for inference rows)."""
    steps, params = {}, {}
    for vid in ids:
        v = VARIANTS[vid]
        backbone_only = bool(v.options.get('backbone_only'))
        if vid in rows:
            steps[vid] = make_step(rows[vid], data, device)
            net = rows[vid].model
        else:
            net = rows[INFER_SOURCE[vid]].model
            steps[vid] = infer_step(net, backbone_only, data, device)
        if backbone_only and hasattr(net, 'backbone'):
            net = net.backbone
        counts = parameter_report(net)
        params[vid] = (counts['total'],
                       0 if v.kind == 'infer' else counts['trainable'])
    return steps, params


def round_robin(steps: Dict[str, Callable], warmup: int, reps: int,
                device: torch.device,
                on_step: Optional[Callable[[str, bool], None]] = None
                ) -> Tuple[dict, dict]:
    """Run every step ``warmup + reps`` times, rotating the order each
    repetition; returns per row the wall and process-CPU times (ms) of the
    timed repetitions. ``on_step(row, timed)`` is called before each step.
    """
    ids = list(steps)
    wall = {vid: [] for vid in ids}
    cpu = {vid: [] for vid in ids}
    t_start = time.perf_counter()
    for r in range(warmup + reps):
        timed = r >= warmup
        for vid in ids[r % len(ids):] + ids[:r % len(ids)]:
            if on_step is not None:
                on_step(vid, timed)
            sync(device)
            c0, t0 = time.process_time(), time.perf_counter()
            steps[vid]()
            sync(device)
            if timed:
                wall[vid].append((time.perf_counter() - t0) * 1e3)
                cpu[vid].append((time.process_time() - c0) * 1e3)
        log(f'{"repetition" if timed else "warm-up"} {r + 1}/'
            f'{warmup + reps} done ({time.perf_counter() - t_start:.0f} s)')
    return wall, cpu


def profile_row(vid: str, steps: Dict[str, Callable],
                device: torch.device) -> None:
    """Print torch.profiler tables (total and self time) of one step."""
    if vid not in steps:
        raise SystemExit(f'--profile {vid}: not among the timed rows')
    acts = [ProfilerActivity.CPU] + (
        [ProfilerActivity.CUDA] if device.type == 'cuda' else [])
    steps[vid]()
    with profile(activities=acts) as prof:
        steps[vid]()
        sync(device)
    key = 'cuda_time_total' if device.type == 'cuda' else 'cpu_time_total'
    print(prof.key_averages().table(sort_by=key, row_limit=30))
    print(prof.key_averages().table(sort_by='self_' + key, row_limit=30))


def measure_times(opts: Options, ids: Sequence[str], preset: dict,
                  warmup: int, reps: int, device: torch.device) -> dict:
    """Build and time the rows (all in this process) and the mapping costs;
    every model is freed on return.

    Returns:
        dict: ``wall``, ``cpu`` (row -> ms samples), ``params`` (row ->
        (total, trainable)), ``extras`` and ``other_load``.
    """
    data = make_batch(preset)
    log(f'preset {opts.preset} on {device}: building {len(ids)} rows')
    rows = build_rows(ids, preset, device, opts.amp_dtype)
    steps, params = row_steps(ids, rows, data, device)
    davpt = rows.get('davpt')
    timer = ForwardHookTimer(davpt.model) if davpt is not None else None

    def on_step(vid, timed):
        if timer is not None:
            timer.record = timed and vid == 'davpt'

    load0 = cpu_load_snapshot()
    wall, cpu = round_robin(steps, warmup, reps, device, on_step)
    other_load = other_cpu_load(load0, cpu_load_snapshot())
    extras = {}
    if timer is not None and timer.samples:
        extras['hook_forward_ms'] = summarize(timer.samples)
    extras['mapping_update_ms'] = time_mapping_update(
        device, preset['mapping_reps'])
    if davpt is not None:
        extras['initial_mapping_per_batch_ms'] = time_initial_pass(
            davpt, data, device, max(2, reps))
    if opts.profile:
        profile_row(opts.profile, steps, device)
    return dict(wall=wall, cpu=cpu, params=params, extras=extras,
                other_load=other_load)


def model_summary(preset: dict) -> str:
    return (f"ViT {preset['num_layers']} layers x {preset['embed_dims']} "
            f"dims ({preset['num_heads']} heads), patch 16, SETR-PUP heads "
            f"of {preset['head_channels']} channels (1 main + "
            f"{len(preset['aux_in_index'])} auxiliary), prompts "
            f"{preset['num_prompts']} per layer, "
            f"{preset['num_proxy_prompts']} proxies in layers "
            f"{list(preset['guided_layers'])}")


def memory_measure(memory: bool, cuda: bool) -> str:
    if not memory:
        return 'not measured'
    if cuda:
        return ('torch.cuda.max_memory_allocated over a step, in a fresh '
                'subprocess per row (peak = weights + optimiser state + '
                'step; resident = allocated before the step)')
    return ('peak RSS (VmHWM, reset via /proc/self/clear_refs) during a '
            'step, minus the RSS before the model was built, in a fresh '
            'subprocess per row with MALLOC_MMAP_THRESHOLD_=65536 (peak = '
            'weights + optimiser state + step; resident = RSS before the '
            'step)')


def run_meta(opts: Options, preset: dict, device: torch.device,
             warmup: int, reps: int) -> dict:
    """``benchmark.json``'s ``meta`` (``other_load`` and ``total_s`` are
    added by the caller)."""
    cuda = device.type == 'cuda'
    amp_mode = 'off'
    if opts.amp:
        amp_mode = ('CUDA AmpOptimWrapper, ' + opts.amp_dtype) if cuda \
            else 'CPU torch.autocast bfloat16 (no loss scaling)'
    return dict(
        preset=opts.preset, device=device.type,
        device_name=device_name(device), torch=torch.__version__,
        mmseg=mmseg.__version__, mmengine=mmengine.__version__,
        python=platform.python_version(), threads=opts.threads,
        batch=preset['batch'], crop=preset['crop'],
        num_classes=preset['num_classes'], warmup=warmup, reps=reps,
        amp=opts.amp, amp_mode=amp_mode, model=model_summary(preset),
        time_measure='wall time of one step (perf_counter'
        + (', CUDA synchronised' if cuda else '') + '), all rows in one '
        'process; IQR = q1-q3 of the timed repetitions',
        memory_measure=memory_measure(opts.memory, cuda))


def run_benchmark(opts: Options, device: torch.device) -> dict:
    """The whole benchmark; returns the ``benchmark.json`` result."""
    t_start = time.perf_counter()
    preset, ids = opts.preset_cfg(), opts.rows()
    warmup = preset['warmup'] if opts.warmup is None else opts.warmup
    reps = preset['reps'] if opts.reps is None else opts.reps
    timed = measure_times(opts, ids, preset, warmup, reps, device)
    memory = {}
    if opts.memory:
        log(f'peak memory of {len(ids)} rows, one process each')
        memory = measure_memory(ids, opts.preset, preset, device,
                                opts.threads, opts.amp_dtype)
    rows = [make_row(vid, timed['params'][vid], timed['wall'][vid],
                     timed['cpu'][vid], memory.get(vid)) for vid in ids]
    add_ratios(rows)
    meta = run_meta(opts, preset, device, warmup, reps)
    meta.update(other_load=timed['other_load'],
                total_s=time.perf_counter() - t_start, preset_cfg=preset)
    result = dict(meta=meta, rows=rows, extras=timed['extras'])
    result['targets'] = evaluate_targets(
        rows, timed['extras'], no_verdict=SCHEMA_ONLY_PRESETS.get(opts.preset))
    check_schema(result)
    return result


def write_report(result: dict, out_dir: str) -> str:
    """Write ``benchmark.json`` and ``benchmark.md`` to ``out_dir``;
    returns the Markdown."""
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, 'benchmark.json'), 'w') as f:
        json.dump(result, f, indent=1)
    md = markdown(result)
    with open(os.path.join(out_dir, 'benchmark.md'), 'w') as f:
        f.write(md)
    return md
