from .checkpoint import (CheckpointError, CheckpointNotFoundError,
                         UnsafeCheckpointError, load_training_checkpoint,
                         load_weights)

__all__ = [
    'CheckpointError', 'CheckpointNotFoundError', 'UnsafeCheckpointError',
    'load_training_checkpoint', 'load_weights'
]
