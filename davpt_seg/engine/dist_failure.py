# Copyright (c) davpt-seg contributors. Apache-2.0.
"""Naming the rank that broke a distributed run.

When a rank dies (killed, OOM, a crash) or hangs (stopped, deadlocked, its
node gone), the other ranks see only their own collective fail: gloo says
``Connection closed by peer [127.0.0.1]:43220`` or ``Timed out waiting
...ms for recv operation to complete``, and a launcher that does not see the
dead process itself (another node's torchrun agent, slurm, mpi) reports the
survivor as the root cause.

:func:`name_failed_peers` wraps a run: a survivor whose collective fails
holds a *roll call* through the process group's store (the torchrun agent's
TCP store). It reports the failure under its own key, waits up to
``timeout`` seconds for the others to do the same, and raises
:class:`PeerFailureError` naming the ranks that did not. A rank's host and
pid, published at start (:func:`announce_rank`), say more when the rank ran
on this host: ``no longer running`` (dead; no need to wait), ``stopped``
(SIGSTOP), or ``running but not responding`` (hung).

How long a survivor waits for a hung peer in the first place is the process
group's timeout (``env_cfg.dist_cfg.timeout``, ``--dist-timeout``).
"""
import contextlib
import functools
import json
import os
import socket
import time
from typing import Dict, Optional

import torch.distributed as dist

#: store keys: each rank's host and pid, and the roll call after a failure
INFO_KEY = 'davpt_seg/rank_info/{}'
REPORT_KEY = 'davpt_seg/collective_failure/{}'
#: seconds a failing rank waits for the other ranks to report the failure
ROLL_CALL_TIMEOUT = 30.0
#: what collective failures look like (gloo and NCCL raise RuntimeError;
#: gloo's messages name their source file, .../gloo/transport/...)
_FAILURE_WORDS = ('gloo', 'nccl', 'connection closed by peer',
                  'connection reset by peer')


class PeerFailureError(RuntimeError):
    """A collective failed; the message names the ranks that did not report
    the failure (dead, stopped or hung) and quotes this rank's error."""


def _default_store():
    from torch.distributed import distributed_c10d
    return distributed_c10d._get_default_store()


def _distributed() -> bool:
    return (dist.is_available() and dist.is_initialized()
            and dist.get_world_size() > 1)


def announce_rank() -> None:
    """Publish this rank's host and pid in the default process group's
    store, for :func:`roll_call` (call on every rank once the group exists;
    nothing without one)."""
    if not _distributed():
        return
    info = dict(host=socket.gethostname(), pid=os.getpid())
    _default_store().set(INFO_KEY.format(dist.get_rank()), json.dumps(info))


def is_collective_failure(exc: BaseException) -> bool:
    """Whether ``exc`` looks like a failed collective or store operation
    (torch's ``DistError`` types, or a RuntimeError from gloo / NCCL)."""
    dist_error = getattr(dist, 'DistError', ())
    if dist_error and isinstance(exc, dist_error):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and any(w in text
                                                 for w in _FAILURE_WORDS)


def local_process_state(info: Optional[dict]) -> Optional[str]:
    """What is known of the process of a rank's ``info`` (host, pid) from
    here: 'no longer running', 'stopped' (SIGSTOP / a debugger), None when
    it is running or on another host (or there is no /proc)."""
    if not info or info.get('host') != socket.gethostname():
        return None
    try:
        stat = open(f"/proc/{info['pid']}/stat").read()
    except OSError:
        return 'no longer running' if os.path.isdir('/proc') else None
    state = stat.rsplit(')', 1)[1].split()[0]
    if state in 'ZX':
        return 'no longer running'
    if state in 'Tt':
        return 'stopped'
    return None


def _read_info(store, rank: int) -> Optional[dict]:
    key = INFO_KEY.format(rank)
    try:
        return json.loads(store.get(key)) if store.check([key]) else None
    except Exception:  # noqa: BLE001 - a store that fails says nothing
        return None


def roll_call(store, rank: int, world_size: int,
              timeout: float = ROLL_CALL_TIMEOUT) -> Dict[int, str]:
    """Report this rank's failure in ``store``; wait up to ``timeout``
    seconds for every other rank to report too (not for a rank of this host
    that is no longer running or stopped). Returns {rank: what is known}
    for the ranks that did not report."""
    store.set(REPORT_KEY.format(rank), '1')
    others = [r for r in range(world_size) if r != rank]
    infos = {r: _read_info(store, r) for r in others}
    deadline = time.monotonic() + timeout
    while True:
        missing = [r for r in others
                   if not store.check([REPORT_KEY.format(r)])]
        states = {r: local_process_state(infos[r]) for r in missing}
        if all(states.values()) or time.monotonic() >= deadline:
            break
        time.sleep(0.2)
    return {r: _describe(infos[r], states[r], timeout) for r in missing}


def _describe(info: Optional[dict], state: Optional[str],
              timeout: float) -> str:
    where = (f"pid {info['pid']} on {info['host']}" if info
             else 'host and pid unknown')
    if state is None:
        state = (f'did not report within {timeout:g} s: dead, hung, '
                 'or still waiting in a collective')
        if info and info.get('host') == socket.gethostname():
            state = (f'running but did not report within {timeout:g} s: '
                     'hung?')
    return f'{where}: {state}'


def failure_message(rank: int, missing: Dict[int, str],
                    exc: BaseException) -> str:
    """The :class:`PeerFailureError` text."""
    names = ', '.join(f'rank {r}' for r in missing)
    lines = [f'rank {rank}: a collective operation failed because {names} '
             'stopped taking part:']
    lines += [f'  rank {r}: {what}' for r, what in missing.items()]
    lines.append(f'Look at the log of {names} first. This rank\'s error: '
                 f'{type(exc).__name__}: {exc}')
    return '\n'.join(lines)


@contextlib.contextmanager
def name_failed_peers(timeout: float = ROLL_CALL_TIMEOUT):
    """Re-raise a failed collective in a distributed run as
    :class:`PeerFailureError` naming the ranks that stopped taking part
    (:func:`roll_call`); other errors, and failures that every rank
    reports, pass unchanged."""
    try:
        yield
    except Exception as exc:
        if not (_distributed() and is_collective_failure(exc)):
            raise
        rank = dist.get_rank()
        try:
            missing = roll_call(_default_store(), rank,
                                dist.get_world_size(), timeout)
        except Exception as store_exc:  # noqa: BLE001
            raise PeerFailureError(
                f'rank {rank}: a collective operation failed, and so did the '
                'roll call of the ranks through the store (its host, the '
                'torchrun agent of node 0 or rank 0, is gone?): '
                f'{type(store_exc).__name__}: {store_exc}. This rank\'s '
                f'error: {type(exc).__name__}: {exc}') from exc
        if not missing:
            raise
        raise PeerFailureError(failure_message(rank, missing, exc)) from exc


def record_error(main):
    """``main``, writing an uncaught exception to the error file torchrun
    names (``TORCHELASTIC_ERROR_FILE``; nothing without one), so that the
    launcher's failure summary quotes it instead of "To enable traceback
    see ...". Unlike torch's ``record`` it leaves ``SystemExit`` (e.g.
    ``--help``) and the fault handler alone."""
    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except Exception as exc:
            from torch.distributed.elastic.multiprocessing.errors import \
                get_error_handler
            get_error_handler().record_exception(exc)
            raise
    return wrapper
