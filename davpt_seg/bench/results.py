# Copyright (c) davpt-seg contributors. Apache-2.0.
"""Reading mmengine run folders and writing the accuracy bench's report."""
import glob
import json
import os.path as osp
import re
import statistics
import zipfile
from typing import Dict, List, Optional

#: Order of the report's rows.
ROW_ORDER = ('heads', 'vpt', 'vpt_gated', 'davpt', 'davpt_gated',
             'davpt_patchmap', 'davpt_gated_patchmap', 'davptplus',
             'davpt_kpp', 'davpt_g4', 'full', 'full_adamw')


def latest_valid_checkpoint(run_dir: str) -> Optional[str]:
    """The ``iter_N.pth`` of ``run_dir`` with the largest N whose file is
    complete (torch's zip archive ends with its central directory, which a
    process killed while saving never writes), or None."""
    found = []
    for path in glob.glob(osp.join(run_dir, 'iter_*.pth')):
        match = re.fullmatch(r'iter_(\d+)\.pth', osp.basename(path))
        if match:
            found.append((int(match.group(1)), path))
    for _, path in sorted(found, reverse=True):
        if zipfile.is_zipfile(path):
            return path
    return None


def read_train_log(run_dir: str) -> List[dict]:
    """Training entries of mmengine's ``*/vis_data/scalars.json`` files
    under ``run_dir`` (one per start, e.g. after a resume), merged by
    iteration (a later start overrides), sorted by ``step``."""
    by_step = {}
    files = sorted(glob.glob(osp.join(run_dir, '*', 'vis_data',
                                      'scalars.json')))
    for path in files:
        with open(path, encoding='utf-8') as f:
            for line in f:
                entry = json.loads(line)
                if 'loss' in entry and 'step' in entry:
                    by_step[int(entry['step'])] = entry
    return [by_step[k] for k in sorted(by_step)]


#: DAVPTHook's mapping lines (initial pass and each update).
_MAPPING_LINE = re.compile(
    r'DA-VPT (?:initial mapping .*?: (?P<init>set|NOT set)|mapping '
    r'(?P<state>updated|kept) .*?at iter (?P<iter>\d+) .*?); cluster sizes '
    r'(?P<sizes>\[[\d, ]*\])(?:; centroid cosine (?:n/a|mean '
    r'(?P<mean>[-\d.]+) max (?P<max>[-\d.]+)))?')


def read_mapping_log(run_dir: str) -> List[dict]:
    """The class->prompt mapping of a DA-VPT run per update, from the text
    logs under ``run_dir`` (merged by iteration; the initial pass is
    iteration 0): ``iter``, ``accepted``, ``sizes`` (classes per prompt),
    ``cos_mean`` / ``cos_max`` (between distinct centroids; None without
    centroids or in logs of versions that did not write them)."""
    by_iter = {}
    for path in sorted(glob.glob(osp.join(run_dir, '*', '*.log'))):
        with open(path, encoding='utf-8', errors='replace') as f:
            for m in _MAPPING_LINE.finditer(f.read()):
                it = 0 if m['init'] else int(m['iter'])
                by_iter[it] = dict(
                    iter=it, accepted=m['init'] == 'set' or
                    m['state'] == 'updated',
                    sizes=json.loads(m['sizes']),
                    cos_mean=None if m['mean'] is None else float(m['mean']),
                    cos_max=None if m['max'] is None else float(m['max']))
    return [by_iter[k] for k in sorted(by_iter)]


def read_prompt_gate(checkpoint: str) -> Optional[List[float]]:
    """Per layer, ``tanh`` of the learned prompt gate averaged over the
    heads, from an mmengine checkpoint; None without gated prompts."""
    from davpt_seg.weights import load_training_checkpoint
    state = load_training_checkpoint(checkpoint)['state_dict']
    gate = state.get('backbone.prompt_gate')
    if gate is None:
        return None
    return [round(float(v), 4) for v in gate.float().tanh().mean(1)]


def median_step_time(entries: List[dict]) -> Optional[float]:
    """Median ``time`` (seconds per iteration, averaged by mmengine over
    each log interval) without the first interval (warm-up)."""
    times = [e['time'] for e in entries[1:] if 'time' in e]
    return float(statistics.median(times)) if times else None


def read_test_metrics(test_dir: str) -> Dict[str, float]:
    """Metrics of the newest ``tools/test.py --work-dir test_dir`` run
    (mmengine writes ``test_dir/<stamp>/<stamp>.json``)."""
    files = glob.glob(osp.join(test_dir, '*', '*.json'))
    if not files:
        raise FileNotFoundError(f'no test metrics under {test_dir}')
    with open(max(files, key=osp.getmtime), encoding='utf-8') as f:
        return json.load(f)


def summarise(runs: List[dict]) -> Dict[str, dict]:
    """Per variant: mean, sample std (0 for one seed) and n of mIoU, the
    mean per-class IoU, trainable share and median step time."""
    out = {}
    for variant in sorted({r['variant'] for r in runs}, key=_row_key):
        rows = [r for r in runs if r['variant'] == variant]
        mious = [r['mIoU'] for r in rows]
        classes = sorted({c for r in rows for c in r['class_iou']})
        out[variant] = dict(
            mIoU_mean=statistics.fmean(mious),
            mIoU_std=statistics.stdev(mious) if len(mious) > 1 else 0.,
            n=len(mious),
            seeds=[r['seed'] for r in rows],
            aAcc_mean=statistics.fmean(r['aAcc'] for r in rows),
            class_iou_mean={
                c: statistics.fmean(r['class_iou'][c] for r in rows
                                    if c in r['class_iou'])
                for c in classes},
            trainable_params=rows[0]['trainable_params'],
            total_params=rows[0]['total_params'],
            step_time_median=_median_or_none(
                [r['step_time'] for r in rows]))
    return out


def _row_key(row: str):
    """Report order: by variant (a grid row ``variant@lrX`` with its
    variant), then by name."""
    variant = row.split('@')[0]
    return (ROW_ORDER.index(variant) if variant in ROW_ORDER
            else len(ROW_ORDER), row)


def _median_or_none(values):
    values = [v for v in values if v is not None]
    return float(statistics.median(values)) if values else None


def format_markdown(results: dict) -> str:
    """The report's tables: one row per variant, per-class IoU, runs."""
    summary, settings = results['summary'], results['settings']
    lines = [
        f"Preset `{settings['preset']}`, evaluated on `{settings['eval_split']}`"
        f" ({settings['iters']} iterations, batch "
        f"{settings['batch_size']}, crop {settings['crop']}, test scale "
        f"{settings['scale']}).", '']
    if settings.get('lr_chosen'):
        sources = settings['lr_chosen_from']
        sources = [sources] if isinstance(sources, str) else sources
        inherited = settings.get('lr_inherited') or {}
        lines += [
            'Learning rates (base; multipliers such as the heads\' x10 '
            'kept) chosen on the selection split (' + ', '.join(
                f'`{s}`' for s in sources) + '): ' + ', '.join(
                f'{v} {lr:g}' + (f' (that of {inherited[v]})'
                                 if v in inherited else '')
                for v, lr in settings['lr_chosen'].items()) +
            f". `{settings['eval_split']}` chose nothing.", '']
        lines += _grid_lines(settings.get('lr_grid_scores'),
                             settings['lr_chosen'], inherited)
    lines += [
        '| variant | trainable | mIoU (mean ± std, n) | seeds | aAcc | '
        'step (s) |', '|---|---|---|---|---|---|']
    for variant, s in summary.items():
        share = 100. * s['trainable_params'] / s['total_params']
        seeds = ', '.join(f"{r['mIoU']:.2f}" for r in results['runs']
                          if r['variant'] == variant)
        step = '-' if s['step_time_median'] is None else \
            f"{s['step_time_median']:.2f}"
        lines.append(
            f"| {variant} | {s['trainable_params'] / 1e6:.3f}M "
            f"({share:.2f} %) | {s['mIoU_mean']:.2f} ± {s['mIoU_std']:.2f} "
            f"({s['n']}) | {seeds} | {s['aAcc_mean']:.2f} | {step} |")
    classes = sorted({c for s in summary.values() for c in s['class_iou_mean']},
                     key=lambda c: results.get('classes', []).index(c)
                     if c in results.get('classes', []) else 99)
    if classes:
        lines += ['', 'Per-class IoU (mean over seeds):', '',
                  '| variant | ' + ' | '.join(classes) + ' |',
                  '|---|' + '---|' * len(classes)]
        for variant, s in summary.items():
            cells = [f"{s['class_iou_mean'][c]:.1f}"
                     if c in s['class_iou_mean'] else '-' for c in classes]
            lines.append(f'| {variant} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines + _mapping_lines(results['runs']) +
                     _gate_lines(results['runs'])) + '\n'


def _grid_lines(grid: Optional[dict], chosen: dict,
                inherited: dict) -> List[str]:
    """The selection grid: mIoU on ``select`` (one row per variant, one
    column per base learning rate), the chosen rate in bold."""
    if not grid:
        return []
    lrs = sorted({float(lr) for row in grid.values() for lr in row})
    lines = ['mIoU on `select` per base learning rate (the chosen one in '
             'bold):', '', '| variant | ' +
             ' | '.join(f'{lr:g}' for lr in lrs) + ' |',
             '|---|' + '---|' * len(lrs)]
    for variant, row in grid.items():
        if variant not in chosen:
            continue
        cells = []
        for lr in lrs:
            m = row.get(f'{lr:g}')
            text = '-' if m is None else f'{m:.2f}'
            bold = variant not in inherited and m is not None and \
                float(lr) == chosen[variant]
            cells.append(f'**{text}**' if bold else text)
        lines.append(f'| {variant} | ' + ' | '.join(cells) + ' |')
    return lines + ['']


def _mapping_lines(runs: List[dict]) -> List[str]:
    """Per DA-VPT run, the mapping at the initial pass and each update."""
    runs = [r for r in runs if r.get('mapping_updates')]
    if not runs:
        return []
    lines = ['', 'Class->prompt mapping per update (classes per prompt; '
             'cosine between distinct k-means centroids, mean / max; '
             '*kept*: the update was rejected and the mapping kept):', '',
             '| variant | seed | iter | cluster sizes | centroid cosine |',
             '|---|---|---|---|---|']
    for r in runs:
        for u in r['mapping_updates']:
            cos = '-' if u['cos_mean'] is None else \
                f"{u['cos_mean']:.3f} / {u['cos_max']:.3f}"
            kept = '' if u['accepted'] else ' *kept*'
            lines.append(f"| {r['variant']} | {r['seed']} | {u['iter']}"
                         f"{kept} | {u['sizes']} | {cos} |")
    return lines


def _gate_lines(runs: List[dict]) -> List[str]:
    """Per gated variant, the learned tanh(gate) per layer (seed mean)."""
    gated = {}
    for r in runs:
        if r.get('prompt_gate'):
            gated.setdefault(r['variant'], []).append(r['prompt_gate'])
    if not gated:
        return []
    depth = max(len(g[0]) for g in gated.values())
    lines = ['', 'Learned prompt gates: tanh(gate) per layer, mean over '
             'heads and seeds (0 at step 0):', '',
             '| variant | ' + ' | '.join(f'L{i}' for i in range(depth)) +
             ' |', '|---|' + '---|' * depth]
    for variant, gates in gated.items():
        cells = [f'{statistics.fmean(g[i] for g in gates):.3f}'
                 for i in range(depth)]
        lines.append(f'| {variant} | ' + ' | '.join(cells) + ' |')
    return lines


def plot_results(results: dict, path: str) -> None:
    """``path``: mIoU per variant (every seed a point, the mean a bar) and
    the training loss curves (mean over seeds) side by side."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    summary, runs = results['summary'], results['runs']
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    names = list(summary)
    means = [summary[v]['mIoU_mean'] for v in names]
    stds = [summary[v]['mIoU_std'] for v in names]
    ax1.bar(range(len(names)), means, yerr=stds, color='#9ecae1',
            capsize=4, label='mean ± std')
    for i, variant in enumerate(names):
        pts = [r['mIoU'] for r in runs if r['variant'] == variant]
        ax1.scatter([i] * len(pts), pts, color='#08519c', zorder=3, s=18,
                    label='one seed' if i == 0 else None)
    low = min(r['mIoU'] for r in runs)
    ax1.set_ylim(max(0., low - 5.), None)
    ax1.set_xticks(range(len(names)), names, rotation=30, ha='right')
    ax1.set_ylabel(f"mIoU on {results['settings']['eval_split']} (%)")
    ax1.set_title('CamVid, DINOv2-S/14: mIoU per variant')
    ax1.legend(loc='lower right')
    for variant in names:
        curves = [r['loss_curve'] for r in runs if r['variant'] == variant]
        steps = sorted(set.intersection(*[set(c) for c in curves]),
                       key=int) if curves else []
        if steps:
            ax2.plot([int(s) for s in steps],
                     [statistics.fmean(c[s] for c in curves) for s in steps],
                     label=variant)
    ax2.set_xlabel('iteration')
    ax2.set_ylabel('training loss (sum of the loss terms)')
    ax2.set_title('Training loss, mean over seeds')
    ax2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
