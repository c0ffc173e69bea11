"""Distributed DA-VPT on CPU: 2 gloo processes through the project's own
launchers (tools/dist_train.sh, tools/dist_test.sh).

Every rank records each class->prompt mapping update through the test-only
``MappingProbeHook`` (tests/helpers/davpt_probes.py): digests of the statistics it
clusters and of the buffers it leaves, and the rank's own (pre-all-reduce)
present-class counts. The tests check that all ranks hold identical buffers,
that the statistics are the sum of both ranks' data, that DDP runs without
``find_unused_parameters``, that the checkpoint written at a due update holds
the updated mapping, and that 2-process evaluation equals 1-process.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from davpt_seg.datasets import generate_toy_dataset
from davpt_seg.weights import load_training_checkpoint
from helpers import ROOT
from helpers.davpt_probes import MAPPING_BUFFERS, digest
from helpers.processes import free_port, run_tool
from helpers.toy_run import toy_run_config

ITERS = 8
INTERVAL = 4  # mapping updates at 4 and 8; checkpoint at 8 (update due)
NUM_TRAIN = 32  # 2 ranks x batch 4 -> 4 iterations per epoch
NUM_VAL = 5  # odd: the distributed sampler pads rank 1
NUM_CLASSES = 8


@pytest.fixture(scope='module')
def dist_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('dist')
    data = tmp / 'toy_ade'
    generate_toy_dataset(data, num_train=NUM_TRAIN, num_val=NUM_VAL)
    cfg = tmp / 'toy_dist.py'
    cfg.write_text(toy_run_config(
        data, ITERS, checkpoint_interval=ITERS, val_interval=ITERS,
        logger_interval=2, probes=True, extra=f"""custom_hooks = [
    dict(type='DAVPTHook', mapping_interval={INTERVAL}),
    dict(type='MappingProbeHook'),
]
"""))
    work = tmp / 'work'
    log = run_tool(['bash', 'tools/dist_train.sh', cfg, 2, '--work-dir', work],
              PORT=str(free_port()))
    probes = [json.loads((work / f'mapping_probe_rank{r}.json').read_text())
              for r in range(2)]
    return dict(tmp=tmp, cfg=cfg, work=work, log=log, probes=probes,
                ckpt=work / f'iter_{ITERS}.pth')


@pytest.mark.slow
def test_dist_train_completes_on_cpu_with_gloo(dist_run):
    assert dist_run['ckpt'].is_file()
    log = dist_run['log']
    assert 'Distributed launcher: pytorch' in log
    assert 'Distributed training: True' in log
    assert 'DA-VPT initial mapping from 4 batches (16 images on rank 0)' \
        in log
    assert 'Iter(val)' in log and 'mIoU' in log  # 2-process validation ran
    assert [p['world_size'] for p in dist_run['probes']] == [2, 2]
    assert [p['rank'] for p in dist_run['probes']] == [0, 1]


@pytest.mark.slow
def test_ddp_without_find_unused_parameters(dist_run):
    for p in dist_run['probes']:
        assert p['wrapper'] == 'MMDistributedDataParallel'
        assert p['find_unused_parameters'] is False
    # DDP kept the trainable parameters identical on both ranks.
    a, b = dist_run['probes']
    assert a['final_prompts'] == b['final_prompts']


@pytest.mark.slow
def test_every_rank_holds_the_same_mapping_after_each_update(dist_run):
    a, b = dist_run['probes']
    assert [u['iter'] for u in a['updates']] == [0, INTERVAL - 1, ITERS - 1]
    assert len(a['updates']) == len(b['updates'])
    for ua, ub in zip(a['updates'], b['updates']):
        assert ua['stats'] == ub['stats']  # statistics before clustering
        assert ua['buffers'] == ub['buffers']  # mapping, centroids, flags
        assert ua['mapping'] == ub['mapping']
        assert ua['changed'] and ub['changed']
        assert ua['stats_after'] == ub['stats_after']
    assert [u['num_updates'] for u in a['updates']] == [1, 2, 3]


@pytest.mark.slow
def test_statistics_come_from_both_ranks(dist_run):
    a, b = dist_run['probes']
    # Initial pass: the DefaultSampler splits the 32 images over 2 ranks.
    assert a['updates'][0]['local_images'] == NUM_TRAIN // 2
    assert b['updates'][0]['local_images'] == NUM_TRAIN // 2
    for i, (ua, ub) in enumerate(zip(a['updates'], b['updates'])):
        if i > 0:  # training: batch 4 per rank per iteration
            assert ua['local_images'] == ub['local_images'] == 4 * INTERVAL
        total = [x + y for x, y in zip(ua['local_count'], ub['local_count'])]
        assert ua['feat_count'] == total
        assert sum(ua['local_count']) > 0 and sum(ub['local_count']) > 0
        # the ranks saw different images
        assert ua['local_count'] != ub['local_count']


@pytest.mark.slow
def test_checkpoint_at_a_due_update_holds_the_updated_mapping(dist_run):
    ckpt = load_training_checkpoint(str(dist_run['ckpt']))
    state = ckpt['davpt']  # DAVPTHook's objective state
    pre = 'mapping.'
    last = dist_run['probes'][0]['updates'][-1]
    assert last['iter'] == ITERS - 1  # the update due at the checkpoint
    assert digest(*(state[pre + b] for b in MAPPING_BUFFERS)) == \
        last['buffers']
    assert state[pre + 'mapping'].tolist() == last['mapping']
    assert int(state[pre + 'num_updates']) == 3
    assert torch.count_nonzero(state[pre + 'feat_count']) == 0
    assert torch.count_nonzero(state[pre + 'feat_sum']) == 0


def _test_metrics(work):
    [path] = list(Path(work).glob('*/*.json'))
    return json.loads(path.read_text().splitlines()[-1])


@pytest.mark.slow
def test_two_process_evaluation_equals_one_process(dist_run):
    tmp, cfg, ckpt = dist_run['tmp'], dist_run['cfg'], dist_run['ckpt']
    run_tool([sys.executable, 'tools/test.py', cfg, ckpt, '--work-dir',
         tmp / 'test1', '--out', tmp / 'pred1'])
    # A config asking for nccl (as the GPU configs do) is switched to gloo
    # on a machine without CUDA.
    out = run_tool(['bash', 'tools/dist_test.sh', cfg, ckpt, 2, '--work-dir',
               tmp / 'test2', '--out', tmp / 'pred2', '--cfg-options',
               'env_cfg.dist_cfg.backend=nccl'], PORT=str(free_port()))
    assert 'No CUDA device: using the gloo backend' in out
    one, two = _test_metrics(tmp / 'test1'), _test_metrics(tmp / 'test2')
    for key in ('aAcc', 'mIoU', 'mAcc'):
        assert one[key] == two[key], (key, one, two)
    # and the predictions themselves, image by image
    p1 = sorted((tmp / 'pred1').glob('*.png'))
    p2 = sorted((tmp / 'pred2').glob('*.png'))
    assert [p.name for p in p1] == [p.name for p in p2]
    assert len(p1) == NUM_VAL
    for x, y in zip(p1, p2):
        assert x.read_bytes() == y.read_bytes(), x.name


def test_slurm_train_script_mirrors_mmseg(tmp_path):
    """tools/slurm_train.sh runs srun like mmseg's script (a fake srun
    records its arguments)."""
    fake = tmp_path / 'bin'
    fake.mkdir()
    (fake / 'srun').write_text('#!/bin/sh\nprintf "%s\\n" "$@" > '
                               f'{tmp_path / "srun_args"}\n')
    (fake / 'srun').chmod(0o755)
    env = dict(os.environ, PATH=f'{fake}{os.pathsep}{os.environ["PATH"]}',
               GPUS='16', GPUS_PER_NODE='8')
    proc = subprocess.run(
        ['bash', 'tools/slurm_train.sh', 'part', 'job', 'cfg.py', '--resume',
         '--work-dir', 'w'], cwd=ROOT, env=env, capture_output=True,
        text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    args = (tmp_path / 'srun_args').read_text().split('\n')[:-1]
    assert args[:7] == ['-p', 'part', '--job-name=job', '--gres=gpu:8',
                        '--ntasks=16', '--ntasks-per-node=8',
                        '--cpus-per-task=5']
    assert '--kill-on-bad-exit=1' in args
    assert args[-6:] == [str(ROOT / 'tools/train.py'), 'cfg.py',
                         '--launcher=slurm', '--resume', '--work-dir', 'w']


@pytest.mark.parametrize('name', sorted(
    str(p.relative_to(ROOT / 'configs'))
    for p in (ROOT / 'configs').rglob('*.py')))
def test_configs_do_not_ask_ddp_to_find_unused_parameters(name):
    """Every trainable tensor gets a gradient each step (DAVPTHook checks
    the one case where it could not), so no config needs DDP's extra
    graph traversal."""
    from mmengine.config import Config
    cfg = Config.fromfile(str(ROOT / 'configs' / name))
    assert not cfg.get('find_unused_parameters', False)
    assert not (cfg.get('model_wrapper_cfg') or {}).get(
        'find_unused_parameters', False)
