# Drop-in demonstration: mmseg's stock UperNet + ViT-B/16 (MLN neck) ADE20K
# config, unchanged, turned into DA-VPT by the backbone type, the DA-VPT
# backbone arguments below, `custom_hooks` (the base
# `../_base_/davpt_hook.py`) and `custom_imports` (the base
# `../_base_/davpt_imports.py`). Nothing else differs
# (tests/unit/test_configs.py checks that key by key): the AdamW optimiser,
# warm-up + poly schedule, UperNet/FCN heads, MLN neck, out_indices
# (2, 5, 8, 11), data and runtime are mmseg's.
#
# What the prompted backbone changes: the ViT is frozen; the prompts (11 x 20
# + 1 x 10 prompts of 768 channels = 0.177M), the neck (23.599M) and the
# heads (UperNet 32.333M + FCN 1.809M) train: 57.917M of 144.350M
# parameters.
# The stock optimiser applies its weight decay (0.01) to the prompts too
# (only pos_embed, cls_token and norms are exempt there); the SETR configs
# use weight decay 0.
#
# guided_layers=[11]: ViT-B has 12 layers (0..11), so 11 is its last layer,
# where the classification results of the paper put the guided prompts, and
# the default of the authors' segmentation code (which was written for
# ViT-B). Layer 11 is also the last of the UperNet out_indices.
#
# patch_bias=True: the pretrained file (pretrain/vit_base_patch16_224.pth,
# mmseg-format timm/JAX ViT-B/16 from tools/convert_weights.py or mmseg's
# vit2mmseg.py) has a patch-embedding bias. mmseg's ViT defaults to
# patch_bias=False and silently drops it when loading; a frozen backbone
# never learns it back, so PromptedVisionTransformer refuses to load such a
# file without patch_bias=True.
_base_ = [
    'mmseg::vit/vit_vit-b16_mln_upernet_8xb2-80k_ade20k-512x512.py',
    '../_base_/davpt_imports.py', '../_base_/davpt_hook.py'
]

model = dict(
    backbone=dict(
        type='PromptedVisionTransformer',
        patch_bias=True,
        num_prompts=20,
        num_proxy_prompts=10,
        guided_layers=[11]))

# custom_hooks: DAVPTHook with its defaults (`../_base_/davpt_hook.py`):
# background_ids=() (ADE20K: 'other' is already the ignore index),
# mapping_interval=None (one epoch: ceil(20210 / 16) = 1264 iterations).

# The classes of each training crop, recorded in the loader's workers for
# DAVPTHook: davpt_seg's RecordLabelValues after mmseg's pipeline (without
# it the hook scans every label map on the main process).
train_dataloader = dict(dataset=dict(
    pipeline=_base_.train_pipeline + [dict(type='RecordLabelValues')]))
