from .checkpoint import (CheckpointError, CheckpointNotFoundError,
                         UnsafeCheckpointError, install_checkpoint_loader,
                         load_training_checkpoint, load_weights)

__all__ = [
    'CheckpointError', 'CheckpointNotFoundError', 'UnsafeCheckpointError',
    'install_checkpoint_loader', 'load_training_checkpoint', 'load_weights'
]
