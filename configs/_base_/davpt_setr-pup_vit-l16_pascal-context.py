# DA-VPT on SETR-PUP ViT-L/16 for PASCAL Context, 480x480 crops, 80k
# iterations, 8 GPUs x 2: everything but the dataset, shared by
# configs/davpt_setr_pascal-context.py (60 classes) and
# configs/davpt_setr_pascal-context-59.py (59 classes), which add mmseg's
# dataset config and the class count (mmengine cannot inherit two dataset
# configs, so the dataset is chosen there).
#
# mmseg ships no SETR config for PASCAL Context, so this one is assembled
# from the stock pieces exactly as mmseg's SETR-PUP ADE20K config is:
# mmseg's SETR-PUP model, default runtime and 80k schedule (PolyLR power
# 0.9, eta_min 1e-4, 80k iters), with the SETR ADE20K overrides: drop_rate
# 0, three 2-conv auxiliary PUP heads, SGD lr 1e-3 (heads x10 through
# paramwise_cfg 'head'), momentum 0.9, weight decay 0, batch 2/GPU x 8 = 16
# (as SETR; set in the dataset configs), slide test crop 480 stride 320.
# The ViT-L's 24x24 position embedding is resized to 30x30 when loaded.
_base_ = [
    'mmseg::_base_/models/setr_pup.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_80k.py', './models/davpt_vit-l16.py',
    './davpt_imports.py', './davpt_hook_setr.py'
]

# 480x480 crops: the crop_size of mmseg's PASCAL Context dataset configs
# (which define `crop_size`, so this base may not).
norm_cfg = dict(type='SyncBN', requires_grad=True)
data_preprocessor = dict(size=(480, 480))
model = dict(
    data_preprocessor=data_preprocessor,
    pretrained=None,
    backbone=dict(_base_.davpt_vit_l16, img_size=(480, 480), drop_rate=0.),
    # As mmseg's SETR-PUP ADE20K config: three 2-conv PUP heads on layers
    # 9, 14 and 19 (out_indices 0-2); their num_classes (and the decode
    # head's) are the dataset configs'.
    auxiliary_head=[
        dict(
            type='SETRUPHead',
            in_channels=1024,
            channels=256,
            in_index=i,
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
    test_cfg=dict(mode='slide', crop_size=(480, 480), stride=(320, 320)))

optimizer = dict(lr=0.001, weight_decay=0.0)
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=optimizer,
    paramwise_cfg=dict(custom_keys={'head': dict(lr_mult=10.)}))
