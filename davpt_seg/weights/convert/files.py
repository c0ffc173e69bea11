# Copyright (c) davpt-seg contributors. All rights reserved.
"""Reading a checkpoint for conversion: ``.npz``, ``.safetensors`` or
``torch.save`` files, never unpickling code."""
import os
import os.path as osp
import zipfile
from typing import Any, Dict, Tuple

import numpy as np
import torch

from ..errors import CheckpointError, ConversionError, UnsafeCheckpointError
from ..io import SAFETENSORS_EXTENSIONS, TORCH_EXTENSIONS, load_weights

__all__ = ['load_source_file']


def _sniff_container(path: str) -> str:
    """Guess the container of ``path``: 'npz', 'safetensors' or 'torch'.

    The extension decides where it is unambiguous; otherwise the first bytes
    are inspected (a zip of ``.npy`` members is an ``.npz``; an 8-byte length
    followed by ``{`` is a safetensors header; anything else goes to torch).
    """
    lower = path.lower()
    if lower.endswith(('.npz', '.npy')):
        return 'npz'
    if lower.endswith(SAFETENSORS_EXTENSIONS):
        return 'safetensors'
    if lower.endswith(TORCH_EXTENSIONS):
        return 'torch'
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
            if names and all(n.endswith('.npy') for n in names):
                return 'npz'
            return 'torch'
        with open(path, 'rb') as f:
            head = f.read(9)
        if len(head) == 9 and head[8:9] == b'{':
            return 'safetensors'
    except OSError:
        pass
    return 'torch'


def _load_npz(path: str) -> Dict[str, np.ndarray]:
    """Read every array of an ``.npz`` file (no pickles allowed)."""
    try:
        npz = np.load(path, allow_pickle=False)
    except Exception as e:  # zipfile.BadZipFile, ValueError, EOFError, ...
        raise ConversionError(
            f'{path}: cannot read as a NumPy .npz archive (corrupt or '
            f'truncated file?): {type(e).__name__}: {e}') from None
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise ConversionError(f'{path}: expected an .npz archive of named '
                              'arrays, got a single .npy array')
    try:
        return {k: npz[k] for k in npz.files}
    except Exception as e:  # a member is corrupt / truncated / pickled
        raise ConversionError(
            f'{path}: cannot read the arrays of this .npz archive (corrupt '
            f'or truncated file?): {type(e).__name__}: {e}') from None
    finally:
        npz.close()


def _training_checkpoint_advice(path: str) -> str:
    """What to do with a checkpoint written by mmengine instead of
    converting it (command-line answers)."""
    return (
        f'{path} is a training checkpoint written by mmengine (it holds '
        'mmengine HistoryBuffer logs), not pretrained ViT weights: it is '
        'already in this project\'s format and needs no conversion. Test it '
        'with `tools/test.py CONFIG CHECKPOINT`, continue its run with '
        '`tools/train.py CONFIG --resume CHECKPOINT`, start a new run from '
        'its weights with `--cfg-options load_from=CHECKPOINT`, or shrink '
        'it with `tools/extract_prompts.py CONFIG CHECKPOINT OUT`.')


def _with_path(path: str, exc: CheckpointError) -> ConversionError:
    msg = str(exc)
    return ConversionError(msg if path in msg else f'{path}: {msg}')


def _load_tensor_file(path: str, container: str) -> Any:
    """Load a ``.pth``-like or ``.safetensors`` file, tensors only.

    Files with an extension known to
    :func:`~davpt_seg.weights.io.load_weights` go through it, so all
    pretrained weights are read one way. Files with other names are read
    according to the sniffed ``container`` with ``safetensors`` or
    ``torch.load(weights_only=True)``.
    """
    if path.lower().endswith(TORCH_EXTENSIONS + SAFETENSORS_EXTENSIONS):
        try:
            return load_weights(path, map_location='cpu')
        except UnsafeCheckpointError as e:
            if any(g.startswith('mmengine.') for g in e.unsafe_globals):
                raise ConversionError(_training_checkpoint_advice(path)) \
                    from None
            raise _with_path(path, e) from None
        except CheckpointError as e:
            raise _with_path(path, e) from None
    try:
        if container == 'safetensors':
            from safetensors.torch import load_file
            return load_file(path, device='cpu')
        return torch.load(path, map_location='cpu', weights_only=True)
    except Exception as e:  # UnpicklingError, RuntimeError, EOFError, ...
        first = str(e).strip().splitlines()[0] if str(e).strip() else ''
        how = 'safetensors' if container == 'safetensors' else \
            'torch.load(weights_only=True)'
        raise ConversionError(
            f'{path}: cannot read with {how} (corrupt, truncated, or holding '
            f'Python objects other than tensors): {type(e).__name__}: '
            f'{first}') from None


def load_source_file(path: str) -> Tuple[Any, str]:
    """Safely load a checkpoint file for conversion.

    ``.npz`` files are read with ``numpy.load(allow_pickle=False)``;
    ``.safetensors`` and ``.pth``-like files with
    :func:`~davpt_seg.weights.io.load_weights`, so no code stored in the
    file can run. Files with other extensions are sniffed.

    Args:
        path (str): The checkpoint file.

    Returns:
        tuple: ``(obj, container)`` where ``container`` is ``'npz'`` (``obj``
        maps names to ndarrays) or ``'torch'`` / ``'safetensors'`` (``obj`` is
        what the file holds, usually a possibly nested dict of tensors).

    Raises:
        ConversionError: If the file is missing, unreadable, corrupt or
            truncated.
    """
    path = os.fspath(path)
    if not osp.isfile(path):
        raise ConversionError(f'{path}: no such file')
    if osp.getsize(path) == 0:
        raise ConversionError(f'{path}: file is empty')
    container = _sniff_container(path)
    if container == 'npz':
        return _load_npz(path), container
    return _load_tensor_file(path, container), container
