"""davpt_seg: DA-VPT for MMSegmentation 1.x.

Importing this package registers every component (backbone, losses, hooks,
datasets) in the mmseg / mmengine registries, and changes nothing else.
The changes to mmengine's process-wide state that training needs (a
``weights_only`` local checkpoint loader, a filter for the frozen-parameter
log lines, an SDPA FLOP handle) are installed explicitly by
:func:`davpt_seg.compat.install`; configs load both with::

    custom_imports = dict(imports=['davpt_seg', 'davpt_seg.compat.enable'],
                          allow_failed_imports=False)
"""
from . import datasets, engine, evaluation, models, utils  # noqa: F401
from .version import __version__

__all__ = ['__version__']
