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
"""
import argparse
import os
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

import torch  # noqa: E402
from mmengine.config import Config, DictAction  # noqa: E402
from mmseg.registry import MODELS  # noqa: E402
from mmengine.registry import init_default_scope  # noqa: E402

import davpt_seg  # noqa: F401,E402
from davpt_seg.engine.hooks.prompt_checkpoint_hook import \
    make_prompt_only  # noqa: E402
from davpt_seg.utils import load_training_checkpoint  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config')
    parser.add_argument('checkpoint', help='full checkpoint')
    parser.add_argument('out', help='prompt-only checkpoint to write')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    args = parser.parse_args(argv)
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    model = MODELS.build(cfg.model)  # weights are not needed, only names
    ckpt = load_training_checkpoint(args.checkpoint)
    if 'state_dict' not in ckpt:
        ckpt = dict(state_dict=ckpt)
    if ckpt.get('meta', {}).get('davpt_prompt_only'):
        raise SystemExit(f'{args.checkpoint} is already prompt-only')
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
