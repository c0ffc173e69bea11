# The schedule of the small one-process configs (davpt_setr_toy.py,
# camvid/_base_/dinov2-s14_setr-pup_camvid.py): as mmseg's
# _base_/schedules/schedule_80k.py (SGD lr 0.01, momentum 0.9, PolyLR power
# 0.9 down to 1e-4, by iterations, its default_hooks) but with no weight
# decay and the heads at 10x the learning rate. Each user sets the values
# marked `None`: the length (param_scheduler's end, train_cfg's max_iters
# and val_interval) and the checkpoint interval.
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
        end=None,
        by_epoch=False)
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=None, val_interval=None)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=None),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='SegVisualizationHook'))
