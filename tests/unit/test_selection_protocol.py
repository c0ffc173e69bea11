"""The accuracy protocol's pieces: the committed selection split, the
bench configs it produces (split, learning rate, stretched schedule) and
full fine-tuning with mmseg's ViT recipe (layer-wise learning-rate decay),
the learning-rate choice over selection files and the mapping log reader."""
import copy
import json
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope
from mmseg.engine.optimizers.layer_decay_optimizer_constructor import \
    LearningRateDecayOptimizerConstructor
from mmseg.registry import MODELS

import davpt_seg  # noqa: F401
from davpt_seg.bench import (PRESETS, SPLIT_FILES, chosen_lrs,
                             preset_config, read_mapping_log,
                             scaled_schedule, selection_scores)
from helpers import CONFIG_DIR, ROOT

SHARED_TRAIN = ROOT.parent / 'shared' / 'data' / 'camvid' / 'train'


def _names(path):
    with open(path) as f:
        return [line.strip() for line in f if line.strip()]


def test_selection_split_holds_out_whole_sequences():
    select, rest = (_names(SPLIT_FILES[k]) for k in ('select', 'train'))
    assert not set(select) & set(rest)
    sequence = {name.split('_')[0] for name in select}
    assert sequence == {'0001TP'}
    assert not any(name.split('_')[0] in sequence for name in rest)
    assert 0.15 <= len(select) / (len(select) + len(rest)) <= 0.25


@pytest.mark.skipif(not SHARED_TRAIN.is_dir(),
                    reason='../shared/data/camvid is not on this machine')
def test_selection_split_covers_the_camvid_train_folder():
    files = {osp.splitext(p.name)[0] for p in SHARED_TRAIN.glob('*.png')}
    select, rest = (_names(SPLIT_FILES[k]) for k in ('select', 'train'))
    assert set(select) | set(rest) == files
    assert len(select) + len(rest) == len(files)


def test_select_trains_on_the_rest_and_tests_on_the_held_out_part():
    cfg = preset_config('davpt', PRESETS['cpu'], '/data/camvid', None,
                        'select', lr=0.003)
    train = cfg.train_dataloader.dataset
    assert train.ann_file == SPLIT_FILES['train']
    assert train.data_prefix == dict(img_path='train',
                                     seg_map_path='trainannot')
    for loader in (cfg.val_dataloader, cfg.test_dataloader):
        assert loader.dataset.ann_file == SPLIT_FILES['select']
        assert loader.dataset.data_prefix.img_path == 'train'
    assert cfg.optim_wrapper.optimizer.lr == 0.003
    assert cfg.optim_wrapper.paramwise_cfg.custom_keys.head.lr_mult == 10.
    val = preset_config('davpt', PRESETS['cpu'], '/data/camvid', None, 'val')
    assert val.test_dataloader.dataset.ann_file == ''
    assert val.train_dataloader.dataset.get('ann_file', '') == ''
    assert val.optim_wrapper.optimizer.lr == 0.01  # the config's
    with pytest.raises(ValueError, match='eval_split'):
        preset_config('davpt', PRESETS['cpu'], '/d', None, 'train')


def test_schedules_are_stretched_to_the_preset():
    poly = [dict(type='PolyLR', power=0.9, begin=0, end=8000)]
    assert scaled_schedule(poly, 8000, 100) == [
        dict(type='PolyLR', power=0.9, begin=0, end=100)]
    warm = [dict(type='LinearLR', begin=0, end=400),
            dict(type='PolyLR', begin=400, end=8000)]
    assert [(s['begin'], s['end']) for s in scaled_schedule(
        warm, 8000, 100)] == [(0, 5), (5, 100)]
    # every phase keeps two steps (a one-step warm-up never ramps up)
    assert [(s['begin'], s['end']) for s in scaled_schedule(
        warm, 8000, 4)] == [(0, 2), (2, 4)]
    cfg = preset_config('full_adamw', PRESETS['cpu'], '/d', None, 'val')
    assert [s['type'] for s in cfg.param_scheduler] == ['LinearLR', 'PolyLR']


def test_full_adamw_has_layer_decay_and_no_decay_on_norms():
    init_default_scope('mmseg')
    cfg = Config.fromfile(str(
        CONFIG_DIR / 'camvid' / 'full_adamw_dinov2-s14_setr-pup_camvid.py'))
    model_cfg = copy.deepcopy(cfg.model)
    model_cfg.backbone.init_cfg = None
    model = MODELS.build(model_cfg)
    wrapper = build_optim_wrapper(model, copy.deepcopy(cfg.optim_wrapper))
    assert isinstance(wrapper.optimizer, torch.optim.AdamW)
    base, wd, rate = 1e-4, 0.05, 0.65
    lr_of, wd_of = {}, {}
    for group in wrapper.optimizer.param_groups:
        for p in group['params']:
            lr_of[id(p)], wd_of[id(p)] = group['lr'], group['weight_decay']
    params = dict(model.named_parameters())
    assert set(lr_of) == {id(p) for p in params.values()}  # all, once
    expect = {
        'backbone.pos_embed': (base * rate**13, 0.),
        'backbone.cls_token': (base * rate**13, 0.),
        'backbone.patch_embed.projection.weight': (base * rate**13, wd),
        'backbone.layers.0.attn.attn.in_proj_weight': (base * rate**12, wd),
        'backbone.layers.0.ln1.weight': (base * rate**12, 0.),
        'backbone.layers.11.ffn.layers.1.weight': (base * rate, wd),
        'backbone.layers.11.ffn.layers.1.bias': (base * rate, 0.),
        'backbone.ln1.weight': (base, 0.),
        'decode_head.conv_seg.weight': (base, wd),
    }
    for name, (lr, decay) in expect.items():
        p = params[name]
        assert lr_of[id(p)] == pytest.approx(lr), name
        assert wd_of[id(p)] == decay, name


def test_mmseg_layer_decay_refuses_vision_transformer():
    """Why the project has its own constructor (remove it when mmseg's
    accepts a VisionTransformer)."""
    init_default_scope('mmseg')
    model = MODELS.build(dict(
        type='EncoderDecoder',
        backbone=dict(type='VisionTransformer', img_size=(28, 28),
                      patch_size=14, embed_dims=24, num_layers=2,
                      num_heads=2),
        decode_head=dict(type='FCNHead', in_channels=24, channels=8,
                         num_convs=1, num_classes=3)))
    constructor = LearningRateDecayOptimizerConstructor(
        dict(type='OptimWrapper', optimizer=dict(type='AdamW', lr=1e-4)),
        dict(num_layers=2, decay_rate=0.65))
    with pytest.raises(NotImplementedError):
        constructor(model)


def _select_results(path, rows, split='select'):
    """A results.json of ``rows`` (variant, lr, mean mIoU)."""
    runs = [dict(variant=f'{v}@lr{lr:g}', base_variant=v, lr=lr)
            for v, lr, _ in rows]
    summary = {f'{v}@lr{lr:g}': dict(mIoU_mean=m) for v, lr, m in rows}
    path.write_text(json.dumps(dict(settings=dict(eval_split=split),
                                    runs=runs, summary=summary)))
    return str(path)


def test_learning_rates_are_chosen_over_several_selection_files(tmp_path):
    sgd = _select_results(tmp_path / 'sgd.json', [
        ('vpt', 0.003, 21.), ('vpt', 0.01, 24.), ('vpt', 0.03, 22.),
        ('davpt', 0.003, 25.), ('davpt', 0.01, 20.)])
    adamw = _select_results(tmp_path / 'adamw.json', [
        ('full_adamw', 3e-5, 30.), ('full_adamw', 1e-4, 31.)])
    chosen, inherited = chosen_lrs(
        selection_scores([sgd, adamw]),
        ['vpt', 'davpt', 'full_adamw', 'vpt_gated', 'davpt_gated_patchmap'])
    assert chosen == dict(vpt=0.01, davpt=0.003, full_adamw=1e-4,
                          vpt_gated=0.01, davpt_gated_patchmap=0.003)
    assert inherited == dict(vpt_gated='vpt', davpt_gated_patchmap='davpt')
    # a lever with rows of its own uses them
    own = _select_results(tmp_path / 'own.json', [('vpt_gated', 0.1, 40.)])
    assert chosen_lrs(selection_scores([sgd, own]), ['vpt_gated']) == (
        {'vpt_gated': 0.1}, {})
    with pytest.raises(ValueError, match='no learning-rate rows of heads'):
        chosen_lrs(selection_scores([sgd]), ['heads'])
    val = _select_results(tmp_path / 'val.json', [('vpt', 0.01, 1.)], 'val')
    with pytest.raises(ValueError, match="chosen on 'select' only"):
        selection_scores([sgd, val])


def test_mapping_updates_are_read_from_the_run_logs(tmp_path):
    first, second = tmp_path / '20261204_1', tmp_path / '20261204_2'
    first.mkdir()
    second.mkdir()
    (first / '20261204_1.log').write_text(
        'x - INFO - DA-VPT initial mapping from 46 batches (367 images on '
        'rank 0) in 9.01 s: set; cluster sizes [1, 2, 0]; centroid cosine '
        'mean 0.412 max 0.903\n'
        'x - INFO - DA-VPT mapping kept (update rejected) at iter 46 in '
        '0.002 s; cluster sizes [1, 2, 0]; centroid cosine n/a\n')
    (second / '20261204_2.log').write_text(  # resumed; an older format
        'x - INFO - DA-VPT mapping updated at iter 92 in 0.001 s; cluster '
        'sizes [3, 0, 0]\n')
    assert read_mapping_log(str(tmp_path)) == [
        dict(iter=0, accepted=True, sizes=[1, 2, 0], cos_mean=0.412,
             cos_max=0.903),
        dict(iter=46, accepted=False, sizes=[1, 2, 0], cos_mean=None,
             cos_max=None),
        dict(iter=92, accepted=True, sizes=[3, 0, 0], cos_mean=None,
             cos_max=None)]
