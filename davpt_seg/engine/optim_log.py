# Copyright (c) davpt-seg contributors. Apache-2.0.
"""Quiet mmengine's one-warning-per-frozen-parameter.

With a ``paramwise_cfg`` (SETR sets one to give heads a x10 learning rate),
mmengine 0.10.7's ``DefaultOptimWrapperConstructor.add_params`` logs a WARNING
for every parameter with ``requires_grad=False`` -- about 290 lines for a
frozen ViT-L. Those parameters are skipped by the optimizer, which is exactly
what a frozen backbone wants. We replace that module's ``print_log`` with a
wrapper that drops exactly that message and counts it; everything else is
logged unchanged, and :class:`DAVPTHook` / :class:`ParamReportHook` log the
frozen/trainable totals once. Installed on ``import davpt_seg`` (the configs'
``custom_imports``), so drop-in configs need no extra setting.
"""
import re

from mmengine.optim.optimizer import default_constructor

_FROZEN = re.compile(r' is skipped since its requires_grad=False$')
_original_print_log = default_constructor.print_log
skipped_frozen_params = []


def _print_log(msg, *args, **kwargs):
    if isinstance(msg, str) and _FROZEN.search(msg):
        skipped_frozen_params.append(msg.split(' ', 1)[0])
        return
    _original_print_log(msg, *args, **kwargs)


def install_frozen_param_log_filter() -> None:
    """Idempotently install the filter (see module docstring)."""
    default_constructor.print_log = _print_log
