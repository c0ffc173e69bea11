# Copyright (c) davpt-seg contributors. Apache-2.0.
"""Presets of the CamVid accuracy bench and the configs they produce.

Each run of ``tools/accuracy_bench.py`` trains a shipped CamVid config
(``configs/camvid/<variant>_dinov2-s14_setr-pup_camvid.py``) with only the
data root, the pretrained file, the evaluation split and the preset's
resolution / batch / schedule changed (:func:`preset_config`).
"""
import os.path as osp
from dataclasses import dataclass
from typing import Optional, Tuple

from mmengine.config import Config

CONFIG_DIR = osp.join(
    osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))), 'configs',
    'camvid')
#: The selection split (``configs/camvid/splits/README.md``): image names
#: held out from train for choosing settings, and the rest of train.
SPLIT_FILES = dict(select=osp.join(CONFIG_DIR, 'splits', 'select.txt'),
                   train=osp.join(CONFIG_DIR, 'splits',
                                  'train_minus_select.txt'))
EVAL_SPLITS = ('val', 'test', 'select')
VARIANTS = ('heads', 'vpt', 'davpt', 'davptplus', 'full', 'full_adamw')
#: Opt-in rows (``--variants``): the mapping's k-means++ cold start, the
#: metric losses on the last four layers, and the two levers (gated
#: prompts, the class-patches mapping) alone and together.
EXTRA_VARIANTS = ('davpt_kpp', 'davpt_g4', 'vpt_gated', 'davpt_gated',
                  'davpt_patchmap', 'davpt_gated_patchmap')
PROMPTED = ('vpt', 'davpt', 'davptplus') + EXTRA_VARIANTS
#: ``--lr-from``: a lever row without rows of its own in the selection
#: results takes the learning rate chosen for the variant it modifies.
LR_BASE = dict(vpt_gated='vpt', davpt_gated='davpt', davpt_patchmap='davpt',
               davpt_gated_patchmap='davpt')


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
    tiny: bool = False


PRESETS = {
    # 2 CPU cores (~1 h for the 5 x 3 matrix when idle): CamVid at 224 x 168
    # (0.47x), 140 px crops (10 x 10 patches), batch 8, 100 iterations
    # (~2.2 epochs).
    'cpu': Preset(scale=(224, 168), crop=(140, 140), stride=(98, 98),
                  batch_size=8, iters=100, checkpoint_interval=50,
                  log_interval=10, num_workers=0),
    # One GPU: the shipped configs as they are (480 x 360, 350 px crops,
    # batch 8, 8k iterations).
    'gpu': Preset(scale=(480, 360), crop=(350, 350), stride=(234, 234),
                  batch_size=8, iters=8000, checkpoint_interval=1000,
                  log_interval=50, num_workers=4),
    # CI: a tiny random 4-layer ViT at 56 px, a few iterations.
    'smoke': Preset(scale=(64, 64), crop=(56, 56), stride=(28, 28),
                    batch_size=2, iters=4, checkpoint_interval=2,
                    log_interval=1, num_workers=0, tiny=True),
}

#: smoke preset: a tiny random ViT (patch 14, 4 layers of 48 dims)
TINY_BACKBONE = dict(embed_dims=48, num_layers=4, num_heads=2, mlp_ratio=2,
                     out_indices=(1, 3))
# 4 prompts: the toy data show only 8 of the 11 classes
TINY_PROMPTS = dict(num_prompts=4, num_proxy_prompts=4, guided_layers=[3])


def config_path(variant: str) -> str:
    """The shipped config of a bench variant."""
    if variant not in VARIANTS + EXTRA_VARIANTS:
        raise ValueError(f'unknown variant {variant!r}; choose from '
                         f'{VARIANTS + EXTRA_VARIANTS}')
    return osp.join(CONFIG_DIR, f'{variant}_dinov2-s14_setr-pup_camvid.py')


def _set_transform(pipeline: list, type_name: str, **values) -> None:
    found = [t for t in pipeline if t['type'] == type_name]
    if len(found) != 1:
        raise ValueError(f'expected one {type_name} in the pipeline')
    found[0].update(values)


def _shrink(cfg: Config, variant: str) -> None:
    """The smoke preset's tiny model."""
    cfg.model.backbone.update(TINY_BACKBONE)
    if variant in PROMPTED:
        cfg.model.backbone.update(TINY_PROMPTS)
        if variant == 'davpt_g4':
            cfg.model.backbone.guided_layers = [2, 3]
    if cfg.optim_wrapper.get('paramwise_cfg', {}).get('num_layers'):
        cfg.optim_wrapper.paramwise_cfg.num_layers = \
            TINY_BACKBONE['num_layers']
    cfg.model.decode_head.update(in_channels=48, channels=16)
    cfg.model.auxiliary_head.update(in_channels=48, channels=8)


def scaled_schedule(schedulers: list, max_iters: int, iters: int) -> list:
    """The config's learning-rate schedule stretched from ``max_iters`` to
    ``iters`` iterations (every ``begin`` / ``end`` scaled, each phase two
    iterations at least; the last ends at ``iters``)."""
    out = []
    for old in schedulers:
        new = dict(old)
        begin = round(old.get('begin', 0) * iters / max_iters)
        if out and old.get('begin') == schedulers[len(out) - 1].get('end'):
            begin = out[-1]['end']  # contiguous phases stay contiguous
        new['begin'] = begin
        # two steps at least: a one-step LinearLR never leaves start_factor
        new['end'] = max(begin + 2, round(old['end'] * iters / max_iters))
        out.append(new)
    out[-1]['end'] = max(out[-1]['begin'] + 1, iters)
    return out


def preset_config(variant: str, preset: Preset, data_root: str,
                  weights: Optional[str], eval_split: str,
                  iters: Optional[int] = None,
                  num_workers: Optional[int] = None,
                  lr: Optional[float] = None,
                  split_files: Optional[dict] = None) -> Config:
    """The shipped config of ``variant`` with the preset's resolution, batch
    and schedule (``iters`` / ``num_workers``: None = the preset's),
    ``data_root``, ``weights`` (None: random init) and ``eval_split`` as
    the test set; model and recipe unchanged but for the optimiser's base
    ``lr`` (None: the config's; multipliers such as the heads' x10 stay).

    ``eval_split='select'`` trains on ``split_files['train']`` and tests on
    ``split_files['select']`` (image names of the train folder; default
    :data:`SPLIT_FILES`)."""
    if eval_split not in EVAL_SPLITS:
        raise ValueError(f'eval_split must be one of {EVAL_SPLITS}')
    cfg = Config.fromfile(config_path(variant))
    iters = iters or preset.iters
    workers = preset.num_workers if num_workers is None else num_workers
    model = cfg.model
    model.data_preprocessor.size = preset.crop
    model.backbone.img_size = preset.crop
    model.backbone.init_cfg = None if weights is None else dict(
        type='Pretrained', checkpoint=osp.abspath(weights))
    model.test_cfg = dict(mode='slide', crop_size=preset.crop,
                          stride=preset.stride)
    if preset.tiny:
        _shrink(cfg, variant)
    train = cfg.train_dataloader
    _set_transform(train.dataset.pipeline, 'RandomResize', scale=preset.scale)
    _set_transform(train.dataset.pipeline, 'RandomCrop',
                   crop_size=preset.crop)
    train.update(batch_size=preset.batch_size, num_workers=workers,
                 persistent_workers=workers > 0)
    train.dataset.data_root = osp.abspath(data_root)
    folder, test_names = eval_split, ''
    if eval_split == 'select':
        files = split_files or SPLIT_FILES
        train.dataset.ann_file = osp.abspath(files['train'])
        folder, test_names = 'train', osp.abspath(files['select'])
    for loader in (cfg.val_dataloader, cfg.test_dataloader):
        _set_transform(loader.dataset.pipeline, 'Resize', scale=preset.scale)
        loader.update(num_workers=workers, persistent_workers=workers > 0)
        loader.dataset.update(
            data_root=osp.abspath(data_root), ann_file=test_names,
            data_prefix=dict(img_path=folder,
                             seg_map_path=folder + 'annot'))
    if lr is not None:
        cfg.optim_wrapper.optimizer.lr = lr
    # the top-level variables, for a reader of the dumped config
    cfg.merge_from_dict(dict(
        crop_size=preset.crop, img_scale=preset.scale,
        data_root=osp.abspath(data_root),
        train_pipeline=train.dataset.pipeline,
        test_pipeline=cfg.test_dataloader.dataset.pipeline))
    cfg.test_evaluator = dict(type='ClassIoUMetric', iou_metrics=['mIoU'])
    cfg.param_scheduler = scaled_schedule(cfg.param_scheduler,
                                          cfg.train_cfg.max_iters, iters)
    # no validation while training: the bench tests the last checkpoint
    cfg.train_cfg.update(max_iters=iters, val_interval=iters + 1)
    cfg.default_hooks.logger.interval = preset.log_interval
    cfg.default_hooks.checkpoint.update(
        interval=preset.checkpoint_interval, max_keep_ckpts=1)
    return cfg
