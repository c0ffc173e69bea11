"""Test-only probe of a process's threads at interpreter exit (issue #19).

Imported by a run's config (``custom_imports``) with ``DAVPT_EXIT_PROBE_DIR``
set, every process that loads the config writes, from an ``atexit`` handler
(they run before the interpreter finalizes), the names of its live threads
to ``exit_threads_rank<RANK>.json`` in that directory.

A gloo thread alive at that point is what made 2-process runs abort at exit
now and then (docs/distributed.md): one that releases a finished
collective's tensors during finalization needs the GIL, and Python 3.11 ends
it inside a C++ destructor (std::terminate, SIGABRT). Whether the thread is
there is deterministic; whether it aborts depends on timing.
"""
import atexit
import json
import os

from davpt_seg.engine.launch import gloo_threads

ENV_VAR = 'DAVPT_EXIT_PROBE_DIR'


def _write(directory: str) -> None:
    rank = os.environ.get('RANK', 'none')
    names = []
    for tid in os.listdir('/proc/self/task'):
        try:
            with open(f'/proc/self/task/{tid}/comm') as f:
                names.append(f.read().strip())
        except OSError:
            pass
    path = os.path.join(directory, f'exit_threads_rank{rank}.json')
    with open(path, 'w') as f:
        json.dump(dict(threads=sorted(names), gloo=gloo_threads()), f)


def read(directory, rank) -> dict:
    """What rank ``rank`` wrote: ``threads`` (all names), ``gloo``."""
    path = os.path.join(str(directory), f'exit_threads_rank{rank}.json')
    with open(path) as f:
        return json.load(f)


if os.environ.get(ENV_VAR) and os.path.isdir('/proc/self/task'):
    os.makedirs(os.environ[ENV_VAR], exist_ok=True)
    atexit.register(_write, os.environ[ENV_VAR])
