"""davpt_seg: DA-VPT for MMSegmentation 1.x.

Importing this package registers every component (backbone, losses, hooks,
datasets) in the mmseg / mmengine registries. Configs load it with::

    custom_imports = dict(imports=['davpt_seg'], allow_failed_imports=False)

It also installs, deliberately and idempotently:

* a local-file checkpoint loader for mmengine that keeps ``torch.load``'s
  ``weights_only=True`` (torch >= 2.6) and allowlists the few mmengine/numpy
  types its training checkpoints contain (see ``davpt_seg.weights.io``);
* a filter for mmengine's one-WARNING-per-frozen-parameter log lines (see
  ``davpt_seg.engine.optim_log``);
* a FLOP-count handle for ``scaled_dot_product_attention`` in mmengine's
  ``FlopAnalyzer`` defaults, which skip it (see ``davpt_seg.utils.flops``).
"""
from . import datasets, engine, evaluation, models, utils  # noqa: F401
from .engine import install_frozen_param_log_filter
from .weights.install import install_checkpoint_loader
from .utils.flops import install_sdpa_flop_handle
from .version import __version__

install_checkpoint_loader()
install_frozen_param_log_filter()
install_sdpa_flop_handle()

__all__ = ['__version__']
