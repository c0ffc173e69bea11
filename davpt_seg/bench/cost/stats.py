# Copyright (c) davpt-seg contributors. Apache-2.0.
"""Rows of ``benchmark.json``: time summaries, ratios, the issue's targets
and the schema check (``tests/integration/test_benchmark.py`` checks the same from the
outside)."""
import statistics
from typing import Dict, List, Optional, Sequence

from .variants import INFER_REF, VARIANTS

ROW_KEYS = ('id', 'row', 'kind', 'description', 'trainable_params',
            'total_params', 'time_ms', 'cpu_time_ms', 'memory_mb', 'ratios')
TIME_KEYS = ('median', 'q1', 'q3', 'iqr', 'min', 'max', 'samples')
MEMORY_KEYS = ('peak', 'resident', 'step_peak')

#: The benchmark issue's targets, in report order: (kind, id, description,
#: row, reference row, limit). ``time``: ratio of median step times <=
#: limit; ``mem``: ratio of peak memories <= limit; ``cut``: 1 - ratio of
#: peak memories >= limit.
TARGETS = (
    ('time', 'davpt_vs_vpt_time', 'DA-VPT step / VPT-Deep step', 'davpt',
     'vpt', 1.03),
    ('time', 'davpt_plus_vs_vpt_time', 'DA-VPT+ step / VPT-Deep step',
     'davpt_plus', 'vpt', 1.05),
    ('time', 'prompted_bb_vs_full_ft_time',
     'prompted backbone training step / stock ViT full fine-tuning '
     '(backbone alone)', 'bb_vpt', 'bb_full_ft', 0.8),
    ('time', 'davpt_vs_full_ft_time',
     'DA-VPT training step / full fine-tuning (whole segmentor: the shared '
     'SETR-PUP heads dilute the backbone saving)', 'davpt', 'full_ft', 0.8),
    ('mem', 'davpt_vs_full_ft_mem', 'DA-VPT peak memory / full fine-tuning',
     'davpt', 'full_ft', 1.0),
    ('cut', 'cp_heads_mem_cut', '--with-cp (backbone + heads): cut of '
     'DA-VPT peak training memory (whole segmentor)', 'davpt_cp_heads',
     'davpt', 0.40),
    ('cut', 'cp_mem_cut', 'backbone with_cp only: cut of DA-VPT peak '
     'training memory (whole segmentor)', 'davpt_cp', 'davpt', 0.40),
    ('cut', 'cp_mem_cut_bb', 'with_cp: cut of the prompted backbone\'s peak '
     'training memory (backbone alone)', 'bb_vpt_cp', 'bb_vpt', 0.40),
    ('time', 'cp_heads_time', '--with-cp (backbone + heads): DA-VPT step '
     'time ratio (whole segmentor)', 'davpt_cp_heads', 'davpt', 1.4),
    ('time', 'cp_time', 'backbone with_cp only: DA-VPT step time ratio '
     '(whole segmentor)', 'davpt_cp', 'davpt', 1.4),
    ('time', 'cp_time_bb', 'with_cp: prompted backbone step time ratio '
     '(backbone alone)', 'bb_vpt_cp', 'bb_vpt', 1.4),
    ('time', 'infer_vs_stock', 'prompted inference / stock ViT inference '
     '(backbone + decode head)', 'infer_prompted', 'infer_stock', 1.05),
    ('time', 'infer_bb_vs_stock', 'prompted backbone inference / stock ViT '
     'backbone inference', 'infer_bb_prompted', 'infer_bb_stock', 1.05),
)
MAPPING_UPDATE_LIMIT_MS = 100.


def summarize(samples: Sequence[float]) -> dict:
    """Median, quartiles (inclusive method), IQR, min, max and the samples
    themselves."""
    s = sorted(samples)
    if len(s) >= 2:
        q1, _, q3 = statistics.quantiles(s, n=4, method='inclusive')
    else:
        q1 = q3 = s[0]
    return dict(median=statistics.median(s), q1=q1, q3=q3, iqr=q3 - q1,
                min=s[0], max=s[-1], samples=list(samples))


def make_row(vid: str, params: Sequence[int], times: Sequence[float],
             cpu_times: Sequence[float], memory: Optional[dict]) -> dict:
    """A report row (ratios filled by :func:`add_ratios`); ``params`` is
    (total, trainable)."""
    v = VARIANTS[vid]
    return dict(id=vid, row=v.row, kind=v.kind, description=v.description,
                trainable_params=params[1], total_params=params[0],
                time_ms=summarize(times), cpu_time_ms=summarize(cpu_times),
                memory_mb=memory, ratios={})


def add_ratios(rows: List[dict]) -> None:
    """Fill every row's ``ratios``: inference rows against the stock
    inference row, training rows against VPT-Deep and full fine-tuning
    (``bb_*`` rows against their backbone-only counterparts). A ratio is
    None when its reference row or memory figure is missing."""
    by_id = {r['id']: r for r in rows}

    def ratio(a, b, key):
        if b not in by_id:
            return None
        if key == 'time':
            return a['time_ms']['median'] / by_id[b]['time_ms']['median']
        if a['memory_mb'] is None or by_id[b]['memory_mb'] is None:
            return None
        return a['memory_mb']['peak'] / by_id[b]['memory_mb']['peak']

    for r in rows:
        if r['kind'] == 'infer':
            ref = INFER_REF[r['id']]
            r['ratios'] = dict(time_vs_stock=ratio(r, ref, 'time'),
                               mem_vs_stock=ratio(r, ref, 'mem'))
            continue
        bb = r['id'].startswith('bb_')
        ref_v, ref_f = ('bb_vpt', 'bb_full_ft') if bb else ('vpt', 'full_ft')
        r['ratios'] = dict(time_vs_vpt=ratio(r, ref_v, 'time'),
                           time_vs_full_ft=ratio(r, ref_f, 'time'),
                           mem_vs_vpt=ratio(r, ref_v, 'mem'),
                           mem_vs_full_ft=ratio(r, ref_f, 'mem'))


def check_schema(result: dict) -> None:
    """Raise ``RuntimeError`` if a row lacks a key or figure."""
    for r in result['rows']:
        missing = [k for k in ROW_KEYS if k not in r]
        missing += [f'time_ms.{k}' for k in TIME_KEYS
                    if k not in r['time_ms']]
        if r['memory_mb'] is not None:
            missing += [f'memory_mb.{k}' for k in MEMORY_KEYS
                        if k not in r['memory_mb']]
        if missing:
            raise RuntimeError(f"row {r['id']} lacks {missing}")


def _target(tid, desc, value, limit, cmp='<=', cpu=None, no_verdict=None):
    met = bool(value <= limit if cmp == '<=' else value >= limit)
    if no_verdict:
        met, verdict = None, no_verdict
    else:
        verdict = 'met' if met else 'MISSED'
    return dict(id=tid, description=desc, value=value, limit=limit,
                comparison=cmp, met=met, verdict=verdict,
                value_cpu_time=cpu)


def evaluate_targets(rows: List[dict], extras: Dict[str, dict],
                     no_verdict: Optional[str] = None) -> List[dict]:
    """The issue's targets (:data:`TARGETS` and the mapping update's
    time) whose rows were measured.

    Time ratios compare wall-time medians; each also carries the ratio of
    process-CPU-time medians (``value_cpu_time``), which is far less
    sensitive to other processes on a shared CPU. Each target has ``met``
    (bool) and ``verdict`` ('met' / 'MISSED'); with ``no_verdict`` (a
    reason, for presets whose ratios mean nothing) ``met`` is None and
    ``verdict`` is that reason.
    """
    figures = dict(
        time={r['id']: r['time_ms']['median'] for r in rows},
        cpu={r['id']: r['cpu_time_ms']['median'] for r in rows},
        mem={r['id']: r['memory_mb']['peak'] for r in rows
             if r['memory_mb'] is not None})

    def ratio(a, b, key):
        d = figures[key]
        return d[a] / d[b] if a in d and b in d else None

    out = []
    for kind, tid, desc, a, b, limit in TARGETS:
        if kind == 'time' and ratio(a, b, 'time') is not None:
            out.append(_target(tid, desc, ratio(a, b, 'time'), limit,
                               cpu=ratio(a, b, 'cpu'),
                               no_verdict=no_verdict))
        elif kind == 'mem' and ratio(a, b, 'mem') is not None:
            out.append(_target(tid, desc, ratio(a, b, 'mem'), limit,
                               no_verdict=no_verdict))
        elif kind == 'cut' and ratio(a, b, 'mem') is not None:
            out.append(_target(tid, desc, 1. - ratio(a, b, 'mem'), limit,
                               cmp='>=', no_verdict=no_verdict))
    mu = extras.get('mapping_update_ms')
    if mu:
        out.append(_target(
            'mapping_update', 'mapping update (k-means 150 x 1024), ms, '
            'worst of cold start and warm median',
            max(mu['cold_ms'], mu['warm']['median']),
            MAPPING_UPDATE_LIMIT_MS, no_verdict=no_verdict))
    return out
