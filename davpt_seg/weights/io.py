# Copyright (c) davpt-seg contributors. Apache-2.0.
"""Reading weight files without unpickling arbitrary code by accident.

Since torch 2.6, :func:`torch.load` defaults to ``weights_only=True``: it
only rebuilds tensors, plain containers and primitives, and refuses every
other pickled *global*, because unpickling a global can run arbitrary code.
mmengine 0.10.7 calls :func:`torch.load` without ``weights_only``, and its
training checkpoints hold more than tensors. Two loaders:

:func:`load_weights` (pretrained backbones, any tensor-only file)
    ``.pth``/``.pt``/``.bin``/``.ckpt``/``.tar`` with
    ``torch.load(weights_only=True)`` and torch's default allowlist only;
    ``.safetensors`` with ``safetensors``, which cannot hold code at all.

:func:`load_training_checkpoint` (checkpoints written by mmengine)
    Still ``weights_only=True``, plus the scoped allowlist of
    :func:`~davpt_seg.weights.allowlist.mmengine_safe_globals`. On torch
    2.1-2.5 (no scoped allowlist) a file that holds more than tensors is
    read with ``weights_only=False`` instead, as mmengine itself and torch's
    default do there, with a warning naming the file.

:func:`load_from_local_safe` is the same loader with mmengine's
``CheckpointLoader`` signature, to register for local files.

Nothing silently falls back to full unpickling. A file that needs a global
outside the allowlist raises :class:`UnsafeCheckpointError` naming the file
and every global it needs. For files you trust, ``DAVPT_TRUST_CHECKPOINTS=1``
makes both loaders read with ``torch.load(weights_only=False)`` (which can
run code from the file), with a warning per file. torch's own
``TORCH_FORCE_WEIGHTS_ONLY_LOAD=1`` still takes precedence.
"""
import logging
import os
import os.path as osp
import pickle
from collections.abc import Mapping
from typing import Any, Callable, Dict, List, Tuple, Union

import torch
from mmengine.logging import print_log

from .allowlist import (SafeGlobal, allowlisted, mmengine_safe_globals,
                        refused_globals, scoped_allowlist_supported)
from .errors import (CheckpointError, CheckpointNotFoundError,
                     UnsafeCheckpointError)

__all__ = [
    'TRUST_ENV_VAR', 'TORCH_EXTENSIONS', 'SAFETENSORS_EXTENSIONS',
    'load_weights', 'load_training_checkpoint', 'load_from_local_safe'
]

#: Environment variable that opts in to full unpickling of trusted files.
TRUST_ENV_VAR = 'DAVPT_TRUST_CHECKPOINTS'
#: Extensions read with :func:`torch.load` (``.tar`` covers ``.pth.tar``).
TORCH_EXTENSIONS = ('.pth', '.pt', '.bin', '.ckpt', '.tar')
#: Extensions read with :mod:`safetensors`.
SAFETENSORS_EXTENSIONS = ('.safetensors', )

MapLocation = Union[str, torch.device, Callable, Dict[str, str], None]

_TRUE_VALUES = ('1', 'true', 'yes', 'on')


def _trust_enabled() -> bool:
    """Whether the user opted in to full unpickling."""
    return os.environ.get(TRUST_ENV_VAR, '').strip().lower() in _TRUE_VALUES


def _first_line(exc: BaseException) -> str:
    """``Type: first line of the message`` for compact error messages."""
    lines = str(exc).strip().splitlines()
    return f'{type(exc).__name__}: {lines[0] if lines else ""}'.rstrip(': ')


def _corrupt(filename: str, exc: BaseException) -> CheckpointError:
    """The error for a file that torch cannot read."""
    return CheckpointError(
        f'Cannot read checkpoint {filename!r}; it is corrupt or '
        f'truncated ({_first_line(exc)}).')


def _check_file(filename: Union[str, os.PathLike],
                extensions: Tuple[str, ...]) -> str:
    """Expand ``~``, check that the file exists and has a known extension.

    Returns:
        str: The expanded path.
    """
    filename = osp.expanduser(os.fspath(filename))
    if not osp.isfile(filename):
        raise CheckpointNotFoundError(
            f'Checkpoint file {filename!r} does not exist or is not a file.')
    if not filename.lower().endswith(extensions):
        raise CheckpointError(
            f'Checkpoint file {filename!r} has an unsupported extension; '
            f'expected one of {", ".join(extensions)}.')
    return filename


def _load_safetensors(filename: str,
                      map_location: MapLocation) -> Dict[str, torch.Tensor]:
    """Read a ``.safetensors`` file (tensors only by construction)."""
    from safetensors.torch import load_file

    if map_location is None:
        device = 'cpu'
    elif isinstance(map_location, (str, torch.device)):
        device = str(map_location)
    else:
        raise CheckpointError(
            f'Cannot load {filename!r}: safetensors files take a device '
            f'string or torch.device as map_location, got {map_location!r}.')
    try:
        return load_file(filename, device=device)
    except Exception as exc:
        raise CheckpointError(
            f'Cannot read safetensors file {filename!r}; it is corrupt or '
            f'truncated ({_first_line(exc)}).') from exc


def _full_load(filename: str, map_location: MapLocation) -> Any:
    """``torch.load(weights_only=False)``; failures name ``filename``."""
    try:
        return torch.load(
            filename, map_location=map_location, weights_only=False)
    except Exception as exc:
        raise _corrupt(filename, exc) from exc


def _load_without_allowlist(filename: str, map_location: MapLocation) -> Any:
    """Training-checkpoint load on torch 2.1-2.5 (no scoped allowlist).

    ``weights_only=True`` first, so tensor-only files keep it; a file that
    needs more (every mmengine training checkpoint: ``HistoryBuffer``,
    numpy) is then read with ``weights_only=False``, exactly as mmengine's
    own loader and torch's default on these versions do, with a warning.
    """
    try:
        return torch.load(
            filename, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        pass  # needs globals beyond torch's built-in allowlist
    except Exception as exc:
        raise _corrupt(filename, exc) from exc
    print_log(
        f'torch {torch.__version__} has no scoped allowlist for '
        '`torch.load(weights_only=True)` (named `safe_globals` entries '
        f'need torch >= 2.6): loading {filename!r} with '
        '`torch.load(weights_only=False)`, as mmengine does and as this '
        'torch defaults to. That can execute code stored in the file: load '
        'only checkpoints you trust, or use torch >= 2.6 for the safe '
        'loader.',
        logger='current',
        level=logging.WARNING)
    return _full_load(filename, map_location)


def _refusal(filename: str, refused: List[str],
             refusal_hint: str) -> UnsafeCheckpointError:
    """The error for a file that needs the globals ``refused``."""
    return UnsafeCheckpointError(
        f'Refused to load {filename!r}: it needs '
        f'{", ".join(refused)}; {refusal_hint} If you trust this '
        f'file, set {TRUST_ENV_VAR}=1 to load it with '
        '`torch.load(weights_only=False)`, which can execute code '
        'stored in the file.', filename, refused)


def _torch_load(filename: str, map_location: MapLocation,
                safe_globals: List[SafeGlobal], refusal_hint: str) -> Any:
    """``torch.load`` with ``weights_only=True`` and ``safe_globals``.

    With ``DAVPT_TRUST_CHECKPOINTS=1`` the file is read with
    ``weights_only=False`` instead, and so is a file that needs
    ``safe_globals`` on a torch without a scoped allowlist (see
    :func:`_load_without_allowlist`). Every failure becomes a
    :class:`CheckpointError` that names ``filename``.
    """
    if _trust_enabled():
        print_log(
            f'{TRUST_ENV_VAR} is set: loading {filename!r} with '
            '`torch.load(weights_only=False)`, which can execute code '
            'stored in the file.',
            logger='current',
            level=logging.WARNING)
        return _full_load(filename, map_location)
    if safe_globals and not scoped_allowlist_supported():
        return _load_without_allowlist(filename, map_location)

    with allowlisted(safe_globals):
        try:
            return torch.load(
                filename, map_location=map_location, weights_only=True)
        except pickle.UnpicklingError as exc:
            refused = refused_globals(filename, exc)
            if not refused:
                raise _corrupt(filename, exc) from exc
            # ``from None``: torch's "Weights only load failed..." advice
            # (which suggests ``weights_only=False``) is not the cause to
            # show here; the refused globals are.
            raise _refusal(filename, refused, refusal_hint) from None
        except Exception as exc:
            raise _corrupt(filename, exc) from exc


def load_weights(
        filename: Union[str, os.PathLike],
        map_location: MapLocation = 'cpu'
) -> Union[Dict[str, torch.Tensor], dict]:
    """Load pretrained weights or any other tensor-only file.

    ``.pth``/``.pt``/``.bin``/``.ckpt``/``.tar`` files are read with
    ``torch.load(weights_only=True)`` and torch's default allowlist only
    (tensors, containers, primitives). ``.safetensors`` files are read with
    :mod:`safetensors`.

    Args:
        filename (str | PathLike): Path to the file; ``~`` is expanded.
        map_location (str | torch.device | callable | dict, optional): As
            in :func:`torch.load`. ``.safetensors`` files take a device
            only. Defaults to ``'cpu'``.

    Returns:
        dict: A state dict, or a dict that wraps one (e.g.
        ``{'state_dict': ...}``, ``{'model': ...}``).

    Raises:
        CheckpointNotFoundError: The file does not exist.
        UnsafeCheckpointError: The pickle needs non-tensor globals (and
            ``DAVPT_TRUST_CHECKPOINTS`` is not set).
        CheckpointError: Unsupported extension, corrupt or truncated file,
            or the file does not hold a dict.
    """
    filename = _check_file(filename, TORCH_EXTENSIONS + SAFETENSORS_EXTENSIONS)
    if filename.lower().endswith(SAFETENSORS_EXTENSIONS):
        return _load_safetensors(filename, map_location)
    weights = _torch_load(
        filename,
        map_location,
        safe_globals=[],
        refusal_hint='this loader only reads weights (tensors, containers '
        'and primitives). Use `load_training_checkpoint` for checkpoints '
        'written by mmengine.')
    if not isinstance(weights, Mapping):
        raise CheckpointError(
            f'Expected {filename!r} to hold a dict of weights, got '
            f'{type(weights).__name__}.')
    return weights


def load_training_checkpoint(filename: Union[str, os.PathLike],
                             map_location: MapLocation = 'cpu') -> Any:
    """Load a checkpoint written by mmengine (or any tensor-only file).

    Reads with ``torch.load(weights_only=True)`` and the allowlist from
    :func:`~davpt_seg.weights.allowlist.mmengine_safe_globals`, active only
    during this call. ``.safetensors`` files are read with
    :mod:`safetensors`.

    Args:
        filename (str | PathLike): Path to the file; ``~`` is expanded.
        map_location (str | torch.device | callable | dict, optional): As
            in :func:`torch.load`. Defaults to ``'cpu'``.

    Returns:
        dict: The checkpoint, e.g. with ``meta``, ``state_dict``,
        ``message_hub``, ``optimizer`` and ``param_schedulers``.

    Raises:
        CheckpointNotFoundError: The file does not exist.
        UnsafeCheckpointError: The pickle needs a global outside the
            allowlist (and ``DAVPT_TRUST_CHECKPOINTS`` is not set).
        CheckpointError: Unsupported extension or corrupt/truncated file.
    """
    filename = _check_file(filename, TORCH_EXTENSIONS + SAFETENSORS_EXTENSIONS)
    if filename.lower().endswith(SAFETENSORS_EXTENSIONS):
        return _load_safetensors(filename, map_location)
    return _torch_load(
        filename,
        map_location,
        safe_globals=mmengine_safe_globals(),
        refusal_hint='only tensors, containers, primitives, numpy arrays '
        'and scalars and mmengine HistoryBuffer objects are allowed.')


def load_from_local_safe(filename: str, map_location: MapLocation = None):
    """mmengine ``CheckpointLoader`` backend for local files:
    :func:`load_training_checkpoint` with ``CheckpointLoader``'s signature.

    Register it for the ``''`` prefix (local files and every path no other
    prefix matches) in place of mmengine's ``load_from_local``; mmengine
    logs it as the ``local_safe`` backend.
    """
    return load_training_checkpoint(filename, map_location=map_location)
