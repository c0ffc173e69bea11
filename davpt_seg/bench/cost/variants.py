# Copyright (c) davpt-seg contributors. Apache-2.0.
"""The rows of the cost benchmark.

Training rows time ``EncoderDecoder.train_step`` (data preprocessor +
forward + losses + backward + SGD step through mmengine's ``OptimWrapper``);
``bb_*`` rows a backbone-only step (forward, backward of the mean of the
outputs, SGD step) that isolates the backbone from the SETR-PUP heads, which
all rows share; inference rows an eval forward without gradients
(``encode_decode``: backbone + decode head, or the backbone alone).
"""
from typing import List, NamedTuple


class Variant(NamedTuple):
    """One row: the benchmark issue's row label, ``'train'`` / ``'infer'``,
    ``'stock'`` / ``'prompted'`` backbone, description and build options
    (``freeze``, ``davpt``, ``kv``, ``cp``, ``cp_heads``, ``amp``,
    ``backbone_only``; see :func:`~davpt_seg.bench.cost.build_row`)."""
    row: str
    kind: str
    backbone: str
    description: str
    options: dict


VARIANTS = {
    'full_ft': Variant('1', 'train', 'stock',
                       'stock ViT + SETR-PUP, full fine-tuning', {}),
    'frozen_ft': Variant('2', 'train', 'stock',
                         'stock ViT frozen, heads only', dict(freeze=True)),
    'vpt': Variant('3', 'train', 'prompted',
                   'VPT-Deep (prompts, no metric losses)', {}),
    'davpt': Variant('4', 'train', 'prompted',
                     'DA-VPT (prompts + metric losses + DAVPTHook)',
                     dict(davpt=True)),
    'davpt_plus': Variant('5', 'train', 'prompted', 'DA-VPT+ (+ K/V biases)',
                          dict(davpt=True, kv=True)),
    'davpt_cp': Variant('4cp', 'train', 'prompted',
                        'DA-VPT, backbone with_cp=True',
                        dict(davpt=True, cp=True)),
    'davpt_cp_heads': Variant('4cph', 'train', 'prompted',
                              'DA-VPT, --with-cp: backbone with_cp + '
                              'CheckpointEncoderDecoder heads',
                              dict(davpt=True, cp=True, cp_heads=True)),
    'full_ft_amp': Variant('1a', 'train', 'stock', 'full fine-tuning, AMP',
                           dict(amp=True)),
    'vpt_amp': Variant('3a', 'train', 'prompted', 'VPT-Deep, AMP',
                       dict(amp=True)),
    'davpt_amp': Variant('4a', 'train', 'prompted', 'DA-VPT, AMP',
                         dict(davpt=True, amp=True)),
    'davpt_cp_amp': Variant('4cpa', 'train', 'prompted',
                            'DA-VPT, --with-cp (backbone + heads) + AMP',
                            dict(davpt=True, cp=True, cp_heads=True,
                                 amp=True)),
    'bb_full_ft': Variant('1b', 'train', 'stock',
                          'backbone only: stock ViT, all weights train',
                          dict(backbone_only=True)),
    'bb_vpt': Variant('3b', 'train', 'prompted',
                      'backbone only: prompted ViT (VPT-Deep prompts)',
                      dict(backbone_only=True)),
    'bb_vpt_cp': Variant('3bcp', 'train', 'prompted',
                         'backbone only: prompted ViT, with_cp=True',
                         dict(backbone_only=True, cp=True)),
    'infer_stock': Variant('6', 'infer', 'stock',
                           'inference: stock ViT + decode head', {}),
    'infer_prompted': Variant('6', 'infer', 'prompted',
                              'inference: prompted ViT (DA-VPT) + decode '
                              'head', dict(davpt=True)),
    'infer_bb_stock': Variant('6b', 'infer', 'stock',
                              'inference: stock ViT alone',
                              dict(backbone_only=True)),
    'infer_bb_prompted': Variant('6b', 'infer', 'prompted',
                                 'inference: prompted ViT (DA-VPT) alone',
                                 dict(backbone_only=True, davpt=True)),
}
AMP_ROWS = ('full_ft_amp', 'vpt_amp', 'davpt_amp', 'davpt_cp_amp')
#: Inference rows reuse the weights of these training rows' models.
INFER_SOURCE = {'infer_stock': 'full_ft', 'infer_prompted': 'davpt',
                'infer_bb_stock': 'full_ft', 'infer_bb_prompted': 'davpt'}
#: Reference row of each inference row's ratios.
INFER_REF = {'infer_stock': 'infer_stock', 'infer_prompted': 'infer_stock',
             'infer_bb_stock': 'infer_bb_stock',
             'infer_bb_prompted': 'infer_bb_stock'}
#: Iterations between mapping updates: one ADE20K epoch (20210 images at
#: 8 GPUs x 2).
MAPPING_INTERVAL = 1264


def variant_ids(amp: bool) -> List[str]:
    """Row ids in report order; the AMP rows only with ``amp``."""
    return [v for v in VARIANTS if amp or v not in AMP_ROWS]


def select_rows(amp: bool, only=None) -> List[str]:
    """:func:`variant_ids`, restricted to ``only`` (unknown ids raise
    ``ValueError``)."""
    ids = variant_ids(amp)
    if only:
        bad = [v for v in only if v not in VARIANTS]
        if bad:
            raise ValueError(f'unknown rows {bad}; rows: {list(VARIANTS)}')
        ids = [v for v in ids if v in only]
    return ids
