from .attention_capture import AttentionCapture, AttentionRecord, TokenLayout
from .prompted_vit import GuidedFeatures, PromptedVisionTransformer

__all__ = [
    'PromptedVisionTransformer', 'GuidedFeatures', 'AttentionCapture',
    'AttentionRecord', 'TokenLayout'
]
