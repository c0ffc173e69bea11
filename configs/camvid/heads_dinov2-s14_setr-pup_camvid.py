# Frozen DINOv2-S/14, no prompts: only the decode heads train (linear-probe
# style baseline). See _base_/dinov2-s14_setr-pup_camvid.py.
_base_ = ['./_base_/dinov2-s14_setr-pup_camvid.py']
custom_hooks = [dict(type='ParamReportHook')]
