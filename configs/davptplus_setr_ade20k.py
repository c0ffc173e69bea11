# DA-VPT+: DA-VPT plus the attention key and value biases of all 24 layers
# (+2 x 24 x 1024 = 0.049M trainable values): 13.674M trainable parameters.
_base_ = ['./davpt_setr_ade20k.py']

model = dict(backbone=dict(tune_kv_bias=True))
