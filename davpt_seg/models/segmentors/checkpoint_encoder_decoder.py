"""mmseg's ``EncoderDecoder`` with gradient-checkpointed decode heads.

With a frozen (or ``with_cp``) backbone the trainable heads hold most of a
training step's memory: SETR-PUP's four heads each keep 256-channel
activations and 150-class logits at full resolution (about 1.3 GiB per head
at ViT-L, 512x512, batch 2). Checkpointing each head's whole ``loss`` call
(head forward, resize, losses) keeps only the head's inputs, which the
backbone holds anyway; the backward pass recomputes one head at a time, so
the heads' peak drops from the sum over heads to the largest single head,
for the price of a second forward pass of every head.

mmseg's heads have no ``with_cp`` option, and wrapping them here works for
any decode or auxiliary head without touching its config.

mmseg's ``accuracy`` (the ``acc_seg`` log entry) takes a top-k of the
full-resolution logits with gradient recording on, so autograd keeps its
indices and a plain checkpoint would recompute it: on CPU that top-k is a
third of the recomputation. Its outputs are small, so selective activation
checkpointing keeps them instead (``_SAVED_OPS``).
"""
import contextlib
from typing import List

import torch
import torch.nn as nn
from torch import Tensor
from torch.utils.checkpoint import (checkpoint,
                                    create_selective_checkpoint_contexts)

from mmseg.models.segmentors import EncoderDecoder
from mmseg.registry import MODELS
from mmseg.utils import SampleList
from mmseg.utils import add_prefix


@contextlib.contextmanager
def _frozen_norm_statistics(module: nn.Module):
    """Run ``module`` again without changing its BatchNorm running stats.

    A checkpointed forward runs twice; BatchNorm in training mode would fold
    the same batch into its running mean/var (and ``num_batches_tracked``)
    twice. The recomputation gets the same normalisation (batch statistics)
    either way, so restoring the buffers afterwards is exact.
    """
    saved = [(b, b.clone()) for m in module.modules()
             if isinstance(m, nn.modules.batchnorm._NormBase)
             and m.track_running_stats
             for b in (m.running_mean, m.running_var, m.num_batches_tracked)
             if b is not None]
    try:
        yield
    finally:
        with torch.no_grad():
            for buf, value in saved:
                buf.copy_(value)


# Ops whose outputs are kept instead of recomputed: cheap to store,
# expensive to recompute.
_SAVED_OPS = [torch.ops.aten.topk.default]


@contextlib.contextmanager
def _all_of(*contexts):
    with contextlib.ExitStack() as stack:
        for ctx in contexts:
            stack.enter_context(ctx)
        yield


def _head_checkpoint_contexts(head: nn.Module):
    """``context_fn`` of the heads' checkpoint: (forward, recomputation)
    contexts. Keeps ``_SAVED_OPS``' outputs; BatchNorm statistics are left
    as the forward pass set them."""
    forward_ctx, recompute_ctx = create_selective_checkpoint_contexts(
        _SAVED_OPS)
    # The statistics context is entered first so that SAC never sees its ops.
    return forward_ctx, _all_of(_frozen_norm_statistics(head), recompute_ctx)


@MODELS.register_module()
class CheckpointEncoderDecoder(EncoderDecoder):
    """``EncoderDecoder`` whose heads' training losses are recomputed in the
    backward pass instead of keeping their activations.

    Inference and the loss values are unchanged; gradients equal the plain
    ``EncoderDecoder``'s (dropout masks are replayed from the saved RNG
    state, BatchNorm statistics are updated once). Combine with the
    backbone's ``with_cp`` (``tools/train.py --with-cp`` sets both).

    Args:
        checkpoint_heads (bool): checkpoint the decode and auxiliary heads
            in training. Default: True.
        **kwargs: ``EncoderDecoder``'s arguments.
    """

    def __init__(self, *args, checkpoint_heads: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        if not isinstance(checkpoint_heads, bool):
            raise TypeError('checkpoint_heads must be a bool, got '
                            f'{checkpoint_heads!r}')
        self.checkpoint_heads = checkpoint_heads

    def _head_loss(self, head: nn.Module, inputs: List[Tensor],
                   data_samples: SampleList) -> dict:
        """``head.loss(inputs, data_samples, train_cfg)``, checkpointed when
        training with gradients enabled."""
        if not (self.checkpoint_heads and self.training
                and torch.is_grad_enabled()):
            return head.loss(inputs, data_samples, self.train_cfg)
        return checkpoint(
            head.loss,
            inputs,
            data_samples,
            self.train_cfg,
            use_reentrant=False,
            context_fn=lambda: _head_checkpoint_contexts(head))

    def _decode_head_forward_train(self, inputs: List[Tensor],
                                   data_samples: SampleList) -> dict:
        losses = self._head_loss(self.decode_head, inputs, data_samples)
        return add_prefix(losses, 'decode')

    def _auxiliary_head_forward_train(self, inputs: List[Tensor],
                                      data_samples: SampleList) -> dict:
        losses = dict()
        if isinstance(self.auxiliary_head, nn.ModuleList):
            for idx, aux_head in enumerate(self.auxiliary_head):
                loss_aux = self._head_loss(aux_head, inputs, data_samples)
                losses.update(add_prefix(loss_aux, f'aux_{idx}'))
        else:
            losses.update(
                add_prefix(
                    self._head_loss(self.auxiliary_head, inputs,
                                    data_samples), 'aux'))
        return losses
