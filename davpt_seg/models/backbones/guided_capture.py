# Copyright (c) davpt-seg contributors. Apache-2.0.
"""What a prompted backbone hands to the DA-VPT objective in training.

:meth:`PromptedVisionTransformer.capture_guided` returns a
:class:`GuidedCapture`; while it is attached, every *training* forward of the
backbone records one :class:`GuidedOutput` in it, which the caller takes
with :meth:`GuidedCapture.pop`. Eval forwards record nothing.
"""
from typing import Callable, Dict, NamedTuple, Optional

import torch


class GuidedFeatures(NamedTuple):
    """What the DA-VPT metric losses need from one guided layer.

    Attributes:
        proxies (Tensor): [K, C] the layer's class-assigned prompts after
            ``prompt_norm`` and before prompt dropout (the loss proxies).
        cls_query (Tensor): [B, C] query projection of the block's [CLS]
            input, ``W_q LN1(x_cls) + b_q``.
        prompt_output (Tensor): [B, K, C] attention output at each prompt
            position (heads concatenated, before the output projection).
        patch_mean (Tensor): [B, C] mean of the block's input image tokens.
        query_mean (Tensor): [B, C] mean query projection of those tokens.
    """
    proxies: torch.Tensor
    cls_query: torch.Tensor
    prompt_output: torch.Tensor
    patch_mean: torch.Tensor
    query_mean: torch.Tensor


class GuidedOutput(NamedTuple):
    """One training forward's guided features.

    Attributes:
        layers (dict[int, GuidedFeatures]): per guided layer (0-based).
        final_cls (Tensor): [B, C] the last layer's [CLS] (after the final
            norm if ``final_norm``), the feature of the class statistics.
        patch_tokens (Tensor, optional): [B, h, w, C] output image tokens
            of the last guided layer (after the final norm if that is the
            last layer and ``final_norm``), detached; the feature of the
            ``'class_patches'`` statistics.
    """
    layers: Dict[int, GuidedFeatures]
    final_cls: torch.Tensor
    patch_tokens: Optional[torch.Tensor] = None


class GuidedCapture:
    """Holds the latest training forward's :class:`GuidedOutput` until it is
    popped; :meth:`remove` detaches it from its backbone (also on leaving a
    ``with`` block).

    Args:
        on_remove (Callable[[GuidedCapture], None]): called once by
            :meth:`remove` (the backbone's detach).
    """

    def __init__(self, on_remove: Callable[['GuidedCapture'], None]):
        self._on_remove = on_remove
        self._latest: Optional[GuidedOutput] = None

    def record(self, output: GuidedOutput) -> None:
        """Keep ``output`` (replacing an unpopped earlier one)."""
        self._latest = output

    def pop(self) -> Optional[GuidedOutput]:
        """Return and clear the latest recorded output (None if none)."""
        output, self._latest = self._latest, None
        return output

    @property
    def attached(self) -> bool:
        return self._on_remove is not None

    def remove(self) -> None:
        """Detach from the backbone (an unpopped output stays available);
        idempotent."""
        if self._on_remove is not None:
            self._on_remove(self)
            self._on_remove = None

    def __enter__(self) -> 'GuidedCapture':
        return self

    def __exit__(self, *exc) -> None:
        self.remove()
