# Copyright (c) davpt-seg contributors. Apache-2.0.
"""Presets of the CamVid accuracy bench and the configs they produce.

Each run of ``tools/accuracy_bench.py`` trains a shipped CamVid config
(``configs/camvid/<variant>_dinov2-s14_setr-pup_camvid.py``) through a child
config that changes only the data root, the pretrained file, the evaluation
split and the preset's resolution / batch / schedule.
"""
import os.path as osp
from dataclasses import dataclass
from typing import Optional, Tuple

CONFIG_DIR = osp.join(
    osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))), 'configs',
    'camvid')
VARIANTS = ('heads', 'vpt', 'davpt', 'davptplus', 'full')
#: Opt-in rows (``--variants``): the mapping's k-means++ cold start, and
#: the metric losses on the last four layers.
EXTRA_VARIANTS = ('davpt_kpp', 'davpt_g4')
PROMPTED = ('vpt', 'davpt', 'davptplus') + EXTRA_VARIANTS


@dataclass(frozen=True)
class Preset:
    """Resolution, batch and schedule of a bench preset.

    ``scale`` is the (W, H) test scale and the base of the train-time random
    resize (ratios 0.5-2); ``crop`` the (H, W) train crop and slide window.
    """
    scale: Tuple[int, int]
    crop: Tuple[int, int]
    stride: Tuple[int, int]
    batch_size: int
    iters: int
    checkpoint_interval: int
    log_interval: int
    num_workers: int
    threads: Optional[int]
    tiny: bool = False


PRESETS = {
    # 2 CPU cores (~1 h for the 5 x 3 matrix when idle): CamVid at 224 x 168
    # (0.47x), 140 px crops (10 x 10 patches), batch 8, 100 iterations
    # (~2.2 epochs).
    'cpu': Preset(scale=(224, 168), crop=(140, 140), stride=(98, 98),
                  batch_size=8, iters=100, checkpoint_interval=50,
                  log_interval=10, num_workers=0, threads=2),
    # One GPU: the shipped configs as they are (480 x 360, 350 px crops,
    # batch 8, 8k iterations).
    'gpu': Preset(scale=(480, 360), crop=(350, 350), stride=(234, 234),
                  batch_size=8, iters=8000, checkpoint_interval=1000,
                  log_interval=50, num_workers=4, threads=None),
    # CI: a tiny random 4-layer ViT at 56 px, a few iterations.
    'smoke': Preset(scale=(64, 64), crop=(56, 56), stride=(28, 28),
                    batch_size=2, iters=4, checkpoint_interval=2,
                    log_interval=1, num_workers=0, threads=1, tiny=True),
}

#: smoke preset: a tiny random ViT (patch 14, 4 layers of 48 dims)
_TINY_BACKBONE = ('embed_dims=48, num_layers=4, num_heads=2, mlp_ratio=2, '
                  'out_indices=(1, 3), ')
_TINY_HEADS = """    decode_head=dict(in_channels=48, channels=16),
    auxiliary_head=dict(in_channels=48, channels=8),
"""


def config_path(variant: str) -> str:
    """The shipped config of a bench variant."""
    if variant not in VARIANTS + EXTRA_VARIANTS:
        raise ValueError(f'unknown variant {variant!r}; choose from '
                         f'{VARIANTS + EXTRA_VARIANTS}')
    return osp.join(CONFIG_DIR, f'{variant}_dinov2-s14_setr-pup_camvid.py')


def _tiny_overrides(variant: str):
    """(backbone, heads) config text of the smoke preset's tiny model."""
    backbone = _TINY_BACKBONE
    if variant in PROMPTED:
        # 4 prompts: the toy data show only 8 of the 11 classes
        layers = '[2, 3]' if variant == 'davpt_g4' else '[3]'
        backbone += (f'num_prompts=4, num_proxy_prompts=4, '
                     f'guided_layers={layers}, ')
    return backbone, _TINY_HEADS


def child_config(variant: str, preset: Preset, data_root: str,
                 weights: Optional[str], eval_split: str,
                 iters: Optional[int] = None) -> str:
    """The text of the config one bench run trains and tests with."""
    base = config_path(variant)
    tiny_backbone, tiny_heads = _tiny_overrides(variant) \
        if preset.tiny else ('', '')
    iters = iters or preset.iters
    init = 'None' if weights is None else \
        f"dict(type='Pretrained', checkpoint={osp.abspath(weights)!r})"
    persistent = preset.num_workers > 0
    text = f"""# Written by tools/accuracy_bench.py (variant {variant}).
_base_ = [{base!r}]
data_root = {osp.abspath(data_root)!r}
crop_size = {preset.crop!r}
img_scale = {preset.scale!r}
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='CheckedLoadAnnotations', num_classes=11),
    dict(type='RandomResize', scale=img_scale, ratio_range=(0.5, 2.0),
         keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='CheckedLoadAnnotations', num_classes=11),
    dict(type='PackSegInputs')
]
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict({tiny_backbone}img_size=crop_size, init_cfg={init}),
{tiny_heads}    test_cfg=dict(mode='slide', crop_size=crop_size,
                  stride={preset.stride!r}))
train_dataloader = dict(
    batch_size={preset.batch_size}, num_workers={preset.num_workers},
    persistent_workers={persistent},
    dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(
    num_workers={preset.num_workers}, persistent_workers={persistent},
    dataset=dict(
        data_root=data_root,
        data_prefix=dict(img_path={eval_split!r},
                         seg_map_path={eval_split + 'annot'!r}),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
test_evaluator = dict(type='ClassIoUMetric', iou_metrics=['mIoU'])
param_scheduler = [
    dict(type='PolyLR', eta_min=1e-4, power=0.9, begin=0, end={iters},
         by_epoch=False)
]
# no validation while training: the bench tests the last checkpoint
train_cfg = dict(max_iters={iters}, val_interval={iters + 1})
default_hooks = dict(
    logger=dict(interval={preset.log_interval}),
    checkpoint=dict(interval={preset.checkpoint_interval}, max_keep_ckpts=1))
"""
    return text
