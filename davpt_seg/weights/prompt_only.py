# Copyright (c) davpt-seg contributors. Apache-2.0.
"""Prompt-only checkpoints: record, write, restore and verify.

A prompt-only checkpoint is an mmengine checkpoint without the backbone's
frozen pretrained weights (see ``PromptOnlyCheckpointHook`` and
``tools/extract_prompts.py``). :func:`make_prompt_only` drops them and
records where they come from and their fingerprint in
``state_dict._metadata['backbone'][PRETRAINED_RECORD]``. Every load of the
backbone goes through :func:`prepare_backbone_state` (called by the
backbone's ``_load_from_state_dict``), which restores the frozen weights
(:func:`restore_pretrained`) and checks them against the fingerprint
(:func:`check_fingerprint`).

Why ``_metadata``: it is the standard side channel of a state dict. torch
pickles it with the OrderedDict (and restores it under
``weights_only=True``), and mmengine's ``load_checkpoint`` /
``load_state_dict`` (so Runner ``load_from``/resume and ``init_model``) and
torch's ``Module.load_state_dict`` all keep it and hand each module its own
entry. ``checkpoint['meta']`` never reaches a module, and a non-tensor key
in the state dict would be an unexpected key for every other loader.
"""
import copy
import logging
import os
import os.path as osp
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper

from .errors import (FingerprintMismatchError, PromptOnlyRestoreError,
                     PromptOnlyWriteError, PromptStateMismatchError)
from .fingerprint import (frozen_weights_sha256, frozen_weights_summary,
                          summaries_match)
from .io import load_weights

__all__ = [
    'PRETRAINED_ENV_VAR', 'PRETRAINED_RECORD', 'frozen_tensors',
    'frozen_backbone_keys', 'pretrained_record', 'make_prompt_only',
    'recorded_paths', 'restore_pretrained', 'check_fingerprint',
    'prepare_backbone_state'
]

#: Environment variable naming the pretrained file of a prompt-only
#: checkpoint, for loaders that clear ``init_cfg`` (``mmseg.apis.init_model``,
#: ``MMSegInferencer``). Checked against the checkpoint's fingerprint.
PRETRAINED_ENV_VAR = 'DAVPT_PRETRAINED'
#: Key of a prompt-only checkpoint's record of its frozen weights, in the
#: backbone's entry of the state dict's ``_metadata``: ``dict(checkpoint=
#: path as in init_cfg, abs_checkpoint=absolute path, prefix=init_cfg
#: prefix, sha256=frozen_weights_sha256(...), summary=
#: frozen_weights_summary(...), num_tensors=int)``.
PRETRAINED_RECORD = 'davpt_pretrained'
#: How to point a prompt-only checkpoint at its pretrained file.
_POINT_AT_PRETRAINED = (
    "Point model.backbone.init_cfg=dict(type='Pretrained', checkpoint=PATH) "
    'at that file (tools/test.py, the Runner), or set the environment '
    f'variable {PRETRAINED_ENV_VAR}=PATH (works with every loader, also '
    'mmseg.apis.init_model and MMSegInferencer, which clear init_cfg).')


def frozen_tensors(backbone: nn.Module) -> Dict[str, torch.Tensor]:
    """The backbone's frozen parameters by state-dict key (see
    ``PromptedVisionTransformer.frozen_state_keys``)."""
    params = dict(backbone.named_parameters())
    return {k: params[k] for k in backbone.frozen_state_keys()}


# ---------------------------------------------------------------- writing
def frozen_backbone_keys(segmentor: nn.Module) -> List[str]:
    """State-dict keys (``backbone.*``) of the frozen pretrained weights:
    the backbone's parameters with ``requires_grad=False``."""
    if is_model_wrapper(segmentor):
        segmentor = segmentor.module
    backbone = getattr(segmentor, 'backbone', None)
    if not hasattr(backbone, 'frozen_state_keys'):
        raise TypeError('prompt-only checkpoints need a '
                        'PromptedVisionTransformer backbone, got '
                        f'{type(backbone).__name__}')
    if backbone.pretrained_file is None:
        raise PromptOnlyWriteError(
            'prompt-only checkpoints need model.backbone.init_cfg='
            "dict(type='Pretrained', checkpoint=PATH): the dropped frozen "
            'weights are restored from that file when loading')
    return [f'backbone.{name}' for name in backbone.frozen_state_keys()]


def pretrained_record(backbone: nn.Module,
                      frozen: Dict[str, torch.Tensor]) -> dict:
    """What a prompt-only checkpoint records about its dropped weights:
    ``init_cfg``'s path as written and made absolute (against the current
    directory, as mmengine resolves it), its ``prefix``, and the SHA-256 of
    the frozen tensors ``frozen`` (names relative to the backbone), and
    their rounding-tolerant summary (see ``frozen_weights_summary``)."""
    path, prefix = backbone.pretrained_file
    local = '://' not in path
    return dict(
        checkpoint=path,
        abs_checkpoint=osp.abspath(osp.expanduser(path)) if local else path,
        prefix=prefix,
        sha256=frozen_weights_sha256(frozen),
        summary=frozen_weights_summary(frozen),
        num_tensors=len(frozen))


def _record_in_metadata(checkpoint: dict, model: nn.Module,
                        record: dict) -> None:
    """Put ``record`` in ``state_dict._metadata['backbone']`` (the state
    dict becomes an OrderedDict with the model's metadata if it had
    none)."""
    state = checkpoint['state_dict']
    metadata = getattr(state, '_metadata', None)
    if metadata is None:  # a plain dict: give it the model's metadata
        metadata = copy.deepcopy(model.state_dict()._metadata)
    if not isinstance(state, OrderedDict):
        state = checkpoint['state_dict'] = OrderedDict(state)
    entry = dict(metadata.get('backbone') or
                 dict(version=model.backbone._version))
    entry[PRETRAINED_RECORD] = record
    metadata['backbone'] = entry
    state._metadata = metadata


def make_prompt_only(checkpoint: dict, segmentor: nn.Module) -> dict:
    """Drop the frozen backbone weights from an mmengine checkpoint dict (in
    place), record it in ``meta['davpt_prompt_only']`` and record where they
    come from in ``state_dict._metadata['backbone']``.

    Raises:
        PromptOnlyWriteError: The config names no pretrained file, or the
            checkpoint lacks frozen tensors (not a full checkpoint of this
            model).
    """
    model = segmentor.module if is_model_wrapper(segmentor) else segmentor
    state = checkpoint['state_dict']
    keys = frozen_backbone_keys(model)
    absent = [k for k in keys if k not in state]
    if absent:
        raise PromptOnlyWriteError(
            f'the checkpoint lacks {len(absent)} of the {len(keys)} frozen '
            f'backbone tensors (e.g. {absent[0]}): it is not a full '
            'checkpoint of this model (already prompt-only, or another '
            'config?)')
    record = pretrained_record(
        model.backbone, {k[len('backbone.'):]: state[k] for k in keys})
    _record_in_metadata(checkpoint, model, record)
    state = checkpoint['state_dict']
    for k in keys:
        del state[k]
    checkpoint.setdefault('meta', {})['davpt_prompt_only'] = dict(
        pretrained=record['checkpoint'],
        pretrained_abs=record['abs_checkpoint'],
        pretrained_sha256=record['sha256'],
        dropped_keys=len(keys))
    return checkpoint


# ---------------------------------------------------------------- reading
def recorded_paths(record: Optional[dict]) -> List[str]:
    """Candidate files of a checkpoint's pretrained record: the absolute
    path resolved when the checkpoint was written, then the path as
    written in that config (relative to the current directory if
    relative, for a tree that was moved as a whole)."""
    if not record:
        return []
    paths = []
    for key in ('abs_checkpoint', 'checkpoint'):
        path = record.get(key)
        if isinstance(path, str) and path and path not in paths:
            paths.append(path)
    return paths


def _candidates(backbone: nn.Module, record: Optional[dict]
                ) -> List[Tuple[str, Optional[str], str]]:
    """``(path, prefix, where the path comes from)`` to try, in order:
    ``init_cfg``'s file, ``$DAVPT_PRETRAINED``, the recorded ones."""
    candidates = []
    if backbone.pretrained_file is not None:
        path, prefix = backbone.pretrained_file
        candidates.append((path, prefix, 'model.backbone.init_cfg'))
    if os.environ.get(PRETRAINED_ENV_VAR):
        candidates.append((os.environ[PRETRAINED_ENV_VAR],
                           (record or {}).get('prefix'),
                           f'${PRETRAINED_ENV_VAR}'))
    for path in recorded_paths(record):
        if path not in [c[0] for c in candidates]:
            candidates.append((path, record.get('prefix'),
                               'recorded in the checkpoint'))
    return candidates


def restore_pretrained(backbone: nn.Module, record: Optional[dict]) -> str:
    """Load the frozen weights for a prompt-only state dict into
    ``backbone`` (``backbone.load_pretrained``); returns the file used.

    Raises:
        PromptOnlyRestoreError: No candidate file, or none can be read.
    """
    candidates = _candidates(backbone, record)
    if not candidates:
        raise PromptOnlyRestoreError(
            'This is a prompt-only checkpoint (prompts, heads and '
            'DA-VPT state, without the frozen ViT weights), but the '
            'config names no pretrained backbone to restore them '
            'from and the checkpoint records none (it predates that '
            'record): it needs the file the prompts were trained on. '
            + _POINT_AT_PRETRAINED)
    unreadable = []
    for path, weights_prefix, origin in candidates:
        try:
            weights = load_weights(path, map_location='cpu')
        except FileNotFoundError as e:
            unreadable.append(f'{path} ({origin}): {e}')
            continue
        if unreadable:
            print_log('Prompt-only checkpoint: ' + '; '.join(unreadable)
                      + f'; using {path} ({origin}) instead',
                      logger='current', level=logging.WARNING)
        backbone.load_pretrained(weights, source=path, prefix=weights_prefix)
        return path
    raise PromptOnlyRestoreError(
        'This is a prompt-only checkpoint: it needs the pretrained '
        'backbone the prompts were trained on, but no candidate file '
        'can be read: ' + ' | '.join(unreadable) + '. '
        + _POINT_AT_PRETRAINED)


def check_fingerprint(backbone: nn.Module, record: dict, source: str) -> None:
    """The frozen weights in use must be those the prompt-only checkpoint
    was written with: equal SHA-256, or equal per-tensor sums up to float
    rounding (:func:`summaries_match`).

    Raises:
        FingerprintMismatchError: Neither matches.
    """
    frozen = frozen_tensors(backbone)
    got, expected = frozen_weights_sha256(frozen), record['sha256']
    if got == expected:
        return
    summary = record.get('summary')
    if isinstance(summary, dict) and summaries_match(
            frozen_weights_summary(frozen), summary):
        print_log('Prompt-only checkpoint: the frozen weights from '
                  f'{source} differ from the recorded ones only by '
                  'float rounding (e.g. a position embedding resized '
                  'on another machine); accepted',
                  logger='current', level=logging.WARNING)
        return
    recorded = ' or '.join(recorded_paths(record)) or '?'
    raise FingerprintMismatchError(
        'This prompt-only checkpoint was trained on other frozen '
        f'backbone weights than those loaded from {source}: '
        f'SHA-256 of the frozen tensors {got[:16]}..., recorded '
        f'in the checkpoint {expected[:16]}... (written with '
        f'pretrained file {recorded}). Its predictions would be '
        'silently wrong; use the original pretrained file (and the '
        'same backbone config). ' + _POINT_AT_PRETRAINED)


def _fill_from_pretrained(backbone: nn.Module, state_dict: dict, prefix: str,
                          keys: Sequence[str],
                          record: Optional[dict]) -> None:
    """Complete a prompt-only state dict with the pretrained weights (loaded
    now unless ``init_weights()`` already did) and check them against the
    checkpoint's fingerprint, if any."""
    source = backbone.pretrained_source
    if source is None:
        source = restore_pretrained(backbone, record)
        print_log('Prompt-only checkpoint: frozen backbone weights '
                  f'restored from {source}', logger='current')
    if record and record.get('sha256'):
        check_fingerprint(backbone, record, source)
    current = backbone.state_dict()
    for k in keys:
        state_dict[prefix + k] = current[k]


def _check_prompt_state(backbone: nn.Module, state_dict: dict, prefix: str,
                        own_prefixes: Tuple[str, ...]) -> None:
    """The backbone's own keys in ``state_dict`` must fit in shape and exist
    in the model (mmengine loads with ``strict=False``, which would only
    warn and leave e.g. DA-VPT+ biases silently unused)."""
    own = set(backbone.own_state_keys())
    model_state = backbone.state_dict()
    in_ckpt = sorted(k[len(prefix):] for k in state_dict
                     if k.startswith(prefix))
    problems = [
        f'{k}: checkpoint {tuple(state_dict[prefix + k].shape)} vs '
        f'model {tuple(model_state[k].shape)}' for k in in_ckpt
        if k in own and tuple(state_dict[prefix + k].shape) != tuple(
            model_state[k].shape)]
    problems += [f'{k}: not in this model' for k in in_ckpt
                 if k.startswith(own_prefixes) and k not in own]
    if problems:
        raise PromptStateMismatchError(
            'The checkpoint\'s prompt state does not fit this '
            f'{type(backbone).__name__} (was it trained with another config?'
            ' check num_prompts, num_proxy_prompts, guided_layers, '
            'tune_kv_bias, embed_dims):\n  ' +
            '\n  '.join(problems))


def prepare_backbone_state(backbone: nn.Module, state_dict: dict,
                           prefix: str, local_metadata: Optional[dict],
                           own_prefixes: Tuple[str, ...]) -> None:
    """Check (and complete, in place) the backbone's part of ``state_dict``
    before every load (``load_state_dict``, mmengine's ``load_checkpoint``,
    ``runner.test()``, resume, ``mmseg.apis.init_model``).

    * The backbone's own keys (those starting with ``own_prefixes``) must fit
      (:class:`PromptStateMismatchError` otherwise).
    * A *prompt-only* state dict (none of the frozen keys) first gets the
      pretrained ViT -- those callers never run ``init_weights()``, and
      prompts on a random ViT give near-zero mIoU without any error.
      Sources, in order: ``init_cfg``'s file; else ``$DAVPT_PRETRAINED``,
      then the file recorded in ``local_metadata[PRETRAINED_RECORD]``. A
      recorded fingerprint must match (:func:`check_fingerprint`).
      Trainable pretrained parameters (``frozen_exclude``) are kept in such
      a checkpoint and not overwritten. With nothing frozen (full
      fine-tuning) nothing is ever dropped.
    """
    _check_prompt_state(backbone, state_dict, prefix, own_prefixes)
    frozen = backbone.frozen_state_keys()
    in_ckpt = {k[len(prefix):] for k in state_dict if k.startswith(prefix)}
    if not frozen or not in_ckpt or any(k in in_ckpt for k in frozen):
        return
    own = set(backbone.own_state_keys())
    fill = [k for k in backbone.state_dict()
            if k not in own and k not in in_ckpt]
    record = (local_metadata or {}).get(PRETRAINED_RECORD)
    _fill_from_pretrained(backbone, state_dict, prefix, fill,
                          record if isinstance(record, dict) else None)
