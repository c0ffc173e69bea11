"""tools/benchmark.py (code: davpt_seg.bench.cost) runs end to end on the
tiny preset and writes a JSON with every row and figure (the timings
themselves are not checked). The tiny preset's ratios mean nothing, so its
targets carry no met/MISSED verdict."""
import json
import math

import pytest

from helpers.processes import run_python

TRAIN_ROWS = ('full_ft', 'frozen_ft', 'vpt', 'davpt', 'davpt_plus',
              'davpt_cp', 'davpt_cp_heads', 'full_ft_amp', 'vpt_amp', 'davpt_amp',
              'davpt_cp_amp', 'bb_full_ft', 'bb_vpt', 'bb_vpt_cp')
INFER_ROWS = ('infer_stock', 'infer_prompted', 'infer_bb_stock',
              'infer_bb_prompted')
ROW_KEYS = ('id', 'row', 'kind', 'description', 'trainable_params',
            'total_params', 'time_ms', 'cpu_time_ms', 'memory_mb', 'ratios')
TIME_KEYS = ('median', 'q1', 'q3', 'iqr', 'min', 'max', 'samples')
MEMORY_KEYS = ('peak', 'resident', 'step_peak')
TRAIN_RATIOS = ('time_vs_vpt', 'time_vs_full_ft', 'mem_vs_vpt',
                'mem_vs_full_ft')
INFER_RATIOS = ('time_vs_stock', 'mem_vs_stock')
TARGETS = ('davpt_vs_vpt_time', 'davpt_plus_vs_vpt_time',
           'prompted_bb_vs_full_ft_time', 'davpt_vs_full_ft_time',
           'davpt_vs_full_ft_mem', 'cp_heads_mem_cut', 'cp_mem_cut',
           'cp_mem_cut_bb', 'cp_heads_time', 'cp_time', 'cp_time_bb', 'infer_vs_stock', 'infer_bb_vs_stock',
           'mapping_update')
META_KEYS = ('preset', 'device', 'device_name', 'torch', 'mmseg', 'mmengine',
             'threads', 'batch', 'crop', 'warmup', 'reps', 'amp', 'amp_mode',
             'model', 'time_measure', 'memory_measure')


def finite(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool) \
        and math.isfinite(x)


@pytest.fixture(scope='module')
def result(tmp_path_factory):
    out = tmp_path_factory.mktemp('bench')
    run_python('tools/benchmark.py', '--preset', 'tiny', '--device', 'cpu',
               '--threads', '1', '--amp', '--out-dir', out)
    with open(out / 'benchmark.json') as f:
        data = json.load(f)
    md = (out / 'benchmark.md').read_text()
    return data, md


@pytest.mark.slow
def test_every_row_and_figure(result):
    data, _ = result
    rows = {r['id']: r for r in data['rows']}
    assert set(rows) == set(TRAIN_ROWS + INFER_ROWS)
    for vid, r in rows.items():
        assert set(ROW_KEYS) <= set(r), vid
        assert r['kind'] == ('infer' if vid in INFER_ROWS else 'train')
        for key in ('time_ms', 'cpu_time_ms'):
            assert set(TIME_KEYS) <= set(r[key]), (vid, key)
            assert all(finite(r[key][k]) for k in TIME_KEYS
                       if k != 'samples'), (vid, key)
            assert r[key]['samples'] and all(
                finite(x) and x > 0 for x in r[key]['samples']), (vid, key)
            assert r[key]['min'] <= r[key]['median'] <= r[key]['max']
        assert set(MEMORY_KEYS) <= set(r['memory_mb']), vid
        assert all(finite(r['memory_mb'][k]) for k in MEMORY_KEYS), vid
        assert r['memory_mb']['peak'] > 0, vid
        ratio_keys = INFER_RATIOS if vid in INFER_ROWS else TRAIN_RATIOS
        assert set(ratio_keys) <= set(r['ratios']), vid
        assert all(finite(r['ratios'][k]) and r['ratios'][k] > 0
                   for k in ratio_keys), (vid, r['ratios'])
        assert isinstance(r['trainable_params'], int)
        assert isinstance(r['total_params'], int) and r['total_params'] > 0
    # reference rows are 1 against themselves
    assert rows['vpt']['ratios']['time_vs_vpt'] == pytest.approx(1.)
    assert rows['full_ft']['ratios']['time_vs_full_ft'] == pytest.approx(1.)
    # trainable parameters: frozen backbones train only prompts and heads
    p = {k: r['trainable_params'] for k, r in rows.items()}
    assert p['full_ft'] == p['full_ft_amp'] > p['vpt'] > p['frozen_ft'] > 0
    assert p['davpt'] == p['vpt'] == p['davpt_cp'] == p['davpt_amp'] == \
        p['davpt_cp_heads'] == p['davpt_cp_amp']
    assert p['davpt_plus'] > p['davpt']
    assert p['bb_full_ft'] > p['bb_vpt'] == p['bb_vpt_cp'] > 0
    assert all(p[k] == 0 for k in INFER_ROWS)


@pytest.mark.slow
def test_extras_targets_and_meta(result):
    data, md = result
    meta = data['meta']
    assert set(META_KEYS) <= set(meta)
    assert meta['preset'] == 'tiny' and meta['device'] == 'cpu'
    assert meta['amp'] is True and 'bfloat16' in meta['amp_mode']
    ex = data['extras']
    assert finite(ex['mapping_update_ms']['cold_ms'])
    assert finite(ex['mapping_update_ms']['warm']['median'])
    assert finite(ex['initial_mapping_per_batch_ms']['median'])
    assert finite(ex['hook_forward_ms']['median'])
    targets = {t['id']: t for t in data['targets']}
    assert set(targets) == set(TARGETS)
    for t in targets.values():
        assert finite(t['value']) and finite(t['limit'])
        assert t['met'] is None
        assert t['verdict'] == 'n/a (tiny preset: schema check only)'
    for vid in TRAIN_ROWS + INFER_ROWS:
        assert f'`{vid}`' in md
    assert 'MISSED' not in md and '| met |' not in md
    assert md.count('n/a (tiny preset: schema check only)') == len(targets)


def test_verdicts_on_real_presets():
    """Presets other than tiny keep met / MISSED (and a bool ``met``)."""
    from davpt_seg.bench.cost import SCHEMA_ONLY_PRESETS, evaluate_targets
    assert set(SCHEMA_ONLY_PRESETS) == {'tiny'}
    rows = [dict(id=vid, time_ms=dict(median=ms), cpu_time_ms=dict(median=ms),
                 memory_mb=None)
            for vid, ms in (('vpt', 100.), ('davpt', 101.),
                            ('davpt_plus', 110.))]
    targets = {t['id']: t for t in evaluate_targets(rows, {})}
    assert targets['davpt_vs_vpt_time']['met'] is True
    assert targets['davpt_vs_vpt_time']['verdict'] == 'met'
    assert targets['davpt_plus_vs_vpt_time']['met'] is False
    assert targets['davpt_plus_vs_vpt_time']['verdict'] == 'MISSED'
    reason = SCHEMA_ONLY_PRESETS['tiny']
    for t in evaluate_targets(rows, {}, no_verdict=reason):
        assert t['met'] is None and t['verdict'] == reason


@pytest.mark.slow
def test_hook_preset_reports_the_hooks_own_cost(tmp_path):
    run_python('tools/benchmark.py', '--preset', 'ade20k-hook', '--device',
               'cpu', '--threads', '1', '--reps', '2', '--warmup', '1',
               '--out-dir', tmp_path)
    data = json.loads((tmp_path / 'hook_cost.json').read_text())
    assert data['meta']['preset_cfg']['crop'] == 512
    assert len(data['meta']['classes_per_crop']) == 16
    assert 1 < sum(data['meta']['classes_per_crop']) / 16 < 30
    for key in ('recorded', 'recorded_classes', 'scan', 'scan_classes',
                'per_image_scan'):
        assert len(data['hook_ms'][key]['samples']) == (
            10 if key == 'per_image_scan' else 2)
        assert all(finite(x) and x > 0 for x in data['hook_ms'][key]['samples'])
    assert finite(data['record_label_values_ms_per_image']['median'])
    assert finite(data['mapping_update_ms']['cold_ms'])
    targets = {t['id']: t for t in data['targets']}
    assert set(targets) == {'hook_main_process_ms', 'hook_classes_ms'}
    for t in targets.values():
        assert t['limit'] == 1.0 and t['met'] == (t['value'] <= 1.0)
    assert targets['hook_classes_ms']['value'] < \
        targets['hook_main_process_ms']['value']
    md = (tmp_path / 'hook_cost.md').read_text()
    assert 'RecordLabelValues' in md and '| target |' in md
