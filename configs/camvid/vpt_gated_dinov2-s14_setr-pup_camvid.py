# VPT-Deep with gated prompts (opt-in lever, docs/prompt_gate.md): the
# prompts get their own softmax, scaled per layer and head by tanh of a
# zero-initialised gate, so training starts from the frozen backbone.
_base_ = ['./vpt_dinov2-s14_setr-pup_camvid.py']

model = dict(backbone=dict(gated_prompts=True))
