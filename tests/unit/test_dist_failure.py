"""Distributed teardown and failure reports without a second process:

* the roll call of davpt_seg.engine.dist_failure on a HashStore, with the
  "peer" a real process of this host (dead, stopped, running) or unknown;
* ``--dist-timeout`` and the CPU default timeout (config edits);
* close_process_group joins the gloo threads once nothing else holds the
  group, and warns when something does (a 1-process gloo group in a
  subprocess).
"""
import argparse
import json
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch
import torch.distributed as dist
from mmengine.config import Config

from davpt_seg.engine import dist_failure
from davpt_seg.engine.dist_failure import (INFO_KEY, REPORT_KEY,
                                           PeerFailureError,
                                           failure_message,
                                           is_collective_failure,
                                           local_process_state,
                                           name_failed_peers,
                                           record_error, roll_call)
from davpt_seg.engine.launch import (CPU_DIST_TIMEOUT, load_config,
                                     parse_launch_args, use_gloo_without_gpus)
from helpers import TOY_CONFIG
from helpers.processes import run_python

GLOO_RESET = ('[/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:537] '
              'Read error [127.0.0.1]:10624: Connection reset by peer')


@pytest.fixture
def peer():
    """A process of this host standing in for rank 1 (killed afterwards)."""
    proc = subprocess.Popen([sys.executable, '-c',
                             'import time; time.sleep(60)'])
    yield proc
    proc.kill()
    proc.wait()


def store_with_peer(pid=None, host=None):
    store = dist.HashStore()
    if pid is not None:
        store.set(INFO_KEY.format(1), json.dumps(
            dict(host=host or socket.gethostname(), pid=pid)))
    return store


def test_a_dead_peer_is_named_without_waiting(peer):
    peer.kill()
    peer.wait()
    t0 = time.monotonic()
    missing = roll_call(store_with_peer(peer.pid), 0, 2, timeout=30)
    assert time.monotonic() - t0 < 5
    assert missing == {
        1: f'pid {peer.pid} on {socket.gethostname()}: no longer running'}


def test_a_stopped_peer_is_named_stopped(peer):
    peer.send_signal(signal.SIGSTOP)
    time.sleep(0.2)
    missing = roll_call(store_with_peer(peer.pid), 0, 2, timeout=30)
    assert missing[1].endswith(': stopped')


def test_a_running_silent_peer_is_named_after_the_timeout(peer):
    t0 = time.monotonic()
    missing = roll_call(store_with_peer(peer.pid), 0, 2, timeout=0.5)
    assert time.monotonic() - t0 >= 0.5
    assert 'running but did not report within 0.5 s' in missing[1]


def test_an_unknown_or_remote_peer_is_named_after_the_timeout():
    missing = roll_call(store_with_peer(), 0, 2, timeout=0.3)
    assert missing[1].startswith('host and pid unknown: did not report')
    remote = store_with_peer(pid=1, host='another-node')
    missing = roll_call(remote, 0, 2, timeout=0.3)
    assert missing[1].startswith('pid 1 on another-node: did not report')


def test_peers_that_report_the_failure_are_not_named(peer):
    store = store_with_peer(peer.pid)
    store.set(REPORT_KEY.format(1), '1')
    assert roll_call(store, 0, 2, timeout=30) == {}
    assert store.check([REPORT_KEY.format(0)])  # this rank reported


def test_local_process_state():
    assert local_process_state(None) is None
    assert local_process_state(dict(host='another-node', pid=1)) is None
    assert local_process_state(
        dict(host=socket.gethostname(), pid=1)) is None  # running


def test_what_counts_as_a_collective_failure():
    assert is_collective_failure(RuntimeError(GLOO_RESET))
    assert is_collective_failure(RuntimeError(
        '[../third_party/gloo/gloo/transport/tcp/unbound_buffer.cc:78] '
        'Timed out waiting 20000ms for recv operation to complete'))
    assert is_collective_failure(dist.DistBackendError('NCCL error'))
    assert not is_collective_failure(ValueError('bad label 9 in x.png'))
    assert not is_collective_failure(RuntimeError('shape mismatch'))


def test_failure_message_names_the_rank_and_quotes_the_error():
    text = failure_message(0, {1: 'pid 7 on n1: no longer running'},
                           RuntimeError(GLOO_RESET))
    assert text.splitlines()[:2] == [
        'rank 0: a collective operation failed because rank 1 stopped '
        'taking part:', '  rank 1: pid 7 on n1: no longer running']
    assert 'Connection reset by peer' in text.splitlines()[2]


def test_errors_outside_a_distributed_run_pass_unchanged():
    with pytest.raises(RuntimeError, match='Connection reset') as info:
        with name_failed_peers():
            raise RuntimeError(GLOO_RESET)
    assert not isinstance(info.value, PeerFailureError)


def test_the_roll_call_turns_a_failure_into_peer_failure(monkeypatch, peer):
    peer.kill()
    peer.wait()
    store = store_with_peer(peer.pid)
    monkeypatch.setattr(dist_failure, '_distributed', lambda: True)
    monkeypatch.setattr(dist_failure, '_default_store', lambda: store)
    monkeypatch.setattr(dist, 'get_rank', lambda: 0)
    monkeypatch.setattr(dist, 'get_world_size', lambda: 2)
    with pytest.raises(PeerFailureError, match='because rank 1') as info:
        with name_failed_peers():
            raise RuntimeError(GLOO_RESET)
    assert 'no longer running' in str(info.value)
    assert isinstance(info.value.__cause__, RuntimeError)


def test_record_error_writes_torchruns_error_file(monkeypatch, tmp_path):
    def main(code=None):
        if code is not None:
            raise SystemExit(code)
        raise PeerFailureError('rank 0: ... because rank 1 stopped')

    error_file = tmp_path / 'error.json'
    monkeypatch.setenv('TORCHELASTIC_ERROR_FILE', str(error_file))
    with pytest.raises(SystemExit):  # --help and the like pass through
        record_error(main)(0)
    assert not error_file.exists()
    with pytest.raises(PeerFailureError):
        record_error(main)()
    message = json.loads(error_file.read_text())['message']['message']
    assert message == 'PeerFailureError: rank 0: ... because rank 1 stopped'


# --------------------------------------------------------------- timeouts
def parse(*argv):
    """parse_launch_args on ``argv`` (it sets LOCAL_RANK: the callers
    monkeypatch it)."""
    parser = argparse.ArgumentParser()
    parser.add_argument('config')
    parser.add_argument('--work-dir')
    return parse_launch_args(parser, [str(TOY_CONFIG), *argv])


def test_dist_timeout_sets_the_process_group_timeout(monkeypatch):
    monkeypatch.setenv('LOCAL_RANK', '0')
    cfg = load_config(parse('--dist-timeout', '45'))
    assert cfg.env_cfg.dist_cfg.timeout == 45
    assert cfg.env_cfg.dist_cfg.backend == 'gloo'  # the rest is kept
    assert 'timeout' not in load_config(parse()).env_cfg.dist_cfg


@pytest.mark.skipif(torch.cuda.is_available(), reason='the CPU fallback')
def test_cpu_processes_get_a_default_timeout_unless_configured():
    cfg = Config(dict(launcher='mpi', model=dict(type='X')))
    use_gloo_without_gpus(cfg)
    assert cfg.env_cfg.dist_cfg.timeout == CPU_DIST_TIMEOUT
    cfg = Config(dict(launcher='mpi', model=dict(type='X'),
                      env_cfg=dict(dist_cfg=dict(timeout=7))))
    use_gloo_without_gpus(cfg)
    assert cfg.env_cfg.dist_cfg.timeout == 7


# --------------------------------------------------------------- teardown
CLOSE_SCRIPT = '''
import time
import torch, torch.distributed as dist
import torch._dynamo  # imported after the group exists, it pins the group
from davpt_seg.engine.launch import close_process_group, gloo_threads

def init():
    dist.init_process_group('gloo', store=dist.HashStore(), rank=0,
                            world_size=1)
    model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(2, 2))
    model(torch.ones(1, 2)).sum().backward()
    for _ in range(200):  # each thread names itself once it runs
        if {'gloo_tcp_loop', 'pt_gloo_runloop'} <= set(gloo_threads()):
            break
        time.sleep(0.05)
    return model

model = init()
print('threads while training', sorted(set(gloo_threads())))
del model
close_process_group()
print('threads after closing', gloo_threads())
model = init()  # still held when the group is closed
close_process_group()
print('threads left', sorted(set(gloo_threads())))
'''


def test_close_process_group_joins_the_gloo_threads(tmp_path):
    script = tmp_path / 'close.py'
    script.write_text(CLOSE_SCRIPT)
    out = run_python(script)
    threads = "['gloo_tcp_loop', 'pt_gloo_runloop']"
    assert f'threads while training {threads}' in out
    assert 'threads after closing []' in out
    assert 'gloo threads are left (' in out
    assert 'something still holds the group' in out
    assert f'threads left {threads}' in out
