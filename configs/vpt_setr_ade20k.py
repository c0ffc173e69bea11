# The paper's VPT baseline: the same prompts as DA-VPT (20 per layer, 10 at
# layer 11; 13.625M trainable), no class->prompt mapping, no metric losses,
# no DAVPTHook.
_base_ = ['./davpt_setr_ade20k.py']

custom_hooks = [dict(type='ParamReportHook')]
