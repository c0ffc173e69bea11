# The prompted ViT-L/16 of the SETR-PUP DA-VPT configs (ADE20K, PASCAL
# Context 60/59), as `model.backbone` arguments merged over mmseg's SETR
# ViT-L: `model = dict(backbone=dict(_base_.davpt_vit_l16))`.
#
# Pretrained weights: pretrain/vit_large_p16.pth, the mmseg-format ViT-L/16
# (IN-21k pre-trained, IN-1k fine-tuned at 384) produced by
#   python tools/convert_weights.py jx_vit_large_p16_384-b3be5167.pth \
#       pretrain/vit_large_p16.pth
# (see README "Pretrained weights"). The backbone is frozen; only the
# prompts (0.481M) and the heads train.
davpt_vit_l16 = dict(
    type='PromptedVisionTransformer',
    # timm/JAX ViT-L has a patch-embedding bias; mmseg's default
    # patch_bias=False would drop it, and a frozen backbone never
    # learns it back.
    patch_bias=True,
    num_prompts=20,  # per unguided layer
    num_proxy_prompts=10,  # class-assigned prompts per guided layer
    guided_layers=[11],
    tune_kv_bias=False,
    init_cfg=dict(type='Pretrained', checkpoint='pretrain/vit_large_p16.pth'))
