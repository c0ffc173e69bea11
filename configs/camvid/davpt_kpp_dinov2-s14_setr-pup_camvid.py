# DA-VPT with the opt-in cold start of the class->prompt mapping: spherical
# k-means++ seeding with 5 restarts (lowest distortion kept) instead of the
# reference's random class means.
_base_ = ['./davpt_dinov2-s14_setr-pup_camvid.py']

custom_hooks = [
    _base_.custom_hooks[0],  # ParamReportHook
    dict(
        _base_.custom_hooks[1],  # DAVPTHook
        mapping=dict(
            kmeans_norm='layer', max_iter=20, unseen='random',
            init='k-means++', n_init=5))
]
