"""tools/accuracy_bench.py: the smoke preset end to end (generated CamVid-
layout data, a tiny random ViT), every output checked; finished runs are
skipped and a killed run resumes from its last checkpoint. Also the child
configs of the real presets, and clear errors for missing inputs."""
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import zipfile

import pytest
from mmengine.config import Config

from davpt_seg.bench import (PRESETS, VARIANTS, latest_valid_checkpoint,
                             preset_config)
from helpers import ROOT
from helpers.processes import subprocess_env

TOOL = [sys.executable, str(ROOT / 'tools' / 'accuracy_bench.py')]
CLASSES = {'sky', 'building', 'pole', 'road', 'sidewalk', 'tree', 'sign',
           'fence', 'car', 'pedestrian', 'bicyclist'}


def bench(work_dir, *args):
    proc = subprocess.run(TOOL + ['--preset', 'smoke', '--work-dir',
                                  str(work_dir), *args],
                          capture_output=True, text=True,
                          env=subprocess_env(), cwd=ROOT, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.mark.slow
def test_smoke_preset_every_output(tmp_path):
    work = tmp_path / 'bench'
    out = bench(work, '--seeds', '0').stdout
    results = json.loads((work / 'results.json').read_text())
    assert [(r['variant'], r['seed']) for r in results['runs']] == [
        (v, 0) for v in VARIANTS]
    for run in results['runs']:
        assert 0 <= run['mIoU'] <= 100 and 0 <= run['aAcc'] <= 100
        assert run['iters'] == PRESETS['smoke'].iters
        assert set(run['class_iou']) <= CLASSES and run['class_iou']
        assert 0 < run['trainable_params'] <= run['total_params']
        assert run['step_time'] is not None and run['step_time'] > 0
        assert sorted(int(s) for s in run['loss_curve']) == list(
            range(1, PRESETS['smoke'].iters + 1))
        assert (work / 'runs' / f"{run['variant']}_seed0" /
                f"iter_{run['iters']}.pth").is_file()
    summary = results['summary']
    assert list(summary) == list(VARIANTS)
    assert all(s['n'] == 1 and s['mIoU_std'] == 0 for s in summary.values())
    trainable = {v: s['trainable_params'] for v, s in summary.items()}
    assert trainable['heads'] < trainable['vpt'] == trainable['davpt'] < \
        trainable['davptplus'] < trainable['full'] == summary['full'][
            'total_params']
    assert results['settings']['preset'] == 'smoke'
    assert results['settings']['eval_split'] == 'val'
    assert results['machine']['cpu_count'] >= 1
    md = (work / 'results.md').read_text()
    for variant in VARIANTS:
        assert f'| {variant} |' in md
    png = (work / 'results.png').read_bytes()
    assert png[:8] == b'\x89PNG\r\n\x1a\n' and len(png) > 10000
    assert 'wrote' in out

    # A second invocation reuses every finished run and adds a seed.
    out = bench(work, '--seeds', '0,1', '--variants', 'davpt').stdout
    assert 'davpt seed 0: done before, skipped' in out
    results = json.loads((work / 'results.json').read_text())
    assert results['summary']['davpt']['n'] == 2
    mious = [r['mIoU'] for r in results['runs'] if r['variant'] == 'davpt']
    assert results['summary']['davpt']['mIoU_std'] == pytest.approx(
        statistics.stdev(mious))

    # --report-only: the finished runs, nothing trained
    out = bench(work, '--seeds', '0,1,2', '--variants', 'heads,davpt',
                '--report-only').stdout
    assert 'heads seed 1: not finished, left out' in out
    assert not (work / 'runs' / 'heads_seed1').exists()
    results = json.loads((work / 'results.json').read_text())
    assert [(r['variant'], r['seed']) for r in results['runs']] == [
        ('heads', 0), ('davpt', 0), ('davpt', 1)]


@pytest.mark.slow
def test_runs_side_by_side_equal_runs_alone(tmp_path):
    """--jobs 2: two runs at once, each with --threads; the same seed gives
    the same checkpoint, losses and mIoU as a run alone."""
    import torch
    args = ('--variants', 'heads,davpt', '--seeds', '0', '--threads', '1')
    bench(tmp_path / 'together', *args, '--jobs', '2')
    bench(tmp_path / 'alone', *args, '--jobs', '1')
    settings = json.loads(
        (tmp_path / 'together' / 'results.json').read_text())['settings']
    assert (settings['jobs'], settings['threads_per_job'],
            settings['workers_per_job']) == (2, 1, 0)  # smoke: 0 workers
    for variant in ('heads', 'davpt'):
        runs = [tmp_path / d / 'runs' / f'{variant}_seed0'
                for d in ('together', 'alone')]
        a, b = (json.loads((r / 'result.json').read_text()) for r in runs)
        assert (a['mIoU'], a['loss_curve']) == (b['mIoU'], b['loss_curve'])
        a, b = (torch.load(r / 'iter_4.pth', map_location='cpu',
                           weights_only=False) for r in runs)
        for key, value in a['state_dict'].items():
            assert torch.equal(value, b['state_dict'][key]), key
        if variant == 'davpt':
            for key, value in a['davpt'].items():
                assert torch.equal(value, b['davpt'][key]), key


@pytest.mark.slow
def test_learning_rates_are_chosen_on_the_selection_split(tmp_path):
    """--eval-split select --lrs: one row per learning rate, tested on the
    held-out part of train; --lr-from takes each variant's best into a val
    run and says so; a val result cannot choose."""
    select = tmp_path / 'select'
    bench(select, '--variants', 'heads', '--seeds', '0', '--eval-split',
          'select', '--lrs', '0.001,0.1')
    results = json.loads((select / 'results.json').read_text())
    assert list(results['summary']) == ['heads@lr0.001', 'heads@lr0.1']
    assert {(r['base_variant'], r['lr']) for r in results['runs']} == {
        ('heads', 0.001), ('heads', 0.1)}
    test_cfg = Config.fromfile(
        str(select / 'configs' / 'heads@lr0.1.py')).test_dataloader.dataset
    assert test_cfg.data_prefix.img_path == 'train'
    held_out = (select / 'smoke_data' / 'select_split.txt').read_text()
    assert test_cfg.ann_file.endswith('select_split.txt') and held_out
    best = max(results['runs'], key=lambda r: r['mIoU'])['lr']

    val = tmp_path / 'val'
    bench(val, '--variants', 'heads', '--seeds', '0', '--lr-from',
          str(select / 'results.json'))
    results = json.loads((val / 'results.json').read_text())
    assert results['settings']['lr_chosen'] == {'heads': best}
    assert [r['lr'] for r in results['runs']] == [best]
    assert '`val` chose nothing' in (val / 'results.md').read_text()
    proc = subprocess.run(TOOL + ['--preset', 'smoke', '--work-dir',
                                  str(tmp_path / 'x'), '--lr-from',
                                  str(val / 'results.json')],
                          capture_output=True, text=True, cwd=ROOT,
                          env=subprocess_env(), timeout=300)
    assert proc.returncode != 0 and "chosen on 'select' only" in proc.stderr


@pytest.mark.slow
def test_killed_run_resumes_from_its_checkpoint(tmp_path):
    work = tmp_path / 'bench'
    run_dir = work / 'runs' / 'vpt_seed0'
    proc = subprocess.Popen(
        TOOL + ['--preset', 'smoke', '--work-dir', str(work), '--variants',
                'vpt', '--seeds', '0', '--iters', '200'], cwd=ROOT,
        env=subprocess_env(),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True)
    deadline = time.time() + 600
    while latest_valid_checkpoint(str(run_dir)) is None and \
            time.time() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    saved = sorted(int(p.stem[5:]) for p in run_dir.glob('iter_*.pth')
                   if zipfile.is_zipfile(p))
    assert saved and saved[-1] < 200, 'killed before the end'
    assert not (run_dir / 'result.json').exists()

    bench(work, '--variants', 'vpt', '--seeds', '0', '--iters', '200')
    record = json.loads((run_dir / 'result.json').read_text())
    assert record['iters'] == 200
    logs = sorted(run_dir.glob('*/vis_data/scalars.json'))
    assert len(logs) == 2  # the killed start and the resumed one
    resumed = [json.loads(line) for line in logs[-1].read_text().splitlines()]
    steps = [e['step'] for e in resumed if 'loss' in e]
    assert steps[0] > saved[-1] and steps[-1] == 200


def test_latest_valid_checkpoint_skips_truncated_files(tmp_path):
    """A run killed while saving leaves a truncated newest checkpoint (and
    mmengine's ``last_checkpoint`` may name it): resume from the newest
    complete one."""
    import torch
    assert latest_valid_checkpoint(str(tmp_path)) is None
    for it in (10, 20, 30):
        torch.save({'it': torch.tensor(it)}, tmp_path / f'iter_{it}.pth')
    data = (tmp_path / 'iter_30.pth').read_bytes()
    (tmp_path / 'iter_30.pth').write_bytes(data[:len(data) // 2])
    (tmp_path / 'iter_5.pth.tmp').write_bytes(b'x')
    assert latest_valid_checkpoint(str(tmp_path)) == str(tmp_path /
                                                         'iter_20.pth')


@pytest.mark.slow
def test_missing_inputs_are_clear_errors(tmp_path):
    proc = subprocess.run(TOOL + ['--preset', 'cpu', '--work-dir',
                                  str(tmp_path)],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode != 0 and '--data-root is required' in proc.stderr
    (tmp_path / 'camvid' / 'train').mkdir(parents=True)
    proc = subprocess.run(TOOL + ['--preset', 'cpu', '--work-dir',
                                  str(tmp_path), '--data-root',
                                  str(tmp_path / 'camvid')],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode != 0 and 'lacks trainannot, val, valannot' in \
        proc.stderr


@pytest.mark.parametrize('preset', ['cpu', 'gpu'])
def test_real_preset_configs(tmp_path, preset):
    """The child configs change data, weights, resolution and schedule only;
    the model and recipe are the shipped config's."""
    for variant in VARIANTS:
        path = tmp_path / f'{variant}.py'
        preset_config(variant, PRESETS[preset], '/data/camvid',
                      '/w/vits14.pth', 'val').dump(str(path))
        cfg = Config.fromfile(str(path))
        shipped = Config.fromfile(str(
            ROOT / 'configs' / 'camvid' /
            f'{variant}_dinov2-s14_setr-pup_camvid.py'))
        p = PRESETS[preset]
        assert cfg.model.backbone.init_cfg.checkpoint == '/w/vits14.pth'
        assert tuple(cfg.model.backbone.img_size) == p.crop
        assert cfg.train_cfg.max_iters == p.iters
        assert cfg.train_dataloader.batch_size == p.batch_size
        assert cfg.test_dataloader.dataset.data_prefix == dict(
            img_path='val', seg_map_path='valannot')
        assert cfg.train_dataloader.dataset.data_root == '/data/camvid'
        assert cfg.train_dataloader.dataset.pipeline[3].crop_size == p.crop
        assert cfg.test_dataloader.dataset.pipeline[1].scale == p.scale
        assert cfg.optim_wrapper == shipped.optim_wrapper
        for key in ('embed_dims', 'num_layers', 'patch_size', 'type'):
            assert cfg.model.backbone[key] == shipped.model.backbone[key]
        assert cfg.model.backbone.get('guided_layers') == \
            shipped.model.backbone.get('guided_layers')
        assert cfg.custom_hooks == shipped.custom_hooks
