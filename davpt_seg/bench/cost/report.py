# Copyright (c) davpt-seg contributors. Apache-2.0.
"""``benchmark.md``: the cost benchmark's JSON result as a Markdown report."""
from typing import Dict, List, Optional

from .variants import MAPPING_INTERVAL


def fmt(x: Optional[float], nd: int = 2) -> str:
    return '-' if x is None else f'{x:.{nd}f}'


def _header(meta: dict) -> List[str]:
    lines = [
        f"# DA-VPT benchmark: preset `{meta['preset']}` on {meta['device']}",
        '',
        f"- device: {meta['device_name']}; torch {meta['torch']}, mmseg "
        f"{meta['mmseg']}, mmengine {meta['mmengine']}; threads "
        f"{meta['threads']}",
        f"- model: {meta['model']}",
        f"- input: batch {meta['batch']}, {meta['crop']}x{meta['crop']}, "
        f"{meta['num_classes']} classes; {meta['warmup']} warm-up + "
        f"{meta['reps']} timed repetitions, variants round-robin "
        '(order rotated every repetition)',
        f"- time: {meta['time_measure']}; 'CPU ms' is this process's CPU "
        'time per step (user + system, all threads)',
        f"- memory: {meta['memory_measure']}",
        f"- AMP: {meta['amp_mode']}",
        f"- run time of the whole benchmark: {meta['total_s']:.0f} s",
    ]
    ol = meta.get('other_load')
    if ol and meta['device'] == 'cpu':
        lines.append(
            f"- load from other processes during the timed phase: "
            f"{ol['cpus_busy_by_others']:.2f} of {ol['cpus']} CPUs busy on "
            'average' + (' (timings are inflated and noisy)'
                         if ol['cpus_busy_by_others'] > 0.2 else ''))
    return lines


def _row_line(r: dict) -> str:
    tm, ra, mem = r['time_ms'], r['ratios'], r['memory_mb'] or {}
    spread = (f"{fmt(tm['q1'], 0)}-{fmt(tm['q3'], 0)} "
              f"({fmt(tm['min'], 0)}-{fmt(tm['max'], 0)})")
    if r['kind'] == 'infer':
        tr = (f"x stock {fmt(ra['time_vs_stock'])}", '')
        mr = (f"x stock {fmt(ra['mem_vs_stock'])}", '')
    else:
        tr = (fmt(ra['time_vs_vpt']), fmt(ra['time_vs_full_ft']))
        mr = (fmt(ra['mem_vs_vpt']), fmt(ra['mem_vs_full_ft']))
    return (f"| {r['row']} | `{r['id']}` {r['description']} | "
            f"{r['trainable_params'] / 1e6:.3f}M | {fmt(tm['median'], 1)} | "
            f"{spread} | {fmt(r['cpu_time_ms']['median'], 0)} | {tr[0]} | "
            f"{tr[1]} | {fmt(mem.get('peak'), 0)} | "
            f"{fmt(mem.get('resident'), 0)} | {fmt(mem.get('step_peak'), 0)}"
            f" | {mr[0]} | {mr[1]} |")


def _rows_table(rows: List[dict]) -> List[str]:
    return [
        '',
        '| row | variant | trainable params | step ms (median) | IQR (min-max)'
        ' | CPU ms | x VPT | x full FT | peak MiB | resident MiB | step peak '
        'MiB | mem x VPT | mem x full FT |',
        '|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|',
    ] + [_row_line(r) for r in rows]


def _extras(ex: Dict[str, dict], batch: int) -> List[str]:
    lines = ['', '## Per-iteration and mapping costs', '']
    mu = ex.get('mapping_update_ms')
    if mu:
        lines.append(
            f"- mapping update ({mu['shape']}): cold start "
            f"{fmt(mu['cold_ms'])} ms, warm start median "
            f"{fmt(mu['warm']['median'])} ms (min {fmt(mu['warm']['min'])},"
            f" max {fmt(mu['warm']['max'])}); every {MAPPING_INTERVAL} "
            'iterations on ADE20K')
    ip = ex.get('initial_mapping_per_batch_ms')
    if ip:
        lines.append(f"- initial mapping pass, per batch of {batch}: "
                     f"median {fmt(ip['median'])} ms (min {fmt(ip['min'])}, "
                     f"max {fmt(ip['max'])})")
    hk = ex.get('hook_forward_ms')
    if hk:
        lines.append(f"- DAVPTHook forward hook (class draw, statistics, "
                     f"metric losses; host time): median "
                     f"{fmt(hk['median'])} ms")
    return lines


def _targets(targets: List[dict]) -> List[str]:
    lines = ['', '## Targets', '',
             '| target | value | (CPU-time ratio) | limit | verdict |',
             '|---|---:|---:|---:|---|']
    for t in targets:
        lim = f"{t['comparison']} {fmt(t['limit'])}"
        lines.append(f"| {t['description']} | {fmt(t['value'], 3)} | "
                     f"{fmt(t['value_cpu_time'], 3)} | {lim} |"
                     f" {t['verdict']} |")
    return lines


def markdown(result: dict) -> str:
    """The report of a ``benchmark.json`` result."""
    meta = result['meta']
    lines = (_header(meta) + _rows_table(result['rows']) +
             _extras(result['extras'], meta['batch']) +
             _targets(result['targets']))
    return '\n'.join(lines) + '\n'


def memory_table(ids: List[str], memory: Dict[str, dict]) -> str:
    """The ``--memory-only`` table."""
    lines = ['| row | peak MiB | resident MiB | step peak MiB |',
             '|---|---:|---:|---:|']
    for vid in ids:
        m = memory[vid]
        lines.append(f"| `{vid}` | {m['peak']:.0f} | {m['resident']:.0f} | "
                     f"{m['step_peak']:.0f} |")
    return '\n'.join(lines)
