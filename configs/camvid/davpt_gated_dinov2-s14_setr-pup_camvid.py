# DA-VPT with gated prompts (opt-in lever, docs/prompt_gate.md): training
# starts from the frozen backbone; the mapping and losses are DA-VPT's.
_base_ = ['./davpt_dinov2-s14_setr-pup_camvid.py']

model = dict(backbone=dict(gated_prompts=True))
