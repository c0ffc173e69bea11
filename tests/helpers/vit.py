"""Small ViTs for unit tests: the shared tiny configuration, a writer of
"pretrained" mmseg-format weights, and an explicit-attention reference of
the prompted ViT's forward that the fast implementation is checked
against."""
from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F
from mmseg.models.backbones import VisionTransformer

#: A 4-layer, 64-dim ViT at 64 px with patch 16 (4 x 4 patches): keyword
#: arguments of both mmseg's ``VisionTransformer`` and
#: ``PromptedVisionTransformer``.
TINY_VIT = dict(img_size=(64, 64), patch_size=16, embed_dims=64,
                num_layers=4, num_heads=4, mlp_ratio=2,
                norm_cfg=dict(type='LN', eps=1e-6))


def save_vit(path, seed: int = 0, **vit_kwargs) -> dict:
    """Save a randomly initialised (``seed``) mmseg ``VisionTransformer``
    (``vit_kwargs``) to ``path`` as a plain state dict, as "pretrained"
    weights (nothing can be downloaded); returns the state dict."""
    torch.manual_seed(seed)
    vit = VisionTransformer(**vit_kwargs)
    vit.init_weights()
    state = vit.state_dict()
    torch.save(state, path)
    return state


class LayerTrace(NamedTuple):
    """One layer of :func:`explicit_vpt_forward`, in the documented token
    order ``[CLS | registers | prompts | image]`` (T tokens)."""
    tokens: torch.Tensor  #: [B, T, C] the layer's input
    prompts: Optional[torch.Tensor]  #: [P, C] the layer's prompts, or None
    prompt_slice: slice  #: the prompts' positions among the T tokens
    query: torch.Tensor  #: [B, T, C] attention queries
    attn: torch.Tensor  #: [B, heads, T, T] attention probabilities
    output: torch.Tensor  #: [B, T, C] attention output before out_proj


def explicit_vpt_forward(m, x: torch.Tensor):
    """Reference VPT-Deep forward of a ``PromptedVisionTransformer`` ``m``
    on images ``x`` [B, 3, H, W]: every layer runs on the full sequence
    ``[CLS | registers | prompts | image]`` with an explicit
    softmax(QK^T / sqrt(d)) attention (incl. the DA-VPT+ K/V bias deltas;
    with ``prompt_gate`` the prompt columns get their own softmax times
    ``tanh(gate)``); the prompts are dropped after each layer.

    Returns:
        tuple: the ``out_indices`` maps ([B, C, h, w] each), a dict layer
        index -> :class:`LayerTrace`, and token 0 after the last layer
        (and final norm) [B, C] ([CLS] when ``with_cls_token``).
    """
    B = x.shape[0]
    t, hw = m.patch_embed(x)
    t = torch.cat((m.cls_token.expand(B, -1, -1), t), 1)
    pos = m.pos_embed  # resized as mmseg's ViT does for another input size
    if t.shape[1] != pos.shape[1]:
        grid = (m.img_size[0] // m.patch_size, m.img_size[1] // m.patch_size)
        pos = VisionTransformer.resize_pos_embed(pos, hw, grid,
                                                 m.interpolate_mode)
    t = t + pos
    if not m.with_cls_token:
        t = t[:, 1:]
    lead = int(m.with_cls_token) + m.num_register_tokens
    if m.num_register_tokens:
        n_cls = int(m.with_cls_token)
        t = torch.cat((t[:, :n_cls], m.register_tokens.expand(B, -1, -1),
                       t[:, n_cls:]), 1)
    if m.pre_norm:
        t = m.pre_ln(t)
    outs, traces = [], {}
    for i, layer in enumerate(m.layers):
        p = m.layer_prompts(i)
        n = 0 if p is None else p.shape[0]
        if n:
            t = torch.cat([t[:, :lead], p.expand(B, -1, -1), t[:, lead:]], 1)
        mha = layer.attn.attn
        C, H = t.shape[-1], mha.num_heads
        w, b = mha.in_proj_weight, mha.in_proj_bias
        if m.kv_bias_delta is not None:
            b = b + F.pad(m.kv_bias_delta[i].flatten(), (C, 0))
        h = layer.norm1(t)
        q, k, v = (F.linear(h, w[j * C:(j + 1) * C], b[j * C:(j + 1) * C])
                   for j in range(3))

        def heads(z):
            return z.view(B, -1, H, C // H).transpose(1, 2)

        scores = heads(q) @ heads(k).transpose(-1, -2) / (C // H)**0.5
        attn = scores.softmax(-1)
        gate = getattr(m, 'prompt_gate', None)
        if gate is not None and n:  # own softmax of the prompts, gated
            cols = torch.zeros(t.shape[1], dtype=torch.bool)
            cols[lead:lead + n] = True
            attn = torch.empty_like(scores)
            attn[..., ~cols] = scores[..., ~cols].softmax(-1)
            attn[..., cols] = scores[..., cols].softmax(-1) * \
                gate[i].tanh().view(1, H, 1, 1)
        o = (attn @ heads(v)).transpose(1, 2).reshape(B, -1, C)
        traces[i] = LayerTrace(t, p, slice(lead, lead + n), q, attn, o)
        t = t + F.linear(o, mha.out_proj.weight, mha.out_proj.bias)
        t = layer.ffn(layer.norm2(t), identity=t)
        t = torch.cat([t[:, :lead], t[:, lead + n:]], 1)  # drop prompts
        if i == len(m.layers) - 1 and m.final_norm:
            t = m.norm1(t)
        if i in m.out_indices:
            outs.append(t[:, lead:].reshape(B, hw[0], hw[1], C).permute(
                0, 3, 1, 2))
    return outs, traces, t[:, 0]
