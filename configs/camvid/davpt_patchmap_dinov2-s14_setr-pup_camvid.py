# DA-VPT with the class-structured mapping (opt-in lever,
# docs/class_mapping.md): each class's feature is the guided layer's patch
# tokens pooled under its mask (classes on fewer than 4 patches of a crop
# skipped), instead of the [CLS] of the images containing it.
_base_ = ['./davpt_dinov2-s14_setr-pup_camvid.py']

custom_hooks = [
    _base_.custom_hooks[0],  # ParamReportHook
    dict(_base_.custom_hooks[1],  # DAVPTHook
         mapping_feature='class_patches', min_class_patches=4)
]
