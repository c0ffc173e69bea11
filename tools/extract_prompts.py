# Copyright (c) davpt-seg contributors. Apache-2.0.
"""Make a prompt-only checkpoint from a full one.

    python tools/extract_prompts.py CONFIG FULL_CKPT OUT_CKPT

Keeps everything except the frozen pretrained backbone weights (prompts,
K/V offsets, heads, BN statistics, class->prompt mapping, optimizer, meta).
Test or resume from OUT_CKPT exactly as from the full checkpoint: the frozen
weights come back from the config's ``model.backbone.init_cfg`` file, or,
where that is cleared (``mmseg.apis.init_model``), from the file recorded in
OUT_CKPT (its path as written in the config and made absolute against the
current directory), checked against the recorded SHA-256 of the dropped
tensors.

Before writing, the frozen weights in FULL_CKPT are checked against CONFIG's
pretrained file (loaded as for training): a checkpoint of another config
would otherwise record the wrong file. ``--no-verify`` skips that (e.g. the
pretrained file is not on this machine).
"""
import argparse
import os
import os.path as osp

import torch
from mmengine.config import Config, DictAction
from mmseg.registry import MODELS
from mmengine.registry import init_default_scope

import davpt_seg.compat
from davpt_seg.weights import (
    frozen_backbone_keys, frozen_weights_sha256, frozen_weights_summary,
    load_training_checkpoint, make_prompt_only, summaries_match)
from davpt_seg.weights.prompt_only import frozen_tensors


def check_pretrained_fits(model, state: dict, checkpoint: str,
                          config: str) -> str:
    """Raise ``SystemExit`` unless the frozen backbone weights in ``state``
    are the config's pretrained file as loaded for training (equal SHA-256,
    or equal per-tensor sums up to float rounding). Returns the SHA-256."""
    backbone = model.backbone
    keys = [k[len('backbone.'):] for k in frozen_backbone_keys(model)]
    path = backbone.pretrained_file.path
    if any(f'backbone.{k}' not in state for k in keys):
        return ''  # not a full checkpoint: make_prompt_only says so
    try:
        backbone.init_weights()  # the pretrained file, pos_embed resized
    except FileNotFoundError as e:
        raise SystemExit(
            f'error: cannot check {checkpoint} against {config}: its '
            f'pretrained file is not here ({e}). The prompt-only checkpoint '
            'needs that file to load; run where it is, or pass --no-verify.')
    except RuntimeError as e:
        raise SystemExit(
            f'error: {checkpoint} does not fit {config}: the config\'s '
            f'pretrained file {path} does not fit its backbone ({e})')
    ours = frozen_tensors(backbone)
    theirs = {k: state[f'backbone.{k}'] for k in keys}
    got, expected = frozen_weights_sha256(theirs), frozen_weights_sha256(ours)
    same_shapes = all(ours[k].shape == theirs[k].shape for k in keys)
    if got == expected or same_shapes and summaries_match(
            frozen_weights_summary(theirs), frozen_weights_summary(ours)):
        return got
    raise SystemExit(
        f'error: the frozen backbone weights in {checkpoint} are not those '
        f'of the pretrained file of {config} ({path}): SHA-256 of the frozen '
        f'tensors {got[:16]}... vs {expected[:16]}... from that file. The '
        'prompt-only checkpoint would record the wrong file; pass the config '
        'the checkpoint was trained with (or fix its '
        'model.backbone.init_cfg with --cfg-options).')


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config')
    parser.add_argument('checkpoint', help='full checkpoint')
    parser.add_argument('out', help='prompt-only checkpoint to write')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    parser.add_argument(
        '--no-verify', action='store_true',
        help="do not check the checkpoint's frozen weights against the "
        "config's pretrained file")
    args = parser.parse_args(argv)
    davpt_seg.compat.install()
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    model = MODELS.build(cfg.model)  # names; pretrained loaded to verify
    ckpt = load_training_checkpoint(args.checkpoint)
    if 'state_dict' not in ckpt:
        ckpt = dict(state_dict=ckpt)
    if ckpt.get('meta', {}).get('davpt_prompt_only'):
        raise SystemExit(f'{args.checkpoint} is already prompt-only')
    if not args.no_verify:
        check_pretrained_fits(model, ckpt['state_dict'], args.checkpoint,
                              args.config)
    make_prompt_only(ckpt, model)
    os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
    torch.save(ckpt, args.out)
    info = ckpt['meta']['davpt_prompt_only']
    print(f'{args.out}: {osp.getsize(args.out) / 2**20:.1f} MiB (from '
          f'{osp.getsize(args.checkpoint) / 2**20:.1f} MiB), '
          f'{info["dropped_keys"]} frozen backbone tensors dropped; they are '
          f'restored from {info["pretrained"]} (recorded as '
          f'{info["pretrained_abs"]}, frozen-weight SHA-256 '
          f'{info["pretrained_sha256"][:16]}...) when loading')


if __name__ == '__main__':
    main()
