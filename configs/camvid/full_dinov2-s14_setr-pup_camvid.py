# Full fine-tuning: mmseg's stock VisionTransformer (no prompts, nothing
# frozen) from the same converted DINOv2-S/14 weights and the same heads
# and schedule.
_base_ = ['./_base_/dinov2-s14_setr-pup_camvid.py']

model = dict(
    backbone=dict(
        _delete_=True,
        type='VisionTransformer',
        img_size={{_base_.crop_size}},
        patch_size=14,
        in_channels=3,
        embed_dims={{_base_.embed_dims}},
        num_layers=12,
        num_heads=6,
        mlp_ratio=4,
        out_indices=(5, 11),
        qkv_bias=True,
        with_cls_token=True,
        final_norm=True,
        norm_cfg=dict(type='LN', eps=1e-6),
        act_cfg=dict(type='GELU'),
        interpolate_mode='bicubic',
        patch_bias=True,
        init_cfg=dict(type='Pretrained', checkpoint={{_base_.pretrained}})))
custom_hooks = [dict(type='ParamReportHook')]
