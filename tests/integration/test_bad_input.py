"""Bad input on the toy config: a clear error naming the culprit, or a
documented safe skip -- never NaN, never a silent wrong result.

The runs call tools/train.py / tools/test.py's ``main`` in this process
(short runs on a 16-image toy set); each writes its own config file, so
every Runner gets its own experiment name.

Policies tested here:

* crops / batches with no valid class (all ignore, all background): skipped
  by the metric losses (exact zero, finite), training goes on; a training set
  with no valid class at all is an error at the initial mapping pass;
* label values outside ``0..num_classes-1`` (not the ignore index):
  ``ValueError`` naming the annotation -- from ``CheckedLoadAnnotations``
  (toy config) in training and testing, and from DAVPTHook before the forward
  pass with mmseg's plain ``LoadAnnotations``;
* corrupt / truncated / missing files: an error naming the file; an image
  missing from a directory-scanned dataset is not part of it (mmseg lists
  the image directory), with an ``ann_file`` split list it is an error;
* bad prompt options and a prompt tensor that can never get a gradient:
  ``ValueError`` when the model / hook is built;
* a pretrained file of another architecture, a checkpoint whose shapes
  (e.g. ``num_classes``) differ from the config: ``RuntimeError``;
* NaN/Inf in a metric loss: fail fast (``FloatingPointError`` naming the
  loss and the iteration), no skip.
"""
import json
import math
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from davpt_seg.datasets import generate_toy_dataset
from helpers.toy_run import read_scalars, toy_run_config
from tools.test import main as run_test_tool
from tools.train import main as run_train_tool

ITERS = 4


@pytest.fixture(scope='module')
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp('bad_input') / 'toy_ade'
    generate_toy_dataset(root, num_train=16, num_val=4)
    return root


@pytest.fixture
def data(toy, tmp_path):
    """A private copy of the toy data to break."""
    root = tmp_path / 'toy_ade'
    shutil.copytree(toy, root)
    return root


def write_cfg(tmp_path, name, data_root, extra='', loader='', dataset=''):
    """A config file (a unique name: a unique Runner experiment name) on
    ``data_root``; ``loader`` / ``dataset`` are extra ``key=value, `` items
    of ``train_dataloader`` / its ``dataset``."""
    cfg = tmp_path / f'bad_{name}_{tmp_path.name}.py'
    cfg.write_text(toy_run_config(
        data_root, ITERS, checkpoint_interval=ITERS, val_interval=ITERS,
        probes=True, loader=loader, dataset=dataset, extra=f"""\
log_processor = dict(by_epoch=False, window_size=1)
# mmengine keeps one visualizer per name and process: a run of its own
visualizer = dict(name='vis_{name}_{tmp_path.name}')
{extra}
"""))
    return cfg


def train(cfg, work, *args):
    run_train_tool([str(cfg), '--work-dir', str(work), *map(str, args)])


def ann(root, i, split='training'):
    return root / 'annotations' / split / f'toy_{i:05d}.png'


def img(root, i, split='training'):
    return root / 'images' / split / f'toy_{i:05d}.jpg'


def fill_annotation(path, value):
    label = np.asarray(Image.open(path))
    Image.fromarray(np.full_like(label, value)).save(path)


@pytest.fixture(scope='module')
def trained(toy, tmp_path_factory):
    """A 2-iteration checkpoint of the toy config (8 classes)."""
    tmp = tmp_path_factory.mktemp('bad_input_ckpt')
    cfg = write_cfg(tmp, 'trained', toy, """
train_cfg = dict(max_iters=2, val_interval=100)
default_hooks = dict(checkpoint=dict(interval=2))
""")
    train(cfg, tmp / 'work')
    return tmp / 'work' / 'iter_2.pth'


# ------------------------------------------------- no valid class anywhere
@pytest.mark.parametrize('kind', ['ignore', 'background'])
def test_crops_and_batches_without_a_valid_class(kind, data, tmp_path):
    """Images 4-7 are all ignore (disk 0) or all background (class 0 with
    ``background_ids=(0,)``); unshuffled, iteration 2's batch is exactly
    them: no valid class in the whole batch."""
    for i in range(4, 8):
        fill_annotation(ann(data, i), 0 if kind == 'ignore' else 1)
    background = '(0, )' if kind == 'background' else '()'
    cfg = write_cfg(tmp_path, f'empty_{kind}', data, f"""
custom_hooks = [dict(type='DAVPTHook', background_ids={background})]
""", loader="sampler=dict(type='InfiniteSampler', shuffle=False), ")
    train(cfg, tmp_path / 'work')
    rows = [r for r in read_scalars(tmp_path / 'work') if 'loss' in r]
    assert [r['step'] for r in rows] == list(range(1, ITERS + 1))
    for r in rows:
        for k, v in r.items():
            if 'loss' in k:
                assert math.isfinite(v), (r['step'], k, v)
    # the batch without a valid class: metric losses skipped (exact zero),
    # segmentation losses as usual
    assert rows[1]['loss_davpt_token'] == 0.
    assert rows[1]['loss_davpt_cls'] == 0.
    # cross-entropy: all-ignore pixels contribute nothing, background does
    if kind == 'ignore':
        assert rows[1]['decode.loss_ce'] == 0.
    else:
        assert rows[1]['decode.loss_ce'] > 0.
    assert all(r['loss_davpt_token'] > 0 for r in rows if r['step'] != 2)


def test_no_valid_class_in_the_whole_training_set_is_an_error(data,
                                                              tmp_path):
    for i in range(16):
        fill_annotation(ann(data, i), 0)
    cfg = write_cfg(tmp_path, 'all_ignore', data)
    with pytest.raises(RuntimeError,
                       match='initial class->prompt mapping could not be'):
        train(cfg, tmp_path / 'work')


# ---------------------------------------------- labels >= num_classes
def _add_bad_label(path, value=20):
    """Disk 20 -> class 19 after reduce_zero_label, in a central cross that
    every 64x64 crop of the 128x128 image meets."""
    label = np.asarray(Image.open(path)).copy()
    label[60:68] = value
    label[:, 60:68] = value
    Image.fromarray(label).save(path)


def test_label_ids_beyond_num_classes_in_training(data, tmp_path):
    _add_bad_label(ann(data, 2))
    cfg = write_cfg(tmp_path, 'bad_label', data)
    with pytest.raises(ValueError,
                       match=r'toy_00002\.png: label values \[19\] are '
                       r'outside 0\.\.7'):
        train(cfg, tmp_path / 'work')


def test_label_ids_beyond_num_classes_with_mmseg_loader(data, tmp_path):
    """mmseg's plain LoadAnnotations lets the label through; DAVPTHook stops
    it before the forward pass (where cross-entropy would fail without a
    file name). The initial pass reads a clean copy so that the training
    iteration is what meets the bad file."""
    clean = tmp_path / 'clean'
    shutil.copytree(data, clean)
    _add_bad_label(ann(data, 0))
    pipeline = """[
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomCrop', crop_size=(64, 64)),
    dict(type='PackSegInputs')]"""
    cfg = write_cfg(tmp_path, 'bad_label_mmseg', data, f"""
custom_hooks = [dict(type='DAVPTHook', init_dataloader=dict(dataset=dict(
    type='ToyADE20KDataset', data_root={str(clean)!r},
    data_prefix=dict(img_path='images/training',
                     seg_map_path='annotations/training'),
    pipeline={pipeline})))]
""", loader="sampler=dict(type='InfiniteSampler', shuffle=False), ",
                    dataset=f'pipeline={pipeline}, ')
    with pytest.raises(ValueError,
                       match=r'toy_00000\.png: label values \[19\]'):
        train(cfg, tmp_path / 'work')
    log = next((tmp_path / 'work').glob('*/*.log')).read_text()
    assert 'DA-VPT initial mapping' in log  # it failed in training


def test_label_ids_beyond_num_classes_in_testing(data, trained, tmp_path):
    _add_bad_label(ann(data, 1, 'validation'))
    cfg = write_cfg(tmp_path, 'bad_label_test', data)
    with pytest.raises(ValueError, match=r'toy_00001\.png: label values'):
        run_test_tool([str(cfg), str(trained), '--work-dir',
                   str(tmp_path / 'test')])


# ------------------------------------------- corrupt or missing files
def _garbage(path):
    path.write_bytes(b'not an image at all')


def _truncate(path):
    path.write_bytes(path.read_bytes()[:300])


@pytest.mark.parametrize('case, error, match', [
    ('corrupt_image', AssertionError, r'failed to load image: .*toy_00001\.'
     'jpg'),
    ('truncated_image', AssertionError, r'failed to load image: .*'
     r'toy_00001\.jpg'),
    ('corrupt_annotation', OSError, r'cannot read the annotation .*'
     r'toy_00001\.png'),
    ('truncated_annotation', OSError, r'cannot read the annotation .*'
     r'toy_00001\.png'),
    ('missing_annotation', FileNotFoundError, r'annotation file not found: '
     r'.*toy_00001\.png'),
])
def test_corrupt_or_missing_file_is_named(case, error, match, data,
                                          tmp_path):
    target = img(data, 1) if 'image' in case else ann(data, 1)
    if case.startswith('corrupt'):
        _garbage(target)
    elif case.startswith('truncated'):
        _truncate(target)
    else:
        target.unlink()
    cfg = write_cfg(tmp_path, case, data)
    with pytest.raises(error, match=match):
        train(cfg, tmp_path / 'work')


def test_annotation_of_another_size_is_an_error(data, tmp_path):
    path = ann(data, 3)
    label = np.asarray(Image.open(path))
    Image.fromarray(label[:100]).save(path)
    cfg = write_cfg(tmp_path, 'size', data)
    with pytest.raises(ValueError,
                       match=r'toy_00003\.png is 100x128 but its image'):
        train(cfg, tmp_path / 'work')


def test_missing_image(data, tmp_path):
    """Directory-scanned dataset (the toy/ADE20K layout): an image that is
    not there is not part of the dataset (its annotation is unused), which
    is safe; with an ``ann_file`` split list it is an error naming it."""
    from mmengine.registry import init_default_scope
    from mmseg.registry import DATASETS
    img(data, 5).unlink()
    init_default_scope('mmseg')
    prefix = dict(img_path='images/training',
                  seg_map_path='annotations/training')
    ds = DATASETS.build(dict(type='ToyADE20KDataset', data_root=str(data),
                             data_prefix=prefix, pipeline=[]))
    assert len(ds) == 15
    assert not any('toy_00005' in d['img_path'] for d in ds.data_list)
    split = data / 'train.txt'
    split.write_text(''.join(f'toy_{i:05d}\n' for i in range(16)))
    cfg = write_cfg(tmp_path, 'missing_image', data,
                    dataset=f'ann_file={str(split)!r}, ')
    with pytest.raises(FileNotFoundError, match=r'toy_00005\.jpg'):
        train(cfg, tmp_path / 'work')


# ---------------------------------------------------- bad model options
@pytest.mark.parametrize('options, match', [
    (['model.backbone.num_proxy_prompts=9'],
     r'num_proxy_prompts \(9\) must be between 2 and num_classes \(8\)'),
    (['model.backbone.num_proxy_prompts=1'],
     r'num_proxy_prompts \(1\) must be between 2 and num_classes'),
    (['model.backbone.num_proxy_prompts=0'],
     'guided_layers need num_proxy_prompts >= 1'),
    (['model.backbone.num_proxy_prompts=-2'],
     'num_proxy_prompts must be an int >= 0'),
    (['model.backbone.num_prompts=-1'], 'num_prompts must be an int >= 0'),
    (['model.backbone.guided_layers=[4]'],
     r'guided_layers \[4\] are outside the model depth'),
    (['model.backbone.guided_layers=[-5]'],
     r'guided_layers \[-5\] are outside the model depth'),
    (['model.backbone.guided_layers=[2,2]'], 'lists a layer twice'),
    (['model.backbone.guided_layers=[]'],
     'DAVPTHook needs guided layers'),
    (['custom_hooks.0.background_ids=[9]'],
     r'background_ids \[9\] are not class ids 0\.\.7'),
    # every unguided prompt after the last output layer: no gradient ever
    (['model.backbone.out_indices=[1]', 'model.backbone.guided_layers=[0,1]',
      'model.decode_head.in_index=0'],
     r'prompts of layers \[2, 3\] .* can never get a gradient'),
])
def test_bad_prompt_options(options, match, toy, tmp_path):
    cfg = write_cfg(tmp_path, 'options', toy)
    with pytest.raises(ValueError, match=match):
        train(cfg, tmp_path / 'work', '--cfg-options', *options)


# ------------------------------------------- checkpoints that do not fit
def _pretrained_cfg(tmp_path, toy, state):
    path = tmp_path / 'pretrained.pth'
    torch.save(state, path)
    return write_cfg(tmp_path, 'pretrained', toy, f"""
model = dict(backbone=dict(init_cfg=dict(
    _delete_=True, type='Pretrained', checkpoint={str(path)!r})))
""")


def test_pretrained_checkpoint_of_another_architecture(toy, tmp_path):
    resnet = {'conv1.weight': torch.zeros(64, 3, 7, 7),
              'bn1.weight': torch.ones(64),
              'layer1.0.conv1.weight': torch.zeros(64, 64, 1, 1),
              'fc.weight': torch.zeros(1000, 2048)}
    cfg = _pretrained_cfg(tmp_path, toy, resnet)
    with pytest.raises(RuntimeError,
                       match='does not match PromptedVisionTransformer'):
        train(cfg, tmp_path / 'work')


def test_pretrained_vit_of_another_width(toy, tmp_path):
    from mmseg.models.backbones import VisionTransformer
    vit = VisionTransformer(img_size=(64, 64), patch_size=8, embed_dims=64,
                            num_layers=4, num_heads=4, mlp_ratio=2,
                            patch_bias=True)
    cfg = _pretrained_cfg(tmp_path, toy, vit.state_dict())
    with pytest.raises(RuntimeError, match=r'shape mismatches: .*\(64'):
        train(cfg, tmp_path / 'work')


SIX = ['model.decode_head.num_classes=6',
       'model.auxiliary_head.0.num_classes=6']
CONV_SEG = (r'decode_head\.conv_seg\.weight: checkpoint \(8, 32, 1, 1\) vs '
            r'model \(6, 32, 1, 1\)')


def test_num_classes_mismatch_in_testing(toy, trained, tmp_path):
    cfg = write_cfg(tmp_path, 'six', toy)
    with pytest.raises(RuntimeError, match=CONV_SEG) as e:
        run_test_tool([str(cfg), str(trained), '--work-dir',
                   str(tmp_path / 'test'), '--cfg-options', *SIX])
    assert 'number of classes differs' in str(e.value)
    assert str(trained) in str(e.value)


def test_num_classes_mismatch_without_davpt(toy, trained, tmp_path):
    """A plain-VPT config (no mapping, no DAVPTHook) gets the same check."""
    cfg = write_cfg(tmp_path, 'six_vpt', toy, """
custom_hooks = []
model = dict(backbone=dict(guided_layers=[]))
""")
    with pytest.raises(RuntimeError, match=CONV_SEG):
        run_test_tool([str(cfg), str(trained), '--work-dir',
                   str(tmp_path / 'test'), '--cfg-options', *SIX])


@pytest.mark.parametrize('how', ['--resume', 'load_from'])
def test_num_classes_mismatch_when_training_from_a_checkpoint(
        how, toy, trained, tmp_path):
    cfg = write_cfg(tmp_path, f'six_{how[-4:]}', toy)
    args = ['--resume', trained] if how == '--resume' else []
    options = SIX + ([f'load_from={trained}'] if how == 'load_from' else [])
    with pytest.raises(RuntimeError, match=CONV_SEG):
        train(cfg, tmp_path / 'work', *args, '--cfg-options', *options)


def test_matching_checkpoint_loads_and_tests(toy, trained, tmp_path):
    cfg = write_cfg(tmp_path, 'eight', toy)
    run_test_tool([str(cfg), str(trained), '--work-dir',
                   str(tmp_path / 'test')])
    [path] = list((tmp_path / 'test').glob('*/*.json'))
    assert math.isfinite(json.loads(path.read_text())['mIoU'])


# ----------------------------------------------------- NaN / Inf losses
@pytest.mark.parametrize('feature, value, loss', [
    ('cls_query', 'nan', 'loss_davpt_cls'),
    ('prompt_output', 'inf', 'loss_davpt_token'),
])
def test_nonfinite_metric_loss_stops_training(feature, value, loss, toy,
                                              tmp_path):
    cfg = write_cfg(tmp_path, f'nan_{feature}', toy, f"""
custom_hooks = [
    dict(type='DAVPTHook'),
    dict(type='NaNInjectionHook', at=3, feature={feature!r},
         value=float({value!r})),
]
""")
    with pytest.raises(FloatingPointError,
                       match=rf'{loss} is (nan|inf) at iteration 3;'):
        train(cfg, tmp_path / 'work')
    rows = [r for r in read_scalars(tmp_path / 'work') if 'loss' in r]
    assert [r['step'] for r in rows] == [1, 2]  # stopped at once
    assert all(math.isfinite(r['loss']) for r in rows)
