from .vit_layer_decay import ViTLayerDecayOptimizerConstructor

__all__ = ['ViTLayerDecayOptimizerConstructor']
