"""Building blocks of the prompt-analysis tools: area downsampling of the
ground truth, attention precision, annotation-loader stripping, scalar-log
merging (fast; the tools themselves run in test_prompt_tools.py)."""
import json

import numpy as np
import pytest
import torch

import davpt_seg  # noqa: F401
from davpt_seg.analysis.loading import is_annotation_loader, \
    prompt_class_lists
from davpt_seg.analysis.logs import find_scalar_files, load_scalars, \
    plot_curves, series, smooth
from davpt_seg.analysis.prompt_attention import (PrecisionAccumulator,
                                                 class_fractions,
                                                 grid_to_image,
                                                 image_precision, summarize)
from davpt_seg.models.backbones.attention_capture import (AttentionRecord,
                                                          TokenLayout)


def test_class_fractions_are_area_averages_with_padding():
    gt = np.full((6, 7), 255, np.uint8)
    gt[:3, :4] = 1
    gt[3:, :] = 2
    # 4 px patches: a 2 x 2 grid covering 8 x 8, the last row/col padded
    fr = class_fractions(gt, [1, 2], (6, 7), (2, 2), 4)
    assert fr.shape == (2, 2, 2)
    torch.testing.assert_close(fr[0], torch.tensor([[12 / 16, 0.], [0., 0.]]))
    torch.testing.assert_close(fr[1], torch.tensor([[4 / 16, 3 / 16],
                                                    [8 / 16, 6 / 16]]))
    # labels at twice the image size: area resize first
    big = np.kron(gt, np.ones((2, 2), np.uint8))
    torch.testing.assert_close(class_fractions(big, [1, 2], (6, 7), (2, 2),
                                               4), fr)
    with pytest.raises(ValueError, match='does not cover'):
        class_fractions(gt, [1], (6, 7), (1, 2), 4)


def test_grid_to_image_fills_patches_and_crops_padding():
    maps = torch.arange(4.).view(1, 2, 2)
    img = grid_to_image(maps, 4, (6, 7), (6, 7))
    assert img.shape == (1, 6, 7)
    assert img[0, 0, 0] == 0 and img[0, 0, 6] == 1 and img[0, 5, 0] == 2
    assert grid_to_image(maps, 4, (6, 7), (12, 14)).shape == (1, 12, 14)


def test_precision_uniform_is_chance_and_focused_is_one():
    fr = torch.zeros(2, 2, 2)
    fr[0, 0, 0] = 1.
    fr[1, 1] = 0.5
    uniform = torch.full((1, 2, 2), 0.25)
    focused = torch.zeros(1, 2, 2)
    focused[0, 0, 0] = 1.
    prec, chance = image_precision(torch.cat([uniform, focused]), fr)
    np.testing.assert_allclose(prec[0], chance)
    np.testing.assert_allclose(prec[1], [1., 0.])
    np.testing.assert_allclose(chance, [0.25, 0.25])


def _record(maps):
    """An AttentionRecord whose only layer (0) has prompt rows ``maps``
    [P, h, w] (no [CLS], no registers, one head)."""
    P, h, w = maps.shape
    T = h * w + P
    attn = torch.zeros(1, 1, T, T)
    attn[0, 0, h * w:, :h * w] = maps.reshape(P, -1)
    attn[0, 0, :h * w, 0] = 1.
    attn[0, 0, h * w:, h * w:] += 1e-9
    rec = AttentionRecord((h, w))
    rec.attn[0] = attn
    rec.layout[0] = TokenLayout(0, 0, h * w, P, (h, w), 'proxy')
    return rec


def test_accumulator_counts_only_images_with_the_classes():
    acc = PrecisionAccumulator(num_classes=3)
    maps = torch.zeros(2, 2, 2)
    maps[0, 0, 0] = 1.      # prompt 0: top-left patch
    maps[1] = 0.25          # prompt 1: uniform
    gt = np.full((2, 2), 255, np.uint8)
    gt[0, 0] = 0
    gt[1, 1] = 1
    acc.add(_record(maps), gt, (2, 2), 1)
    gt2 = np.full((2, 2), 2, np.uint8)  # class 2 only
    acc.add(_record(maps), gt2, (2, 2), 1)
    assert acc.num_images == 2
    prec, chance = acc.set_scores(0, 0, [0])
    np.testing.assert_allclose(prec, [1.])  # the second image has no 0
    np.testing.assert_allclose(chance, [0.25])
    prec, chance = acc.set_scores(0, 1, [0, 1, 2])
    np.testing.assert_allclose(prec, chance)
    assert acc.best_class(0, 0) == 0
    result = summarize(acc, {0: [[0], [1, 2]]}, ['a', 'b', 'c'])
    p0, p1 = result['prompts']
    assert p0['mapped']['classes'] == ['a'] and p0['mapped']['precision'] \
        == pytest.approx(1.)
    assert p1['mapped']['num_images'] == 2
    assert p1['mapped']['precision'] == pytest.approx(
        p1['mapped']['chance'])
    assert p0['spread'] == pytest.approx(1 / 4, abs=1e-6)  # one patch
    assert p1['spread'] == pytest.approx(1.)  # uniform
    overall = result['overall']['mapped']
    assert overall['num_prompts'] == 2 and overall['prompts_above_chance'] \
        == 1 and overall['num_pairs'] == 3
    json.dumps(result)  # JSON-serialisable
    assert 'mapped' not in summarize(acc, {0: None}, 'abc')['prompts'][0]


def test_prompt_class_lists():
    assert prompt_class_lists(torch.tensor([1, 0, 1]), 3) == [[1], [0, 2],
                                                               []]
    assert prompt_class_lists(None, 3) is None


def test_annotation_loaders_are_recognised():
    assert is_annotation_loader(dict(type='LoadAnnotations'))
    assert is_annotation_loader(dict(type='CheckedLoadAnnotations',
                                     num_classes=3))
    assert is_annotation_loader(dict(type='mmseg.LoadAnnotations'))
    assert not is_annotation_loader(dict(type='LoadImageFromFile'))
    assert not is_annotation_loader(dict(type='Resize', scale=(8, 8)))


def test_scalar_logs_merge_resumed_runs(tmp_path):
    first = tmp_path / '20240101_000000' / 'vis_data'
    second = tmp_path / '20240102_000000' / 'vis_data'
    for d in (first, second):
        d.mkdir(parents=True)
    rows1 = [dict(loss=3., loss_davpt_token=1., iter=10, step=10),
             dict(loss=2., loss_davpt_token=.8, iter=20, step=20),
             dict(loss=9., loss_davpt_token=9., iter=30, step=30),
             dict(mIoU=40., step=20)]
    rows2 = [dict(loss=1.5, loss_davpt_token=.5, iter=30, step=30),
             dict(loss=1., loss_davpt_token=.4, iter=40, step=40),
             dict(mIoU=50., time=0.1, step=40)]
    for d, rows in ((first, rows1), (second, rows2)):
        (d / 'scalars.json').write_text(
            '\n'.join(json.dumps(r) for r in rows) + '\n')
    files = find_scalar_files(str(tmp_path))
    assert [f.split('/')[-3] for f in files] == ['20240101_000000',
                                                 '20240102_000000']
    scalars = load_scalars(files)
    assert series(scalars, 'loss_davpt_token') == ([10, 20, 30, 40],
                                                   [1., .8, .5, .4])
    assert series(scalars, 'mIoU') == ([20, 40], [40., 50.])
    assert series(scalars, 'nothing') is None
    assert smooth([1., 3., 5.], 2) == [1., 2., 4.]
    out = tmp_path / 'curves.png'
    missing = plot_curves({'run': scalars}, ['loss', 'loss_davpt_token',
                                             'mIoU', 'nothing'], str(out))
    assert missing == ['nothing'] and out.stat().st_size > 0
    # one run's directory, or its file, alone
    assert find_scalar_files(str(tmp_path / '20240102_000000')) == \
        [str(second / 'scalars.json')]
    (tmp_path / 'empty').mkdir()
    with pytest.raises(FileNotFoundError, match='scalars.json'):
        find_scalar_files(str(tmp_path / 'empty'))
