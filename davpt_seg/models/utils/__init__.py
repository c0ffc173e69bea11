# Copyright (c) davpt-seg contributors. All rights reserved.
from .class_prompt_mapping import ClassPromptMapping
from .class_targets import (draw_target_classes, mode_target_prompts,
                            present_class_mask)
from .cosine_kmeans import cosine_kmeans

__all__ = [
    'ClassPromptMapping', 'cosine_kmeans', 'present_class_mask',
    'draw_target_classes', 'mode_target_prompts'
]
