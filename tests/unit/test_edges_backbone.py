"""PromptedVisionTransformer at the edges: full fine-tuning (nothing
frozen), any depth with the defaults, negative ``guided_layers``, mmseg-style
positional arguments, and errors that name the backbone's own arguments."""
import pytest
import torch
from mmseg.models.backbones import VisionTransformer
from mmseg.registry import MODELS

import davpt_seg  # noqa: F401
from davpt_seg.models.davpt import DAVPTObjective
from davpt_seg.models.backbones import PromptedVisionTransformer
from helpers.vit import TINY_VIT, save_vit

#: Substrings that match every parameter of a ViT without final norm.
EVERY_BACKBONE_PARAM = ['patch_embed', 'cls_token', 'pos_embed', 'layers']


def _assert_backbone_equals(model, state):
    own = model.state_dict()
    for k, v in state.items():
        assert torch.equal(own[k], v), k


# ------------------------------------------------------- full fine-tuning
def test_full_fine_tuning_init_weights_loads_pretrained(tmp_path):
    state = save_vit(tmp_path / 'vit.pth', **TINY_VIT)
    model = PromptedVisionTransformer(
        **TINY_VIT, num_prompts=2, num_proxy_prompts=2, guided_layers=[3],
        frozen_exclude=EVERY_BACKBONE_PARAM,
        init_cfg=dict(type='Pretrained', checkpoint=str(tmp_path / 'vit.pth')))
    assert model.frozen_state_keys() == []
    assert all(p.requires_grad for p in model.parameters())
    model.init_weights()  # used to recurse without end
    _assert_backbone_equals(model, state)


@pytest.mark.parametrize('with_init_cfg', [False, True])
def test_full_fine_tuning_loads_a_full_state_dict(tmp_path, with_init_cfg):
    save_vit(tmp_path / 'vit.pth', **TINY_VIT)
    init_cfg = dict(type='Pretrained', checkpoint=str(tmp_path / 'vit.pth')) \
        if with_init_cfg else None
    kwargs = dict(TINY_VIT, num_prompts=2, num_proxy_prompts=2,
                  guided_layers=[3],
                  frozen_exclude=EVERY_BACKBONE_PARAM)
    torch.manual_seed(1)
    trained = PromptedVisionTransformer(**kwargs)
    torch.manual_seed(2)
    model = PromptedVisionTransformer(**kwargs, init_cfg=init_cfg)
    # A full checkpoint of a fine-tuned backbone is not "prompt-only".
    model.load_state_dict(trained.state_dict())
    _assert_backbone_equals(model, trained.state_dict())


# ------------------------------------------------------ depth and indices
@pytest.mark.parametrize('num_layers', [1, 2, 4, 12])
def test_defaults_build_for_any_depth(num_layers):
    model = PromptedVisionTransformer(
        img_size=32, patch_size=16, embed_dims=32, num_layers=num_layers,
        num_heads=2)
    assert model.guided_layers == [num_layers - 1]
    assert model.proxy_prompt_tokens.shape == (1, 10, 32)
    assert model(torch.randn(1, 3, 32, 32))[-1].shape == (1, 32, 2, 2)


def test_negative_guided_layers_equal_their_positive_indices():
    kwargs = dict(TINY_VIT, num_prompts=2, num_proxy_prompts=3)
    torch.manual_seed(0)
    negative = PromptedVisionTransformer(**kwargs, guided_layers=[-1, -3])
    torch.manual_seed(0)
    positive = PromptedVisionTransformer(**kwargs, guided_layers=[3, 1])
    assert negative.guided_layers == [3, 1]
    assert negative.state_dict().keys() == positive.state_dict().keys()
    for k, v in positive.state_dict().items():
        assert torch.equal(negative.state_dict()[k], v), k
    negative.train()
    with negative.capture_guided() as capture:
        negative(torch.randn(2, 3, 64, 64))
    assert sorted(capture.pop().layers) == [1, 3]


@pytest.mark.parametrize('layers, match', [
    ([-5], r'\[-5\] are outside the model depth.*-4\.\.-1'),
    ([4], r'\[4\] are outside the model depth'),
    ([3, -1], r'twice: \[3, -1\] \(0-based: \[3, 3\]\)'),
])
def test_bad_guided_layers(layers, match):
    with pytest.raises(ValueError, match=match):
        PromptedVisionTransformer(**TINY_VIT, guided_layers=layers)


def test_negative_guided_layers_through_the_registry():
    cfg = dict(type='PromptedVisionTransformer', **TINY_VIT,
               num_proxy_prompts=2, guided_layers=[-1])
    assert MODELS.build(cfg).guided_layers == [3]


def test_positional_arguments_as_mmseg():
    args = ((64, 64), 16, 'corner', 3, 64, 4, 4, 2)  # ... num_heads, mlp
    ref = VisionTransformer(*args)
    model = PromptedVisionTransformer(*args, num_prompts=0, guided_layers=())
    assert model.patch_size == 16 and len(model.layers) == 4
    assert {k: v.shape for k, v in ref.state_dict().items()} == {
        k: v.shape for k, v in model.state_dict().items()}
    with pytest.raises(TypeError, match="multiple values for argument "
                       "'patch_size'"):
        PromptedVisionTransformer((64, 64), 16, patch_size=8)


# ------------------------------------------------------------ messages
def test_too_many_proxy_prompts_names_num_proxy_prompts():
    with pytest.raises(ValueError,
                       match=r'^num_proxy_prompts \(10\)') as info:
        DAVPTObjective(num_classes=8, num_proxy_prompts=10, embed_dims=64)
    assert str(info.value).startswith('num_proxy_prompts (10)')
    assert 'num_classes (8)' in str(info.value)
    assert 'num_prompts' not in str(info.value).replace(
        'num_proxy_prompts', '')
    with pytest.raises(ValueError, match=r'num_proxy_prompts \(1\)'):
        DAVPTObjective(num_classes=8, num_proxy_prompts=1, embed_dims=64)


def test_misspelt_argument_names_the_backbone():
    with pytest.raises(TypeError, match="did you mean 'num_prompts'") as info:
        PromptedVisionTransformer(**TINY_VIT, num_promts=3)
    msg = str(info.value)
    assert "PromptedVisionTransformer got an unexpected argument " \
        "'num_promts'" in msg
    assert "did you mean 'num_prompts'" in msg
    assert 'VisionTransformer.__init__' not in msg
    # ... and through the registry, as a config typo reaches it.
    with pytest.raises(TypeError, match="did you mean 'guided_layers'"):
        MODELS.build(dict(type='PromptedVisionTransformer', **TINY_VIT,
                          guided_layer=[1]))
