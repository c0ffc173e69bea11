# DA-VPT on SETR-PUP ViT-L/16, ADE20K, with an AdamW recipe instead of the
# stock SETR SGD one (docs/method.md §5).
#
# Why two optimisers: the paper says the segmentation hyperparameters
# "mirror our classification approach" (AdamW), but the only segmentation
# config the authors released is mmseg's stock SETR-PUP one (SGD lr 1e-3,
# heads x10, weight decay 0, PolyLR). `davpt_setr_ade20k.py` keeps SGD as
# the default because it is the only released recipe; this config is the
# classification-style alternative:
#
# * AdamW, lr 1e-3 for prompts and heads alike (Adam's per-parameter step
#   sizes make the SGD config's x10 head multiplier unnecessary), betas
#   (0.9, 0.999);
# * weight decay 0.01 only on the heads' conv weights ("wd_head" in the
#   classification code); none on 1-D parameters (biases, BN/LN weights:
#   `flat_decay_mult=0`, `norm_decay_mult=0`, `bias_decay_mult=0`), on the
#   prompts, or on the DA-VPT+ K/V bias offsets (`custom_keys`), as the
#   classification code excludes biases and 1-D parameters;
# * gradient clipping by value at 10, as in the classification code;
# * linear warm-up from lr x 1e-6 over the first 1500 iterations (the warm-up
#   of mmseg's AdamW ViT recipes, about 1.2 ADE20K epochs at batch 16; the
#   classification code warms up for 10% of training), then cosine
#   annealing to 1e-8 at 160k iterations (classification: timm cosine to a
#   min_lr of 1e-8).
#
# Not mirrored: fp16 autocast (mmseg's SETR recipes train in fp32; use
# `--amp` with tools/train.py to try it) and the classification class-
# balanced sampler. Trainable parameters are those of the SGD config:
# 13.625M (heads 13.144M + prompts 0.481M).
_base_ = ['./davpt_setr_ade20k.py']

max_iters = 160000
warmup_iters = 1500
# `_delete_`: replace the inherited SGD optim_wrapper instead of merging into
# it. (The inherited top-level `optimizer` variable, SGD, is left unused: the
# runner reads only `optim_wrapper`, as in mmseg's own AdamW ViT configs.)
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(
        type='AdamW', lr=1e-3, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(
        norm_decay_mult=0.,
        bias_decay_mult=0.,
        flat_decay_mult=0.,
        custom_keys={
            # prompt_tokens and proxy_prompt_tokens ([depth, len, C]).
            'prompt_tokens': dict(decay_mult=0.),
            'kv_bias_delta': dict(decay_mult=0.),
        }),
    clip_grad=dict(type='value', clip_value=10.))
param_scheduler = [
    dict(
        type='LinearLR',
        start_factor=1e-6,
        by_epoch=False,
        begin=0,
        end=warmup_iters),
    dict(
        type='CosineAnnealingLR',
        T_max=max_iters - warmup_iters,
        eta_min=1e-8,
        by_epoch=False,
        begin=warmup_iters,
        end=max_iters)
]
