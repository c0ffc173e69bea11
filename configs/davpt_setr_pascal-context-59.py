# DA-VPT on SETR-PUP ViT-L/16, PASCAL Context 59 classes (mmseg's
# `pascal_context_59`: background is already the ignore index 255), 480x480
# crops, 80k iterations, 8 GPUs x 2.
#
# The same model, schedule and optimiser as
# `configs/davpt_setr_pascal-context.py` (60 classes, see there): both are
# `_base_/davpt_setr-pup_vit-l16_pascal-context.py` on a dataset config;
# this one is mmseg's 59-class one, which brings its own tta_pipeline
# (0.5-1.75 + flip). tests/unit/test_configs.py checks that the two differ only
# in the dataset, the class count and `background_ids`.
#
# All 59 classes are prompt targets: `background_ids=()` (mapping_interval:
# one epoch, ceil(4996 / 16) = 313 iterations).
#
# Pretrained weights: see `_base_/models/davpt_vit-l16.py`. The backbone is
# frozen; only the prompts (0.481M) and the SETR heads (13.050M: the ADE20K
# heads with 59 instead of 150 output channels in their four 1x1
# classifiers) train: 13.531M parameters.
_base_ = [
    './_base_/davpt_setr-pup_vit-l16_pascal-context.py',
    'mmseg::_base_/datasets/pascal_context_59.py'
]

num_classes = 59
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
