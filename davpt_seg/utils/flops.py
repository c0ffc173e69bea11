# Copyright (c) davpt-seg contributors. Apache-2.0.
"""FLOP counting that sees scaled-dot-product attention.

mmengine's :class:`~mmengine.analysis.FlopAnalyzer` (fvcore-style: it
traces the model with ``torch.jit`` and counts each ``aten::`` op with a
handle) has no handle for ``aten::scaled_dot_product_attention``: it skips
the op with an "unsupported operator" warning. The prompted ViT computes
attention with SDPA, mmseg's stock ViT with ``nn.MultiheadAttention``'s two
batched matmuls (counted), so the same network reported ~11 % fewer FLOPs
(ViT-L at 512 px) than the stock one.

:func:`sdpa_flop_jit` counts SDPA exactly as those two matmuls are counted
(one multiply-add = one FLOP; softmax and scaling are not counted, as for
``nn.MultiheadAttention``). :func:`flop_analyzer` returns a ``FlopAnalyzer``
with it; ``tools/get_flops.py`` prints the report.
:func:`davpt_seg.compat.install_sdpa_flop_handle` adds it to the handles
every new ``FlopAnalyzer`` starts with, so that mmengine's
``get_model_complexity_info`` and mmseg's ``get_flops.py`` count SDPA too.
"""
from math import prod
from typing import Any, List, Tuple, Union

import torch
import torch.nn as nn
from mmengine.analysis import FlopAnalyzer
from mmengine.analysis.jit_handles import get_shape

__all__ = ['SDPA_OP', 'sdpa_flop_jit', 'flop_analyzer']

#: The traced op of :func:`torch.nn.functional.scaled_dot_product_attention`.
SDPA_OP = 'aten::scaled_dot_product_attention'


def sdpa_flop_jit(inputs: List[Any], outputs: List[Any]) -> int:
    """FLOPs of one ``aten::scaled_dot_product_attention`` call.

    Shapes: query [*, L, E], key [*, S, E], value [*, S, Ev], where ``*``
    are the batch and head dims of the query (a key/value with fewer heads,
    as in grouped-query attention, is broadcast). Counted as ``Q K^T``
    (``* x L x S x E``) plus ``attn V`` (``* x L x S x Ev``): the ``bmm``
    pair of ``nn.MultiheadAttention``.
    """
    query, key, value = (get_shape(v) for v in inputs[:3])
    if query is None or key is None or value is None:
        raise ValueError(f'{SDPA_OP}: shapes unknown in the traced graph')
    batch = prod(query[:-2])
    length, dims = query[-2:]
    return batch * length * key[-2] * (dims + value[-1])


def flop_analyzer(
        model: nn.Module,
        inputs: Union[torch.Tensor, Tuple[Any, ...]]) -> FlopAnalyzer:
    """``FlopAnalyzer(model, inputs)`` that also counts SDPA.

    Args:
        model (nn.Module): The model, traced as ``model(*inputs)``.
        inputs (Tensor | tuple): Its inputs, e.g. a [B, 3, H, W] image.

    Returns:
        FlopAnalyzer: Use ``.total()``, ``.by_module()``,
        ``.by_operator()``, ``.unsupported_ops()``.
    """
    return FlopAnalyzer(model, inputs).set_op_handle(
        **{SDPA_OP: sdpa_flop_jit})

