# DA-VPT on frozen DINOv2-S/14: VPT-Deep prompts, the class->prompt mapping
# over CamVid's 11 classes into the 10 prompts of the guided layer (11, the
# last one, as in the authors' ViT-B code), and the Proxy-Anchor losses.
_base_ = ['./vpt_dinov2-s14_setr-pup_camvid.py']

custom_hooks = [
    dict(type='ParamReportHook'),
    dict(
        type='DAVPTHook',
        token_loss_weight=0.05,
        cls_loss_weight=0.05,
        token_feature='output',
        target_rule='random',
        mapping=dict(kmeans_norm='layer', max_iter=20, unseen='random'),
        background_ids=(),  # void (11) is already the ignore index
        mapping_interval=None,  # one epoch of iterations
        init_max_batches=None)
]
