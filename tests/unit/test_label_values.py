"""RecordLabelValues (the classes of each crop, found in the data loader's
workers) against the pixel scan it replaces: the same classes through mmseg's
real training transforms, the same label errors."""
import numpy as np
import pytest
import torch
from mmcv.transforms import Compose
from mmengine.registry import init_default_scope

import davpt_seg  # noqa: F401
from davpt_seg.datasets import RecordLabelValues, distinct_label_values
from davpt_seg.models.davpt import (label_values_mask, present_class_mask,
                                    present_classes, stack_label_maps)
from helpers.batches import seg_sample

IGN = 255
NUM_CLASSES = 12


def test_distinct_label_values():
    assert distinct_label_values(np.array([[3, 3], [255, 0]], np.uint8)) \
        == (0, 3, 255)
    assert distinct_label_values(torch.tensor([[-4, 70000, -4]])) == \
        (-4, 70000)
    assert distinct_label_values(np.zeros((0, 5), np.uint8)) == ()
    with pytest.raises(TypeError, match='integer'):
        distinct_label_values(np.zeros((2, 2), np.float32))


def _labels(rng, h=90, w=120):
    """Blocky label map: a few classes (0 is the background class of these
    tests), some values nearly absent, an ignored border."""
    blocks = rng.integers(0, NUM_CLASSES, (6, 8))
    label = np.kron(blocks, np.ones((15, 15), np.int64))[:h, :w]
    label[rng.integers(0, h), rng.integers(0, w)] = rng.integers(NUM_CLASSES)
    label[:, :rng.integers(1, 20)] = IGN
    return label.astype(np.uint8)


def _pipeline():
    init_default_scope('mmseg')
    return Compose([
        dict(type='RandomResize', scale=(120, 90), ratio_range=(0.5, 2.0),
             keep_ratio=True),
        dict(type='RandomCrop', crop_size=(48, 48), cat_max_ratio=0.75),
        dict(type='RandomFlip', prob=0.5),
        dict(type='PhotoMetricDistortion'),
        dict(type='PackSegInputs'),
        dict(type='RecordLabelValues'),
    ])


@pytest.mark.parametrize('seed', range(4))
def test_recorded_classes_equal_the_pixel_scan_after_crops_and_flips(seed):
    rng = np.random.default_rng(seed)
    np.random.seed(seed)  # mmcv's random transforms draw from numpy
    pipeline = _pipeline()
    samples = []
    for i in range(8):
        label = _labels(rng)
        out = pipeline(dict(
            img=rng.integers(0, 256, (*label.shape, 3), dtype=np.uint8),
            gt_seg_map=label, seg_fields=['gt_seg_map'], reduce_zero_label=
            False, img_shape=label.shape, ori_shape=label.shape,
            seg_map_path=f'{i}.png', img_path=f'{i}.jpg'))
        samples.append(out['data_samples'])
    gt = stack_label_maps(samples, IGN)  # crops can be smaller than 48
    values = [s.metainfo['label_values'] for s in samples]
    unrecorded = [seg_sample(s.gt_sem_seg.data[0]) for s in samples]
    for background in ((), (0, )):
        scanned = present_class_mask(gt, NUM_CLASSES, IGN, background)
        recorded = label_values_mask(values, NUM_CLASSES, IGN, background)
        assert torch.equal(recorded, scanned)
        # present_classes reads the metainfo; without it, it scans
        assert torch.equal(present_classes(samples, NUM_CLASSES, IGN,
                                           background), scanned)
        assert torch.equal(present_classes(unrecorded, NUM_CLASSES, IGN,
                                           background), scanned)
    assert scanned.any(1).all() and not scanned.all()  # a real test


def test_samples_of_different_sizes_are_padded_with_the_ignore_index():
    samples = [seg_sample(torch.full((4, 6), 2)),
               seg_sample(torch.full((6, 4), 3))]
    present = present_classes(samples, 5, IGN)
    assert present.tolist() == [[False, False, True, False, False],
                                [False, False, False, True, False]]


def test_bad_labels_are_the_same_error_on_both_paths():
    label = torch.tensor([[0, 9], [IGN, 1]])
    match = r'x\.png: label values \[9\] are outside 0\.\.4 and are not ' \
        r'the ignore index 255'
    sample = seg_sample(label, seg_map_path='x.png')
    with pytest.raises(ValueError, match=match):
        present_classes([sample], 5, IGN)  # scan
    RecordLabelValues()(dict(data_samples=sample))
    assert sample.metainfo['label_values'] == (0, 1, 9, IGN)
    with pytest.raises(ValueError, match=match):
        present_classes([sample], 5, IGN)  # recorded values


def test_the_transform_must_follow_pack_seg_inputs():
    with pytest.raises(ValueError, match='after PackSegInputs'):
        RecordLabelValues()(dict(gt_seg_map=np.zeros((2, 2), np.uint8)))


def test_samples_without_ground_truth_pass_through():
    from mmseg.structures import SegDataSample
    sample = SegDataSample()
    RecordLabelValues()(dict(data_samples=sample))
    assert 'label_values' not in sample.metainfo
