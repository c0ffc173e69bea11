# Copyright (c) davpt-seg contributors. All rights reserved.
"""Convert a pretrained ViT checkpoint to the davpt-seg / mmseg ViT keys.

Supported sources: timm / PyTorch state dicts (``.pth``, ``.safetensors``),
the original Google JAX ``.npz`` files, MAE and MoCo v3 checkpoints, and
DINOv2 / DINOv2 with registers (timm or official facebookresearch/dinov2
names; LayerScale folded exactly, registers kept as ``register_tokens``). The
output is a plain ``{key: tensor}`` dict saved with ``torch.save`` that loads
with ``torch.load(weights_only=True)`` and through
``init_cfg=dict(type='Pretrained', checkpoint=DST)``.

Examples::

    python tools/convert_weights.py B_16-i21k.npz pretrain/vit_b16.pth
    python tools/convert_weights.py mae_pretrain_vit_base.pth \\
        pretrain/mae_b16_512.pth --img-size 512
    python tools/convert_weights.py vit-b-300ep.pth.tar \\
        pretrain/mocov3_b16.pth --source mocov3
    python tools/convert_weights.py dinov2_vits14_reg4_pretrain.pth \\
        pretrain/dinov2_s14_reg4.pth --source dinov2

See :mod:`davpt_seg.weights.convert` for the key mapping.
"""
import argparse
import os
import os.path as osp
import sys

import torch

from davpt_seg.weights import ConversionError
from davpt_seg.weights.convert import SOURCES, convert_file, format_summary


def parse_args(argv=None) -> argparse.Namespace:
    """Parse the command line (``argv`` defaults to ``sys.argv[1:]``)."""
    parser = argparse.ArgumentParser(
        description='Convert timm / JAX (.npz) / MAE / MoCo v3 / DINOv2 ViT '
        'weights '
        "to mmseg VisionTransformer keys (davpt-seg's backbone).")
    parser.add_argument('src', help='source checkpoint (.pth, .pth.tar, '
                        '.bin, .safetensors or .npz)')
    parser.add_argument('dst', help='output .pth file (plain state dict)')
    parser.add_argument(
        '--source',
        default='auto',
        choices=('auto', ) + SOURCES,
        help='source format; auto detects it from the extension and keys '
        '(default: auto)')
    parser.add_argument(
        '--img-size',
        type=int,
        nargs='+',
        metavar=('H', 'W'),
        help='resize pos_embed to the (H // patch, W // patch) grid of this '
        'training size (the class-token position is kept)')
    parser.add_argument(
        '--patch-size',
        type=int,
        default=None,
        help='expected patch size, checked against the weights '
        '(default: inferred from the weights, e.g. 16)')
    parser.add_argument(
        '--interpolate-mode',
        default='bilinear',
        choices=('bilinear', 'bicubic', 'nearest'),
        help='interpolation for resizing pos_embed (default: bilinear)')
    args = parser.parse_args(argv)
    if args.img_size is not None and len(args.img_size) not in (1, 2):
        parser.error('--img-size takes H or H W')
    return args


def main(argv=None) -> int:
    """Convert, save and print a summary; returns the exit status (0, or 1
    with a one-line ``error: FILE: ...`` on stderr)."""
    args = parse_args(argv)
    try:
        result = convert_file(
            args.src,
            source=args.source,
            img_size=args.img_size,
            patch_size=args.patch_size,
            interpolate_mode=args.interpolate_mode)
    except ConversionError as e:
        print(f'error: {e}', file=sys.stderr)
        return 1
    try:
        os.makedirs(osp.dirname(osp.abspath(args.dst)), exist_ok=True)
        torch.save(dict(result.state_dict), args.dst)
    except OSError as e:
        print(f'error: cannot write {args.dst}: {e}', file=sys.stderr)
        return 1
    print(format_summary(result, args.dst, args.interpolate_mode))
    return 0


if __name__ == '__main__':
    sys.exit(main())
