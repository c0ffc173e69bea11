# Copyright (c) davpt-seg contributors. Apache-2.0.
"""Training curves from mmengine's ``vis_data/scalars.json`` logs
(``tools/plot_logs.py``).

mmengine writes one JSON object per line: training lines carry ``iter`` (and
``step``), validation lines only ``step``. A resumed run starts a new
``WORK_DIR/<timestamp>/vis_data/scalars.json``; the files of a work dir are
merged by iteration, later runs overriding earlier values of the same
iteration (the iterations a crashed run logged after its last checkpoint
are run again after resuming).
"""
import glob
import json
import os.path as osp
from typing import Dict, List, Sequence


def find_scalar_files(path: str) -> List[str]:
    """``path`` itself if it is a file, else the work dir's
    ``*/vis_data/scalars.json`` (and ``vis_data/scalars.json``), oldest
    run first (timestamped directory names sort by time)."""
    if osp.isfile(path):
        return [path]
    if not osp.isdir(path):
        raise FileNotFoundError(f'{path}: no such log file or work dir')
    files = sorted(glob.glob(osp.join(path, '*', 'vis_data',
                                      'scalars.json')))
    files += glob.glob(osp.join(path, 'vis_data', 'scalars.json'))
    if not files:
        raise FileNotFoundError(f'{path}: no */vis_data/scalars.json (is it '
                                'an mmengine work dir?)')
    return files


def load_scalars(files: Sequence[str]) -> Dict[str, Dict[str, dict]]:
    """Merge scalar logs.

    Returns:
        dict: ``{'train': {key: {iter: value}}, 'val': {key: {step:
        value}}}`` with later files overriding earlier ones per iteration.
    """
    out = {'train': {}, 'val': {}}
    for path in files:
        with open(path) as f:
            for n, line in enumerate(f, 1):
                line = line.strip()
                if not line:
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ValueError(f'{path}:{n}: not JSON ({e})') from e
                part = 'train' if 'iter' in row else 'val'
                x = row.get('iter', row.get('step'))
                if x is None:
                    continue
                for key, value in row.items():
                    if key in ('iter', 'step') or not isinstance(
                            value, (int, float)):
                        continue
                    out[part].setdefault(key, {})[int(x)] = float(value)
    return out


def series(scalars: Dict[str, Dict[str, dict]], key: str):
    """(iterations, values) of ``key``, training values first; None if
    the key was never logged."""
    for part in ('train', 'val'):
        if key in scalars[part]:
            points = sorted(scalars[part][key].items())
            return [p[0] for p in points], [p[1] for p in points]
    return None


def smooth(values: List[float], window: int) -> List[float]:
    """Trailing moving average over ``window`` points."""
    if window <= 1:
        return list(values)
    out, total = [], 0.
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def plot_curves(runs: Dict[str, Dict[str, Dict[str, dict]]],
                keys: Sequence[str], out_file: str, window: int = 1,
                title: str = '') -> List[str]:
    """One subplot per key, one curve per run; returns the keys found in
    no run (not drawn)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    found = [k for k in keys if any(series(s, k) for s in runs.values())]
    missing = [k for k in keys if k not in found]
    if not found:
        raise ValueError(f'none of the keys {list(keys)} is in the logs')
    fig, axes = plt.subplots(len(found), 1, sharex=True, squeeze=False,
                             figsize=(8, 2.2 * len(found) + 0.8), dpi=100)
    for ax, key in zip(axes[:, 0], found):
        for label, scalars in runs.items():
            s = series(scalars, key)
            if s is None:
                continue
            ax.plot(s[0], smooth(s[1], window), label=label, lw=1.2,
                    marker='o' if len(s[0]) < 20 else None, ms=3)
        ax.set_ylabel(key, fontsize=9)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=8)
    axes[0, 0].legend(fontsize=8)
    axes[-1, 0].set_xlabel('iteration', fontsize=9)
    fig.suptitle(title + (f' (moving average over {window} logged points)'
                          if window > 1 else ''), fontsize=10)
    fig.tight_layout()
    fig.savefig(out_file)
    plt.close(fig)
    return missing
