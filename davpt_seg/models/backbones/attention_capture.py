# Copyright (c) davpt-seg contributors. Apache-2.0.
"""Eval-only capture of the attention probabilities of
:class:`PromptedVisionTransformer` (``backbone.capture_attention``).

The fast path of the backbone runs attention through SDPA and never forms
the attention matrix; prompts get no query there. While a capture is
active, each requested layer additionally computes, from the same packed
q/k projections the forward uses (K/V bias offsets included),
``softmax(q k^T / sqrt(d))`` for *every* token of the layer -- prompts
included -- and stores it. The forward's outputs are untouched. With no
capture active the forward does one ``is None`` check per layer.

Rows and columns of a captured map follow the forward's internal token
order (see :class:`TokenLayout`)::

    [CLS (0/1) | registers (R) | image patches (N = h * w) | prompts (P_l)]

Example::

    model.eval()
    with torch.no_grad(), backbone.capture_attention(layers=[11]) as cap:
        backbone(images)                          # [B, 3, H, W]
    attn = cap.attn[11]                           # [B, heads, T, T]
    maps = cap.last.prompt_to_patches(11)         # [B, heads, P, h, w]
"""
from typing import (Callable, Dict, List, NamedTuple, Optional,
                    Sequence, Tuple)

import torch
from torch import Tensor


class TokenLayout(NamedTuple):
    """Which rows/columns of a captured [B, heads, T, T] map are which
    tokens, for one layer of one forward.

    Attributes:
        num_cls (int): 1 with a [CLS] token (row 0), else 0.
        num_registers (int): R register tokens, after [CLS].
        num_patches (int): N = h * w image tokens, row-major over
            ``hw_shape``.
        num_prompts (int): P prompts of the layer, last.
        hw_shape (tuple[int, int]): (h, w) patch grid of the forward.
        prompt_kind (str): 'proxy' (class-assigned prompts of a guided
            layer), 'plain' (unassigned VPT prompts) or 'none'.
    """
    num_cls: int
    num_registers: int
    num_patches: int
    num_prompts: int
    hw_shape: Tuple[int, int]
    prompt_kind: str

    @property
    def num_tokens(self) -> int:
        """T, the side of the captured map."""
        return self.num_cls + self.num_registers + self.num_patches + \
            self.num_prompts

    @property
    def cls(self) -> Optional[int]:
        """Index of [CLS], or None without one."""
        return 0 if self.num_cls else None

    @property
    def registers(self) -> slice:
        return slice(self.num_cls, self.num_cls + self.num_registers)

    @property
    def patches(self) -> slice:
        start = self.num_cls + self.num_registers
        return slice(start, start + self.num_patches)

    @property
    def prompts(self) -> slice:
        start = self.num_cls + self.num_registers + self.num_patches
        return slice(start, start + self.num_prompts)

    def token_types(self) -> List[str]:
        """Per row/column: 'cls', 'register', 'patch' or 'prompt'."""
        return (['cls'] * self.num_cls + ['register'] * self.num_registers +
                ['patch'] * self.num_patches + ['prompt'] * self.num_prompts)


class AttentionRecord:
    """The maps captured in one forward of the backbone.

    Attributes:
        hw_shape (tuple[int, int]): (h, w) patch grid of the forward.
        attn (dict[int, Tensor]): layer -> [B, heads, T, T] attention
            probabilities (float32, detached; rows sum to one).
        layout (dict[int, TokenLayout]): layer -> token layout of ``attn``.
    """

    def __init__(self, hw_shape: Tuple[int, int]):
        self.hw_shape = tuple(int(s) for s in hw_shape)
        self.attn: Dict[int, Tensor] = {}
        self.layout: Dict[int, TokenLayout] = {}

    def _get(self, layer: int) -> Tuple[Tensor, TokenLayout]:
        if layer not in self.attn:
            raise KeyError(f'layer {layer} was not captured; captured: '
                           f'{sorted(self.attn)}')
        return self.attn[layer], self.layout[layer]

    def _to_grid(self, rows: Tensor, lay: TokenLayout, renormalize: bool):
        """[..., T] rows -> [..., h, w] over the image patches."""
        p = rows[..., lay.patches]
        if renormalize:
            p = p / p.sum(-1, keepdim=True).clamp_min(1e-12)
        return p.reshape(*p.shape[:-1], *lay.hw_shape)

    def prompt_to_patches(self, layer: int,
                          renormalize: bool = True) -> Tensor:
        """[B, heads, P, h, w]: each prompt's attention (its query) over the
        image patches, renormalised to sum to one over the patches unless
        ``renormalize=False`` (then: the raw probabilities)."""
        attn, lay = self._get(layer)
        return self._to_grid(attn[:, :, lay.prompts], lay, renormalize)

    def cls_to_patches(self, layer: int, renormalize: bool = True) -> Tensor:
        """[B, heads, h, w]: the [CLS] query's attention over the patches
        (renormalised over the patches unless ``renormalize=False``)."""
        attn, lay = self._get(layer)
        if lay.cls is None:
            raise ValueError('the backbone has no [CLS] token')
        return self._to_grid(attn[:, :, lay.cls], lay, renormalize)

    def cls_to_prompts(self, layer: int) -> Tensor:
        """[B, heads, P]: the [CLS] query's attention probabilities on the
        layer's prompts (not renormalised: the share of [CLS]'s attention
        each prompt receives)."""
        attn, lay = self._get(layer)
        if lay.cls is None:
            raise ValueError('the backbone has no [CLS] token')
        return attn[:, :, lay.cls, lay.prompts]

    def patch_mass(self, layer: int) -> Tensor:
        """[B, heads, T]: each query's total attention on the image
        patches (what the renormalised maps divide by)."""
        attn, lay = self._get(layer)
        return attn[..., lay.patches].sum(-1)


class AttentionCapture:
    """What ``PromptedVisionTransformer.capture_attention`` yields: one
    :class:`AttentionRecord` per forward run inside the ``with`` block
    (several for slide inference or a loop over batches).

    Args:
        layers (list[int]): 0-based layers to capture.
        num_cls (int): 1 with a [CLS] token, else 0.
        num_registers (int): register tokens after [CLS].
        prompt_kinds (dict[int, str]): layer -> 'proxy' | 'plain'.
        is_training (callable): whether the backbone is in training mode
            (a capture then raises: it is eval-only).
    """

    def __init__(self, layers: Sequence[int], num_cls: int,
                 num_registers: int, prompt_kinds: Dict[int, str],
                 is_training: Callable[[], bool] = lambda: False):
        self.layers = sorted(set(layers))
        self._wanted = frozenset(self.layers)
        self._num_cls = num_cls
        self._num_registers = num_registers
        self._prompt_kinds = prompt_kinds
        self._is_training = is_training
        self.records: List[AttentionRecord] = []

    @property
    def last(self) -> AttentionRecord:
        """The record of the latest forward."""
        if not self.records:
            raise RuntimeError('no forward ran inside capture_attention()')
        return self.records[-1]

    @property
    def attn(self) -> Dict[int, Tensor]:
        """layer -> [B, heads, T, T] of the latest forward."""
        return self.last.attn

    @property
    def layout(self) -> Dict[int, TokenLayout]:
        """layer -> :class:`TokenLayout` of the latest forward."""
        return self.last.layout

    def start_forward(self, hw_shape: Tuple[int, int]) -> None:
        """Open a new record (called at the patch embedding)."""
        self.records.append(AttentionRecord(hw_shape))

    def record(self, layer: int, q: Tensor, k: Tensor, num_seq: int,
               num_lead: int, gate: Optional[Tensor] = None) -> None:
        """Store ``softmax(q k^T / sqrt(d))`` of ``layer`` if requested.

        Args:
            q, k (Tensor): [B, heads, T, d] the layer's queries and keys of
                all T tokens (``[lead | image | prompts]``).
            num_seq (int): S = lead + N tokens before the prompts.
            num_lead (int): [CLS] and registers before the image tokens.
            gate (Tensor, optional): [heads] prompt gate of a gated layer:
                the prompt columns are then ``tanh(gate)`` times their own
                softmax (rows sum to ``1 + tanh(gate)``).
        """
        if layer not in self._wanted:
            return
        if self._is_training():
            raise RuntimeError('capture_attention() is eval-only: the '
                               'backbone was put in training mode')
        if not self.records:
            raise RuntimeError('attention capture: a layer ran before the '
                               'patch embedding (call the backbone itself)')
        rec = self.records[-1]
        T, d = q.shape[-2], q.shape[-1]
        h, w = rec.hw_shape
        num_patches = num_seq - num_lead
        if num_patches != h * w or num_lead != \
                self._num_cls + self._num_registers:
            raise RuntimeError(
                f'attention capture: {num_patches} image tokens after '
                f'{num_lead} leading ones do not fit the {h}x{w} patch grid')
        num_prompts = T - num_seq
        kind = self._prompt_kinds.get(layer, 'none') if num_prompts else \
            'none'
        q = q.detach().float()
        k = k.detach().float()
        scores = torch.matmul(q, k.transpose(-2, -1)) * (d ** -0.5)
        if gate is None or not num_prompts:
            rec.attn[layer] = scores.softmax(dim=-1)
        else:
            g = gate.detach().float().tanh().view(1, -1, 1, 1)
            rec.attn[layer] = torch.cat(
                (scores[..., :num_seq].softmax(dim=-1),
                 g * scores[..., num_seq:].softmax(dim=-1)), dim=-1)
        rec.layout[layer] = TokenLayout(self._num_cls, self._num_registers,
                                        num_patches, num_prompts, (h, w),
                                        kind)


def new_attention_capture(backbone,
                          layers: Optional[Sequence[int]] = None
                          ) -> AttentionCapture:
    """The :class:`AttentionCapture` behind ``PromptedVisionTransformer.
    capture_attention`` (see the module doc), validated.

    Args:
        backbone (PromptedVisionTransformer): in eval mode.
        layers (Sequence[int], optional): 0-based layers; negative indices
            count from the last layer. Default: all layers.
    """
    num_layers = len(backbone.layers)
    if layers is None:
        layers = range(num_layers)
    chosen = []
    for i in layers:
        if isinstance(i, bool) or not isinstance(i, int) or \
                not -num_layers <= i < num_layers:
            raise ValueError(f'capture_attention: layer {i!r} is not a '
                             f'layer index of this {num_layers}-layer ViT')
        chosen.append(i % num_layers)
    if backbone.training:
        raise RuntimeError('capture_attention() is eval-only: call '
                           'model.eval() first (dropout would make the '
                           'maps differ from the computed attention)')
    return AttentionCapture(
        chosen, int(backbone.with_cls_token), backbone.num_register_tokens,
        backbone.prompt_kinds, is_training=lambda: backbone.training)
