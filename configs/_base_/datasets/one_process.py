# Data loading shared by the small one-process configs (davpt_setr_toy.py,
# camvid/_base_/dinov2-s14_setr-pup_camvid.py): loader defaults (2 workers,
# infinite shuffled training sampler, one image per validation batch), mIoU
# evaluation, and mmseg's standard training augmentation as pieces each
# config puts in its train_pipeline with its own scale and crop size:
#     dict(_base_.random_resize, scale=img_scale),
#     dict(_base_.random_crop, crop_size=crop_size),
#     *_base_.flip_and_distort,
# Each config sets its dataset, pipelines and training batch size, and
# test_dataloader = val_dataloader (merged over these defaults).
random_resize = dict(
    type='RandomResize', ratio_range=(0.5, 2.0), keep_ratio=True)
random_crop = dict(type='RandomCrop', cat_max_ratio=0.75)
flip_and_distort = [
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion')
]
train_dataloader = dict(
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True))
val_dataloader = dict(
    batch_size=1,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False))
test_dataloader = val_dataloader
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator
