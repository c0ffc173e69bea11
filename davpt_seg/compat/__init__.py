# Copyright (c) davpt-seg contributors. Apache-2.0.
"""Explicit changes to mmengine's process-wide state.

``import davpt_seg`` only registers components; it changes nothing in
mmengine. :func:`install` makes three changes, each idempotent:

* :func:`install_checkpoint_loader`: mmengine's local-file checkpoint loader
  (the ``''`` scheme of ``CheckpointLoader``) becomes
  ``davpt_seg.weights.io.load_from_local_safe``, which keeps
  ``torch.load``'s ``weights_only=True`` (torch >= 2.6) and allowlists the
  few mmengine/numpy types of mmengine training checkpoints. Without it,
  ``--resume``, ``load_from`` and ``init_cfg=dict(type='Pretrained')`` fail
  on mmengine's own checkpoints under torch >= 2.6.
* :func:`install_frozen_param_log_filter`: a :class:`FrozenParamLogFilter`
  on mmengine's loggers (the current ``MMLogger`` and every one created
  later) drops the one WARNING per frozen parameter that mmengine's
  optimizer constructor logs (~290 lines for a frozen ViT-L).
* :func:`install_sdpa_flop_handle`: mmengine's ``FlopAnalyzer`` defaults
  count ``scaled_dot_product_attention`` (they skip it), so mmengine's
  ``get_model_complexity_info`` and mmseg's ``get_flops.py`` see the
  prompted ViT's attention. ``davpt_seg.utils.flops.flop_analyzer`` counts
  it without this.

Who installs: the project's tools (``tools/train.py``, ``tools/test.py``,
...) call :func:`install`; configs list :mod:`davpt_seg.compat.enable` in
``custom_imports`` so that stock launchers (mmseg's ``tools/train.py``)
install it too::

    custom_imports = dict(imports=['davpt_seg', 'davpt_seg.compat.enable'],
                          allow_failed_imports=False)

Code that builds a ``Runner`` itself calls ``davpt_seg.compat.install()``.
"""
from .checkpoint_loader import install_checkpoint_loader
from .flops import install_sdpa_flop_handle
from .log_filter import FrozenParamLogFilter, install_frozen_param_log_filter

__all__ = [
    'install', 'install_checkpoint_loader', 'install_frozen_param_log_filter',
    'install_sdpa_flop_handle', 'FrozenParamLogFilter'
]


def install() -> None:
    """Install all three (see the module docstring). Idempotent."""
    install_checkpoint_loader()
    install_frozen_param_log_filter()
    install_sdpa_flop_handle()
