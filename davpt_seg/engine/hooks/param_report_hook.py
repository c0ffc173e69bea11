# Copyright (c) davpt-seg contributors. Apache-2.0.
"""Trainable-parameter report, logged when training starts."""
from collections import OrderedDict
from typing import Dict

import torch.nn as nn
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmseg.registry import HOOKS

# (group, substring of the parameter name); the first match wins.
GROUPS = (('prompt_gates', 'prompt_gate'), ('prompts', 'prompt'),
          ('kv_biases', 'kv_bias_delta'),
          ('decode_head', 'decode_head.'), ('auxiliary_heads',
                                            'auxiliary_head'))


def parameter_report(model: nn.Module) -> Dict[str, int]:
    """Count parameters: ``total``, ``trainable`` and trainable ones by group
    (prompt_gates, prompts, kv_biases, decode_head, auxiliary_heads,
    other)."""
    if is_model_wrapper(model):
        model = model.module
    counts = OrderedDict(total=0, trainable=0)
    counts.update((g, 0) for g, _ in GROUPS)
    counts['other'] = 0
    for name, p in model.named_parameters():
        counts['total'] += p.numel()
        if not p.requires_grad:
            continue
        counts['trainable'] += p.numel()
        group = next((g for g, key in GROUPS if key in name), 'other')
        counts[group] += p.numel()
    return counts


def format_parameter_report(counts: Dict[str, int]) -> str:
    pct = 100. * counts['trainable'] / max(counts['total'], 1)
    parts = ', '.join(f'{k} {v / 1e6:.3f}M' if v >= 1000 else f'{k} {v}'
                      for k, v in counts.items()
                      if k not in ('total', 'trainable') and v)
    return (f'Parameters: total {counts["total"] / 1e6:.3f}M, trainable '
            f'{counts["trainable"] / 1e6:.3f}M ({pct:.2f}%): {parts}')


@HOOKS.register_module()
class ParamReportHook(Hook):
    """Log :func:`parameter_report` at ``before_train`` (plain-VPT configs;
    :class:`DAVPTHook` logs it itself)."""

    priority = 'VERY_LOW'

    def before_train(self, runner) -> None:
        runner.logger.info(format_parameter_report(
            parameter_report(runner.model)))
