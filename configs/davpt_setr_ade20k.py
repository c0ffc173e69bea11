# DA-VPT on SETR-PUP ViT-L/16, ADE20K 512x512, 160k iterations, 8 GPUs x 2.
#
# Everything not set here is the stock mmseg config: SGD lr 1e-3 (heads x10
# through paramwise_cfg 'head'), momentum 0.9, weight decay 0, PolyLR to 160k,
# slide inference (512, stride 341), SETR-PUP heads (1 main + 3 auxiliary).
#
# Pretrained weights: see `_base_/models/davpt_vit-l16.py`. The backbone is
# frozen; only the prompts (0.481M) and the SETR heads (13.144M) train:
# 13.625M parameters.
#
# DAVPTHook (`_base_/davpt_hook_setr.py`): background_ids=() since ADE20K's
# 'other' is already the ignore index; mapping_interval=None remaps every
# epoch, ceil(20210 / 16) = 1264 iterations.
_base_ = [
    'mmseg::setr/setr_vit-l_pup_8xb2-160k_ade20k-512x512.py',
    './_base_/models/davpt_vit-l16.py', './_base_/davpt_imports.py',
    './_base_/davpt_hook_setr.py'
]

num_classes = 150
model = dict(backbone=dict(_base_.davpt_vit_l16))

# The classes of each training crop, recorded in the loader's workers for
# DAVPTHook: davpt_seg's RecordLabelValues after mmseg's pipeline (without
# it the hook scans every label map on the main process).
train_dataloader = dict(dataset=dict(
    pipeline=_base_.train_pipeline + [dict(type='RecordLabelValues')]))
