# SETR-PUP on a PromptedVisionTransformer, for the small one-process
# configs (davpt_setr_toy.py, camvid/_base_/dinov2-s14_setr-pup_camvid.py):
# mmseg's SETR-PUP model layout with a PUP decode head on the backbone's
# second output and one PUP auxiliary head on its first.
#
# Every user sets the values marked `None` below:
#   data_preprocessor size; backbone img_size, patch_size, embed_dims,
#   num_layers, num_heads, mlp_ratio, out_indices (2 layers),
#   interpolate_mode and the prompt settings (and adds init_cfg); each head's
#   in_channels (= embed_dims), channels and num_classes; test_cfg crop_size
#   and stride.
# One process: BN (use SyncBN for several GPUs).
norm_cfg = dict(type='BN', requires_grad=True)
data_preprocessor = dict(
    type='SegDataPreProcessor',
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=255,
    size=None)
# What the decode and auxiliary heads share (a helper, not a model key).
setr_pup_head = dict(
    type='SETRUPHead',
    in_channels=None,
    channels=None,
    num_classes=None,
    dropout_ratio=0,
    norm_cfg=norm_cfg,
    kernel_size=3,
    align_corners=False,
    loss_decode=dict(
        type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0))
model = dict(
    type='EncoderDecoder',
    data_preprocessor=data_preprocessor,
    backbone=dict(
        type='PromptedVisionTransformer',
        img_size=None,
        patch_size=None,
        in_channels=3,
        embed_dims=None,
        num_layers=None,
        num_heads=None,
        mlp_ratio=None,
        out_indices=None,
        drop_rate=0.,
        norm_cfg=dict(type='LN', eps=1e-6),
        with_cls_token=True,
        interpolate_mode=None,
        patch_bias=True,  # the converted ViT/DINOv2 files have patch biases
        num_prompts=None,
        num_proxy_prompts=None,
        guided_layers=None),
    # decode head: 2 convs, x2 upsampling each, on out_indices[1]
    decode_head=dict(setr_pup_head, in_index=1, num_convs=2, up_scale=2),
    # auxiliary head: 1 conv, x4 upsampling, on out_indices[0]; loss x0.4
    auxiliary_head=dict(
        setr_pup_head,
        in_index=0,
        num_convs=1,
        up_scale=4,
        loss_decode=dict(setr_pup_head['loss_decode'], loss_weight=0.4)),
    train_cfg=dict(),
    test_cfg=dict(mode='slide', crop_size=None, stride=None))
