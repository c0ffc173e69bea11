# Copyright (c) davpt-seg contributors. Apache-2.0.
"""Models, optimiser wrappers, DA-VPT hooks and the input batch of the cost
benchmark. Every model is built through mmseg's registry from the stock
SETR-PUP ADE20K config (``setr_vit-l_pup_8xb2-160k_ade20k-512x512.py``),
resized by the preset."""
import os.path as osp
from dataclasses import dataclass
from typing import Optional

import mmseg
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.model import revert_sync_batchnorm
from mmengine.optim import OptimWrapper, build_optim_wrapper
from mmengine.structures import PixelData
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

from davpt_seg.datasets import RecordLabelValues
from davpt_seg.engine.hooks import DAVPTHook
from . import cpu_amp  # noqa: F401  (registers CPUBf16AutocastOptimWrapper)
from .variants import MAPPING_INTERVAL, VARIANTS

SETR_CONFIG = ('setr', 'setr_vit-l_pup_8xb2-160k_ade20k-512x512.py')


@dataclass
class BuiltRow:
    """One row's objects: the segmentor (or backbone for ``backbone_only``
    rows), its optimiser wrapper (training rows) and its DA-VPT hook, attached
    to the segmentor (``davpt`` rows)."""
    id: str
    kind: str
    options: dict
    model: torch.nn.Module
    optim_wrapper: Optional[OptimWrapper] = None
    hook: Optional[DAVPTHook] = None


def setr_model_cfg(preset: dict) -> dict:
    """The stock SETR-PUP ADE20K model config, resized to ``preset``."""
    path = osp.join(osp.dirname(mmseg.__file__), '.mim', 'configs',
                    *SETR_CONFIG)
    model = Config.fromfile(path).model.to_dict()
    model['pretrained'] = None
    crop = (preset['crop'], preset['crop'])
    model['data_preprocessor']['size'] = crop
    model['backbone'].update(
        img_size=crop, embed_dims=preset['embed_dims'],
        num_layers=preset['num_layers'], num_heads=preset['num_heads'],
        mlp_ratio=preset['mlp_ratio'],
        out_indices=tuple(preset['out_indices']), init_cfg=None)
    heads = [model['decode_head']] + list(model['auxiliary_head'])
    in_index = [preset['main_in_index']] + list(preset['aux_in_index'])
    model['auxiliary_head'] = heads[1:len(in_index)]
    for head, idx in zip(heads, in_index):
        head.update(in_channels=preset['embed_dims'],
                    channels=preset['head_channels'], in_index=idx,
                    num_classes=preset['num_classes'])
    return model


def prompted_backbone_cfg(preset: dict, kv: bool = False,
                          cp: bool = False) -> dict:
    """Overrides turning the stock ViT config into a prompted one (VPT-Deep
    prompts, ``num_proxy_prompts`` in ``guided_layers``; DA-VPT+ with
    ``kv``, gradient checkpointing with ``cp``)."""
    return dict(type='PromptedVisionTransformer',
                num_prompts=preset['num_prompts'],
                num_proxy_prompts=preset['num_proxy_prompts'],
                guided_layers=list(preset['guided_layers']),
                tune_kv_bias=kv, with_cp=cp)


def row_model_cfg(vid: str, preset: dict) -> dict:
    """The segmentor config of row ``vid``."""
    variant = VARIANTS[vid]
    opt = variant.options
    cfg = setr_model_cfg(preset)
    if variant.backbone == 'prompted':
        cfg['backbone'].update(prompted_backbone_cfg(
            preset, kv=opt.get('kv', False), cp=opt.get('cp', False)))
    if opt.get('cp_heads'):
        cfg.update(type='CheckpointEncoderDecoder', checkpoint_heads=True)
    return cfg


def optim_wrapper_cfg(amp: bool, device: torch.device,
                      amp_dtype: str = 'float16') -> dict:
    """SGD (heads at 10x lr) in mmengine's ``OptimWrapper``; with ``amp``
    ``AmpOptimWrapper`` (CUDA, ``amp_dtype``) or
    ``CPUBf16AutocastOptimWrapper`` (CPU)."""
    cfg = dict(type='OptimWrapper',
               optimizer=dict(type='SGD', lr=1e-3, momentum=0.9,
                              weight_decay=0.),
               paramwise_cfg=dict(custom_keys={'head': dict(lr_mult=10.)}))
    if amp and device.type == 'cuda':
        cfg.update(type='AmpOptimWrapper', dtype=amp_dtype)
    elif amp:
        cfg.update(type='CPUBf16AutocastOptimWrapper')
    return cfg


def build_row(vid: str, preset: dict, device: torch.device,
              amp_dtype: str = 'float16') -> BuiltRow:
    """Build row ``vid``'s model (in train mode on ``device``), optimiser
    wrapper and, for DA-VPT segmentors, its attached :class:`DAVPTHook`."""
    variant = VARIANTS[vid]
    opt = variant.options
    cfg = row_model_cfg(vid, preset)
    torch.manual_seed(0)
    if opt.get('backbone_only'):
        model = MODELS.build(cfg['backbone'])
    else:
        model = revert_sync_batchnorm(MODELS.build(cfg))
    model.init_weights()
    if opt.get('freeze'):
        for p in model.backbone.parameters():
            p.requires_grad_(False)
    model.to(device)
    model.train()
    row = BuiltRow(vid, variant.kind, opt, model)
    if opt.get('davpt') and not opt.get('backbone_only'):
        row.hook = attach_davpt_hook(model)
    if variant.kind == 'train':
        row.optim_wrapper = build_optim_wrapper(
            model, optim_wrapper_cfg(opt.get('amp', False), device,
                                     amp_dtype))
    return row


def attach_davpt_hook(segmentor: torch.nn.Module) -> DAVPTHook:
    """A real :class:`DAVPTHook` attached to ``segmentor`` (guided-feature
    capture + the forward hook adding the metric losses), with its
    class->prompt mapping initialised from one random feature per class
    (what ``before_train``'s initial pass would do, without a dataset)."""
    hook = DAVPTHook(mapping_interval=MAPPING_INTERVAL, seed=0)
    hook.attach(segmentor)
    mapping = hook.objective.mapping
    n, c = mapping.num_classes, mapping.embed_dims
    g = torch.Generator().manual_seed(0)
    device = mapping.feat_sum.device
    mapping.accumulate(torch.randn(n, c, generator=g).to(device),
                       torch.eye(n, dtype=torch.bool, device=device))
    if not mapping.update():
        raise RuntimeError('could not initialise the class->prompt mapping')
    return hook


def make_batch(preset: dict) -> dict:
    """``train_step`` data (on the CPU, as a dataloader yields it): uint8
    images [3, S, S] and labels [1, S, S] with several classes (random 4x4
    class blocks + an ignored stripe), with the ``label_values`` metainfo
    that ``RecordLabelValues`` records in the data loader's workers."""
    g = torch.Generator().manual_seed(0)
    s, n = preset['crop'], preset['num_classes']
    inputs, samples = [], []
    for _ in range(preset['batch']):
        inputs.append(torch.randint(0, 256, (3, s, s), generator=g,
                                    dtype=torch.uint8))
        blocks = torch.randint(0, n, (1, 1, 4, 4), generator=g)
        label = F.interpolate(blocks.float(), size=(s, s),
                              mode='nearest').long()[0]
        label[:, :, :max(1, s // 16)] = 255
        sample = SegDataSample()
        sample.gt_sem_seg = PixelData(data=label)
        sample.set_metainfo(dict(img_shape=(s, s), ori_shape=(s, s),
                                 pad_shape=(s, s)))
        RecordLabelValues()(dict(data_samples=sample))  # a worker's work
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


def normalized_inputs(data: dict, device: torch.device) -> torch.Tensor:
    """[B, 3, S, S] float RGB images of ``data``, normalised like SETR's
    data preprocessor (the backbone-only rows' input)."""
    x = torch.stack(data['inputs']).float().flip(1)  # bgr -> rgb
    mean = torch.tensor([123.675, 116.28, 103.53]).view(1, 3, 1, 1)
    std = torch.tensor([58.395, 57.12, 57.375]).view(1, 3, 1, 1)
    return ((x - mean) / std).to(device)
