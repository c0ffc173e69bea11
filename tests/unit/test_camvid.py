"""CamVid: the dataset on generated files in the SegNet layout, the per-class
IoU metric against mmseg's IoUMetric, and the DINOv2-S/14 CamVid configs
(build, parameter counts, what trains, one CPU step at small input)."""
import copy

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmseg.evaluation import IoUMetric
from mmseg.registry import DATASETS, MODELS
from mmseg.structures import SegDataSample
from mmengine.structures import PixelData

import davpt_seg  # noqa: F401
from davpt_seg.datasets import CamVidDataset
from davpt_seg.datasets.camvid_like import generate_camvid_like
from davpt_seg.engine.hooks.param_report_hook import parameter_report
from davpt_seg.evaluation import ClassIoUMetric
from davpt_seg.models.backbones import PromptedVisionTransformer
from helpers import CONFIG_DIR

init_default_scope('mmseg')
CAMVID_CONFIGS = CONFIG_DIR / 'camvid'
VARIANTS = ('heads', 'vpt', 'davpt', 'davptplus', 'davpt_kpp', 'davpt_g4',
            'vpt_gated', 'davpt_gated', 'davpt_patchmap',
            'davpt_gated_patchmap', 'full', 'full_adamw')
# Trainable parameters: heads 0.815M (decode 592,523 + aux 222,795); VPT
# prompts (11 x 20 + 10) x 384; DA-VPT+ adds 2 x 12 x 384 K/V biases; four
# guided layers hold 10 prompts each: (8 x 20 + 4 x 10) x 384.
HEADS = 592523 + 222795
EXPECTED_TRAINABLE = dict(
    heads=HEADS, vpt=HEADS + 230 * 384, davpt=HEADS + 230 * 384,
    davptplus=HEADS + 230 * 384 + 2 * 12 * 384,
    davpt_kpp=HEADS + 230 * 384, davpt_g4=HEADS + 200 * 384,
    full=22576598, full_adamw=22576598,
    # gated prompts: one gate per layer and head, 12 x 6
    vpt_gated=HEADS + 230 * 384 + 72, davpt_gated=HEADS + 230 * 384 + 72,
    davpt_patchmap=HEADS + 230 * 384,
    davpt_gated_patchmap=HEADS + 230 * 384 + 72)


@pytest.fixture(scope='module')
def camvid_root(tmp_path_factory):
    root = tmp_path_factory.mktemp('camvid')
    generate_camvid_like(root, dict(train=3, val=2), img_size=32)
    return root


def build_dataset(root, split='train', **kwargs):
    return DATASETS.build(dict(
        type='CamVidDataset', data_root=str(root),
        data_prefix=dict(img_path=split, seg_map_path=split + 'annot'),
        pipeline=[dict(type='LoadImageFromFile'),
                  dict(type='CheckedLoadAnnotations', num_classes=11)],
        **kwargs))


def test_dataset_reads_segnet_layout_and_ignores_void(camvid_root):
    ds = build_dataset(camvid_root)
    assert len(ds) == 3 and len(build_dataset(camvid_root, 'val')) == 2
    assert ds.metainfo['classes'][0] == 'sky' and len(
        ds.metainfo['classes']) == 11 and len(ds.metainfo['palette']) == 11
    sample = ds[0]
    raw = np.array(__import__('PIL.Image').Image.open(
        sample['seg_map_path']))
    seg = sample['gt_seg_map']
    assert (raw == 11).any(), 'the generator writes void pixels'
    assert (seg[raw == 11] == 255).all()
    assert (seg[raw != 11] == raw[raw != 11]).all()
    assert set(np.unique(seg)) <= set(range(11)) | {255}


def test_dataset_class_subset_maps_others_and_void_to_ignore(camvid_root):
    ds = build_dataset(camvid_root, metainfo=dict(classes=('road', 'car')))
    assert ds.metainfo['palette'] == [[128, 64, 128], [64, 0, 128]]
    raw = np.array(__import__('PIL.Image').Image.open(
        ds[0]['seg_map_path']))
    seg = ds[0]['gt_seg_map']
    assert ((seg == 0) == (raw == 3)).all() and ((seg == 1) == (raw == 8)
                                                  ).all()
    assert (seg[(raw != 3) & (raw != 8)] == 255).all()


def test_dataset_rejects_reduce_zero_label(camvid_root):
    with pytest.raises(ValueError, match='reduce_zero_label'):
        CamVidDataset(data_root=str(camvid_root), reduce_zero_label=True,
                      data_prefix=dict(img_path='train',
                                       seg_map_path='trainannot'))


def test_generator_rejects_unknown_split(tmp_path):
    with pytest.raises(ValueError, match='unknown CamVid splits'):
        generate_camvid_like(tmp_path, dict(training=1))


def _sample(pred, gt):
    s = SegDataSample()
    s.pred_sem_seg = PixelData(data=torch.as_tensor(pred)[None])
    s.gt_sem_seg = PixelData(data=torch.as_tensor(gt)[None])
    return s.to_dict()


def test_class_iou_metric_matches_iou_metric():
    rng = np.random.default_rng(0)
    classes = ('a', 'b', 'c', 'd')
    samples = []
    for _ in range(3):
        gt = rng.integers(0, 3, (16, 16))  # class d never occurs
        gt[0] = 255
        pred = np.where(rng.random((16, 16)) < .7, gt, rng.integers(0, 3,
                                                                    (16, 16)))
        samples.append(_sample(pred, gt))
    ours, ref = ClassIoUMetric(), IoUMetric()
    for metric in (ours, ref):
        metric.dataset_meta = dict(classes=classes)
        metric.process([{}] * 3, samples)
    got, expected = ours.evaluate(3), ref.evaluate(3)
    for key, value in expected.items():
        assert got[key] == value
    per_class = [got[f'IoU.{c}'] for c in 'abc']
    assert 'IoU.d' not in got  # no gt, no prediction: left out as by mmseg
    assert abs(np.mean(per_class) - got['mIoU']) < 0.02
    assert all(0 < v <= 100 for v in per_class)


# ------------------------------------------------------------------ configs
@pytest.fixture(scope='module', params=VARIANTS)
def built(request):
    cfg = Config.fromfile(
        str(CAMVID_CONFIGS /
            f'{request.param}_dinov2-s14_setr-pup_camvid.py'))
    torch.manual_seed(0)
    return request.param, cfg, MODELS.build(copy.deepcopy(cfg.model))


def test_config_parameters_and_freezing(built):
    variant, cfg, model = built
    counts = parameter_report(model)
    assert counts['trainable'] == EXPECTED_TRAINABLE[variant]
    backbone = model.backbone
    assert cfg.model.backbone.init_cfg == dict(
        type='Pretrained', checkpoint='pretrain/dinov2_vits14.pth')
    if variant.startswith('full'):
        assert type(backbone).__name__ == 'VisionTransformer'
        return
    assert isinstance(backbone, PromptedVisionTransformer)
    assert counts['trainable'] / counts['total'] < 0.05
    own = set(backbone.own_state_keys())
    for name, p in backbone.named_parameters():
        assert p.requires_grad == (name in own), name
    is_davpt = variant.startswith('davpt')
    hooks = [h['type'] for h in cfg.custom_hooks]
    assert ('DAVPTHook' in hooks) == is_davpt
    assert backbone.guided_layers == ([8, 9, 10, 11] if variant == 'davpt_g4'
                                      else [11] if variant != 'heads' else [])


def test_config_cpu_step_at_small_input(built):
    """Segmentation loss forward/backward at 56 px: every trainable tensor
    and only those get a gradient."""
    variant, cfg, _ = built
    model_cfg = copy.deepcopy(cfg.model)
    model_cfg.backbone.img_size = (56, 56)
    model_cfg.data_preprocessor.size = (56, 56)
    model = MODELS.build(model_cfg)
    model.train()
    rng = np.random.default_rng(1)
    samples = []
    for _ in range(2):
        s = SegDataSample()
        s.gt_sem_seg = PixelData(data=torch.as_tensor(
            rng.integers(0, 11, (1, 56, 56))))
        s.set_metainfo(dict(img_shape=(56, 56), pad_shape=(56, 56)))
        samples.append(s)
    losses = model.loss(torch.randn(2, 3, 56, 56), samples)
    total = sum(v for k, v in losses.items() if 'loss' in k)
    assert torch.isfinite(total)
    total.backward()
    for name, p in model.named_parameters():
        assert (p.grad is not None) == p.requires_grad, name
