# Copyright (c) davpt-seg contributors. Apache-2.0.
"""SDPA in mmengine's default FLOP handles."""
from davpt_seg.utils.flops import SDPA_OP, sdpa_flop_jit


def install_sdpa_flop_handle() -> None:
    """Add :func:`~davpt_seg.utils.flops.sdpa_flop_jit` to the handles every
    new mmengine ``FlopAnalyzer`` starts with (its module-level default
    table; mmengine has no public way to extend it), unless mmengine already
    has one. Then ``get_model_complexity_info``, which builds its own
    ``FlopAnalyzer``, counts SDPA too. Idempotent."""
    from mmengine.analysis import complexity_analysis
    table = getattr(complexity_analysis, '_DEFAULT_SUPPORTED_FLOP_OPS', None)
    if isinstance(table, dict):
        table.setdefault(SDPA_OP, sdpa_flop_jit)
