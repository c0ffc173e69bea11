# The paper's VPT baseline on PASCAL Context (59 classes): the same prompts as
# DA-VPT (20 per layer, 10 at layer 11; 13.531M trainable), no class->prompt
# mapping, no metric losses, no DAVPTHook.
_base_ = ['./davpt_setr_pascal-context-59.py']

model = dict(backbone=dict(num_classes=None, mapping_cfg=None))
custom_hooks = [dict(type='ParamReportHook')]
