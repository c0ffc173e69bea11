from .prompted_vit import GuidedFeatures, PromptedVisionTransformer

__all__ = ['PromptedVisionTransformer', 'GuidedFeatures']
