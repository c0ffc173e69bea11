"""Kill a toy run (SIGKILL) after a checkpoint, ``--resume`` it, and compare
with an uninterrupted run of the same config and seed.

The test-only ``StateProbeHook`` (tests/helpers/davpt_probes.py) records
digests of the prompts, heads, optimizer, learning rates, schedulers, mapping
buffers and pending class statistics when training starts (after the resume
and DAVPTHook's ``before_train``) and after chosen iterations. The checkpoint
iteration N is also a due mapping update. With ``num_workers=0``, one thread
and a fixed seed the resumed run continues *bit for bit* like the
uninterrupted one: the class draws are seeded by (seed, iteration, rank),
mmengine skips the consumed batches, and DAVPTHook's initial pass (which the
resumed run skips) leaves the global RNG states untouched.
"""
import os
import signal
import sys

import pytest
import torch

from davpt_seg.datasets import generate_toy_dataset
from davpt_seg.weights import load_training_checkpoint
from helpers.davpt_probes import (MAPPING_BUFFERS, digest, read_probe,
                                  resume_probes)
from helpers.processes import run_python, start_and_kill
from helpers.toy_run import assert_same_training_checkpoint, toy_run_config

pytestmark = pytest.mark.slow  # trains 3 toy runs (~45 s)

N = 6  # checkpoint interval; also a mapping update (interval 3)
ITERS = 2 * N
STALL = N + 2  # the killed run is stopped two iterations past the checkpoint


def train(cfg, work, *extra, timeout=300):
    return run_python('tools/train.py', cfg, '--work-dir', work, *extra,
                      timeout=timeout)


def train_and_kill(cfg, work, timeout=300):
    """Start a run that stalls after iteration STALL; SIGKILL it there."""
    def kill(proc):
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=60) == -signal.SIGKILL

    start_and_kill([sys.executable, 'tools/train.py', cfg, '--work-dir', work],
                   work.parent / 'killed.log',
                   ready=(work / 'stalled').exists, kill=kill,
                   timeout=timeout)


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('resume')
    data = tmp / 'toy_ade'
    generate_toy_dataset(data, num_train=32, num_val=4)
    hooks = f"""[
    dict(type='DAVPTHook', mapping_interval=3),
    dict(type='MappingProbeHook'),
    dict(type='StateProbeHook', at_iters=[{N}, {ITERS}]),
]"""
    base = tmp / 'toy_resume.py'
    base.write_text(toy_run_config(
        data, ITERS, checkpoint_interval=N, val_interval=N, logger_interval=2,
        probes=True, extra=f'custom_hooks = {hooks}\n'))
    stall = tmp / 'toy_resume_stall.py'
    stall.write_text(f"""_base_ = ['./toy_resume.py']
custom_hooks = {hooks[:-1]}    dict(type='StallHook', at={STALL}),
]
""")
    full, cut = tmp / 'uninterrupted', tmp / 'interrupted'
    full_log = train(base, full)
    train_and_kill(stall, cut)
    killed = dict(
        last=(cut / 'last_checkpoint').read_text().strip(),
        files=sorted(p.name for p in cut.glob('*.pth')),
        stalled_at=int((cut / 'stalled').read_text()),
        probe=read_probe(cut, 'state_probe'))
    legacy = tmp / 'legacy'
    write_legacy_checkpoint(cut / f'iter_{N}.pth', legacy)
    resumed_log = train(base, cut, '--resume')
    legacy_log = train(base, legacy, '--resume')

    return dict(full=full, cut=cut, full_log=full_log, legacy=legacy,
                resumed_log=resumed_log, legacy_log=legacy_log,
                killed=killed, legacy_state=read_probe(legacy, 'state_probe'),
                **resume_probes(full, cut))


def write_legacy_checkpoint(src, work):
    """``src`` as earlier versions wrote it: the mapping in the model state
    (``backbone.class_mapping.*``), no ``davpt`` key; the latest checkpoint
    of the work dir ``work``."""
    ckpt = load_training_checkpoint(str(src))
    objective = ckpt.pop('davpt')
    ckpt['state_dict'].update({
        'backbone.class_mapping.' + k[len('mapping.'):]: v
        for k, v in objective.items()})
    work.mkdir()
    torch.save(ckpt, work / src.name)
    (work / 'last_checkpoint').write_text(str(work / src.name))


STATE_KEYS = ('prompts', 'heads', 'optimizer', 'lr', 'scheduler', 'mapping',
              'stats', 'mapping_list', 'num_updates')


def test_killed_after_the_checkpoint(runs):
    k = runs['killed']
    assert k['last'].endswith(f'iter_{N}.pth')
    assert k['files'] == [f'iter_{N}.pth']
    # the killed process had moved on past the checkpoint
    assert k['stalled_at'] == STALL
    assert k['probe'][str(N)]['prompts'] == \
        runs['full_state'][str(N)]['prompts']


def test_resume_starts_from_the_checkpoint_state(runs):
    start = runs['resumed_state']['start']
    at_n = runs['full_state'][str(N)]
    assert start['iter'] == N
    for key in STATE_KEYS:
        assert start[key] == at_n[key], key
    # the uninterrupted run was not trivially static
    assert runs['full_state']['start']['prompts'] != at_n['prompts']
    assert runs['full_state']['start']['optimizer'] != at_n['optimizer']


def test_resume_skips_the_initial_mapping_pass(runs):
    log, m = runs['resumed_log'], runs['resumed_mapping']
    assert 'class->prompt mapping restored from the checkpoint (update 3)' \
        in log
    assert 'DA-VPT initial mapping' not in log
    assert f'Advance dataloader {N} steps' in log
    assert m['initialized_at_start'] and m['start_iter'] == N
    # updates of the resumed run: only the due ones after N
    assert [u['iter'] for u in m['updates']] == [8, 11]
    full = runs['full_mapping']
    assert not full['initialized_at_start']
    assert [u['iter'] for u in full['updates']] == [0, 2, 5, 8, 11]
    # ... and they equal the uninterrupted run's, statistics included
    for a, b in zip(full['updates'][-2:], m['updates']):
        for key in ('stats', 'feat_count', 'buffers', 'mapping'):
            assert a[key] == b[key], key


def test_resumed_run_continues_exactly_like_the_uninterrupted_one(runs):
    end_full, end_res = runs['full_state']['end'], runs['resumed_state']['end']
    assert end_full['iter'] == end_res['iter'] == ITERS
    for key in STATE_KEYS:
        assert end_full[key] == end_res[key], key
    assert_same_training_checkpoint(runs['full'] / f'iter_{ITERS}.pth',
                                    runs['cut'] / f'iter_{ITERS}.pth', ITERS)


def test_checkpoint_of_an_earlier_version_resumes_exactly(runs):
    """A checkpoint with the mapping where earlier versions kept it (model
    state ``backbone.class_mapping.*``) resumes like the current format:
    DAVPTHook migrates it, the model never sees those keys."""
    assert 'class->prompt mapping restored from the checkpoint (update 3)' \
        in runs['legacy_log']
    assert 'DA-VPT initial mapping' not in runs['legacy_log']
    start, end = runs['legacy_state']['start'], runs['legacy_state']['end']
    assert start['iter'] == N and end['iter'] == ITERS
    for key in STATE_KEYS:
        assert start[key] == runs['full_state'][str(N)][key], key
        assert end[key] == runs['full_state']['end'][key], key
    assert_same_training_checkpoint(runs['full'] / f'iter_{ITERS}.pth',
                                    runs['legacy'] / f'iter_{ITERS}.pth',
                                    ITERS)
    assert 'unexpected key' not in runs['legacy_log']


def test_checkpoint_at_a_due_update_is_consistent(runs):
    """The mapping update due at N ran before the checkpoint was written:
    the file holds the updated buffers and empty statistics, identical in
    both runs."""
    files = [load_training_checkpoint(str(w / f'iter_{N}.pth'))
             for w in (runs['full'], runs['cut'])]
    ckpts = [f['state_dict'] for f in files]
    update = [u for u in runs['full_mapping']['updates']
              if u['iter'] == N - 1]
    assert len(update) == 1 and update[0]['changed']
    pre = 'mapping.'  # DAVPTHook's objective state, under 'davpt'
    assert not any('class_mapping' in k for k in ckpts[0])
    for state in (f['davpt'] for f in files):
        assert digest(*(state[pre + b] for b in MAPPING_BUFFERS)) == \
            update[0]['buffers']
        assert int(state[pre + 'num_updates']) == 3
        assert bool(state[pre + 'initialized'])
        assert bool(state[pre + 'has_centroids'])
        assert torch.count_nonzero(state[pre + 'feat_count']) == 0
    for k in ckpts[0]:
        assert torch.equal(ckpts[0][k], ckpts[1][k]), k
    for k in files[0]['davpt']:
        assert torch.equal(files[0]['davpt'][k], files[1]['davpt'][k]), k
