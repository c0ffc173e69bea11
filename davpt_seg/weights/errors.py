# Copyright (c) davpt-seg contributors. Apache-2.0.
"""The one error family of :mod:`davpt_seg.weights`.

Every error raised while reading, converting, loading or restoring weights
is a :class:`WeightsError` (a :class:`RuntimeError`). Some are also the
built-in error that callers caught before the family existed:
:class:`CheckpointNotFoundError` is a :class:`FileNotFoundError`,
:class:`ConversionError` and :class:`PromptOnlyWriteError` are
:class:`ValueError`. Messages name the file (or ``'<state dict>'``) and
the mismatch.
"""
from typing import List

__all__ = [
    'WeightsError', 'CheckpointError', 'CheckpointNotFoundError',
    'UnsafeCheckpointError', 'ConversionError', 'PretrainedMismatchError',
    'PromptStateMismatchError', 'PromptOnlyRestoreError',
    'FingerprintMismatchError', 'PromptOnlyWriteError'
]


class WeightsError(RuntimeError):
    """Base class of every error of :mod:`davpt_seg.weights`."""


class CheckpointError(WeightsError):
    """A checkpoint file could not be loaded (unsupported extension, corrupt
    or truncated). The message always names the file."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """The checkpoint file does not exist (or is not a regular file).

    Also a :class:`FileNotFoundError`, as raised by mmengine's own local
    loader, so ``except FileNotFoundError`` keeps working.
    """


class UnsafeCheckpointError(CheckpointError):
    """The file needs pickled globals that the loader does not allow.

    Args:
        message (str): The full error message.
        filename (str): The refused file.
        unsafe_globals (list[str]): The refused globals (or types), as
            ``module.qualname`` strings.
    """

    def __init__(self, message: str, filename: str,
                 unsafe_globals: List[str]) -> None:
        super().__init__(message)
        self.filename = filename
        self.unsafe_globals = unsafe_globals


class ConversionError(WeightsError, ValueError):
    """A checkpoint cannot be read for conversion or is not a ViT the
    converter handles (also a :class:`ValueError`)."""


class PretrainedMismatchError(WeightsError):
    """Pretrained weights do not fit the backbone: missing, unexpected or
    mis-shaped keys, or a patch-embedding bias the backbone cannot hold."""


class PromptStateMismatchError(WeightsError):
    """A checkpoint's prompt state (prompts, K/V offsets, prompt norm,
    mapping buffers) does not fit the backbone's configuration."""


class PromptOnlyRestoreError(WeightsError):
    """The frozen weights of a prompt-only checkpoint cannot be restored: no
    pretrained file is named, or none of the candidates can be read."""


class FingerprintMismatchError(WeightsError):
    """The frozen weights in use are not those a prompt-only checkpoint was
    trained with (SHA-256 and rounding-tolerant sums both differ)."""


class PromptOnlyWriteError(WeightsError, ValueError):
    """A prompt-only checkpoint cannot be written: the config names no
    pretrained file, or the checkpoint is not a full one of this model
    (also a :class:`ValueError`)."""
