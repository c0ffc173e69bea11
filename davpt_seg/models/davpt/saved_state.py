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

#: Key of the objective's state in a training checkpoint.
CHECKPOINT_KEY = 'davpt'
#: Model-state prefix of the mapping in checkpoints of earlier versions
#: (a leading ``module.`` of a DDP-wrapped model is accepted too).
LEGACY_MAPPING_PREFIX = 'backbone.class_mapping.'


def _legacy_key(key: str) -> Optional[str]:
    """``'mapping.<buffer>'`` for a legacy model-state key, else None."""
    if key.startswith('module.'):
        key = key[len('module.'):]
    if key.startswith(LEGACY_MAPPING_PREFIX):
        return 'mapping.' + key[len(LEGACY_MAPPING_PREFIX):]
    return None


def pop_legacy_mapping(state_dict: dict) -> Dict[str, torch.Tensor]:
    """Remove the legacy ``backbone.class_mapping.*`` entries from a model
    state dict (in place) and return them as objective state
    (``mapping.*`` keys); ``{}`` if there are none."""
    found = {k: _legacy_key(k) for k in list(state_dict)}
    return {new: state_dict.pop(old) for old, new in found.items() if new}


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
    if pop:
        legacy = pop_legacy_mapping(model_state)
    else:
        legacy = {new: model_state[old] for old, new in
                  ((k, _legacy_key(k)) for k in model_state) if new}
    return state if state is not None else (legacy or None)
