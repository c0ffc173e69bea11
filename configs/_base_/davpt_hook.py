# DAVPTHook: DA-VPT's metric losses and class->prompt mapping updates, with
# the paper's settings (also the hook's defaults, spelled out here).
custom_hooks = [
    dict(
        type='DAVPTHook',
        token_loss_weight=0.05,  # weight of the image-token metric loss
        cls_loss_weight=0.05,  # weight of the [CLS] metric loss
        token_feature='output',  # guided layer output as token features
        target_rule='random',  # one random present class per image
        # class->prompt mapping: layer-normed k-means, at most 20 iterations,
        # unseen classes to a random prompt (classes from the decode head)
        mapping=dict(kmeans_norm='layer', max_iter=20, unseen='random'),
        background_ids=(),  # classes never used as prompt targets
        mapping_interval=None,  # remap every epoch (iterations per epoch)
        init_max_batches=None)  # initial mapping: one pass over train set
]
