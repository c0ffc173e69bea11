# Copyright (c) davpt-seg contributors. All rights reserved.
"""timm / MAE / MoCo v3 state dicts -> the backbone's timm keys: drop heads,
decoders, momentum encoders; pick the final norm."""
from typing import Dict, List, Tuple

import torch

from ..errors import ConversionError
from .detect import describe_unknown

__all__ = ['select_backbone']

# Classifier / pooling heads: never part of the backbone.
_HEAD_PREFIXES = ('head.', 'head_dist.', 'pre_logits.', 'attn_pool.')


def _source_encoder(sd: Dict[str, torch.Tensor], source: str, name: str
                    ) -> Tuple[Dict[str, torch.Tensor], List[str]]:
    """MoCo v3: the ``base_encoder.`` keys (the rest dropped); MAE: without
    ``decoder_*`` and ``mask_token``. Returns ``(state_dict, dropped)``."""
    if source == 'mocov3':
        enc = 'base_encoder.'
        if not any(k.startswith(enc) for k in sd):
            raise ConversionError(
                f"{name}: no 'base_encoder.' keys; not a MoCo v3 checkpoint "
                f'({describe_unknown(list(sd))})')
        dropped = sorted(k for k in sd if not k.startswith(enc))
        return {k[len(enc):]: v for k, v in sd.items()
                if k.startswith(enc)}, dropped
    if source == 'mae':
        extra = {k for k in sd
                 if k.startswith('decoder_') or k == 'mask_token'}
        return {k: v for k, v in sd.items() if k not in extra}, sorted(extra)
    return sd, []


def select_backbone(sd: Dict[str, torch.Tensor], source: str, name: str
                    ) -> Tuple[Dict[str, torch.Tensor], List[str], List[str]]:
    """Reduce a torch state dict of ``source`` layout to timm backbone keys.

    Returns ``(state_dict, dropped_keys, notes)``.
    """
    sd, dropped = _source_encoder(sd, source, name)
    notes = []
    heads = sorted(k for k in sd if k.startswith(_HEAD_PREFIXES))
    dropped += heads
    sd = {k: v for k, v in sd.items() if not k.startswith(_HEAD_PREFIXES)}
    has_norm = any(k.startswith('norm.') for k in sd)
    fc_norm = [k for k in sd if k.startswith('fc_norm.')]
    if fc_norm and has_norm:
        dropped += sorted(fc_norm)
        sd = {k: v for k, v in sd.items() if not k.startswith('fc_norm.')}
    elif fc_norm:
        sd = {('norm.' + k[len('fc_norm.'):]
               if k.startswith('fc_norm.') else k): v for k, v in sd.items()}
        notes.append(
            "final norm taken from 'fc_norm' (the source has no token-level "
            "'norm'; fc_norm was trained on pooled features, here it is "
            'applied per token)')
    return sd, dropped, notes
