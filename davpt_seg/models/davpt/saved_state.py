# Copyright (c) davpt-seg contributors. Apache-2.0.
"""Where a training checkpoint keeps the DA-VPT objective's state.

``DAVPTHook`` saves :meth:`DAVPTObjective.state_dict` (the mapping's
buffers, keys ``mapping.*``) under ``checkpoint['davpt']``, beside the
model's ``state_dict`` (as mmengine's ``EMAHook`` keeps ``ema_state_dict``).
Checkpoints written before the objective left the model hold the same
buffers inside the model state as ``backbone.class_mapping.*``; they are
migrated here.
"""
from typing import Dict, Optional

import torch

from davpt_seg.models.backbones.prompted_vit import \
    LEGACY_MAPPING_PREFIX as BACKBONE_LEGACY_PREFIX

#: Key of the objective's state in a training checkpoint.
CHECKPOINT_KEY = 'davpt'
#: Model-state prefix of the mapping in checkpoints of earlier versions
#: (a leading ``module.`` of a DDP-wrapped model is accepted too): the
#: backbone's own legacy prefix, which it drops when loaded without the hook.
LEGACY_MAPPING_PREFIX = 'backbone.' + BACKBONE_LEGACY_PREFIX


def _legacy_key(key: str) -> Optional[str]:
    """``'mapping.<buffer>'`` for a legacy model-state key, else None."""
    if key.startswith('module.'):
        key = key[len('module.'):]
    if key.startswith(LEGACY_MAPPING_PREFIX):
        return 'mapping.' + key[len(LEGACY_MAPPING_PREFIX):]
    return None


def objective_state(checkpoint: dict, pop: bool = False
                    ) -> Optional[Dict[str, torch.Tensor]]:
    """The objective's state in ``checkpoint`` (a dict as saved by the
    runner, or a bare model state dict of an earlier version), or None.

    Args:
        checkpoint (dict): loaded checkpoint.
        pop (bool): also remove it from ``checkpoint`` (the legacy entries
            from its model state, so that the model does not see them).
    """
    state = checkpoint.pop(CHECKPOINT_KEY, None) if pop \
        else checkpoint.get(CHECKPOINT_KEY)
    model_state = checkpoint.get('state_dict', checkpoint)
    take = model_state.pop if pop else model_state.__getitem__
    legacy = {new: take(old) for old, new in
              [(k, _legacy_key(k)) for k in list(model_state)] if new}
    return state if state is not None else (legacy or None)
