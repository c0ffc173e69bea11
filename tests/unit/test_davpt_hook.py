"""DAVPTHook's per-iteration work on hand-made inputs: class picking, the
metric-loss wiring on the stock EncoderDecoder, config validation."""
from types import SimpleNamespace

import pytest
import torch
from mmengine.registry import init_default_scope
from mmseg.registry import MODELS

import davpt_seg  # noqa: F401
from davpt_seg.engine.hooks import DAVPTHook
from davpt_seg.models.davpt import (draw_target_classes, mode_target_prompts,
                                    present_class_mask)
from helpers.batches import seg_batch

IGN = 255


def test_present_classes_exclude_ignore_and_background():
    labels = torch.tensor([
        [[0, 1], [IGN, 1]],  # 0 is background here
        [[IGN, IGN], [IGN, IGN]],  # all ignore
        [[0, 0], [0, IGN]],  # only background
        [[2, 3], [3, 2]],
    ])
    present = present_class_mask(labels, 4, IGN, background_ids=(0, ))
    assert present.tolist() == [[False, True, False, False],
                                [False] * 4, [False] * 4,
                                [False, False, True, True]]
    # Without background ids, class 0 counts.
    assert present_class_mask(labels, 4, IGN)[2].tolist() == [
        True, False, False, False]


def test_labels_outside_num_classes_are_a_clear_error():
    labels = torch.tensor([[[0, 1], [7, IGN]]])
    with pytest.raises(ValueError, match=r'a\.png: label values \[7\]'):
        present_class_mask(labels, 4, IGN, names=['a.png'])
    with pytest.raises(ValueError, match=r'\[-1\]'):
        present_class_mask(torch.tensor([[[-1]]]), 4, IGN)


def test_draws_are_uniform_over_present_classes_and_skip_empty():
    present = torch.tensor([[True, False, True, True, False],
                            [False] * 5])
    g = torch.Generator().manual_seed(0)
    counts = torch.zeros(5)
    for _ in range(3000):
        t = draw_target_classes(present, g)
        assert t[1] == -1  # no valid class: left out
        counts[t[0]] += 1
    assert counts[[1, 4]].sum() == 0
    assert (counts[[0, 2, 3]] > 800).all()  # ~1000 each


def test_mode_rule_takes_the_most_frequent_prompt():
    mapping = torch.tensor([0, 0, 1, 2])
    present = torch.tensor([[True, True, True, False],
                            [False, False, True, True],
                            [False] * 4])
    g = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(200):
        p = mode_target_prompts(present, mapping, 3, g)
        assert p[0] == 0 and p[2] == -1
        seen.add(int(p[1]))
    assert seen == {1, 2}  # tie broken at random


# --------------------------------------------------------------- wiring
def tiny_segmentor(num_classes=5, **backbone):
    init_default_scope('mmseg')
    cfg = dict(
        type='EncoderDecoder',
        data_preprocessor=dict(type='SegDataPreProcessor', size=(32, 32),
                               mean=[0.] * 3, std=[1.] * 3),
        backbone=dict(type='PromptedVisionTransformer', img_size=(32, 32),
                      patch_size=8, embed_dims=32, num_layers=2,
                      num_heads=2, mlp_ratio=2, out_indices=(1, ),
                      **{**dict(num_prompts=2, num_proxy_prompts=3,
                            guided_layers=[0]), **backbone}),
        decode_head=dict(type='FCNHead', in_channels=32, channels=8,
                         num_convs=1, num_classes=num_classes,
                         norm_cfg=dict(type='BN'),
                         loss_decode=dict(type='CrossEntropyLoss')))
    return MODELS.build(cfg)


def batch(labels):
    return seg_batch([torch.rand(3, 32, 32) * 255 for _ in labels], labels)


def ready_hook(model, **kwargs):
    """A hook attached to ``model`` with a k-means mapping, as after
    ``before_train``."""
    hook = DAVPTHook(seed=0, **kwargs)
    hook.attach(model)
    m = hook.objective.mapping
    m.accumulate(torch.randn(5, 32), torch.eye(5, dtype=torch.bool))
    assert m.update()
    return hook


@pytest.mark.parametrize('feature', ['output', 'patch_mean', 'query_mean'])
def test_stock_encoder_decoder_gets_both_metric_losses(feature):
    model = tiny_segmentor()
    hook = ready_hook(model, token_feature=feature)
    labels = [torch.randint(0, 5, (32, 32)) for _ in range(3)]
    data = model.data_preprocessor(batch(labels), True)
    model.train()
    losses = model(**data, mode='loss')
    for key in ('loss_davpt_token', 'loss_davpt_cls'):
        assert key in losses and torch.isfinite(losses[key])
    total, _ = model.parse_losses(losses)
    total.backward()
    grad = model.backbone.proxy_prompt_tokens.grad
    assert grad is not None and grad.abs().sum() > 0
    # Class statistics were accumulated for every present class.
    assert hook.objective.mapping.feat_count.sum() > 0
    # Eval / tensor modes are untouched.
    model.eval()
    assert isinstance(model(**data, mode='tensor'), torch.Tensor)


def test_batch_without_any_valid_class_gives_zero_losses():
    model = tiny_segmentor()
    ready_hook(model)
    labels = [torch.full((32, 32), IGN) for _ in range(2)]
    data = model.data_preprocessor(batch(labels), True)
    model.train()
    losses = model(**data, mode='loss')
    assert losses['loss_davpt_token'].item() == 0
    assert losses['loss_davpt_cls'].item() == 0
    total, _ = model.parse_losses(losses)
    assert torch.isfinite(total)


def test_metric_loss_weights_scale_the_terms():
    torch.manual_seed(0)
    a = tiny_segmentor()
    b = tiny_segmentor()
    b.load_state_dict(a.state_dict())
    data = batch([torch.randint(0, 5, (32, 32)) for _ in range(2)])
    out, hooks = [], []
    for model, w in ((a, 0.05), (b, 0.5)):
        hooks.append(ready_hook(model, token_loss_weight=w,
                                cls_loss_weight=w))
        # identical mapping in both
        hooks[-1].objective.mapping.load_state_dict(
            hooks[0].objective.mapping.state_dict())
        model.train()
        out.append(model(**model.data_preprocessor(data, True),
                         mode='loss'))
    for key in ('loss_davpt_token', 'loss_davpt_cls'):
        assert out[1][key].item() == pytest.approx(10 * out[0][key].item(),
                                                   rel=1e-4)


def test_nonfinite_metric_loss_stops_at_the_end_of_its_iteration():
    model = tiny_segmentor()
    hook = ready_hook(model)
    with torch.no_grad():
        model.backbone.proxy_prompt_tokens.fill_(float('nan'))
    model.train()
    labels = [torch.randint(0, 5, (32, 32)) for _ in range(2)]
    runner = SimpleNamespace(iter=41)
    hook.before_train_iter(runner, 0)
    losses = model(**model.data_preprocessor(batch(labels), True),
                   mode='loss')
    _, log_vars = model.parse_losses(losses)  # train_step's outputs
    with pytest.raises(FloatingPointError,
                       match=r'loss_davpt_\w+ is nan at iteration 42'):
        hook.after_train_iter(runner, 0, outputs=log_vars)


@pytest.mark.parametrize('kwargs, match', [
    (dict(token_feature='cls'), 'token_feature'),
    (dict(target_rule='first'), 'target_rule'),
    (dict(token_loss_weight=-1), 'token_loss_weight'),
    (dict(cls_loss_weight=float('nan')), 'cls_loss_weight'),
    (dict(mapping_interval=-3), 'mapping_interval'),
    (dict(init_max_batches=0), 'init_max_batches'),
])
def test_bad_hook_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DAVPTHook(**kwargs)


def test_build_objective_checks_the_model():
    with pytest.raises(ValueError, match='guided_layers'):
        DAVPTHook().build_objective(tiny_segmentor(guided_layers=[]))
    with pytest.raises(ValueError, match=r'background_ids \[9\]'):
        DAVPTHook(background_ids=(9, )).build_objective(tiny_segmentor())
    with pytest.raises(ValueError, match=r'num_proxy_prompts.*\(3\).*'
                       r'num_classes.*\(2\)'):
        DAVPTHook().build_objective(tiny_segmentor(num_classes=2))
    model = tiny_segmentor(num_classes=7)
    objective = DAVPTHook().build_objective(model)
    assert objective.num_classes == 7  # from the decode head
    assert objective.num_proxy_prompts == 3  # from the backbone


def test_labels_are_checked_before_the_forward_pass():
    model = tiny_segmentor()
    hook = ready_hook(model)
    data = batch([torch.full((32, 32), 9)])
    data['data_samples'][0].set_metainfo(dict(seg_map_path='bad.png'))
    data = model.data_preprocessor(data, True)
    model.train()
    calls = []
    model.backbone.register_forward_pre_hook(lambda *a: calls.append(1))
    with pytest.raises(ValueError, match=r'bad\.png: label values \[9\]'):
        model(**data, mode='loss')
    assert not calls  # the backbone never ran
    assert hook.objective.mapping.feat_count.sum() == 0


def test_attach_and_detach_leave_the_model_as_built():
    model = tiny_segmentor()
    hook = ready_hook(model)
    data = model.data_preprocessor(
        batch([torch.randint(0, 5, (32, 32)) for _ in range(2)]), True)
    model.train()
    assert 'loss_davpt_cls' in model(**data, mode='loss')
    hook.detach()
    losses = model(**data, mode='loss')
    assert not any(k.startswith('loss_davpt') for k in losses)
    model.backbone.capture_guided().remove()  # free again: no error
    hook.attach(model)  # and attachable again
    assert 'loss_davpt_cls' in model(**data, mode='loss')


def test_old_backbone_arguments_say_where_they_moved():
    with pytest.raises(TypeError, match=r'num_classes: .*DAVPTHook.*'
                       r'decode_head\.num_classes'):
        MODELS.build(dict(
            type='PromptedVisionTransformer', img_size=32, patch_size=8,
            embed_dims=32, num_layers=2, num_heads=2, num_classes=5))
    with pytest.raises(TypeError, match=r'mapping_cfg: .*DAVPTHook\(mapping'):
        MODELS.build(dict(type='PromptedVisionTransformer', img_size=32,
                          patch_size=8, embed_dims=32, num_layers=2,
                          num_heads=2, mapping_cfg=dict(max_iter=3)))
    # None (a VPT child config of an earlier version) is accepted
    MODELS.build(dict(type='PromptedVisionTransformer', img_size=32,
                      patch_size=8, embed_dims=32, num_layers=2, num_heads=2,
                      num_classes=None, mapping_cfg=None))
