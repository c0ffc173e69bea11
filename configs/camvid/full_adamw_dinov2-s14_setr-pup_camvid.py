# Full fine-tuning with mmseg's ViT recipe (its MAE / BEiT configs) instead
# of the shared SGD recipe: AdamW (lr 1e-4, betas 0.9/0.999, weight decay
# 0.05; none on norms, biases, position embedding and [CLS] token),
# layer-wise learning-rate decay 0.65 over the 12 layers
# (ViTLayerDecayOptimizerConstructor: mmseg's LearningRateDecayOptimizer-
# Constructor refuses a VisionTransformer by its class name), a linear
# warm-up over the first 5 % of the iterations, then poly (power 1) to 0.
# The heads train at the base learning rate. Same model, data and schedule
# length as full_dinov2-s14_setr-pup_camvid.py (the shared-recipe row).
_base_ = ['./full_dinov2-s14_setr-pup_camvid.py']

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(
        type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
    constructor='ViTLayerDecayOptimizerConstructor',
    paramwise_cfg=dict(num_layers=12, decay_rate=0.65))
warmup_iters = 400  # 5 % of 8k
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0,
         end=warmup_iters),
    dict(type='PolyLR', power=1.0, eta_min=0.0, by_epoch=False,
         begin=warmup_iters, end={{_base_.max_iters}})
]
