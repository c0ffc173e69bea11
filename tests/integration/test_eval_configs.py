"""Single-scale (slide, as SETR) and multi-scale + flip (``--tta``, mmseg's
ratios 0.5-1.75) mIoU for every dataset config, through ``tools/test.py``,
checked on the toy data; the per-class IoU table is printed as mmseg does.

For each dataset family (ADE20K, PASCAL Context 60, PASCAL Context 59) a
small config in tmp_path ``_base_``-inherits the real DA-VPT config and
overrides only what cannot run here: the dataset (toy data in ADE20K's
layout, 3 validation images), the model size (a 4-layer 64-dim ViT with the
same prompt layout and the same SETR-PUP heads, 8 classes) and the slide
window (64, stride 42), and the test Resize scale (/4). The test mode, the
pipelines' structure, the tta_pipeline and the evaluator are the config's.
A checkpoint of that tiny model is written to tmp_path.
"""
import copy
import re
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmseg.registry import MODELS

import davpt_seg  # noqa: F401  (registration)
from davpt_seg.datasets import generate_toy_dataset
from helpers import CONFIG_DIR
from helpers.processes import run_python

FAMILIES = {
    'ade20k': 'davpt_setr_ade20k.py',
    'pascal-context': 'davpt_setr_pascal-context.py',
    'pascal-context-59': 'davpt_setr_pascal-context-59.py',
}
TOY_CLASSES = [f'toy_{i}' for i in range(8)]
NUM_IMAGES = 3
EMBED = 64
CROP = (64, 64)


@pytest.fixture(scope='module')
def toy_root(tmp_path_factory):
    root = tmp_path_factory.mktemp('toy_ade')
    generate_toy_dataset(root, num_train=2, num_val=NUM_IMAGES, seed=0)
    return root


def _small(pipeline):
    """The pipeline with its fixed Resize scales divided by 4 (same
    transforms, same order; scale_factor ratios are left alone)."""
    out = copy.deepcopy(pipeline)
    for t in out:
        if t['type'] == 'Resize' and 'scale' in t:
            t['scale'] = tuple(s // 4 for s in t['scale'])
    return out


def _overrides(cfg: Config, toy_root: Path) -> dict:
    model = cfg.model.to_dict()
    backbone = dict(
        img_size=CROP, embed_dims=EMBED, num_layers=4, num_heads=4,
        mlp_ratio=2, out_indices=(0, 1, 2, 3), num_prompts=4,
        num_proxy_prompts=4, guided_layers=[2], init_cfg=None)
    aux = model['auxiliary_head']
    aux = [dict(h, in_channels=EMBED, channels=32, num_classes=8)
           for h in (aux if isinstance(aux, list) else [aux])]
    test_cfg = dict(model['test_cfg'], crop_size=CROP, stride=(42, 42))
    pipeline = _small(cfg.test_dataloader.dataset.pipeline)
    return dict(
        model=dict(
            data_preprocessor=dict(size=CROP),
            backbone=backbone,
            decode_head=dict(in_channels=EMBED, channels=32, num_classes=8),
            auxiliary_head=aux,
            test_cfg=test_cfg),
        test_pipeline=pipeline,
        test_dataloader=dict(
            num_workers=0,
            persistent_workers=False,
            dataset=dict(
                type='ToyADE20KDataset',
                data_root=str(toy_root),
                data_prefix=dict(
                    img_path='images/validation',
                    seg_map_path='annotations/validation'),
                ann_file='',
                indices=NUM_IMAGES,
                pipeline=pipeline)))


def _write_config(family: str, toy_root: Path, tmp_path: Path) -> Path:
    base = CONFIG_DIR / FAMILIES[family]
    over = _overrides(Config.fromfile(str(base)), toy_root)
    path = tmp_path / f'toy_{family}.py'
    lines = [f'_base_ = [{str(base)!r}]']
    lines += [f'{k} = {v!r}' for k, v in over.items()]
    path.write_text('\n'.join(lines) + '\n')
    return path


def _checkpoint(cfg: Config, tmp_path: Path) -> Path:
    torch.manual_seed(0)
    model = MODELS.build(copy.deepcopy(cfg.model))
    model.init_weights()
    path = tmp_path / 'tiny.pth'
    torch.save(dict(state_dict=model.state_dict(), meta=dict()), path)
    return path


def _run_test(config: Path, ckpt: Path, work_dir: Path, tta: bool) -> str:
    return run_python('tools/test.py', config, ckpt, '--work-dir', work_dir,
                      *(['--tta'] if tta else []))


def _check_report(out: str):
    # The per-class table (mmseg's IoUMetric, one row per class).
    assert 'per class results:' in out, out[-3000:]
    table = out[out.index('per class results:'):]
    assert re.search(r'\|\s*Class\s*\|\s*IoU\s*\|\s*Acc\s*\|', table), table
    for name in TOY_CLASSES:
        assert re.search(rf'\|\s*{name}\s*\|', table), (name, table[:2000])
    # The summary metrics of the test loop.
    m = re.search(rf'Iter\(test\) \[{NUM_IMAGES}/{NUM_IMAGES}\].*'
                  r'mIoU: (\d+\.\d+)', out)
    assert m, out[-3000:]
    return float(m.group(1))


@pytest.mark.slow
@pytest.mark.parametrize('family', sorted(FAMILIES))
def test_single_and_multi_scale_miou(family, toy_root, tmp_path):
    config = _write_config(family, toy_root, tmp_path)
    cfg = Config.fromfile(str(config))
    real = Config.fromfile(str(CONFIG_DIR / FAMILIES[family]))
    # Kept from the real config: slide inference, evaluator, pipelines'
    # structure, mmseg's TTA (ratios 0.5-1.75 + flip).
    assert cfg.model.test_cfg.mode == real.model.test_cfg.mode == 'slide'
    assert cfg.test_evaluator == real.test_evaluator
    assert cfg.test_evaluator.iou_metrics == ['mIoU']
    types = lambda p: [t['type'] for t in p]  # noqa: E731
    assert types(cfg.test_dataloader.dataset.pipeline) == \
        types(real.test_dataloader.dataset.pipeline)
    assert cfg.tta_pipeline == real.tta_pipeline
    ratios = [t['scale_factor'] for t in cfg.tta_pipeline[1]['transforms'][0]]
    assert ratios == [0.5, 0.75, 1.0, 1.25, 1.5, 1.75]
    assert [t['prob'] for t in cfg.tta_pipeline[1]['transforms'][1]] == \
        [0., 1.]
    ckpt = _checkpoint(cfg, tmp_path)

    results = {}
    for tta in (False, True):
        out = _run_test(config, ckpt, tmp_path / f'work_{int(tta)}', tta)
        results['ms+flip' if tta else 'ss'] = _check_report(out)
        assert 'Load checkpoint from' in out
        assert 'do not match exactly' not in out
        # --tta wrapped the segmentor in SegTTAModel (the runner prints the
        # config it runs: `model = dict(module=dict(...), type=...)`).
        wrapped = re.search(
            r"^model = dict\((?:\n\s+_scope_='mmseg',)?\n\s+module=dict\(",
            out, re.M)
        assert bool(wrapped) == tta
        print(f'== {family} {"--tta" if tta else "single-scale"}:\n' +
              out[out.index('per class results:'):][:1500])
    print(family, results)
    assert all(0. <= v <= 100. for v in results.values())
