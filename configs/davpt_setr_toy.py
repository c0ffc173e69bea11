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
    'mmseg::_base_/default_runtime.py', './_base_/models/setr_pup_prompted.py',
    './_base_/datasets/one_process.py',
    './_base_/schedules/sgd_poly_heads10.py', './_base_/davpt_imports.py',
    './_base_/davpt_hook.py'
]

num_classes = 8
crop_size = (64, 64)
embed_dims = 96
# SyncBN needs GPUs; the base's BN keeps the toy config runnable on one CPU
# process. (tools/dist_train.sh on CPU/gloo works with BN too.)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(
        img_size=crop_size,
        patch_size=8,
        embed_dims=embed_dims,
        num_layers=4,
        num_heads=4,
        mlp_ratio=2,
        out_indices=(1, 3),
        norm_cfg=dict(requires_grad=True),
        interpolate_mode='bilinear',
        num_prompts=4,
        num_proxy_prompts=4,
        guided_layers=[2],
        init_cfg=None),
    decode_head=dict(
        in_channels=embed_dims, channels=32, num_classes=num_classes),
    auxiliary_head=[
        dict(
            _base_.model.auxiliary_head,
            in_channels=embed_dims,
            channels=32,
            num_classes=num_classes,
            act_cfg=dict(type='ReLU'))
    ],
    test_cfg=dict(crop_size=crop_size, stride=(42, 42)))

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
    dict(_base_.random_resize, scale=(128, 64)),
    dict(_base_.random_crop, crop_size=crop_size),
    *_base_.flip_and_distort,
    dict(type='PackSegInputs'),
    # the classes of each crop, recorded in the loader's workers for
    # DAVPTHook (without it the hook scans the labels on the main process)
    dict(type='RecordLabelValues')
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
    num_workers=0,  # no worker processes (one CPU process)
    persistent_workers=False,
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(
            img_path='images/training', seg_map_path='annotations/training'),
        pipeline=train_pipeline))
val_dataloader = dict(
    train_dataloader,  # its workers and dataset, batch 1, other paths
    batch_size=1,
    dataset=dict(
        train_dataloader['dataset'],
        data_prefix=dict(
            img_path='images/validation',
            seg_map_path='annotations/validation'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader

# ------------------------------------------------------------- schedule
# 300 iterations (`_base_/schedules/sgd_poly_heads10.py`), validation and a
# checkpoint every 150, a log line every 25.
param_scheduler = [dict(_base_.param_scheduler[0], end=300)]
train_cfg = dict(max_iters=300, val_interval=150)
default_hooks = dict(
    logger=dict(interval=25), checkpoint=dict(interval=150))
env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='gloo'))
randomness = dict(seed=0)
