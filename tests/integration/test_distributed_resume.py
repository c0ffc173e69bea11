"""Distributed resume on CPU: 2 gloo processes through tools/dist_train.sh.

An uninterrupted 2-process run (``ITERS`` iterations, mapping updates at
``INTERVAL`` and ``2 * INTERVAL``, checkpoint at ``N``) is compared with a
run that is SIGKILLed -- both ranks, the torchrun agent and the launcher
shell -- one iteration past the checkpoint at ``N`` and then resumed with ``tools/dist_train.sh CONFIG 2 --resume``.

The checkpoint iteration ``N`` lies *between* two mapping updates, so the
checkpoint also holds pending (all-reduced) class statistics, which the
resumed run must continue from for the update after ``N`` to be right.

Stopping: the run is killed rather than cut by ``max_iters`` so the test
covers a real crash (a shorter ``max_iters`` would change the LR schedule
and write a final checkpoint through the normal exit path). torchrun starts
every worker in its own session, so killing the launcher's process group
alone would leave the ranks running: the test kills the process group of
each process of the launch tree (found under /proc) by id.

Per-rank probes (tests/helpers/davpt_probes.py) record digests of the mapping
buffers, pending statistics, prompts, optimizer and schedulers at the start
of training and after every iteration, and every mapping update. The heads'
digest includes the BatchNorm running statistics, which are per rank (DDP
runs with ``broadcast_buffers=False``, and a checkpoint holds rank 0's): it
is compared on rank 0, and on rank 1 only where the expected value is known.
"""
import signal
import time
from pathlib import Path

import pytest
import torch

from davpt_seg.datasets import generate_toy_dataset
from davpt_seg.weights import load_training_checkpoint
from helpers.davpt_probes import (MAPPING_BUFFERS, digest, read_probe,
                                  resume_probes)
from helpers.processes import (descendants, free_port, kill_tree, run_tool,
                               start_and_kill)
from helpers.toy_run import assert_same_training_checkpoint, toy_run_config

pytestmark = pytest.mark.slow  # three 2-process runs (~65 s)

INTERVAL = 3  # mapping updates after iterations 3 and 6
N = 4  # checkpoint (and interruption) iteration: between the two updates
ITERS = 7  # one iteration after the last update; final checkpoint at 7
STALL = N + 1  # the killed run has moved one iteration past the checkpoint
NUM_TRAIN = 16  # 2 ranks x batch 4 -> 2 iterations per epoch
RANKS = (0, 1)

# Digests that every rank must share at every point (all but 'heads').
SHARED_KEYS = ('prompts', 'optimizer', 'lr', 'scheduler', 'mapping', 'stats',
               'mapping_list', 'num_updates')
STATE_KEYS = SHARED_KEYS + ('heads', )


def dist_train(cfg, work, *extra, timeout=300):
    return run_tool(['bash', 'tools/dist_train.sh', cfg, 2, '--work-dir',
                     work, *extra], PORT=str(free_port()), timeout=timeout)


def dist_train_and_kill(cfg, work, timeout=300):
    """Start a 2-process run that stalls after iteration STALL on both
    ranks; SIGKILL every process of it there."""
    def stalled():
        return (work / 'stalled').exists() and all(
            str(STALL) in read_probe(work, 'state_probe', r) for r in RANKS)

    def kill(proc):
        workers = descendants(proc.pid)
        groups = kill_tree(proc)
        assert len(groups) >= 3, groups  # launcher + one session per rank
        assert proc.wait(timeout=60) == -signal.SIGKILL
        deadline = time.time() + 60
        while any(Path(f'/proc/{p}').exists() and
                  (Path(f'/proc/{p}/stat').read_text().rsplit(')', 1)[1]
                   .split()[0] != 'Z') for p in workers):
            assert time.time() < deadline, 'ranks survived SIGKILL'
            time.sleep(0.1)

    start_and_kill(['bash', 'tools/dist_train.sh', cfg, 2, '--work-dir',
                    work], work.parent / 'killed.log', ready=stalled,
                   kill=kill, timeout=timeout, PORT=str(free_port()))


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('dist_resume')
    data = tmp / 'toy_ade'
    generate_toy_dataset(data, num_train=NUM_TRAIN, num_val=2)
    hooks = f"""[
    dict(type='DAVPTHook', mapping_interval={INTERVAL}, init_max_batches=2),
    dict(type='MappingProbeHook'),
    dict(type='StateProbeHook', at_iters={list(range(1, ITERS + 1))}),
]"""
    base = tmp / 'toy_dist_resume.py'
    base.write_text(toy_run_config(
        data, ITERS, checkpoint_interval=N, probes=True,
        extra=f'custom_hooks = {hooks}\n'))
    stall = tmp / 'toy_dist_resume_stall.py'
    stall.write_text(f"""_base_ = ['./toy_dist_resume.py']
custom_hooks = {hooks[:-1]}    dict(type='StallHook', at={STALL}),
]
""")
    full, cut = tmp / 'uninterrupted', tmp / 'interrupted'
    t0 = time.time()
    full_log = dist_train(base, full)
    t1 = time.time()
    dist_train_and_kill(stall, cut)
    t2 = time.time()
    killed = dict(
        last=(cut / 'last_checkpoint').read_text().strip(),
        files=sorted(p.name for p in cut.glob('*.pth')),
        state=[read_probe(cut, 'state_probe', r) for r in RANKS],
        mapping=[read_probe(cut, 'mapping_probe', r) for r in RANKS])
    resumed_log = dist_train(base, cut, '--resume')
    t3 = time.time()
    print(f'\nuninterrupted {t1 - t0:.1f}s, killed {t2 - t1:.1f}s, '
          f'resumed {t3 - t2:.1f}s')

    return dict(full=full, cut=cut, full_log=full_log,
                resumed_log=resumed_log, killed=killed,
                **resume_probes(full, cut, RANKS))


def test_runs_are_distributed_and_the_kill_came_after_the_checkpoint(runs):
    for key in ('full_mapping', 'resumed_mapping'):
        assert [p['rank'] for p in runs[key]] == list(RANKS)
        assert [p['world_size'] for p in runs[key]] == [2, 2]
    assert 'Distributed training: True' in runs['resumed_log']
    k = runs['killed']
    assert k['last'].endswith(f'iter_{N}.pth')
    assert k['files'] == [f'iter_{N}.pth']
    for r in RANKS:
        # both ranks had moved on past the checkpoint; up to there the
        # killed run was the uninterrupted one
        assert str(STALL) in k['state'][r]
        for it in ('start', *map(str, range(1, STALL + 1))):
            for key in STATE_KEYS:
                assert k['state'][r][it][key] == \
                    runs['full_state'][r][it][key], (r, it, key)


def test_ranks_agree_at_every_logged_point(runs):
    points = ['start', *map(str, range(1, ITERS + 1)), 'end']
    for name in ('full_state', 'resumed_state'):
        a, b = runs[name]
        assert sorted(a) == sorted(b)
        for it in a:
            for key in SHARED_KEYS:
                assert a[it][key] == b[it][key], (name, it, key)
    assert sorted(runs['full_state'][0]) == sorted(points)
    assert sorted(runs['resumed_state'][0]) == sorted(
        ['start', *map(str, range(N + 1, ITERS + 1)), 'end'])
    a, b = runs['killed']['state']
    for it in map(str, range(1, STALL + 1)):
        for key in SHARED_KEYS:
            assert a[it][key] == b[it][key], ('killed', it, key)
    for name in ('full_mapping', 'resumed_mapping'):
        a, b = runs[name]
        assert len(a['updates']) == len(b['updates'])
        for ua, ub in zip(a['updates'], b['updates']):
            for key in ('iter', 'stats', 'feat_count', 'buffers', 'mapping',
                        'num_updates', 'stats_after', 'changed'):
                assert ua[key] == ub[key], (name, ua['iter'], key)
        assert a['final_prompts'] == b['final_prompts']


def test_checkpoint_holds_the_mapping_and_pending_statistics(runs):
    """iter_N.pth (written by rank 0) holds the mapping of the update at
    INTERVAL and the statistics accumulated since, identical in both runs
    and equal to what every rank held at N."""
    files = [load_training_checkpoint(str(w / f'iter_{N}.pth'))
             for w in (runs['full'], runs['cut'])]
    for key in ('state_dict', 'davpt'):
        for k in files[0][key]:
            assert torch.equal(files[0][key][k], files[1][key][k]), k
    pre = 'mapping.'  # DAVPTHook's objective state
    state = files[0]['davpt']
    [update] = [u for u in runs['full_mapping'][0]['updates']
                if u['iter'] == INTERVAL - 1]
    assert update['changed'] and update['num_updates'] == 2
    assert digest(*(state[pre + b] for b in MAPPING_BUFFERS)) == \
        update['buffers']
    assert int(state[pre + 'num_updates']) == 2
    assert torch.count_nonzero(state[pre + 'feat_count']) > 0  # pending
    for r in RANKS:
        at_n = runs['full_state'][r][str(N)]
        assert digest(*(state[pre + b] for b in MAPPING_BUFFERS)) == \
            at_n['mapping']
        assert digest(state[pre + 'feat_sum'], state[pre + 'feat_count']) \
            == at_n['stats']


def test_every_rank_resumes_with_the_checkpointed_mapping(runs):
    log = runs['resumed_log']
    assert 'class->prompt mapping restored from the checkpoint (update 2)' \
        in log
    assert 'DA-VPT initial mapping' not in log
    assert f'Advance dataloader {N} steps' in log
    for r in RANKS:
        m, full = runs['resumed_mapping'][r], runs['full_mapping'][r]
        # restored, not recomputed: no initial pass ran on this rank (the
        # probe would have recorded its update at iteration N)
        assert m['initialized_at_start'] and m['start_iter'] == N
        assert [u['iter'] for u in m['updates']] == [2 * INTERVAL - 1]
        assert not full['initialized_at_start']
        assert [u['iter'] for u in full['updates']] == \
            [0, INTERVAL - 1, 2 * INTERVAL - 1]
        # the start state is the uninterrupted run's state at N
        start = runs['resumed_state'][r]['start']
        at_n = runs['full_state'][r][str(N)]
        assert start['iter'] == N
        for key in SHARED_KEYS:
            assert start[key] == at_n[key], (r, key)
        # every rank loaded rank 0's heads (BN running stats included)
        assert start['heads'] == runs['full_state'][0][str(N)]['heads']
    # the uninterrupted run was not trivially static
    s = runs['full_state'][0]
    assert s['start']['prompts'] != s[str(N)]['prompts']
    assert s[str(INTERVAL)]['mapping'] != s['start']['mapping']


def test_mapping_update_after_the_resume_matches(runs):
    for r in RANKS:
        a = runs['full_mapping'][r]['updates'][-1]
        b = runs['resumed_mapping'][r]['updates'][-1]
        assert a['iter'] == b['iter'] == 2 * INTERVAL - 1
        for key in ('stats', 'feat_count', 'buffers', 'mapping',
                    'num_updates', 'changed', 'stats_after'):
            assert a[key] == b[key], (r, key)
        assert a['changed'] and a['num_updates'] == 3


def test_resumed_run_ends_bit_identical_to_the_uninterrupted_one(runs):
    """gloo sums two ranks' values (a + b is order-independent) and every
    other step is deterministic on CPU, so no tolerance is needed."""
    for r in RANKS:
        full, res = runs['full_state'][r], runs['resumed_state'][r]
        for it in [*map(str, range(N + 1, ITERS + 1)), 'end']:
            for key in SHARED_KEYS:
                assert full[it][key] == res[it][key], (r, it, key)
        assert full['end']['iter'] == res['end']['iter'] == ITERS
        assert runs['full_mapping'][r]['final_prompts'] == \
            runs['resumed_mapping'][r]['final_prompts']
    # rank 0's heads (BN running stats included) continue exactly; rank 1's
    # running stats restart from rank 0's at N, so its heads digest is not
    # compared (it is not used in training and not saved)
    assert runs['full_state'][0]['end']['heads'] == \
        runs['resumed_state'][0]['end']['heads']
    assert_same_training_checkpoint(runs['full'] / f'iter_{ITERS}.pth',
                                    runs['cut'] / f'iter_{ITERS}.pth', ITERS)
