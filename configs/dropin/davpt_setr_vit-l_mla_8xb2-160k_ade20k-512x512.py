# Drop-in demonstration: mmseg's stock SETR-MLA ViT-L/16 ADE20K config,
# unchanged, turned into DA-VPT by the backbone type, the DA-VPT backbone
# arguments below, `custom_hooks` (the base `../_base_/davpt_hook.py`) and
# `custom_imports` (the base `../_base_/davpt_imports.py`). Nothing else
# differs
# (tests/unit/test_configs.py checks that key by key): the SGD optimiser (lr 1e-3,
# heads x10, weight decay 0), PolyLR 160k, MLA neck and heads, out_indices
# (5, 11, 17, 23), data and runtime are mmseg's.
#
# What the prompted backbone changes: the ViT is frozen; the prompts
# (23 x 20 + 1 x 10 prompts of 1024 channels = 0.481M, as SETR-PUP), the MLA
# neck (3.420M) and the heads (MLA 1.848M + 4 FCN 0.154M) train: 5.904M of
# 310.052M parameters.
#
# Two ViT arguments besides the DA-VPT ones:
# * with_cls_token=True: stock SETR-MLA drops the [CLS] token
#   (with_cls_token=False). DA-VPT needs it: the [CLS]->prompt loss and the
#   class->prompt mapping both work on [CLS] (plain VPT would not). The
#   pretrained ViT-L was trained with its [CLS] token, so this keeps the
#   frozen backbone as it was pre-trained; the MLA neck only sees the
#   image tokens either way.
# * patch_bias=True: the pretrained file (pretrain/vit_large_p16.pth, made
#   by tools/convert_weights.py from timm's jx_vit_large_p16_384) has a
#   patch-embedding bias, which mmseg's default patch_bias=False silently
#   drops; a frozen backbone never learns it back, so
#   PromptedVisionTransformer refuses such a file without patch_bias=True.
#
# guided_layers=[11] as in the SETR-PUP configs (docs/method.md §5).
_base_ = [
    'mmseg::setr/setr_vit-l_mla_8xb2-160k_ade20k-512x512.py',
    '../_base_/davpt_imports.py', '../_base_/davpt_hook.py'
]

model = dict(
    backbone=dict(
        type='PromptedVisionTransformer',
        with_cls_token=True,
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
