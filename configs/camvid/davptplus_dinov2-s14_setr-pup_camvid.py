# DA-VPT+: DA-VPT plus the attention key/value biases of all 12 layers.
_base_ = ['./davpt_dinov2-s14_setr-pup_camvid.py']

model = dict(backbone=dict(tune_kv_bias=True))
