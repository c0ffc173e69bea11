# DA-VPT on SETR-PUP ViT-L/16, PASCAL Context 59 classes (mmseg's
# `pascal_context_59`: background is already the ignore index 255), 480x480
# crops, 80k iterations, 8 GPUs x 2.
#
# The same model, schedule and optimiser as
# `configs/davpt_setr_pascal-context.py` (60 classes, see there), on mmseg's
# 59-class dataset config, which brings its own tta_pipeline (0.5-1.75 +
# flip). The configs repeat the model block because mmengine cannot inherit
# two dataset configs; tests/test_configs.py checks that the two differ only
# in the dataset, the class count and `background_ids`.
#
# All 59 classes are prompt targets: `background_ids=()`.
#
# Pretrained weights: pretrain/vit_large_p16.pth, the mmseg-format ViT-L/16
# (IN-21k pre-trained, IN-1k fine-tuned at 384) produced by
#   python tools/convert_weights.py jx_vit_large_p16_384-b3be5167.pth \
#       pretrain/vit_large_p16.pth
# (see README "Pretrained weights"); its 24x24 position embedding is resized
# to 30x30 when loaded. The backbone is frozen; only the prompts (0.481M)
# and the SETR heads (13.050M: the ADE20K heads with 59 instead of 150
# output channels in their four 1x1 classifiers) train: 13.531M parameters.
_base_ = [
    'mmseg::_base_/models/setr_pup.py',
    'mmseg::_base_/datasets/pascal_context_59.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_80k.py'
]

custom_imports = dict(imports=['davpt_seg'], allow_failed_imports=False)

num_classes = 59
crop_size = (480, 480)
norm_cfg = dict(type='SyncBN', requires_grad=True)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    pretrained=None,
    backbone=dict(
        type='PromptedVisionTransformer',
        img_size=crop_size,
        drop_rate=0.,
        # timm/JAX ViT-L has a patch-embedding bias; mmseg's default
        # patch_bias=False would drop it, and a frozen backbone never
        # learns it back.
        patch_bias=True,
        num_prompts=20,  # per unguided layer
        num_proxy_prompts=10,  # class-assigned prompts per guided layer
        guided_layers=[11],
        tune_kv_bias=False,
        init_cfg=dict(
            type='Pretrained', checkpoint='pretrain/vit_large_p16.pth')),
    decode_head=dict(num_classes=num_classes),
    # As mmseg's SETR-PUP ADE20K config: three 2-conv PUP heads on layers
    # 9, 14 and 19 (out_indices 0-2).
    auxiliary_head=[
        dict(
            type='SETRUPHead',
            in_channels=1024,
            channels=256,
            in_index=i,
            num_classes=num_classes,
            dropout_ratio=0,
            norm_cfg=norm_cfg,
            act_cfg=dict(type='ReLU'),
            num_convs=2,
            kernel_size=3,
            align_corners=False,
            loss_decode=dict(
                type='CrossEntropyLoss', use_sigmoid=False, loss_weight=0.4))
        for i in range(3)
    ],
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(320, 320)))

optimizer = dict(lr=0.001, weight_decay=0.0)
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=optimizer,
    paramwise_cfg=dict(custom_keys={'head': dict(lr_mult=10.)}))
# num_gpus: 8 -> batch_size: 16
train_dataloader = dict(batch_size=2)
val_dataloader = dict(batch_size=1)
test_dataloader = val_dataloader

custom_hooks = [
    dict(
        type='DAVPTHook',
        token_loss_weight=0.05,
        cls_loss_weight=0.05,
        token_feature='output',
        metric_loss=dict(
            type='ProxyAnchorLoss',
            alpha=32.,
            delta=0.1,
            scale=5.,
            pos_norm='all'),
        target_rule='random',
        mapping=dict(kmeans_norm='layer', max_iter=20, unseen='random'),
        background_ids=(),  # 59 classes: background is 255 already
        mapping_interval=None,  # one epoch: ceil(4996 / 16) = 313 iters
        init_max_batches=None)  # initial mapping: one pass over train set
]
