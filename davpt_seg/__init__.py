"""davpt_seg: DA-VPT for MMSegmentation 1.x.

Importing this package registers every component (backbone, losses, hooks,
datasets) in the mmseg / mmengine registries. Configs load it with::

    custom_imports = dict(imports=['davpt_seg'], allow_failed_imports=False)
"""
from . import datasets, engine, models, utils  # noqa: F401  (registration)
from .version import __version__

__all__ = ['__version__']
