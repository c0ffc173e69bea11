# Copyright (c) davpt-seg contributors. Apache-2.0.
"""DA-VPT's training objective: class targets, the class->prompt mapping
(cosine k-means of per-class [CLS] means) and the metric losses."""
from .class_pooling import class_pooled_features, labels_on_grid
from .kmeans import cosine_kmeans
from .mapping import ClassPromptMapping
from .objective import (DEFAULT_METRIC_LOSS, MAPPING_FEATURES,
                        TOKEN_FEATURES, DAVPTObjective, check_objective_args)
from .saved_state import CHECKPOINT_KEY, objective_state
from .targets import (draw_target_classes, has_label_values,
                      label_values_mask, mode_target_prompts,
                      present_class_mask, present_classes, stack_label_maps)

__all__ = [
    'ClassPromptMapping', 'cosine_kmeans', 'DAVPTObjective',
    'check_objective_args', 'DEFAULT_METRIC_LOSS', 'TOKEN_FEATURES',
    'CHECKPOINT_KEY', 'objective_state',
    'present_class_mask', 'present_classes', 'label_values_mask',
    'has_label_values', 'stack_label_maps', 'draw_target_classes',
    'mode_target_prompts', 'MAPPING_FEATURES', 'class_pooled_features',
    'labels_on_grid'
]
