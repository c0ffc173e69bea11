# DA-VPT on SETR-PUP ViT-L/16, ADE20K 512x512, 160k iterations, 8 GPUs x 2.
#
# Everything not set here is the stock mmseg config: SGD lr 1e-3 (heads x10
# through paramwise_cfg 'head'), momentum 0.9, weight decay 0, PolyLR to 160k,
# slide inference (512, stride 341), SETR-PUP heads (1 main + 3 auxiliary).
#
# Pretrained weights: pretrain/vit_large_p16.pth, the mmseg-format ViT-L/16
# (IN-21k pre-trained, IN-1k fine-tuned at 384) produced by
#   python tools/convert_weights.py jx_vit_large_p16_384-b3be5167.pth \
#       pretrain/vit_large_p16.pth
# (see README "Pretrained weights"). The backbone is frozen; only the prompts
# (0.481M) and the SETR heads (13.144M) train: 13.625M parameters.
_base_ = ['mmseg::setr/setr_vit-l_pup_8xb2-160k_ade20k-512x512.py']

custom_imports = dict(imports=['davpt_seg'], allow_failed_imports=False)

num_classes = 150
model = dict(
    backbone=dict(
        type='PromptedVisionTransformer',
        # timm/JAX ViT-L has a patch-embedding bias; mmseg's default
        # patch_bias=False would drop it, and a frozen backbone never
        # learns it back.
        patch_bias=True,
        num_prompts=20,  # per unguided layer
        num_proxy_prompts=10,  # class-assigned prompts per guided layer
        guided_layers=[11],
        tune_kv_bias=False,
        init_cfg=dict(
            type='Pretrained', checkpoint='pretrain/vit_large_p16.pth')))

custom_hooks = [
    dict(
        type='DAVPTHook',
        token_loss_weight=0.05,
        cls_loss_weight=0.05,
        token_feature='output',
        metric_loss=dict(
            type='ProxyAnchorLoss',
            alpha=32.,
            delta=0.1,
            scale=5.,
            pos_norm='all'),
        target_rule='random',
        mapping=dict(kmeans_norm='layer', max_iter=20, unseen='random'),
        background_ids=(),  # ADE20K: 'other' is already the ignore index
        mapping_interval=None,  # one epoch: ceil(20210 / 16) = 1264 iters
        init_max_batches=None)  # initial mapping: one pass over train set
]
