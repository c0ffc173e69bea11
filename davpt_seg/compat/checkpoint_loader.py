# Copyright (c) davpt-seg contributors. Apache-2.0.
"""mmengine's local checkpoint loader, keeping ``weights_only=True``."""
from mmengine.runner import CheckpointLoader

from davpt_seg.weights.io import load_from_local_safe


def install_checkpoint_loader() -> None:
    """Register :func:`~davpt_seg.weights.io.load_from_local_safe` as
    mmengine's ``''`` checkpoint scheme (local files, and every path no other
    prefix matches), through ``CheckpointLoader.register_scheme``.

    ``runner.load_checkpoint``, ``runner.resume``, ``load_from`` and
    ``init_cfg=dict(type='Pretrained')`` then read local files with a scoped
    allowlist; remote schemes (``http(s)://``, ``s3://``, ...) are unchanged.
    Calling it again registers the same loader again (no change).
    """
    CheckpointLoader.register_scheme(
        prefixes='', loader=load_from_local_safe, force=True)
