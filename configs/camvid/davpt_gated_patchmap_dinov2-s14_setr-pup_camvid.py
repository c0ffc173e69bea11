# DA-VPT with both opt-in levers: gated prompts (docs/prompt_gate.md) and
# the class-structured mapping (docs/class_mapping.md).
_base_ = ['./davpt_patchmap_dinov2-s14_setr-pup_camvid.py']

model = dict(backbone=dict(gated_prompts=True))
