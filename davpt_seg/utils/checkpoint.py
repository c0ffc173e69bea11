"""Checkpoint loading that never unpickles arbitrary code by accident.

Since torch 2.6, :func:`torch.load` defaults to ``weights_only=True``: it
only rebuilds tensors, plain Python containers and primitives, and refuses
every other pickled *global* (class or function), because unpickling a
global can run arbitrary code. mmengine 0.10.7 calls :func:`torch.load`
without ``weights_only``, and its training checkpoints contain more than
tensors, so ``tools/test.py``, ``load_from`` and ``resume`` fail on every
checkpoint mmengine itself wrote. This module fixes that deliberately, with
two loaders and one hook into mmengine:

:func:`load_weights` (pretrained backbones, any tensor-only file)
    ``.pth``/``.pt``/``.bin``/``.ckpt``/``.tar`` files are read with
    ``torch.load(weights_only=True)`` and nothing added to torch's default
    allowlist; ``.safetensors`` files are read with ``safetensors``, which
    cannot hold code at all.

:func:`load_training_checkpoint` (checkpoints written by mmengine)
    Still ``weights_only=True``, plus a small explicit allowlist holding
    exactly the globals an mmengine checkpoint contains (see
    :func:`mmengine_safe_globals`):

    * ``mmengine.logging.history_buffer.HistoryBuffer``: the logged scalars
      in ``message_hub``;
    * ``builtins.getattr``: ``HistoryBuffer`` pickles its statistics
      methods as ``getattr(HistoryBuffer, 'mean')`` and so on. Real
      ``getattr`` is *not* allowlisted. That name resolves to a restricted
      stand-in that only returns ``HistoryBuffer.min``, ``max``,
      ``current`` and ``mean``;
    * ``numpy.ndarray``, ``numpy.dtype``,
      ``numpy._core.multiarray._reconstruct`` and
      ``numpy._core.multiarray.scalar`` (also under their numpy 1.x names
      ``numpy.core.multiarray.*``): numpy arrays and scalars in
      ``message_hub`` and ``meta``;
    * the dtype classes of numpy's bool, integer and float dtypes, such as
      ``numpy.dtypes.Float64DType``. These never appear as names in the
      file, but torch only restores an object's state if its type is
      allowlisted, and numpy 1.25+ gives every dtype its own class.
      ``object``, string and void dtypes stay excluded.

    None of these globals runs code from the file. They rebuild data,
    which is why ``weights_only=True`` still holds. The allowlist is
    active only while our loader is reading the file
    (:class:`torch.serialization.safe_globals`). It is never added to
    torch's global allowlist.

    This needs torch >= 2.6 (see :func:`scoped_allowlist_supported`):
    ``safe_globals`` arrived in 2.5, entries under a name of our choosing
    (``(object, 'builtins.getattr')``) in 2.6. On torch 2.1-2.5 a file
    that holds more than tensors is read with
    ``torch.load(weights_only=False)`` instead, as mmengine itself and
    torch's own default do on those versions, with a warning naming the
    file. Trade-off: keeping ``weights_only=True`` there would need
    ``add_safe_globals`` (process-wide, 2.4+ only, and no way to name our
    restricted ``getattr``), or would refuse every resume and test.

:func:`davpt_seg.compat.install_checkpoint_loader`
    Replaces mmengine's local-file loader (the ``''`` prefix of
    :class:`~mmengine.runner.CheckpointLoader`, which also handles every
    path that no other prefix matches) with one that calls
    :func:`load_training_checkpoint`. ``runner.load_checkpoint``,
    ``runner.resume``, ``load_from`` and
    ``init_cfg=dict(type='Pretrained')`` then work on local files again.
    Tensor-only files load through the same path. mmengine's remote
    loaders (``http(s)://``, ``s3://``, ``torchvision://``,
    ``open-mmlab://``, ...) are left unchanged.

Nothing silently falls back to full unpickling. If a file needs a global
outside the allowlist, an :class:`UnsafeCheckpointError` names the file and
every global it needs. If you trust a file (you wrote it, or it comes from
a source you trust), set the environment variable
``DAVPT_TRUST_CHECKPOINTS=1``. Both loaders then read files with
``torch.load(weights_only=False)``, which can run arbitrary code from the
file, and log a warning for each file. torch's own
``TORCH_FORCE_WEIGHTS_ONLY_LOAD=1`` still takes precedence over this
opt-in.
"""
import functools
import io
import logging
import os
import os.path as osp
import pickle
import re
import threading
from collections.abc import Mapping
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterator, List, Tuple, Union

import numpy as np
import torch
from mmengine.logging import HistoryBuffer, print_log

__all__ = [
    'CheckpointError', 'CheckpointNotFoundError', 'UnsafeCheckpointError',
    'TRUST_ENV_VAR', 'load_weights', 'load_training_checkpoint',
    'load_from_local_safe',
    'mmengine_safe_globals', 'scoped_allowlist_supported'
]

#: Environment variable that opts in to full unpickling of trusted files.
TRUST_ENV_VAR = 'DAVPT_TRUST_CHECKPOINTS'
#: Extensions read with :func:`torch.load` (``.tar`` covers ``.pth.tar``).
TORCH_EXTENSIONS = ('.pth', '.pt', '.bin', '.ckpt', '.tar')
#: Extensions read with :mod:`safetensors`.
SAFETENSORS_EXTENSIONS = ('.safetensors', )

MapLocation = Union[str, torch.device, Callable, Dict[str, str], None]
SafeGlobal = Tuple[Any, str]

_TRUE_VALUES = ('1', 'true', 'yes', 'on')
# ``HistoryBuffer._set_default_statistics`` registers exactly these methods;
# they are pickled as ``getattr(HistoryBuffer, name)``.
_HISTORY_BUFFER_STATISTICS = ('min', 'max', 'current', 'mean')
# torch's wording when its weights-only unpickler refuses something; the
# group captures the refused global or type.
_REFUSAL_PATTERNS = (
    re.compile(r'GLOBAL (\S+) was not an allowed global'),
    re.compile(r'GLOBAL (\S+) whose module \S+ is blocked'),
    re.compile(r"via `add_safe_globals`,? but got <class '([^']+)'>"),
    re.compile(r'call reduce for unrecognized function (.+?)'
               r'(?: which belongs to .*)?$', re.MULTILINE),
    re.compile(r'Unsupported class (\S+)'),  # torch < 2.4
)
# ``safe_globals`` edits a process-wide set; serialise our own use of it.
_ALLOWLIST_LOCK = threading.RLock()


class CheckpointError(RuntimeError):
    """A checkpoint file could not be loaded.

    The message always names the file.
    """


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """The checkpoint file does not exist (or is not a regular file).

    It is also a :class:`FileNotFoundError`, as raised by mmengine's own
    local loader, so existing ``except FileNotFoundError`` code keeps
    working.
    """


class UnsafeCheckpointError(CheckpointError):
    """The file needs pickled globals that the loader does not allow.

    Args:
        message (str): The full error message.
        filename (str): The refused file.
        unsafe_globals (list[str]): The globals (or types) that were
            refused, as ``module.qualname`` strings.
    """

    def __init__(self, message: str, filename: str,
                 unsafe_globals: List[str]) -> None:
        super().__init__(message)
        self.filename = filename
        self.unsafe_globals = unsafe_globals


def _history_buffer_getattr(obj: Any, name: str, *default: Any) -> Any:
    """Stand-in for ``builtins.getattr`` while unpickling a checkpoint.

    Protocol-2 pickles store a method such as ``HistoryBuffer.mean`` as
    ``getattr(HistoryBuffer, 'mean')``. This function allows exactly those
    lookups and refuses every other one (the real ``getattr`` would let a
    crafted file reach any attribute of any allowlisted object).
    """
    if (obj is HistoryBuffer and not default
            and name in _HISTORY_BUFFER_STATISTICS):
        return getattr(HistoryBuffer, name)
    owner = getattr(obj, '__qualname__', type(obj).__qualname__)
    module = getattr(obj, '__module__', type(obj).__module__)
    # Same wording as torch, so the refusal is reported like any other.
    raise pickle.UnpicklingError(
        f'Unsupported global: GLOBAL {module}.{owner}.{name} was not an '
        'allowed global: only getattr(HistoryBuffer, name) for name in '
        f'{_HISTORY_BUFFER_STATISTICS} is allowed.')


def _numpy_multiarray_globals() -> List[SafeGlobal]:
    """``_reconstruct`` and ``scalar`` under their numpy 2 and 1.x names."""
    try:  # numpy >= 2 (numpy 1.26 ships a forward-compatible shim)
        from numpy._core import multiarray
    except ImportError:  # pragma: no cover - numpy < 1.26
        from numpy.core import multiarray
    entries = []
    for module in ('numpy._core.multiarray', 'numpy.core.multiarray'):
        entries.append((multiarray._reconstruct, f'{module}._reconstruct'))
        entries.append((multiarray.scalar, f'{module}.scalar'))
    return entries


def mmengine_safe_globals() -> List[SafeGlobal]:
    """The allowlist for mmengine training checkpoints.

    Found by running
    :func:`torch.serialization.get_unsafe_globals_in_checkpoint` on a
    checkpoint written by mmengine 0.10.7's ``CheckpointHook`` (model,
    optimizer, param schedulers, message hub, meta). The dtype classes do
    not appear as names in the file. They are needed because torch only
    restores the state of objects whose type is allowlisted.

    Returns:
        list[tuple]: ``(object, 'module.qualname')`` pairs as accepted by
        :class:`torch.serialization.safe_globals`.
    """
    entries: List[SafeGlobal] = [
        (HistoryBuffer, 'mmengine.logging.history_buffer.HistoryBuffer'),
        (_history_buffer_getattr, 'builtins.getattr'),
        (np.ndarray, 'numpy.ndarray'),
        (np.dtype, 'numpy.dtype'),
    ]
    entries += _numpy_multiarray_globals()
    scalar_types = (np.bool_, np.int8, np.int16, np.int32, np.int64,
                    np.uint8, np.uint16, np.uint32, np.uint64, np.float16,
                    np.float32, np.float64)
    for scalar_type in scalar_types:
        dtype_cls = type(np.dtype(scalar_type))
        entries.append(
            (dtype_cls, f'{dtype_cls.__module__}.{dtype_cls.__qualname__}'))
    return entries


def _trust_enabled() -> bool:
    """Whether the user opted in to full unpickling."""
    return os.environ.get(TRUST_ENV_VAR, '').strip().lower() in _TRUE_VALUES


class _AllowlistProbe:
    """Pickled by :func:`_named_entries_supported` to test torch's
    allowlist."""


@functools.lru_cache(maxsize=None)
def _named_entries_supported() -> bool:
    """Whether ``safe_globals`` takes ``(object, 'module.name')`` entries
    (torch >= 2.6; torch 2.5 fails on them while loading)."""
    name = f'{_AllowlistProbe.__module__}.{_AllowlistProbe.__qualname__}'
    buffer = io.BytesIO()
    torch.save({'probe': _AllowlistProbe}, buffer)
    buffer.seek(0)
    try:
        with torch.serialization.safe_globals([(_AllowlistProbe, name)]):
            loaded = torch.load(buffer, weights_only=True)
    except Exception:
        return False
    return loaded.get('probe') is _AllowlistProbe


def scoped_allowlist_supported() -> bool:
    """Whether this torch can allowlist globals for one load only.

    Needs :class:`torch.serialization.safe_globals` and
    ``get_safe_globals`` (torch 2.5) taking ``(object, 'module.name')``
    entries (torch 2.6). Feature-detected, not read from the version. Where
    it is missing (torch 2.1-2.5), :func:`load_training_checkpoint` reads
    files that hold more than tensors with ``weights_only=False`` (as
    mmengine does, and torch's default there) and logs a warning.
    """
    serialization = torch.serialization
    if not all(
            hasattr(serialization, name)
            for name in ('safe_globals', 'get_safe_globals')):
        return False
    return _named_entries_supported()


@contextmanager
def _allowlisted(entries: List[SafeGlobal]) -> Iterator[None]:
    """Allow ``entries`` for ``weights_only`` loads inside the block only.

    Entries that the user already allowlisted process-wide are left alone,
    so leaving the block never removes the user's own additions. Nothing
    to allow is a no-op (and needs no allowlist API: any torch >= 2.1).
    """
    if not entries:
        yield
        return
    with _ALLOWLIST_LOCK:
        present = set(torch.serialization.get_safe_globals())
        new = [entry for entry in entries if entry not in present]
        with torch.serialization.safe_globals(new):
            yield


def _first_line(exc: BaseException) -> str:
    """``Type: first line of the message`` for compact error messages."""
    lines = str(exc).strip().splitlines()
    return f'{type(exc).__name__}: {lines[0] if lines else ""}'.rstrip(': ')


def _refused_globals(filename: str, exc: BaseException) -> List[str]:
    """The globals or types that torch refused while loading ``filename``.

    Combines a static scan of the pickle (every refused name at once; zip
    checkpoints only) with the name in torch's error message (also covers
    legacy files, types and our restricted ``getattr``). Must be called
    inside the same allowlist the load used.
    """
    found = set()
    try:
        found.update(
            torch.serialization.get_unsafe_globals_in_checkpoint(filename))
    except Exception:  # legacy format or unreadable: rely on the message
        pass
    for pattern in _REFUSAL_PATTERNS:
        found.update(match.strip() for match in pattern.findall(str(exc)))
    return sorted(found)


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
        raise CheckpointError(
            f'Cannot read checkpoint {filename!r}; it is corrupt or '
            f'truncated ({_first_line(exc)}).') from exc


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
        raise CheckpointError(
            f'Cannot read checkpoint {filename!r}; it is corrupt or '
            f'truncated ({_first_line(exc)}).') from exc
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

    with _allowlisted(safe_globals):
        try:
            return torch.load(
                filename, map_location=map_location, weights_only=True)
        except pickle.UnpicklingError as exc:
            refused = _refused_globals(filename, exc)
            if not refused:
                raise CheckpointError(
                    f'Cannot read checkpoint {filename!r}; it is corrupt or '
                    f'truncated ({_first_line(exc)}).') from exc
            # ``from None``: torch's "Weights only load failed..." advice
            # (which suggests ``weights_only=False``) is not the cause to
            # show here; the refused globals are.
            raise UnsafeCheckpointError(
                f'Refused to load {filename!r}: it needs '
                f'{", ".join(refused)}; {refusal_hint} If you trust this '
                f'file, set {TRUST_ENV_VAR}=1 to load it with '
                '`torch.load(weights_only=False)`, which can execute code '
                'stored in the file.', filename, refused) from None
        except Exception as exc:
            raise CheckpointError(
                f'Cannot read checkpoint {filename!r}; it is corrupt or '
                f'truncated ({_first_line(exc)}).') from exc


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
    :func:`mmengine_safe_globals`. The allowlist is active only during this
    call. ``.safetensors`` files are read with :mod:`safetensors`.

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
    """mmengine ``CheckpointLoader`` backend for local files.

    Registered by :func:`davpt_seg.compat.install_checkpoint_loader` in
    place of mmengine's ``load_from_local``. mmengine logs it as the
    ``local_safe`` backend.
    """
    return load_training_checkpoint(filename, map_location=map_location)

