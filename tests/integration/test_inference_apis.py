"""mmseg's inference APIs on the shipped configs: ``init_model`` +
``inference_model`` on every config (the ViT-L ones at a 96x128 image, the
test ``Resize`` shrunk to 64 px: the models themselves are as configured),
and on the toy config ``MMSegInferencer``, ``show_result_pyplot`` and
``demo/image_demo.py`` with full and prompt-only checkpoints.

mmseg strips only ``type='LoadAnnotations'`` from the test pipeline; the toy
config loads annotations with ``CheckedLoadAnnotations``, which must pass
annotation-less samples through."""
import copy
import subprocess
import sys
from pathlib import Path

import mmcv
import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmseg.apis import (MMSegInferencer, inference_model, init_model,
                        show_result_pyplot)
from mmseg.registry import MODELS

import davpt_seg  # noqa: F401
from davpt_seg.datasets import ToyADE20KDataset
from davpt_seg.datasets.toy_data import synthesize_toy_sample
from davpt_seg.weights import make_prompt_only
from helpers import CONFIG_DIR, ROOT, TOY_CONFIG
from helpers.processes import subprocess_env
CONFIGS = sorted(
    str(p.relative_to(CONFIG_DIR)) for p in CONFIG_DIR.rglob('*.py')
    if '_base_' not in p.parts)
H, W = 96, 128


def shrink_test_resize(cfg: Config, scale=(64, 64)) -> Config:
    """The config with every test-pipeline ``Resize`` at ``scale`` (the
    pipeline ``inference_model`` and ``MMSegInferencer`` reuse)."""
    for pipeline in (cfg.test_pipeline, cfg.test_dataloader.dataset.pipeline):
        for t in pipeline:
            if t['type'] == 'Resize':
                t['scale'] = scale
    return cfg


@pytest.fixture(scope='module')
def image(tmp_path_factory) -> Path:
    """A non-square toy image (BGR jpg on disk, as mmcv writes it)."""
    rgb, _ = synthesize_toy_sample(np.random.default_rng(3), 128)
    path = tmp_path_factory.mktemp('img') / 'toy.jpg'
    mmcv.imwrite(np.ascontiguousarray(rgb[:H, :, ::-1]), str(path))
    return path


@pytest.mark.parametrize('name', CONFIGS)
def test_inference_model_on_every_config(name, image):
    cfg = shrink_test_resize(Config.fromfile(str(CONFIG_DIR / name)))
    torch.manual_seed(0)
    model = init_model(cfg, device='cpu')
    result = inference_model(model, str(image))
    pred = result.pred_sem_seg.data
    assert pred.shape == (1, H, W)
    assert 0 <= int(pred.min()) and \
        int(pred.max()) < model.decode_head.num_classes
    assert 'gt_sem_seg' not in result


@pytest.fixture(scope='module')
def toy(tmp_path_factory, toy_vit_path):
    """The toy config on a "pretrained" toy ViT, a "trained" model (random
    perturbation of the trainable tensors and BN statistics) saved as a full
    and a prompt-only checkpoint, both with the dataset's classes and
    palette in ``meta``."""
    tmp = tmp_path_factory.mktemp('toy_infer')
    cfg_path = tmp / 'toy.py'
    cfg_path.write_text(
        f"_base_ = [{str(TOY_CONFIG)!r}]\n"
        "model = dict(backbone=dict(init_cfg=dict(_delete_=True, "
        "type='Pretrained', "
        f"checkpoint={str(toy_vit_path)!r})))\n")
    init_default_scope('mmseg')
    torch.manual_seed(0)
    model = MODELS.build(copy.deepcopy(Config.fromfile(str(cfg_path)).model))
    model.init_weights()
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.2)
        model.decode_head.up_convs[0][0].bn.running_mean.normal_()
    meta = dict(dataset_meta=copy.deepcopy(ToyADE20KDataset.METAINFO))
    torch.save(dict(state_dict=model.state_dict(), meta=meta),
               tmp / 'full.pth')
    torch.save(make_prompt_only(
        dict(state_dict=model.state_dict(), meta=copy.deepcopy(meta)),
        model), tmp / 'prompts.pth')
    return dict(tmp=tmp, cfg=cfg_path, full=tmp / 'full.pth',
                prompts=tmp / 'prompts.pth')


def _predict(cfg, ckpt, img):
    model = init_model(str(cfg), str(ckpt), device='cpu')
    return model, inference_model(model, img)


def test_toy_full_and_prompt_only_checkpoints(toy, image):
    """Path, array and batch inputs; both checkpoints predict the same.
    (Paths first: an array input switches mmseg's stored test pipeline to
    ``LoadImageFromNDArray`` for good.)"""
    model, full = _predict(toy['cfg'], toy['full'], str(image))
    _, small = _predict(toy['cfg'], toy['prompts'], str(image))
    assert torch.equal(full.pred_sem_seg.data, small.pred_sem_seg.data)
    assert model.dataset_meta['classes'] == \
        ToyADE20KDataset.METAINFO['classes']
    assert len(full.pred_sem_seg.data.unique()) > 1
    array = mmcv.imread(str(image))
    from_array = inference_model(model, array)
    assert torch.equal(from_array.pred_sem_seg.data, full.pred_sem_seg.data)
    batch = inference_model(model, [array, array.copy()])
    assert len(batch) == 2
    for r in batch:
        assert torch.equal(r.pred_sem_seg.data, full.pred_sem_seg.data)


def test_toy_mmseg_inferencer(toy, image, tmp_path):
    _, ref = _predict(toy['cfg'], toy['full'], str(image))
    inferencer = MMSegInferencer(
        model=str(toy['cfg']), weights=str(toy['prompts']), device='cpu')
    out = inferencer(str(image), out_dir=str(tmp_path), return_vis=True)
    assert np.array_equal(out['predictions'],
                          ref.pred_sem_seg.data[0].numpy())
    assert out['visualization'].shape == (H, W, 3)
    (vis, ) = (tmp_path / 'vis').iterdir()  # named as the input image
    (pred, ) = (tmp_path / 'pred').glob('*.png')
    assert mmcv.imread(str(vis)).shape == (H, W, 3)
    assert np.array_equal(mmcv.imread(str(pred), flag='unchanged'),
                          out['predictions'])


def test_toy_show_result_pyplot(toy, image, tmp_path):
    model, result = _predict(toy['cfg'], toy['prompts'], str(image))
    out_file = tmp_path / 'shown.png'
    drawn = show_result_pyplot(model, str(image), result, show=False,
                               out_file=str(out_file))
    assert drawn.shape == (H, W, 3)
    written = mmcv.imread(str(out_file))
    assert written.shape == (H, W, 3)
    # The prediction is painted over the image.
    assert not np.array_equal(written, mmcv.imread(str(image)))


def test_demo_writes_coloured_prediction(toy, image, tmp_path):
    out_file = tmp_path / 'demo.png'
    proc = subprocess.run(
        [sys.executable, str(ROOT / 'demo' / 'image_demo.py'), str(image),
         str(toy['cfg']), str(toy['prompts']), '--out-file', str(out_file),
         '--device', 'cpu', '--opacity', '1'],
        cwd=tmp_path, env=subprocess_env(), capture_output=True, text=True,
        timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert f'wrote {out_file}' in proc.stdout
    assert 'toy_' in proc.stdout and '%' in proc.stdout
    # Opacity 1: every pixel has the palette colour of its predicted class.
    _, ref = _predict(toy['cfg'], toy['full'], str(image))
    pred = ref.pred_sem_seg.data[0].numpy()
    rgb = mmcv.imread(str(out_file), channel_order='rgb')
    assert rgb.shape == (H, W, 3)
    palette = np.array(ToyADE20KDataset.METAINFO['palette'], dtype=np.uint8)
    assert np.array_equal(rgb, palette[pred])


def test_checked_load_annotations_without_annotation_key():
    """No ``seg_map_path`` key (mmseg's inference samples): passed through
    without ``gt_seg_map``. A key of None (a dataset without annotations
    configured) is still an error naming the image."""
    from davpt_seg.datasets import CheckedLoadAnnotations
    t = CheckedLoadAnnotations(reduce_zero_label=True, num_classes=8)
    results = t(dict(img_path='a.jpg', img=np.zeros((4, 4, 3), np.uint8)))
    assert 'gt_seg_map' not in results
    with pytest.raises(OSError, match=r'annotation None \(image a\.jpg\)'):
        t(dict(img_path='a.jpg', seg_map_path=None, reduce_zero_label=True,
               seg_fields=[]))
