"""Prompt-only checkpoints: identical features and predictions to the full
checkpoint through every loading path that never calls init_weights()."""
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.runner import load_checkpoint
from mmseg.apis import init_model
from mmseg.models.backbones import VisionTransformer
from mmseg.registry import MODELS

import davpt_seg  # noqa: F401
from davpt_seg.engine.hooks import make_prompt_only

VIT = dict(img_size=(32, 32), patch_size=8, embed_dims=32, num_layers=2,
           num_heads=2, mlp_ratio=2, patch_bias=True,
           norm_cfg=dict(type='LN', eps=1e-6))


def model_cfg(pretrained, **change):
    backbone = dict(type='PromptedVisionTransformer', **VIT,
                    out_indices=(1, ), num_prompts=2, num_proxy_prompts=3,
                    guided_layers=[0], num_classes=4,
                    init_cfg=dict(type='Pretrained',
                                  checkpoint=str(pretrained)))
    backbone.update(change)
    return dict(
        type='EncoderDecoder',
        data_preprocessor=dict(type='SegDataPreProcessor', size=(32, 32)),
        backbone=backbone,
        decode_head=dict(type='FCNHead', in_channels=32, channels=8,
                         num_convs=1, num_classes=4,
                         norm_cfg=dict(type='BN'),
                         loss_decode=dict(type='CrossEntropyLoss')),
        test_cfg=dict(mode='whole'))


@pytest.fixture()
def saved(tmp_path):
    init_default_scope('mmseg')
    torch.manual_seed(0)
    vit = VisionTransformer(**VIT)
    vit.init_weights()
    pretrained = tmp_path / 'vit.pth'
    torch.save(vit.state_dict(), pretrained)
    trained = MODELS.build(model_cfg(pretrained))
    trained.init_weights()
    with torch.no_grad():  # "training": prompts, heads, BN stats, mapping
        for name, p in trained.named_parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.1)
        bn = trained.decode_head.convs[0].bn
        bn.running_mean.normal_()
        m = trained.backbone.class_mapping
        m.accumulate(torch.randn(4, 32), torch.eye(4, dtype=torch.bool))
        m.update()
    full = dict(state_dict=trained.state_dict(), meta={})
    torch.save(full, tmp_path / 'full.pth')
    small = make_prompt_only(
        dict(state_dict=dict(trained.state_dict()), meta={}), trained)
    torch.save(small, tmp_path / 'prompts.pth')
    trained.eval()
    return tmp_path, pretrained, trained


def outputs(model, x):
    model.eval()
    with torch.no_grad():
        return model.backbone(x)[0], model(x, mode='tensor')


def test_prompt_only_is_small_and_complete(saved):
    tmp, _, _ = saved
    state = torch.load(tmp / 'prompts.pth', weights_only=True)['state_dict']
    assert not any(k.startswith('backbone.layers') for k in state)
    assert 'backbone.pos_embed' not in state
    for key in ('backbone.prompt_tokens', 'backbone.proxy_prompt_tokens',
                'backbone.class_mapping.mapping',
                'backbone.class_mapping.centroids',
                'decode_head.conv_seg.weight',
                'decode_head.convs.0.bn.running_mean'):
        assert key in state, key
    assert (tmp / 'prompts.pth').stat().st_size < \
        0.5 * (tmp / 'full.pth').stat().st_size


def test_runner_style_load_gives_identical_features_and_predictions(saved):
    tmp, pretrained, trained = saved
    x = torch.randn(2, 3, 32, 32)
    ref_feat, ref_pred = outputs(trained, x)
    for ckpt in ('full.pth', 'prompts.pth'):
        # As runner.test() does: build, load, never init_weights().
        model = MODELS.build(model_cfg(pretrained))
        load_checkpoint(model, str(tmp / ckpt), map_location='cpu')
        feat, pred = outputs(model, x)
        torch.testing.assert_close(feat, ref_feat, rtol=0, atol=0)
        torch.testing.assert_close(pred, ref_pred, rtol=0, atol=0)
        assert torch.equal(model.backbone.class_mapping.mapping,
                           trained.backbone.class_mapping.mapping)


def test_init_model(saved):
    """mmseg.apis.init_model clears backbone.init_cfg, so a prompt-only
    checkpoint cannot find its pretrained weights: a clear error, never a
    random ViT. The full checkpoint gives identical predictions."""
    tmp, pretrained, trained = saved
    cfg = Config(dict(model=model_cfg(pretrained), default_scope='mmseg'))
    with pytest.raises(RuntimeError, match='names no pretrained backbone'):
        init_model(cfg, str(tmp / 'prompts.pth'), device='cpu')
    model = init_model(cfg, str(tmp / 'full.pth'), device='cpu')
    x = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(outputs(model, x)[1], outputs(trained, x)[1],
                               rtol=0, atol=0)


def test_missing_pretrained_file_is_a_clear_error(saved):
    tmp, pretrained, _ = saved
    model = MODELS.build(model_cfg(tmp / 'gone.pth'))
    with pytest.raises(RuntimeError,
                       match=r'prompt-only checkpoint: it needs the '
                       r'pretrained backbone .*gone\.pth'):
        load_checkpoint(model, str(tmp / 'prompts.pth'))


def test_no_pretrained_in_config_is_a_clear_error(saved):
    tmp, pretrained, _ = saved
    cfg = model_cfg(pretrained)
    cfg['backbone']['init_cfg'] = None
    with pytest.raises(RuntimeError, match='names no pretrained backbone'):
        load_checkpoint(MODELS.build(cfg), str(tmp / 'prompts.pth'))


@pytest.mark.parametrize('change', [
    dict(num_prompts=5), dict(num_proxy_prompts=2),
    dict(num_classes=None), dict(guided_layers=[0, 1])
])
def test_prompt_only_checkpoint_of_another_config_is_an_error(saved, change):
    tmp, pretrained, _ = saved
    model = MODELS.build(model_cfg(pretrained, **change))
    with pytest.raises(RuntimeError, match='does not fit'):
        load_checkpoint(model, str(tmp / 'prompts.pth'))


def test_full_checkpoint_with_another_mapping_size_is_an_error(saved):
    tmp, pretrained, _ = saved
    cfg = model_cfg(pretrained)
    cfg['backbone']['num_classes'] = 6
    with pytest.raises(RuntimeError, match=r'class_mapping\.mapping'):
        load_checkpoint(MODELS.build(cfg), str(tmp / 'full.pth'))
