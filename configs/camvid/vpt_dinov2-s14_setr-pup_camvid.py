# VPT-Deep on frozen DINOv2-S/14: the DA-VPT prompt layout (20 prompts per
# layer, 10 at the guided last layer) without the metric losses.
_base_ = ['./_base_/dinov2-s14_setr-pup_camvid.py']

model = dict(
    backbone=dict(num_prompts=20, num_proxy_prompts=10, guided_layers=[11]))
custom_hooks = [dict(type='ParamReportHook')]
