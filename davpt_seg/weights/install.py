# Copyright (c) davpt-seg contributors. Apache-2.0.
"""Temporary home of the mmengine checkpoint-loader install (moves to
:mod:`davpt_seg.compat`, which registers
:func:`davpt_seg.weights.io.load_from_local_safe` the same way)."""
from mmengine.runner.checkpoint import CheckpointLoader

from .io import load_from_local_safe


def install_checkpoint_loader() -> None:
    """Route mmengine's local checkpoint loading through
    :func:`~davpt_seg.weights.io.load_training_checkpoint`.

    Overrides the ``''`` prefix of :class:`mmengine.runner.CheckpointLoader`
    (the local loader, which also handles every path that no other prefix
    matches). Other schemes are untouched. Calling it again does nothing.
    """
    if CheckpointLoader._schemes.get('') is load_from_local_safe:
        return
    CheckpointLoader.register_scheme(
        prefixes='', loader=load_from_local_safe, force=True)
