# The DAVPTHook of the SETR-PUP ViT-L configs: davpt_hook.py with the
# Proxy-Anchor metric loss spelled out (also the hook's default).
_base_ = ['./davpt_hook.py']

custom_hooks = [
    dict(
        _base_.custom_hooks[0],
        metric_loss=dict(
            type='ProxyAnchorLoss',
            alpha=32.,
            delta=0.1,
            scale=5.,
            pos_norm='all',
            check_labels=False))  # targets are valid: no host sync
]
