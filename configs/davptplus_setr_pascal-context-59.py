# DA-VPT+ on PASCAL Context (59 classes): DA-VPT plus the attention key and
# value biases of all 24 layers (+2 x 24 x 1024 = 0.049M trainable values):
# 13.581M trainable parameters (heads 13.050M, prompts 0.481M, K/V 0.049M).
_base_ = ['./davpt_setr_pascal-context-59.py']

model = dict(backbone=dict(tune_kv_bias=True))
