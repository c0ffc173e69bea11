# Copyright (c) davpt-seg contributors. Apache-2.0.
"""The scoped ``weights_only`` allowlist for mmengine training checkpoints.

:func:`mmengine_safe_globals` holds exactly the globals an mmengine
checkpoint contains:

* ``mmengine.logging.history_buffer.HistoryBuffer``: the logged scalars in
  ``message_hub``;
* ``builtins.getattr``: ``HistoryBuffer`` pickles its statistics methods as
  ``getattr(HistoryBuffer, 'mean')`` and so on. Real ``getattr`` is *not*
  allowlisted: the name resolves to a restricted stand-in that only returns
  ``HistoryBuffer.min``, ``max``, ``current`` and ``mean``;
* ``numpy.ndarray``, ``numpy.dtype``,
  ``numpy._core.multiarray._reconstruct`` and
  ``numpy._core.multiarray.scalar`` (also under their numpy 1.x names
  ``numpy.core.multiarray.*``): numpy arrays and scalars in ``message_hub``
  and ``meta``;
* the dtype classes of numpy's bool, integer and float dtypes, such as
  ``numpy.dtypes.Float64DType``. These never appear as names in the file,
  but torch only restores an object's state if its type is allowlisted, and
  numpy 1.25+ gives every dtype its own class. ``object``, string and void
  dtypes stay excluded.

None of these globals runs code from the file; they rebuild data, which is
why ``weights_only=True`` still holds. The allowlist is active only while a
loader reads a file (:func:`allowlisted`), never added to torch's global
allowlist. It needs torch >= 2.6 (:func:`scoped_allowlist_supported`):
``safe_globals`` arrived in 2.5, entries under a name of our choosing
(``(object, 'builtins.getattr')``) in 2.6.
"""
import functools
import io
import pickle
import re
import threading
from contextlib import contextmanager
from typing import Any, Iterator, List, Tuple

import numpy as np
import torch
from mmengine.logging import HistoryBuffer

__all__ = [
    'SafeGlobal', 'mmengine_safe_globals', 'scoped_allowlist_supported',
    'allowlisted', 'refused_globals'
]

SafeGlobal = Tuple[Any, str]

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
    optimizer, param schedulers, message hub, meta).

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


class _AllowlistProbe:
    """Pickled by :func:`scoped_allowlist_supported` to test torch's
    allowlist."""


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


@functools.lru_cache(maxsize=None)
def scoped_allowlist_supported() -> bool:
    """Whether this torch can allowlist globals for one load only.

    Needs :class:`torch.serialization.safe_globals` and
    ``get_safe_globals`` (torch 2.5) taking ``(object, 'module.name')``
    entries (torch 2.6). Feature-detected, not read from the version, once
    per process: ``scoped_allowlist_supported.cache_clear()`` detects again
    (tests that simulate an older torch). Where it is missing (torch
    2.1-2.5), :func:`~davpt_seg.weights.io.load_training_checkpoint` reads
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
def allowlisted(entries: List[SafeGlobal]) -> Iterator[None]:
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


def refused_globals(filename: str, exc: BaseException) -> List[str]:
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
