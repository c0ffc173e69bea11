# Copyright (c) davpt-seg contributors. Apache-2.0.
"""One VPT-Deep block of mmseg's ViT through SDPA on mmcv's packed weights.

The layer's prompts act on the other tokens only as keys and values: their
outputs are dropped after the layer, so they get no query (unless their
attention output is collected for the DA-VPT losses), no output projection
and no FFN. Attention does not depend on the order of the keys, so the
prompts are appended after the tokens; the result equals the
``[CLS | prompts | image]`` layout up to float rounding.

With a prompt ``gate`` (``gated_prompts=True``) the prompts get their own
softmax, scaled by ``tanh(gate)`` per head and added to the tokens' attention
(zero-initialised gating as in LLaMA-Adapter, ``docs/prompt_gate.md``): a
zero gate gives exactly the frozen layer.
"""
from typing import Callable, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

#: (cls_query [B, C], prompt_output [B, P, C], patch_mean [B, C],
#: query_mean [B, C]), the per-layer part of ``GuidedFeatures``.
CollectedFeatures = Tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                          torch.Tensor]


def prompted_block(layer: nn.Module, x: torch.Tensor,
                   prompts: Optional[torch.Tensor], num_lead: int,
                   num_heads: int, kv_bias: Optional[torch.Tensor] = None,
                   collect: bool = False, training: bool = False,
                   record: Optional[Callable] = None,
                   gate: Optional[torch.Tensor] = None
                   ) -> Tuple[torch.Tensor, Optional[CollectedFeatures]]:
    """Forward of one pre-norm mmseg ``TransformerEncoderLayer`` with prompts.

    Args:
        layer (nn.Module): the block (its ``attn.attn`` is a batch-first
            ``nn.MultiheadAttention``).
        x (Tensor): [B, S, C] block input without prompts, S = num_lead + N.
        prompts (Tensor, optional): [B, P, C] this layer's prompts.
        num_lead (int): tokens before the image tokens ([CLS], registers).
        num_heads (int): attention heads.
        kv_bias (Tensor, optional): [2, C] offsets of the K and V biases
            (DA-VPT+).
        collect (bool): also return the guided features (needs [CLS] at 0).
        training (bool): apply attention dropout.
        record (Callable, optional): ``record(q, k, S, num_lead, gate)``
            with q, k [B, heads, S + P, C / heads] (attention capture).
        gate (Tensor, optional): [heads] prompt gate (pre-``tanh``); None
            puts the prompts in the tokens' softmax (VPT).
    Returns:
        (Tensor [B, S, C], CollectedFeatures or None).
    """
    mha = layer.attn.attn
    B, S, C = x.shape
    bias = mha.in_proj_bias
    if kv_bias is not None:
        kv = F.pad(kv_bias.flatten(), (C, 0))  # [3C]
        bias = kv if bias is None else bias + kv
    seq = x if prompts is None else torch.cat((x, prompts), dim=1)
    T = seq.shape[1]
    qkv = F.linear(layer.norm1(seq), mha.in_proj_weight, bias)
    q, k, v = qkv.view(B, T, 3, num_heads, C // num_heads).permute(
        2, 0, 3, 1, 4)
    if record is not None:
        record(q, k, S, num_lead, gate)
    o = _attention(q if collect else q[:, :, :S], k, v, S,
                   None if prompts is None else gate,
                   mha.dropout if training else 0.)
    o = o.transpose(1, 2).reshape(B, -1, C)  # heads concatenated
    feats = None
    if collect:
        feats = (q[:, :, 0].reshape(B, C), o[:, S:], x[:, num_lead:].mean(1),
                 q[:, :, num_lead:S].mean(2).reshape(B, C))
        o = o[:, :S]
    out = F.linear(o, mha.out_proj.weight, mha.out_proj.bias)
    x = x + layer.attn.dropout_layer(layer.attn.proj_drop(out))
    return layer.ffn(layer.norm2(x), identity=x), feats


def _attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, S: int,
               gate: Optional[torch.Tensor], dropout_p: float) -> torch.Tensor:
    """SDPA of q [B, h, Q, d] on k, v [B, h, T, d]: one softmax over all T
    keys, or with ``gate`` [h] one over the first S keys plus ``tanh(gate)``
    times one over the T - S prompt keys."""
    if gate is None:
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)
    tokens = F.scaled_dot_product_attention(
        q, k[:, :, :S], v[:, :, :S], dropout_p=dropout_p)
    prompts = F.scaled_dot_product_attention(
        q, k[:, :, S:], v[:, :, S:], dropout_p=dropout_p)
    return tokens + gate.tanh().view(1, -1, 1, 1).to(prompts.dtype) * prompts
