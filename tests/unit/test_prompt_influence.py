"""davpt_seg.analysis.prompt_influence: the share of patch attention on the
prompts (against the explicit-attention reference forward) and the output
cosine against the same backbone without prompts."""
import pytest
import torch
from mmengine.config import ConfigDict
from mmseg.registry import MODELS

import davpt_seg  # noqa: F401
from davpt_seg.analysis.prompt_influence import (frozen_reference,
                                                 influence,
                                                 prompt_attention_share)
from helpers.vit import TINY_VIT, explicit_vpt_forward, save_vit


def _cfg(path, **prompts):
    return ConfigDict(model=dict(backbone=dict(
        type='PromptedVisionTransformer', **TINY_VIT, out_indices=(1, 3),
        init_cfg=dict(type='Pretrained', checkpoint=str(path)), **prompts)))


def test_share_matches_the_explicit_attention(tmp_path):
    save_vit(tmp_path / 'vit.pth', **TINY_VIT)
    torch.manual_seed(0)
    backbone = MODELS.build(_cfg(tmp_path / 'vit.pth', num_prompts=3)
                            .model.backbone)
    backbone.init_weights()
    backbone.eval()
    x = torch.randn(2, 3, 64, 64)
    shares = prompt_attention_share(backbone, x)
    _, traces, _ = explicit_vpt_forward(backbone, x)
    for layer, trace in traces.items():
        patches = slice(trace.prompt_slice.stop, None)  # image tokens last
        expect = trace.attn[:, :, patches, trace.prompt_slice].sum(-1)
        assert abs(shares[layer] - float(expect.mean())) < 1e-5, layer
    assert all(0 < s < 1 for s in shares)


def test_the_frozen_backbone_is_its_own_reference(tmp_path):
    save_vit(tmp_path / 'vit.pth', **TINY_VIT)
    cfg = _cfg(tmp_path / 'vit.pth', num_prompts=3)
    reference = frozen_reference(cfg)
    x = torch.randn(2, 3, 64, 64)
    same = influence(frozen_reference(cfg), reference, x)
    assert same['attention_to_prompts'] == [0.] * 4
    assert all(abs(c - 1) < 1e-6 for c in same['output_cosine'].values())
    torch.manual_seed(0)
    prompted = MODELS.build(cfg.model.backbone)
    prompted.init_weights()
    moved = influence(prompted, reference, x)
    assert set(moved['output_cosine']) == {1, 3}
    assert all(c < 1 - 1e-5 for c in moved['output_cosine'].values())


def test_gated_prompts_at_step_0_leave_the_backbone_unmoved(tmp_path):
    save_vit(tmp_path / 'vit.pth', **TINY_VIT)
    cfg = _cfg(tmp_path / 'vit.pth', num_prompts=3, gated_prompts=True)
    torch.manual_seed(0)
    gated = MODELS.build(cfg.model.backbone)
    gated.init_weights()
    x = torch.randn(2, 3, 64, 64)
    step0 = influence(gated, frozen_reference(cfg), x)
    assert step0['attention_to_prompts'] == [0.] * 4  # tanh(0)
    assert all(abs(c - 1) < 1e-6 for c in step0['output_cosine'].values())
    with torch.no_grad():
        gated.prompt_gate.fill_(0.5)
    shares = prompt_attention_share(gated, x)
    assert all(abs(s - torch.tanh(torch.tensor(0.5))) < 1e-6 for s in shares)


def test_reference_of_a_loaded_checkpoint_has_its_frozen_weights(tmp_path):
    """load_model must not clear the config's init_cfg (mmseg's init_model
    does so on the Config it gets): the reference measured against a
    trained checkpoint is the pretrained ViT, not a random one."""
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    from davpt_seg.analysis.loading import load_model
    init_default_scope('mmseg')
    save_vit(tmp_path / 'vit.pth', **TINY_VIT)
    cfg = Config(dict(
        model=dict(
            type='EncoderDecoder',
            data_preprocessor=dict(type='SegDataPreProcessor',
                                   size=(64, 64)),
            backbone=_cfg(tmp_path / 'vit.pth', num_prompts=3,
                          gated_prompts=True).model.backbone,
            decode_head=dict(type='FCNHead', in_channels=64, channels=8,
                             num_convs=1, num_classes=3, in_index=-1,
                             loss_decode=dict(type='CrossEntropyLoss'))),
        test_pipeline=[], default_scope='mmseg'))
    trained = MODELS.build(cfg.model)
    trained.init_weights()
    torch.save(dict(state_dict=trained.state_dict(), meta={}),
               tmp_path / 'trained.pth')
    model = load_model(cfg, str(tmp_path / 'trained.pth'))
    assert cfg.model.backbone.init_cfg.checkpoint == str(tmp_path / 'vit.pth')
    x = torch.randn(1, 3, 64, 64)
    same = influence(model.backbone, frozen_reference(cfg), x)
    assert all(abs(c - 1) < 1e-6 for c in same['output_cosine'].values())
    cfg.model.backbone.init_cfg = None
    with pytest.raises(ValueError, match='random ViT'):
        frozen_reference(cfg)
