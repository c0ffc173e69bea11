# A tiny DA-VPT run that trains and validates on CPU in a couple of minutes:
# a 4-layer, 96-dim ViT (patch 8) at 64x64 crops with SETR-PUP heads, on a
# generated 8-class dataset in ADE20K's on-disk layout
# (python tools/make_toy_data.py; `bash tools/run_toy.sh` does everything).
# The ViT is randomly initialised and frozen (no weights can be downloaded
# here): only prompts and heads train, as in the real configs.
#
# DAVPTHook: `_base_/davpt_hook.py` (mapping_interval=None: one epoch, 96
# images / batch 4 = 24 iterations).
_base_ = [
    'mmseg::_base_/default_runtime.py', './_base_/davpt_imports.py',
    './_base_/davpt_hook.py'
]

num_classes = 8
crop_size = (64, 64)
embed_dims = 96
# SyncBN needs GPUs; BN keeps the toy config runnable on one CPU process.
# (tools/dist_train.sh on CPU/gloo works with BN too.)
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
        patch_size=8,
        in_channels=3,
        embed_dims=embed_dims,
        num_layers=4,
        num_heads=4,
        mlp_ratio=2,
        out_indices=(1, 3),
        drop_rate=0.,
        norm_cfg=dict(type='LN', eps=1e-6, requires_grad=True),
        with_cls_token=True,
        interpolate_mode='bilinear',
        patch_bias=True,
        num_prompts=4,
        num_proxy_prompts=4,
        guided_layers=[2],
        init_cfg=None),
    decode_head=dict(
        type='SETRUPHead',
        in_channels=embed_dims,
        channels=32,
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
    auxiliary_head=[
        dict(
            type='SETRUPHead',
            in_channels=embed_dims,
            channels=32,
            in_index=0,
            num_classes=num_classes,
            dropout_ratio=0,
            norm_cfg=norm_cfg,
            act_cfg=dict(type='ReLU'),
            num_convs=1,
            up_scale=4,
            kernel_size=3,
            align_corners=False,
            loss_decode=dict(
                type='CrossEntropyLoss', use_sigmoid=False, loss_weight=0.4))
    ],
    train_cfg=dict(),
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(42, 42)))

# ----------------------------------------------------------------- data
# CheckedLoadAnnotations (davpt_seg) is mmseg's LoadAnnotations plus clear
# errors naming the file for a missing/corrupt annotation, label values
# outside 0..num_classes-1 (other than 255) and an image/annotation size
# mismatch.
dataset_type = 'ToyADE20KDataset'
data_root = 'data/toy_ade'
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='CheckedLoadAnnotations', reduce_zero_label=True,
         num_classes=num_classes),
    dict(
        type='RandomResize',
        scale=(128, 64),
        ratio_range=(0.5, 2.0),
        keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(128, 64), keep_ratio=True),
    dict(type='CheckedLoadAnnotations', reduce_zero_label=True,
         num_classes=num_classes),
    dict(type='PackSegInputs')
]
img_ratios = [0.75, 1.0, 1.25]
tta_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(
        type='TestTimeAug',
        transforms=[
            # ratios of the single-scale test scale (mmseg's ADE20K TTA
            # scales the original image, which here is 2x the test scale)
            [
                dict(
                    type='Resize',
                    scale=(int(128 * r), int(64 * r)),
                    keep_ratio=True) for r in img_ratios
            ],
            [
                dict(type='RandomFlip', prob=0., direction='horizontal'),
                dict(type='RandomFlip', prob=1., direction='horizontal')
            ],
            [dict(type='CheckedLoadAnnotations', num_classes=num_classes)],
            [dict(type='PackSegInputs')]
        ])
]
train_dataloader = dict(
    batch_size=4,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(
            img_path='images/training', seg_map_path='annotations/training'),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(
            img_path='images/validation',
            seg_map_path='annotations/validation'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator

# ------------------------------------------------------------- schedule
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
        end=300,
        by_epoch=False)
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=300, val_interval=150)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=25, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=150),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='SegVisualizationHook'))
env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='gloo'))
randomness = dict(seed=0)
