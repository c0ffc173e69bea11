from .attention_capture import AttentionCapture, AttentionRecord, TokenLayout
from .guided_capture import GuidedCapture, GuidedFeatures, GuidedOutput
from .prompted_vit import PromptedVisionTransformer

__all__ = [
    'PromptedVisionTransformer', 'GuidedCapture', 'GuidedFeatures',
    'GuidedOutput', 'AttentionCapture', 'AttentionRecord', 'TokenLayout'
]
