"""Tests for the generated toy dataset and ``ToyADE20KDataset``."""
import json

import cv2
import numpy as np
import pytest
from mmengine.config import Config
from mmengine.registry import init_default_scope
from PIL import Image

from davpt_seg.datasets import ToyADE20KDataset, generate_toy_dataset
from davpt_seg.datasets.toy_data import (META_FILE, TOY_PALETTE,
                                         synthesize_toy_sample)
from mmseg.registry import DATASETS
from helpers import TOY_CONFIG

NUM_CLASSES = 8
SPLITS = dict(training=96, validation=24)


@pytest.fixture(scope='module')
def toy_root(tmp_path_factory):
    """The default toy dataset, generated once for the module."""
    root = tmp_path_factory.mktemp('toy_ade')
    info = generate_toy_dataset(root)
    assert info['generated']
    return root


def _label_paths(root, split):
    return sorted((root / 'annotations' / split).glob('toy_*.png'))


def _read_label(path):
    return cv2.imread(str(path), cv2.IMREAD_UNCHANGED)


def _read_pairs(root, split):
    """``(rgb image, disk label)`` pairs of a split."""
    pairs = []
    for path in _label_paths(root, split):
        img_path = root / 'images' / split / f'{path.stem}.jpg'
        img = cv2.imread(str(img_path))[..., ::-1]
        pairs.append((img, _read_label(path)))
    return pairs


def test_layout_and_summary(tmp_path):
    info = generate_toy_dataset(
        tmp_path, num_train=5, num_val=3, img_size=64, seed=1)
    assert info == dict(
        root=str(tmp_path),
        num_train=5,
        num_val=3,
        img_size=64,
        num_classes=NUM_CLASSES,
        seed=1,
        classes=tuple(f'toy_{i}' for i in range(NUM_CLASSES)),
        generated=True)
    for split, num in (('training', 5), ('validation', 3)):
        imgs = sorted((tmp_path / 'images' / split).iterdir())
        anns = sorted((tmp_path / 'annotations' / split).iterdir())
        names = [f'toy_{i:05d}.jpg' for i in range(num)]
        assert [p.name for p in imgs] == names
        assert [p.stem for p in anns] == [p.stem for p in imgs]
        with Image.open(imgs[0]) as img:
            assert (img.format, img.mode) == ('JPEG', 'RGB')
            assert img.size == (64, 64)
        with Image.open(anns[0]) as ann:
            assert (ann.format, ann.mode) == ('PNG', 'L')
            assert ann.size == (64, 64)
    meta = json.loads((tmp_path / META_FILE).read_text())
    assert meta['num_train'] == 5 and meta['seed'] == 1


def test_deterministic(tmp_path):
    kwargs = dict(num_train=6, num_val=2, img_size=64)
    generate_toy_dataset(tmp_path / 'a', seed=3, **kwargs)
    generate_toy_dataset(tmp_path / 'b', seed=3, **kwargs)
    generate_toy_dataset(tmp_path / 'c', seed=4, **kwargs)
    for split in ('training', 'validation'):
        a, b, c = (_label_paths(tmp_path / name, split) for name in 'abc')
        assert len(a) == len(b) == len(c) > 0
        assert [p.read_bytes() for p in a] == [p.read_bytes() for p in b]
        assert [p.read_bytes() for p in a] != [p.read_bytes() for p in c]
    # The rendering itself is a pure function of the generator state.
    img1, lab1 = synthesize_toy_sample(np.random.default_rng(7), 64)
    img2, lab2 = synthesize_toy_sample(np.random.default_rng(7), 64)
    np.testing.assert_array_equal(img1, img2)
    np.testing.assert_array_equal(lab1, lab2)


def test_annotation_values(toy_root):
    num_multi, num_total, counts = 0, 0, np.zeros(NUM_CLASSES + 1)
    for split, num in SPLITS.items():
        paths = _label_paths(toy_root, split)
        assert len(paths) == num
        for path in paths:
            label = _read_label(path)
            assert label.dtype == np.uint8 and label.shape == (128, 128)
            assert label.max() <= NUM_CLASSES
            counts += np.bincount(label.ravel(), minlength=NUM_CLASSES + 1)
            num_multi += len(np.setdiff1d(np.unique(label), [0])) >= 2
            num_total += 1
    assert num_multi >= 0.8 * num_total
    # A small fraction of "other" pixels, and every class is well represented.
    frac = counts / counts.sum()
    assert 0.005 < frac[0] < 0.15
    assert (frac[1:] > 0.5 / NUM_CLASSES * (1 - frac[0])).all()


def test_idempotent(tmp_path):
    kwargs = dict(num_train=4, num_val=2, img_size=64)
    assert generate_toy_dataset(tmp_path, **kwargs)['generated']
    first = _label_paths(tmp_path, 'training')[0]
    content, mtime = first.read_bytes(), first.stat().st_mtime_ns

    # A matching dataset is reused untouched.
    assert not generate_toy_dataset(tmp_path, **kwargs)['generated']
    assert first.stat().st_mtime_ns == mtime

    # An incomplete one is regenerated.
    first.unlink()
    assert generate_toy_dataset(tmp_path, **kwargs)['generated']
    assert first.read_bytes() == content

    # overwrite=True always regenerates, to identical content.
    assert generate_toy_dataset(
        tmp_path, overwrite=True, **kwargs)['generated']
    assert first.read_bytes() == content

    # Other parameters regenerate and remove stale files; an image depends
    # only on (seed, split, index), not on the split sizes.
    kwargs['num_train'] = 2
    assert generate_toy_dataset(tmp_path, **kwargs)['generated']
    assert len(_label_paths(tmp_path, 'training')) == 2
    assert len(list((tmp_path / 'images' / 'training').iterdir())) == 2
    assert first.read_bytes() == content


def test_invalid_arguments(tmp_path):
    with pytest.raises(ValueError, match=r'num_classes must be in \[1, 254\]'):
        generate_toy_dataset(tmp_path, num_classes=255)
    with pytest.raises(ValueError, match='seed must be non-negative'):
        generate_toy_dataset(tmp_path, seed=-1)


def _build(root, split, pipeline, **kwargs):
    init_default_scope('mmseg')
    return DATASETS.build(
        dict(
            type='ToyADE20KDataset',
            data_root=str(root),
            data_prefix=dict(
                img_path=f'images/{split}',
                seg_map_path=f'annotations/{split}'),
            pipeline=pipeline,
            **kwargs))


@pytest.mark.filterwarnings('ignore:`reduce_zero_label` will be deprecated')
def test_dataset_train_pipeline(toy_root):
    """The toy config's training pipeline (random resize, crop, flip,
    photometric distortion) on the generated data, resized around twice the
    config's scale so that no crop is smaller than crop_size (the config
    leaves that padding to the data preprocessor)."""
    toy = Config.fromfile(str(TOY_CONFIG))
    crop_size = tuple(toy.crop_size)
    pipeline = [
        dict(step, scale=(256, 128)) if step.type == 'RandomResize' else step
        for step in toy.train_pipeline
    ]
    dataset = _build(toy_root, 'training', pipeline)
    assert isinstance(dataset, ToyADE20KDataset)
    assert len(dataset) == SPLITS['training']
    classes = tuple(f'toy_{i}' for i in range(NUM_CLASSES))
    assert dataset.metainfo['classes'] == classes
    assert dataset.metainfo['palette'] == TOY_PALETTE
    assert dataset.metainfo['reduce_zero_label']

    seen = set()
    for idx in range(0, len(dataset), 8):
        sample = dataset[idx]
        assert tuple(sample['inputs'].shape) == (3, *crop_size)
        gt = sample['data_samples'].gt_sem_seg.data
        assert tuple(gt.shape) == (1, *crop_size)
        values = set(gt.unique().tolist())
        assert values <= set(range(NUM_CLASSES)) | {255}
        seen |= values
    assert len(seen - {255}) >= NUM_CLASSES // 2


def test_dataset_reduces_zero_label(toy_root):
    """Without augmentation the loaded labels are the disk labels minus one,
    with "other" mapped to the ignore index."""
    pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='LoadAnnotations'),
        dict(type='PackSegInputs'),
    ]
    dataset = _build(toy_root, 'validation', pipeline, test_mode=True)
    assert len(dataset) == SPLITS['validation']
    for idx in (0, len(dataset) - 1):
        sample = dataset[idx]
        name = sample['data_samples'].img_path.rsplit('/', 1)[-1][:-4]
        disk = _read_label(toy_root / 'annotations' / 'validation' /
                           f'{name}.png').astype(np.int64)
        expected = np.where(disk == 0, 255, disk - 1)
        gt = sample['data_samples'].gt_sem_seg.data[0].numpy()
        np.testing.assert_array_equal(gt, expected)


def _pixel_features(img, label):
    """Per-pixel colour and local texture features of the labelled pixels."""
    img = img.astype(np.float32)
    grey = img.mean(axis=-1)
    grad_x = np.abs(cv2.Sobel(grey, cv2.CV_32F, 1, 0))
    grad_y = np.abs(cv2.Sobel(grey, cv2.CV_32F, 0, 1))
    texture = cv2.blur(np.stack([grad_x, grad_y], axis=-1), (9, 9))
    mask = label > 0
    return img[mask], texture[mask], label[mask].astype(np.int64) - 1


def _nearest_mean_accuracy(train_x, train_y, val_x, val_y):
    means = np.stack(
        [train_x[train_y == c].mean(axis=0) for c in range(NUM_CLASSES)])
    dist = ((val_x[:, None] - means[None])**2).sum(axis=-1)
    return (dist.argmin(axis=1) == val_y).mean()


def test_classes_separable(toy_root):
    """Per-pixel nearest-class-mean classifiers fit on the training split do
    far better than chance on the validation split, both on colour alone and
    on local texture (gradient energy) alone."""
    feats = {}
    for split in SPLITS:
        pairs = _read_pairs(toy_root, split)
        parts = [_pixel_features(img, label) for img, label in pairs]
        feats[split] = [np.concatenate(part) for part in zip(*parts)]
    colour, texture, y = feats['training']
    colour_v, texture_v, y_v = feats['validation']
    chance = 1 / NUM_CLASSES
    assert _nearest_mean_accuracy(colour, y, colour_v, y_v) > 4 * chance
    assert _nearest_mean_accuracy(texture, y, texture_v, y_v) > 3 * chance
