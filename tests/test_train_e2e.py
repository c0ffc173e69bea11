"""End to end, as a user runs it: tools/train.py on the toy config, then
tools/test.py (single-scale and --tta) on the checkpoint, full and
prompt-only."""
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from davpt_seg.datasets import generate_toy_dataset
from davpt_seg.weights import load_training_checkpoint
from toy_run import save_toy_vit, toy_run_config

ROOT = Path(__file__).resolve().parents[1]
ITERS = 48  # two mapping updates (one epoch = 96 images / 4 = 24 iters)


def run(args, cwd, timeout=600):
    env = dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1',
               PYTHONWARNINGS='ignore')
    proc = subprocess.run([sys.executable, *map(str, args)], cwd=cwd,
                          env=env, capture_output=True, text=True,
                          timeout=timeout)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    return out


def miou(output):
    found = re.findall(r'Iter\(test\).*?mIoU: ([0-9.]+)', output)
    assert found, output[-3000:]
    return float(found[-1])


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('e2e')
    data = tmp / 'toy_ade'
    generate_toy_dataset(str(data))
    # A "pretrained" ViT in mmseg format (random: nothing can be downloaded)
    # so that the run exercises init_cfg=Pretrained and prompt-only loading.
    save_toy_vit(tmp / 'toy_vit.pth')
    cfg = tmp / 'toy_e2e.py'
    cfg.write_text(toy_run_config(
        data, ITERS, checkpoint_interval=ITERS, val_interval=ITERS,
        logger_interval=8, extra=f"""model = dict(backbone=dict(init_cfg=dict(
    _delete_=True, type='Pretrained', checkpoint={str(tmp / 'toy_vit.pth')!r})))
"""))
    work = tmp / 'work'
    out = run(['tools/train.py', cfg, '--work-dir', work], ROOT)
    return dict(tmp=tmp, cfg=cfg, work=work, log=out,
                ckpt=work / f'iter_{ITERS}.pth')


def _scalars(work):
    [path] = list(work.glob('*/vis_data/scalars.json'))
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_training_logs_finite_metric_losses(trained):
    rows = [r for r in _scalars(trained['work']) if 'loss' in r]
    assert rows and rows[-1]['iter'] == ITERS
    for r in rows:
        for key in ('loss_davpt_token', 'loss_davpt_cls', 'decode.loss_ce'):
            assert math.isfinite(r[key]), (key, r)
        # MMEngine sums every '*loss*' entry into the total.
        parts = sum(v for k, v in r.items()
                    if 'loss' in k and k != 'loss')
        assert r['loss'] == pytest.approx(parts, rel=1e-3)
    assert any(r['loss_davpt_token'] > 0 for r in rows)
    log = trained['log']
    assert 'DA-VPT initial mapping from 24 batches' in log
    assert log.count('DA-VPT mapping updated at iter') == 2
    # The trainable-parameter report, and no per-frozen-parameter warnings.
    assert re.search(r'Parameters: total [0-9.]+M, trainable', log)
    assert 'is skipped since its requires_grad=False' not in log


def test_checkpoint_holds_mapping_buffers(trained):
    ckpt = load_training_checkpoint(str(trained['ckpt']))
    assert not any('class_mapping' in k for k in ckpt['state_dict'])
    state = ckpt['davpt']  # DAVPTHook's objective, beside the model state
    prefix = 'mapping.'
    for name in ('mapping', 'centroids', 'has_centroids', 'initialized',
                 'num_updates', 'feat_sum', 'feat_count'):
        assert prefix + name in state, name
    assert bool(state[prefix + 'initialized'])
    assert int(state[prefix + 'num_updates']) == 3  # initial + 2 updates
    mapping = state[prefix + 'mapping']
    assert mapping.shape == (8, ) and len(set(mapping.tolist())) >= 2


def test_test_single_scale_and_tta(trained):
    args = ['tools/test.py', trained['cfg'], trained['ckpt']]
    ss = run(args + ['--work-dir', trained['tmp'] / 'ss'], ROOT)
    assert 0 <= miou(ss) <= 100
    assert '| Class' in ss and '| toy_7 |' in ss  # per-class IoU table
    ms = run(args + ['--tta', '--work-dir', trained['tmp'] / 'ms',
                     '--cfg-options', 'test_dataloader.dataset.indices=4'],
             ROOT)
    assert 0 <= miou(ms) <= 100
    trained['miou_ss'] = miou(ss)


def test_prompt_only_checkpoint_gives_identical_results(trained):
    full, small = trained['ckpt'], trained['tmp'] / 'prompts.pth'
    out = run(['tools/extract_prompts.py', trained['cfg'], full, small], ROOT)
    assert 'frozen backbone tensors dropped' in out
    small_ckpt = load_training_checkpoint(str(small))
    state = small_ckpt['state_dict']
    assert 'backbone.layers.0.attn.attn.in_proj_weight' not in state
    assert 'backbone.prompt_tokens' in state
    assert 'mapping.mapping' in small_ckpt['davpt']
    assert 'decode_head.conv_seg.weight' in state
    assert small.stat().st_size < full.stat().st_size
    args = ['tools/test.py', trained['cfg']]
    a = miou(run(args + [full, '--work-dir', trained['tmp'] / 'a'], ROOT))
    b = miou(run(args + [small, '--work-dir', trained['tmp'] / 'b'], ROOT))
    assert a == b
    assert 'frozen backbone weights restored from' in run(
        args + [small, '--work-dir', trained['tmp'] / 'c'], ROOT)
