# Copyright (c) davpt-seg contributors. Apache-2.0.
"""The capture points of :class:`PromptedVisionTransformer`: the guided
features for the DA-VPT objective (training) and the attention maps
(eval-only analysis)."""
from contextlib import contextmanager
from typing import Iterator, Optional, Sequence

from .attention_capture import AttentionCapture, new_attention_capture
from .guided_capture import GuidedCapture


class CaptureMixin:
    """``capture_guided`` / ``capture_attention`` of a prompted ViT (needs
    ``with_cls_token``, ``patch_embed`` and a forward that records into
    ``_guided_capture`` / ``_attn_capture``)."""
    #: The active :meth:`capture_attention`, if any (eval-only analysis).
    _attn_capture: Optional[AttentionCapture] = None
    #: The attached :meth:`capture_guided`, if any.
    _guided_capture: Optional[GuidedCapture] = None

    def capture_guided(self) -> GuidedCapture:
        """Attach a :class:`GuidedCapture`: from now on every training
        forward records its guided-layer features (:class:`GuidedOutput`)
        in it until it is removed (``capture.remove()`` or a ``with``
        block). One capture at a time; needs ``with_cls_token=True``."""
        if not self.with_cls_token:
            raise ValueError(
                'DA-VPT needs with_cls_token=True: the [CLS]->prompt loss '
                'and the class->prompt mapping both work on the [CLS] '
                'token. Use with_cls_token=True, or train plain VPT '
                '(no DAVPTHook).')
        if self._guided_capture is not None:
            raise RuntimeError('capture_guided() is already attached to this '
                               'backbone; remove() it first')
        self._guided_capture = GuidedCapture(self._detach_guided_capture)
        return self._guided_capture

    def _detach_guided_capture(self, capture: GuidedCapture) -> None:
        if self._guided_capture is capture:  # GuidedCapture.remove()
            self._guided_capture = None

    @contextmanager
    def capture_attention(self, layers: Optional[Sequence[int]] = None
                          ) -> Iterator[AttentionCapture]:
        """Context manager: record the attention probabilities of
        ``layers`` (default: all; negative indices count from the end) in
        every forward inside the block, prompts' queries included. Eval
        mode only; outputs are unchanged. See
        :mod:`davpt_seg.models.backbones.attention_capture`.

        Yields:
            AttentionCapture: ``.attn[layer]`` [B, heads, T, T] and
            ``.layout[layer]`` (:class:`TokenLayout`: which rows are [CLS],
            registers, patches, prompts) of the latest forward;
            ``.records`` for every forward.
        """
        if self._attn_capture is not None:
            raise RuntimeError('capture_attention() is already active on '
                               'this backbone')
        capture = new_attention_capture(self, layers)
        handle = self.patch_embed.register_forward_hook(
            lambda module, args, out: capture.start_forward(out[1]))
        self._attn_capture = capture
        try:
            yield capture
        finally:
            self._attn_capture = None
            handle.remove()
