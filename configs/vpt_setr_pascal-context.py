# The paper's VPT baseline on PASCAL Context (60 classes): the same prompts as
# DA-VPT (20 per layer, 10 at layer 11; 13.532M trainable), no class->prompt
# mapping, no metric losses, no DAVPTHook.
_base_ = ['./davpt_setr_pascal-context.py']

custom_hooks = [dict(type='ParamReportHook')]
