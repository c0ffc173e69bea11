# Copyright (c) davpt-seg contributors. Apache-2.0.
"""Parameters (total / trainable) and FLOPs of a config's segmentor.

    python tools/get_flops.py CONFIG [--shape H [W]] [--cfg-options k=v ...]

FLOPs are counted by mmengine's ``FlopAnalyzer`` (one multiply-add = one
FLOP) for one inference forward (backbone + decode head, as mmseg's
``get_flops.py``) of a [1, 3, H, W] input, default the config's
``crop_size``. Unlike a plain ``FlopAnalyzer``, attention computed with
``scaled_dot_product_attention`` (the prompted ViT's) is counted, like the
matmuls of mmseg's stock ViT (see :mod:`davpt_seg.utils.flops`).
Parameters are those of the training model (auxiliary heads included).
"""
import argparse
import sys
from typing import Optional, Sequence

import torch
from mmengine.config import Config, DictAction
from mmengine.model import revert_sync_batchnorm
from mmengine.registry import init_default_scope
from mmseg.registry import MODELS

import davpt_seg  # noqa: F401  (registration)
from davpt_seg.utils.flops import flop_analyzer


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Params (total/trainable) and FLOPs of a segmentor')
    parser.add_argument('config', help='config file')
    parser.add_argument(
        '--shape', type=int, nargs='+', metavar=('H', 'W'),
        help="input size (default: the config's crop_size, else 512 512)")
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override settings in the config, key=value')
    args = parser.parse_args(argv)
    if args.shape is not None and len(args.shape) not in (1, 2):
        parser.error('--shape takes H or H W')
    return args


def _input_size(cfg: Config, shape: Optional[Sequence[int]]) -> tuple:
    if shape:
        return (shape[0], shape[-1])
    crop = cfg.get('crop_size')
    return tuple(crop) if crop else (512, 512)


def complexity(cfg: Config, shape: Optional[Sequence[int]] = None) -> dict:
    """Build ``cfg.model`` and count its parameters and FLOPs.

    Returns:
        dict: ``input`` (1, 3, H, W), ``params`` and ``trainable``
        (training model), ``flops`` (inference forward) and
        ``flops_by_part`` (``backbone``, ``decode_head``, ``neck``),
        ``uncounted`` (``{op: calls}`` that no handle counts).
    """
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    model = revert_sync_batchnorm(MODELS.build(cfg.model))
    params = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    model.eval()
    size = (1, 3) + _input_size(cfg, shape)
    analyzer = flop_analyzer(model, (torch.zeros(size), ))
    analyzer.unsupported_ops_warnings(False)
    analyzer.uncalled_modules_warnings(False)
    with torch.no_grad():
        by_module = analyzer.by_module()
    return dict(
        input=size, params=params, trainable=trainable,
        flops=analyzer.total(),
        flops_by_part={part: by_module[part]
                       for part in ('backbone', 'neck', 'decode_head')
                       if part in by_module},
        uncounted=dict(analyzer.unsupported_ops()))


def _human(n: float) -> str:
    for unit, scale in (('G', 1e9), ('M', 1e6), ('K', 1e3)):
        if abs(n) >= scale:
            return f'{n / scale:.3f}{unit}'
    return str(n)


def format_report(result: dict) -> str:
    parts = ', '.join(f'{k} {_human(v)}'
                      for k, v in result['flops_by_part'].items())
    share = 100 * result['trainable'] / max(result['params'], 1)
    uncounted = ', '.join(f'{op} x{n}'
                          for op, n in sorted(result['uncounted'].items()))
    return '\n'.join([
        f'Input shape: {" x ".join(map(str, result["input"]))}',
        f'Params: {_human(result["params"])} total, '
        f'{_human(result["trainable"])} trainable ({share:.2f} %)',
        f'FLOPs: {_human(result["flops"])} ({parts}); one multiply-add = '
        'one FLOP, attention (SDPA) included',
        f'Ops without a FLOP handle (not counted): {uncounted or "none"}',
    ])


def main(argv=None) -> int:
    args = parse_args(argv)
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    print(format_report(complexity(cfg, args.shape)))
    return 0


if __name__ == '__main__':
    sys.exit(main())
