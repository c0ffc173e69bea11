# Frozen DINOv2-S/14, no prompts: only the decode heads train (linear-probe
# style baseline). See _base_dinov2-s14_setr-pup_camvid.py.
_base_ = ['./_base_dinov2-s14_setr-pup_camvid.py']
