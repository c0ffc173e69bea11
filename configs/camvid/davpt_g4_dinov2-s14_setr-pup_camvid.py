# DA-VPT with the metric losses on the last four layers (8..11) instead of
# the last one alone (the reference's sweep of the last layers).
_base_ = ['./davpt_dinov2-s14_setr-pup_camvid.py']

model = dict(backbone=dict(guided_layers=[8, 9, 10, 11]))
