# DINOv2-S/14 (ViT-S/14, 384 channels, 12 layers, 6 heads) as
# `model.backbone` arguments merged over models/setr_pup_prompted.py's
# PromptedVisionTransformer: `backbone=dict(_base_.dinov2_s14, ...)` with
# the config's img_size, out_indices and prompt settings.
#
# Pretrained weights: pretrain/dinov2_vits14.pth, converted with
# tools/convert_weights.py (see README).
dinov2_s14 = dict(
    patch_size=14,
    embed_dims=384,
    num_layers=12,
    num_heads=6,
    mlp_ratio=4,
    qkv_bias=True,
    attn_drop_rate=0.,
    drop_path_rate=0.,
    final_norm=True,
    act_cfg=dict(type='GELU'),
    interpolate_mode='bicubic',
    patch_bias=True,  # DINOv2 has a patch-embedding bias
    init_cfg=dict(
        type='Pretrained', checkpoint='pretrain/dinov2_vits14.pth'))
