# DINOv2-S/14 (frozen, converted with tools/convert_weights.py) + a SETR-PUP
# style head sized for small machines, on CamVid (11 classes, SegNet split),
# one GPU: 350x350 crops of the 480x360 photos, batch 8, 8k iterations, SGD
# lr 0.01 (heads x10), poly; slide inference at full resolution.
# The five variants (heads / vpt / davpt / davptplus / full) differ only in
# the backbone's prompt settings, the DA-VPT hook and what is frozen; each
# sets its custom_hooks (ParamReportHook logs the trainable parameters).
# tools/accuracy_bench.py runs them all (and has a CPU preset).
_base_ = [
    'mmseg::_base_/default_runtime.py', '../../_base_/davpt_imports.py'
]

num_classes = 11
crop_size = (350, 350)  # 25 x 25 patches of 14 px
img_scale = (480, 360)  # CamVid's size (W, H)
embed_dims = 384
data_root = 'data/camvid'
pretrained = 'pretrain/dinov2_vits14.pth'  # tools/convert_weights.py output
# One process: BN (use SyncBN for several GPUs).
norm_cfg = dict(type='BN', requires_grad=True)
data_preprocessor = dict(
    type='SegDataPreProcessor',
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=255,
    size=crop_size)
model = dict(
    type='EncoderDecoder',
    data_preprocessor=data_preprocessor,
    backbone=dict(
        type='PromptedVisionTransformer',
        img_size=crop_size,
        patch_size=14,
        in_channels=3,
        embed_dims=embed_dims,
        num_layers=12,
        num_heads=6,
        mlp_ratio=4,
        out_indices=(5, 11),
        qkv_bias=True,
        drop_rate=0.,
        attn_drop_rate=0.,
        drop_path_rate=0.,
        with_cls_token=True,
        final_norm=True,
        norm_cfg=dict(type='LN', eps=1e-6),
        act_cfg=dict(type='GELU'),
        interpolate_mode='bicubic',
        patch_bias=True,  # DINOv2 has a patch-embedding bias
        num_prompts=0,
        num_proxy_prompts=0,
        guided_layers=[],
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    decode_head=dict(
        type='SETRUPHead',
        in_channels=embed_dims,
        channels=128,
        in_index=1,
        num_classes=num_classes,
        dropout_ratio=0,
        norm_cfg=norm_cfg,
        num_convs=2,
        up_scale=2,
        kernel_size=3,
        align_corners=False,
        loss_decode=dict(
            type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    auxiliary_head=dict(
        type='SETRUPHead',
        in_channels=embed_dims,
        channels=64,
        in_index=0,
        num_classes=num_classes,
        dropout_ratio=0,
        norm_cfg=norm_cfg,
        num_convs=1,
        up_scale=4,
        kernel_size=3,
        align_corners=False,
        loss_decode=dict(
            type='CrossEntropyLoss', use_sigmoid=False, loss_weight=0.4)),
    train_cfg=dict(),
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(234, 234)))

# ----------------------------------------------------------------- data
dataset_type = 'CamVidDataset'
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='CheckedLoadAnnotations', num_classes=num_classes),
    dict(
        type='RandomResize',
        scale=img_scale,
        ratio_range=(0.5, 2.0),
        keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='CheckedLoadAnnotations', num_classes=num_classes),
    dict(type='PackSegInputs')
]
train_dataloader = dict(
    batch_size=8,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(img_path='train', seg_map_path='trainannot'),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(img_path='val', seg_map_path='valannot'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator

# ------------------------------------------------------------- schedule
max_iters = 8000
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=0.0),
    paramwise_cfg=dict(custom_keys={'head': dict(lr_mult=10.)}),
    clip_grad=None)
param_scheduler = [
    dict(
        type='PolyLR',
        eta_min=1e-4,
        power=0.9,
        begin=0,
        end=max_iters,
        by_epoch=False)
]
train_cfg = dict(
    type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(
        type='CheckpointHook', by_epoch=False, interval=1000, max_keep_ckpts=2),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='SegVisualizationHook'))
