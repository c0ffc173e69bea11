# Copyright (c) davpt-seg contributors. Apache-2.0.
"""Weight files: reading (:mod:`.io`), pretrained ViT loading
(:mod:`.pretrained`), prompt-only checkpoints (:mod:`.prompt_only`),
conversion of public ViT checkpoints (:mod:`.convert`) and one error family
(:mod:`.errors`). Importing it patches nothing."""
from .errors import (CheckpointError, CheckpointNotFoundError,
                     ConversionError, FingerprintMismatchError,
                     PretrainedMismatchError, PromptOnlyRestoreError,
                     PromptOnlyWriteError, PromptStateMismatchError,
                     UnsafeCheckpointError, WeightsError)
from .fingerprint import (frozen_weights_sha256, frozen_weights_summary,
                          summaries_match)
from .io import (TRUST_ENV_VAR, load_from_local_safe, load_training_checkpoint,
                 load_weights)
from .pos_embed import resize_pos_embed
from .pretrained import PretrainedFile, load_pretrained, pretrained_file
from .prompt_only import (PRETRAINED_ENV_VAR, PRETRAINED_RECORD,
                          frozen_backbone_keys, make_prompt_only)

__all__ = [
    'WeightsError', 'CheckpointError', 'CheckpointNotFoundError',
    'UnsafeCheckpointError', 'ConversionError', 'PretrainedMismatchError',
    'PromptStateMismatchError', 'PromptOnlyRestoreError',
    'FingerprintMismatchError', 'PromptOnlyWriteError', 'TRUST_ENV_VAR',
    'load_weights', 'load_training_checkpoint', 'load_from_local_safe',
    'resize_pos_embed', 'PretrainedFile', 'pretrained_file',
    'load_pretrained', 'PRETRAINED_ENV_VAR', 'PRETRAINED_RECORD',
    'frozen_weights_sha256', 'frozen_weights_summary', 'summaries_match',
    'frozen_backbone_keys', 'make_prompt_only'
]
