# DINOv2-S/14 (frozen, converted with tools/convert_weights.py) + a SETR-PUP
# style head sized for small machines, on CamVid (11 classes, SegNet split),
# one GPU: 350x350 crops of the 480x360 photos, batch 8, 8k iterations, SGD
# lr 0.01 (heads x10), poly; slide inference at full resolution.
# The five variants (heads / vpt / davpt / davptplus / full) differ only in
# the backbone's prompt settings, the DA-VPT hook and what is frozen; each
# sets its custom_hooks (ParamReportHook logs the trainable parameters).
# tools/accuracy_bench.py runs them all (and has a CPU preset).
_base_ = [
    'mmseg::_base_/default_runtime.py',
    '../../_base_/models/setr_pup_prompted.py',
    '../../_base_/models/dinov2-s14.py',
    '../../_base_/datasets/one_process.py',
    '../../_base_/schedules/sgd_poly_heads10.py',
    '../../_base_/davpt_imports.py'
]

num_classes = 11
crop_size = (350, 350)  # 25 x 25 patches of 14 px
img_scale = (480, 360)  # CamVid's size (W, H)
embed_dims = _base_.dinov2_s14.embed_dims  # 384
data_root = 'data/camvid'
pretrained = _base_.dinov2_s14.init_cfg.checkpoint  # convert_weights.py output
# One process: the base's BN (use SyncBN for several GPUs).
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(
        _base_.dinov2_s14,  # `../../_base_/models/dinov2-s14.py`
        img_size=crop_size,
        out_indices=(5, 11),
        num_prompts=0,
        num_proxy_prompts=0,
        guided_layers=[]),
    decode_head=dict(
        in_channels=embed_dims, channels=128, num_classes=num_classes),
    auxiliary_head=dict(
        in_channels=embed_dims, channels=64, num_classes=num_classes),
    test_cfg=dict(crop_size=crop_size, stride=(234, 234)))

# ----------------------------------------------------------------- data
dataset_type = 'CamVidDataset'
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='CheckedLoadAnnotations', num_classes=num_classes),
    dict(_base_.random_resize, scale=img_scale),
    dict(_base_.random_crop, crop_size=crop_size),
    *_base_.flip_and_distort,
    dict(type='PackSegInputs'),
    # the classes of each crop, recorded in the loader's workers for
    # DAVPTHook (without it the hook scans the labels on the main process)
    dict(type='RecordLabelValues')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='CheckedLoadAnnotations', num_classes=num_classes),
    dict(type='PackSegInputs')
]
# 2 workers, batch 1 for validation (`../../_base_/datasets/one_process.py`)
train_dataloader = dict(
    batch_size=8,
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(img_path='train', seg_map_path='trainannot'),
        pipeline=train_pipeline))
val_dataloader = dict(
    dataset=dict(
        train_dataloader['dataset'],
        data_prefix=dict(img_path='val', seg_map_path='valannot'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader

# ------------------------------------------------------------- schedule
# `../../_base_/schedules/sgd_poly_heads10.py` for 8k iterations: validation
# at the end, a checkpoint every 1000 (the last two kept).
max_iters = 8000
param_scheduler = [dict(_base_.param_scheduler[0], end=max_iters)]
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
default_hooks = dict(checkpoint=dict(interval=1000, max_keep_ckpts=2))
