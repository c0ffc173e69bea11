# DA-VPT on frozen DINOv2-S/14: VPT-Deep prompts (the layout of
# vpt_dinov2-s14_setr-pup_camvid.py), the class->prompt mapping over CamVid's
# 11 classes into the 10 prompts of the guided layer (11, the last one, as
# in the authors' ViT-B code), and the Proxy-Anchor losses (DAVPTHook,
# `configs/_base_/davpt_hook.py`: void (11) is already the ignore index, so
# background_ids=(); the mapping is updated every epoch of iterations).
_base_ = [
    './_base_/dinov2-s14_setr-pup_camvid.py', '../_base_/davpt_hook.py'
]

model = dict(
    backbone=dict(
        num_prompts=20,
        num_proxy_prompts=10,
        guided_layers=[11]))
custom_hooks = [dict(type='ParamReportHook'), *_base_.custom_hooks]
