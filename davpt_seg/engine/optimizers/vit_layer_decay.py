# Copyright (c) davpt-seg contributors. Apache-2.0.
"""Layer-wise learning-rate decay for mmseg's ``VisionTransformer``.

mmseg's ``LearningRateDecayOptimizerConstructor`` implements the recipe of
its BEiT / MAE configs, but chooses the layer numbering by the backbone's
class name and raises ``NotImplementedError`` for ``VisionTransformer``,
although its parameter names (``backbone.layers.<i>.``,
``backbone.patch_embed``, ``backbone.cls_token``, ``backbone.pos_embed``)
are the ones mmseg's ``get_layer_id_for_vit`` numbers. This constructor is
that recipe for any backbone with those names, using mmseg's numbering.
"""
from mmengine.optim import DefaultOptimWrapperConstructor
from mmseg.engine.optimizers.layer_decay_optimizer_constructor import \
    get_layer_id_for_vit
from mmseg.registry import OPTIM_WRAPPER_CONSTRUCTORS

NO_DECAY_NAMES = ('backbone.pos_embed', 'backbone.cls_token')


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class ViTLayerDecayOptimizerConstructor(DefaultOptimWrapperConstructor):
    """Parameter groups with ``lr = base_lr * decay_rate ** (L + 1 - id)``.

    ``id`` is mmseg's ``get_layer_id_for_vit`` with ``L + 2`` ids: 0 for the
    patch embedding, [CLS] token and position embedding, ``i + 1`` for
    ``backbone.layers.<i>``, ``L + 1`` (no decay) for everything else (the
    final norm, necks, heads). 1-d parameters (norms, biases), the position
    embedding and the [CLS] token get no weight decay. Frozen parameters are
    left out.

    ``paramwise_cfg``: ``num_layers`` (L, the ViT's depth) and
    ``decay_rate`` (e.g. 0.65 for ViT-B in mmseg's MAE configs, 0.9 in
    BEiT's).
    """

    def add_params(self, params, module, **kwargs) -> None:
        num_ids = self.paramwise_cfg['num_layers'] + 2
        decay_rate = self.paramwise_cfg['decay_rate']
        groups = {}
        for name, param in module.named_parameters():
            if not param.requires_grad:
                continue
            no_decay = param.ndim == 1 or name.endswith('.bias') or \
                name in NO_DECAY_NAMES
            layer_id = get_layer_id_for_vit(name, num_ids)
            key = (layer_id, no_decay)
            if key not in groups:
                scale = decay_rate**(num_ids - layer_id - 1)
                groups[key] = dict(
                    params=[], lr=scale * self.base_lr,
                    weight_decay=0. if no_decay else self.base_wd)
            groups[key]['params'].append(param)
        params.extend(groups[key] for key in sorted(groups))
