"""``mapping_feature='class_patches'``: patch tokens pooled under the class
masks equal a hand computation; the objective, the hook's training forward
and the initial pass feed them to the mapping; 2 processes give the mapping
of one."""
import copy
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as torch_dist
from mmengine.registry import init_default_scope
from mmseg.registry import MODELS

import davpt_seg  # noqa: F401
from davpt_seg.engine.hooks import DAVPTHook
from davpt_seg.engine.initial_mapping import frozen_features
from davpt_seg.models.backbones import PromptedVisionTransformer
from davpt_seg.models.davpt import (DAVPTObjective, class_pooled_features,
                                    labels_on_grid)
from helpers.batches import seg_batch
from helpers.spawn import spawn_workers

VIT = dict(img_size=(32, 32), patch_size=8, embed_dims=32, num_layers=2,
           num_heads=2, mlp_ratio=2)


def test_labels_on_grid_takes_the_patch_centres():
    labels = torch.arange(64).view(1, 8, 8)
    assert labels_on_grid(labels, (2, 2)).tolist() == [[[18, 22], [50, 54]]]
    labels = torch.arange(100).view(1, 10, 10)  # 3 x 3 grid: rows 1, 5, 8
    assert labels_on_grid(labels, (3, 3)).tolist() == [
        [[11, 15, 18], [51, 55, 58], [81, 85, 88]]]


GRID = torch.tensor([[0, 0, 1, 255],
                     [0, 2, 1, 1],
                     [3, 2, 7, 0]])  # 7: not a class, 255: ignored


def test_pooled_features_equal_a_hand_computation():
    tokens = torch.randn(1, 3, 4, 5)
    means, valid = class_pooled_features(tokens, GRID[None], num_classes=4,
                                         background_ids=(2, ), min_patches=2)
    t = tokens[0]
    hand = {0: (t[0, 0] + t[0, 1] + t[1, 0] + t[2, 3]) / 4,
            1: (t[0, 2] + t[1, 2] + t[1, 3]) / 3}
    # class 2 is background, class 3 has 1 patch < min_patches
    assert valid.tolist() == [[True, True, False, False]]
    for k, v in hand.items():
        torch.testing.assert_close(means[0, k], v)
    assert not means[0, 2:].any()
    _, valid = class_pooled_features(tokens, GRID[None], 4, min_patches=1)
    assert valid.tolist() == [[True, True, True, True]]
    with pytest.raises(ValueError, match='min_patches'):
        class_pooled_features(tokens, GRID[None], 4, min_patches=0)
    with pytest.raises(ValueError, match='do not fit'):
        class_pooled_features(tokens, GRID[None, :2], 4)


def full_res(grid, patch=4):
    """[B, h, w] patch labels -> [B, h * patch, w * patch] label maps."""
    return grid.repeat_interleave(patch, 1).repeat_interleave(patch, 2)


def test_objective_accumulates_the_pooled_features_of_present_classes():
    obj = DAVPTObjective(4, 2, 5, mapping_feature='class_patches',
                         min_class_patches=2)
    tokens = torch.randn(2, 3, 4, 5)
    grids = torch.stack([GRID, GRID.flip(1)])
    present = torch.tensor([[True, True, True, True],
                            [True, False, True, True]])  # 1 not in image 1
    obj.accumulate(present, patch_tokens=tokens, labels=full_res(grids))
    means, valid = class_pooled_features(tokens, grids, 4, min_patches=2)
    valid &= present
    m = obj.mapping
    assert m.feat_count.tolist() == [2., 1., 2., 0.]
    torch.testing.assert_close(m.feat_sum, (means * valid[..., None]).sum(0))
    with pytest.raises(ValueError, match='patch tokens'):
        obj.accumulate(present, final_cls=torch.randn(2, 5))


def tiny_segmentor(guided_layer):
    """A 2-layer prompted ViT (4 x 4 patches of 8 px) + FCN head, 5 classes."""
    init_default_scope('mmseg')
    return MODELS.build(dict(
        type='EncoderDecoder',
        data_preprocessor=dict(type='SegDataPreProcessor', size=(32, 32),
                               mean=[0.] * 3, std=[1.] * 3),
        backbone=dict(type='PromptedVisionTransformer', **VIT,
                      out_indices=(1, ), num_prompts=2, num_proxy_prompts=3,
                      guided_layers=[guided_layer]),
        decode_head=dict(type='FCNHead', in_channels=32, channels=8,
                         num_convs=1, num_classes=5,
                         loss_decode=dict(type='CrossEntropyLoss'))))


def test_training_forward_feeds_the_guided_layer_patches():
    model = tiny_segmentor(guided_layer=1)  # the last layer: its output
    hook = DAVPTHook(seed=0, mapping_feature='class_patches',
                     min_class_patches=1)
    hook.attach(model)
    labels = [full_res(torch.randint(0, 5, (1, 4, 4)), 8)[0]
              for _ in range(3)]
    data = model.data_preprocessor(
        seg_batch([torch.rand(3, 32, 32) * 255 for _ in labels], labels),
        True)
    model.train()
    with torch.no_grad():  # the guided (= last) layer's output tokens
        patches = model.backbone(data['inputs'])[0].permute(0, 2, 3, 1)
    losses = model(**data, mode='loss')
    assert 'loss_davpt_token' in losses
    means, valid = class_pooled_features(
        patches, torch.stack(labels)[:, 4::8, 4::8], 5)
    m = hook.objective.mapping
    assert m.feat_count.tolist() == valid.sum(0).float().tolist()
    torch.testing.assert_close(m.feat_sum, means.sum(0))


def test_initial_pass_uses_the_prompt_free_guided_layer():
    model = tiny_segmentor(guided_layer=0).eval()
    backbone = model.backbone
    plain = PromptedVisionTransformer(**VIT, out_indices=(0, ),
                                      num_prompts=0, guided_layers=())
    plain.load_state_dict(
        {k: v for k, v in backbone.state_dict().items()
         if k not in backbone.own_state_keys()})
    x = torch.randn(2, 3, 32, 32)
    obj = DAVPTObjective(5, 3, 32, mapping_feature='class_patches')
    samples = seg_batch([x[0], x[1]], [torch.zeros(32, 32).long()] * 2)
    feats = frozen_features(backbone, obj, dict(inputs=x, **{
        'data_samples': samples['data_samples']}))
    with torch.no_grad():
        ref = plain.eval()(x)[0].permute(0, 2, 3, 1)
    torch.testing.assert_close(feats['patch_tokens'], ref)
    assert feats['labels'].shape == (2, 32, 32)


# ------------------------------------------------- 2 processes equal one
K, P, C, WORLD = 6, 3, 16, 2


def _data():
    """Per step: tokens [4, 4, 4, C], labels [4, 16, 16], present [4, K];
    patch tokens near a prototype of their class's planted cluster."""
    g = torch.Generator().manual_seed(5)
    protos = 4 * torch.randn(P, C, generator=g)
    steps = []
    for _ in range(3):
        grid = torch.randint(0, K, (4, 4, 4), generator=g)
        grid[0, 0] = 255
        tokens = protos[grid.clamp(max=K - 1) % P] + \
            torch.randn(4, 4, 4, C, generator=g)
        present = torch.zeros(4, K, dtype=torch.bool)
        present.scatter_(1, grid.clamp(max=K - 1).flatten(1), True)
        steps.append((tokens, full_res(grid), present))
    return steps


def _run(rank_slice):
    obj = DAVPTObjective(K, P, C, mapping_feature='class_patches',
                         min_class_patches=2, mapping=dict(seed=3))
    for tokens, labels, present in _data():
        s = rank_slice
        obj.accumulate(present[s], patch_tokens=tokens[s], labels=labels[s])
    stats = (obj.mapping.feat_sum.clone(), obj.mapping.feat_count.clone())
    updated = obj.mapping.update()
    return dict(updated=updated, stats=stats,
                state=copy.deepcopy(obj.mapping.state_dict()))


def _worker(rank, world_size, init_method, out_dir):
    torch.set_num_threads(1)
    torch_dist.init_process_group('gloo', init_method=init_method, rank=rank,
                                  world_size=world_size,
                                  timeout=timedelta(seconds=60))
    try:
        result = _run(slice(2 * rank, 2 * rank + 2))
        torch.save(result, Path(out_dir) / f'rank{rank}.pt')
        torch_dist.barrier()
    finally:
        torch_dist.destroy_process_group()


@pytest.mark.skipif(not torch_dist.is_available(),
                    reason='torch.distributed unavailable')
def test_two_processes_give_the_mapping_of_one(tmp_path):
    spawn_workers(_worker, WORLD, tmp_path)
    ranks = [torch.load(tmp_path / f'rank{r}.pt') for r in range(WORLD)]
    one = _run(slice(0, 4))
    assert one['updated'] and len(set(one['state']['mapping'].tolist())) > 1
    for got in ranks:
        assert got['updated']
        for a, b in zip(got['stats'], one['stats']):
            torch.testing.assert_close(a, b)
        assert torch.equal(got['state']['mapping'], one['state']['mapping'])
        torch.testing.assert_close(got['state']['centroids'],
                                   one['state']['centroids'])
    assert torch.equal(ranks[0]['state']['mapping'],
                       ranks[1]['state']['mapping'])
