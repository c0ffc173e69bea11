"""Running ``tools/`` as a user does: in a subprocess from the repository
root, one thread, with the test helpers importable."""
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Optional

from . import ROOT, TESTS


def subprocess_env(**extra) -> dict:
    """Environment of a ``tools/`` subprocess: one thread, no warnings, the
    repository root and ``tests/`` on ``PYTHONPATH`` (for configs importing
    ``helpers.davpt_probes``), ``PY`` (the interpreter the ``tools/*.sh``
    scripts use) set to this one, plus ``extra``."""
    path = [str(ROOT), str(TESTS), os.environ.get('PYTHONPATH', '')]
    return dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1',
                PYTHONWARNINGS='ignore', PY=sys.executable,
                PYTHONPATH=os.pathsep.join(path), **extra)


def free_port() -> int:
    """A free TCP port for a distributed launch (``PORT``)."""
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def run_tool(args, *, ok: Optional[bool] = True, timeout: float = 300,
             **env) -> str:
    """Run ``args`` (e.g. ``['bash', 'tools/dist_train.sh', cfg, 2]``) in
    the repository root with :func:`subprocess_env` (``env`` added) and
    return its stdout + stderr. ``ok``: whether it must exit 0 (True) or
    non-zero (False); None leaves the check to the caller."""
    proc = subprocess.run([str(a) for a in args], cwd=ROOT,
                          env=subprocess_env(**env), capture_output=True,
                          text=True, timeout=timeout)
    out = proc.stdout + proc.stderr
    if ok is not None:
        assert (proc.returncode == 0) == ok, out[-8000:]
    return out


def run_python(script, *args, **kwargs) -> str:
    """:func:`run_tool` on ``python script *args`` (``script`` relative to
    the repository root, e.g. ``'tools/train.py'``)."""
    return run_tool([sys.executable, script, *args], **kwargs)


def descendants(pid: int) -> list:
    """Pids of all live descendants of ``pid`` (from /proc)."""
    children = {}
    for entry in Path('/proc').iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / 'stat').read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(')', 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def kill_tree(proc) -> set:
    """SIGKILL the process group of every process of ``proc``'s tree (a
    launcher shell and torchrun share ``proc``'s group; each torchrun rank
    leads its own session); returns the process group ids."""
    groups = {proc.pid}
    for pid in descendants(proc.pid):
        try:
            groups.add(os.getpgid(pid))
        except ProcessLookupError:
            pass
    for pgid in sorted(groups, reverse=True):
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return groups


def start(args, log_path, **env) -> subprocess.Popen:
    """Start ``args`` as :func:`run_tool` does, in its own session, with
    stdout and stderr to ``log_path``; the caller waits (and cleans up with
    :func:`kill_tree`)."""
    with open(log_path, 'w') as log:
        return subprocess.Popen([str(a) for a in args], cwd=ROOT,
                                env=subprocess_env(**env), stdout=log,
                                stderr=subprocess.STDOUT,
                                start_new_session=True)


def rank_pid(proc, rank: int) -> Optional[int]:
    """Pid of the worker of ``rank`` below ``proc`` (a ``tools/dist_*.sh``
    launch): the descendant with ``RANK=<rank>`` in its environment that
    is not the torchrun agent; None if there is none (yet)."""
    for pid in descendants(proc.pid):
        try:
            environ = Path(f'/proc/{pid}/environ').read_bytes().split(b'\0')
            cmdline = Path(f'/proc/{pid}/cmdline').read_bytes()
        except OSError:
            continue
        if f'RANK={rank}'.encode() in environ and \
                b'torch.distributed.run' not in cmdline:
            return pid
    return None


def start_and_kill(args, log_path, ready: Callable[[], bool],
                   kill: Callable[[subprocess.Popen], None],
                   timeout: float = 300, **env) -> None:
    """Start ``args`` in its own session (as :func:`run_tool`, output to
    ``log_path``), wait until ``ready()`` (the process must not exit
    before), then ``kill(proc)``. Whatever still runs afterwards is killed
    with :func:`kill_tree`."""
    with open(log_path, 'w') as log:
        proc = subprocess.Popen([str(a) for a in args], cwd=ROOT,
                                env=subprocess_env(**env), stdout=log,
                                stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            deadline = time.time() + timeout
            while not ready():
                assert proc.poll() is None, \
                    Path(log_path).read_text()[-6000:]
                assert time.time() < deadline, 'the run never got ready'
                time.sleep(0.2)
            kill(proc)
        finally:
            if proc.poll() is None:
                kill_tree(proc)
                proc.wait()
