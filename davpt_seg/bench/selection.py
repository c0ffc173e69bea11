# Copyright (c) davpt-seg contributors. Apache-2.0.
"""The selection protocol's choice: each variant's learning rate from the
``results.json`` of ``--eval-split select`` runs (never from a reported
split)."""
import json
from typing import Dict, Sequence, Tuple

from .presets import LR_BASE


def selection_scores(paths: Sequence[str]) -> Dict[str, Dict[float, float]]:
    """variant -> {base learning rate: mean mIoU on ``select``} over the
    ``results.json`` files ``paths`` of ``--eval-split select`` runs.

    Raises:
        ValueError: a file was not evaluated on ``select``.
    """
    scores = {}
    for path in paths:
        with open(path, encoding='utf-8') as f:
            results = json.load(f)
        split = results['settings']['eval_split']
        if split != 'select':
            raise ValueError(f'{path} was evaluated on {split!r}; settings '
                             "are chosen on 'select' only")
        for run in results['runs']:
            if run.get('lr') is None:
                continue
            base = run.get('base_variant', run['variant'])
            scores.setdefault(base, {})[run['lr']] = \
                results['summary'][run['variant']]['mIoU_mean']
    return scores


def chosen_lrs(scores: Dict[str, Dict[float, float]],
               variants: Sequence[str]
               ) -> Tuple[Dict[str, float], Dict[str, str]]:
    """Per variant, the base learning rate of its best row (highest mean
    mIoU) in ``scores`` (:func:`selection_scores`); a lever variant without
    rows of its own takes its base variant's (:data:`LR_BASE`).

    Returns:
        (dict variant -> lr, dict variant -> variant whose lr it took).
    Raises:
        ValueError: a variant has no learning-rate rows.
    """
    chosen, inherited = {}, {}
    for variant in variants:
        source = variant
        if source not in scores and LR_BASE.get(variant) in scores:
            source = inherited[variant] = LR_BASE[variant]
        if source not in scores:
            raise ValueError('the selection results have no learning-rate '
                             f'rows of {variant}')
        chosen[variant] = max(scores[source], key=scores[source].get)
    return chosen, inherited
