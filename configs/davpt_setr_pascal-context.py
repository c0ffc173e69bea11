# DA-VPT on SETR-PUP ViT-L/16, PASCAL Context (60 classes, class 0 =
# background), 480x480 crops, 80k iterations, 8 GPUs x 2.
#
# The model, schedule and optimiser are
# `_base_/davpt_setr-pup_vit-l16_pascal-context.py` (mmseg's stock pieces,
# assembled as mmseg's SETR-PUP ADE20K config is; see there); the dataset is
# mmseg's PASCAL Context (train/val lists of VOC2010, RandomResize((520,
# 520), 0.5-2.0), RandomCrop 480). `configs/davpt_setr_pascal-context-59.py`
# is the same base on mmseg's 59-class variant (background already ignored).
#
# The 60-class dataset keeps background as class 0, which is a real
# (evaluated) class but never drawn as a prompt target nor used for the
# class statistics of the class->prompt mapping: `background_ids=(0, )`.
# The paper (and the released code) use these 60 classes
# (docs/method.md §5).
#
# Pretrained weights: see `_base_/models/davpt_vit-l16.py`. The backbone is
# frozen; only the prompts (0.481M) and the SETR heads (13.051M: the ADE20K
# heads with 60 instead of 150 output channels in their four 1x1
# classifiers) train: 13.532M parameters.
_base_ = [
    './_base_/davpt_setr-pup_vit-l16_pascal-context.py',
    'mmseg::_base_/datasets/pascal_context.py'
]

num_classes = 60
model = dict(
    decode_head=dict(num_classes=num_classes),
    auxiliary_head=[
        dict(head, num_classes=num_classes)
        for head in _base_.model.auxiliary_head
    ])
# num_gpus: 8 -> batch_size: 16. RecordLabelValues after mmseg's pipeline:
# the classes of each crop, recorded in the loader's workers for DAVPTHook.
train_dataloader = dict(
    batch_size=2,
    dataset=dict(
        pipeline=_base_.train_pipeline + [dict(type='RecordLabelValues')]))
# background_ids: class 0 is background (mapping_interval: one epoch,
# ceil(4996 / 16) = 313 iterations)
custom_hooks = [dict(_base_.custom_hooks[0], background_ids=(0, ))]

# mmseg's 60-class pascal_context.py has no tta_pipeline (its 59-class
# sibling has): the same one, so that `tools/test.py --tta` evaluates
# multi-scale (0.5-1.75) + flip.
img_ratios = [0.5, 0.75, 1.0, 1.25, 1.5, 1.75]
tta_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(
        type='TestTimeAug',
        transforms=[
            [
                dict(type='Resize', scale_factor=r, keep_ratio=True)
                for r in img_ratios
            ],
            [
                dict(type='RandomFlip', prob=0., direction='horizontal'),
                dict(type='RandomFlip', prob=1., direction='horizontal')
            ], [dict(type='LoadAnnotations')], [dict(type='PackSegInputs')]
        ])
]
