"""PromptedVisionTransformer: equivalence with mmseg's ViT, checkpoints,
freezing, DA-VPT+ K/V biases, guided-layer features."""
import copy

import pytest
import torch
from mmseg.models.backbones import VisionTransformer

import davpt_seg  # noqa: F401
from davpt_seg.models.backbones import PromptedVisionTransformer
from helpers.vit import TINY_VIT, explicit_vpt_forward



def _pair(prompt_kwargs=None, **vit_kwargs):
    """A randomly initialised mmseg ViT and a prompted ViT with its weights."""
    cfg = {**TINY_VIT, **vit_kwargs}
    torch.manual_seed(0)
    ref = VisionTransformer(**cfg)
    ref.init_weights()
    # Perturb LayerNorms/biases so that a weight mix-up would show.
    with torch.no_grad():
        for name, p in ref.named_parameters():
            if 'ln' in name or 'bias' in name:
                p.add_(torch.randn_like(p) * 0.1)
    ours = PromptedVisionTransformer(**cfg, **(prompt_kwargs or dict(
        num_prompts=0, guided_layers=())))
    missing, unexpected = ours.load_state_dict(ref.state_dict(), strict=False)
    assert not unexpected
    assert set(missing) == set(ours.own_state_keys())
    ref.eval()
    ours.eval()
    return ref, ours


@pytest.mark.parametrize('vit_kwargs', [
    dict(out_indices=3),
    dict(out_indices=(0, 1, 2, 3)),
    dict(out_indices=(1, 3), with_cls_token=False),
    dict(out_indices=(1, 3), final_norm=True, output_cls_token=True),
    dict(out_indices=(2, ), out_origin=True, pre_norm=True),
    dict(out_indices=(0, 3), patch_bias=True, interpolate_mode='bilinear'),
])
def test_prompt_free_equals_mmseg_vit(vit_kwargs):
    ref, ours = _pair(**vit_kwargs)
    # Non-square input that is not the configured img_size: forces the
    # pos-embed resizing path.
    x = torch.randn(2, 3, 48, 80)
    with torch.no_grad():
        expected, got = ref(x), ours(x)
    assert len(expected) == len(got)
    for e, g in zip(expected, got):
        if isinstance(e, list):
            for ee, gg in zip(e, g):
                torch.testing.assert_close(gg, ee, rtol=1e-5, atol=1e-5)
        else:
            assert g.shape == e.shape == (2, 64, 3, 5)
            torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-5)


def test_prompted_output_shapes_and_keys():
    ref, ours = _pair(dict(num_prompts=3, num_proxy_prompts=2,
                           guided_layers=[2]), out_indices=(1, 2, 3))
    assert set(ref.state_dict()) <= set(ours.state_dict())
    assert sorted(ours.own_state_keys()) == [
        'prompt_tokens', 'proxy_prompt_tokens']
    assert ours.prompt_tokens.shape == (3, 3, 64)
    assert ours.proxy_prompt_tokens.shape == (1, 2, 64)
    assert not any('head' in n for n, _ in ours.named_parameters())
    assert not any('head' in n for n, _ in ours.named_buffers())
    outs = ours(torch.randn(2, 3, 64, 64))
    assert [tuple(o.shape) for o in outs] == [(2, 64, 4, 4)] * 3
    # Prompts change the features (they attend with the image tokens).
    with torch.no_grad():
        assert not torch.allclose(outs[-1], ref(torch.randn(2, 3, 64, 64))[-1])


def test_prompt_init_rule():
    m = PromptedVisionTransformer(**TINY_VIT, num_prompts=5,
                                  num_proxy_prompts=3, guided_layers=[1])
    # xavier_uniform on [depth, len, C] / 8: bound sqrt(6 / (C (len+depth)))/8
    for p, depth, length in ((m.prompt_tokens, 3, 5),
                             (m.proxy_prompt_tokens, 1, 3)):
        bound = (6 / (64 * (length + depth)))**0.5 / 8
        assert p.abs().max() <= bound
        assert p.abs().max() > 0.5 * bound


def _trainable(model):
    return {n for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize('kv', [False, True])
def test_frozen_by_construction_and_gradients(kv, tmp_path):
    m = PromptedVisionTransformer(**TINY_VIT, num_prompts=3,
                                  num_proxy_prompts=2, guided_layers=[1],
                                  tune_kv_bias=kv,
                                  out_indices=(1, 3))
    expected = {'prompt_tokens', 'proxy_prompt_tokens'}
    if kv:
        expected.add('kv_bias_delta')
        assert m.kv_bias_delta.numel() == 2 * 4 * 64
    assert _trainable(m) == expected
    # Survives init_weights and loading a checkpoint.
    m.init_weights()
    m.load_state_dict(copy.deepcopy(m.state_dict()))
    assert _trainable(m) == expected

    m.train()
    outs = m(torch.randn(2, 3, 64, 64))
    sum(o.square().mean() for o in outs).backward()
    for name, p in m.named_parameters():
        if name in expected:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert p.grad is None, name
    # Every layer's prompts get a gradient, except those after the last
    # out_index (layer 3 outputs nothing after its own attention... it does:
    # layer 3 is an out index, so all 4 layers must receive gradients).
    plain_rows = m.prompt_tokens.grad.abs().sum((1, 2))
    assert (plain_rows > 0).all()
    assert m.proxy_prompt_tokens.grad.abs().sum() > 0
    if kv:
        g = m.kv_bias_delta.grad
        assert (g.abs().sum((1, 2)) > 0).all()


def test_kv_bias_delta_equals_shifted_pretrained_bias():
    _, ours = _pair(dict(num_prompts=2, num_proxy_prompts=2,
                         guided_layers=[1], tune_kv_bias=True))
    plain = copy.deepcopy(ours)
    plain.kv_bias_delta = None
    torch.manual_seed(1)
    with torch.no_grad():
        ours.kv_bias_delta.normal_()
        for i, layer in enumerate(plain.layers):
            bias = layer.attn.attn.in_proj_bias
            bias[64:] += ours.kv_bias_delta[i].flatten()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x)[0], plain(x)[0])


@pytest.mark.parametrize('gated', [False, True])
def test_with_cp_same_outputs_and_gradients(gated):
    kw = dict(num_prompts=3, num_proxy_prompts=2, guided_layers=[2],
              gated_prompts=gated)
    torch.manual_seed(0)
    a = PromptedVisionTransformer(**TINY_VIT, **kw, out_indices=(1, 3))
    b = PromptedVisionTransformer(**TINY_VIT, **kw, out_indices=(1, 3),
                                  with_cp=True)
    if gated:  # a non-zero gate: the prompts' path is open
        with torch.no_grad():
            a.prompt_gate.normal_(0, 0.5)
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 3, 64, 64)
    grads = []
    for m in (a, b):
        m.train()
        outs = m(x)
        sum(o.sum() for o in outs).backward()
        grads.append((outs, m.prompt_tokens.grad.clone(),
                      m.proxy_prompt_tokens.grad.clone()) +
                     ((m.prompt_gate.grad.clone(), ) if gated else ()))
    for ga, gb in zip(grads[0][1:], grads[1][1:]):
        torch.testing.assert_close(ga, gb)
    for oa, ob in zip(grads[0][0], grads[1][0]):
        torch.testing.assert_close(oa, ob)


def _direct_guided_features(m, x, layer_idx):
    """Explicit-attention recomputation of what the backbone exposes."""
    lay = explicit_vpt_forward(m, x)[1][layer_idx]
    image = lay.prompt_slice.stop  # the first image token
    return dict(proxies=lay.prompts, cls_query=lay.query[:, 0],
                prompt_output=lay.output[:, lay.prompt_slice],
                patch_mean=lay.tokens[:, image:].mean(1),
                query_mean=lay.query[:, image:].mean(1))


def test_guided_features_equal_direct_computation():
    m = PromptedVisionTransformer(**TINY_VIT, num_prompts=3,
                                  num_proxy_prompts=4, guided_layers=[1, 2],
                                  out_indices=(3, ))
    m.init_weights()
    x = torch.randn(2, 3, 64, 64)
    m.eval()
    capture = m.capture_guided()
    m(x)
    assert capture.pop() is None  # nothing kept in eval mode
    m.train()
    m(x)
    feats = capture.pop()
    assert capture.pop() is None
    assert sorted(feats.layers) == [1, 2]
    assert feats.final_cls.shape == (2, 64)
    for layer_idx in (1, 2):
        direct = _direct_guided_features(m, x, layer_idx)
        got = feats.layers[layer_idx]
        assert got.prompt_output.shape == (2, 4, 64)
        for name, value in direct.items():
            torch.testing.assert_close(
                getattr(got, name), value, rtol=1e-4, atol=1e-5, msg=name)
    # Not collected once the capture is removed.
    capture.remove()
    m(x)
    assert capture.pop() is None
    with m.capture_guided() as again:  # one at a time, re-attachable
        with pytest.raises(RuntimeError, match='already attached'):
            m.capture_guided()
        m(x)
        assert sorted(again.pop().layers) == [1, 2]
    m.capture_guided().remove()  # the with block detached it


def test_forward_cls_is_prompt_free():
    ref, ours = _pair(dict(num_prompts=3, num_proxy_prompts=2,
                           guided_layers=[1]), output_cls_token=True,
                      out_indices=3)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours.forward_cls(x), ref(x)[0][1],
                                   rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('kwargs, match', [
    (dict(guided_layers=[4]), 'outside the model depth'),
    (dict(guided_layers=[-5]), 'outside the model depth'),
    (dict(guided_layers=[1, 1]), 'twice'),
    (dict(num_prompts=-1), 'num_prompts'),
    (dict(num_proxy_prompts=-2, guided_layers=[1]), 'num_proxy_prompts'),
    (dict(num_proxy_prompts=0, guided_layers=[1]), 'num_proxy_prompts'),
    (dict(prompt_norm='batch', guided_layers=[1]), 'prompt_norm'),
    (dict(num_prompts=2, guided_layers=[], out_indices=(1, )),
     r'layers \[2, 3\].*never get a gradient'),
    (dict(num_prompts=2, guided_layers=[3], out_indices=(1, )),
     r'layers \[2\].*never get a gradient'),
])
def test_bad_config_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PromptedVisionTransformer(**{**TINY_VIT, **kwargs})


def test_guided_features_need_the_cls_token():
    m = PromptedVisionTransformer(**TINY_VIT, guided_layers=[1],
                                  with_cls_token=False)
    with pytest.raises(ValueError, match='with_cls_token=True'):
        m.capture_guided()


# ------------------------------------------------------------- checkpoints
def test_stock_mmseg_checkpoint_round_trip(tmp_path):
    ref, _ = _pair(out_indices=(1, 3), patch_bias=True)
    # The format of a converted pretrained file and of a full mmseg
    # segmentor checkpoint (backbone.* keys under 'state_dict').
    plain = tmp_path / 'vit.pth'
    torch.save(ref.state_dict(), plain)
    full = tmp_path / 'segmentor.pth'
    torch.save(dict(state_dict={
        **{f'backbone.{k}': v for k, v in ref.state_dict().items()},
        'decode_head.conv_seg.weight': torch.zeros(3, 3)}), full)
    x = torch.randn(1, 3, 64, 64)
    for path in (plain, full):
        m = PromptedVisionTransformer(
            **TINY_VIT, out_indices=(1, 3), patch_bias=True, num_prompts=0,
            guided_layers=(), init_cfg=dict(type='Pretrained',
                                            checkpoint=str(path)))
        m.init_weights()
        assert m.eval() is m  # unlike mmseg's ViT, train() returns self
        with torch.no_grad():
            for a, b in zip(m(x), ref(x)):
                torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_pretrained_pos_embed_resized_and_final_norm_ignored(tmp_path):
    ref = VisionTransformer(**{**TINY_VIT, 'img_size': (32, 32)},
                            final_norm=True)
    torch.nn.init.normal_(ref.pos_embed,
                          generator=torch.Generator().manual_seed(0))
    path = tmp_path / 'vit32.pth'
    torch.save(ref.state_dict(), path)
    m = PromptedVisionTransformer(**TINY_VIT, num_prompts=2, guided_layers=[1],
                                  num_proxy_prompts=2, init_cfg=dict(
                                      type='Pretrained', checkpoint=str(path)))
    m.init_weights()  # ln1.* (unused final norm) is accepted, pos resized
    assert m.pos_embed.shape == (1, 17, 64)
    # The same resize as mmseg's ViT (bicubic, float32): exactly.
    expected = VisionTransformer.resize_pos_embed(ref.pos_embed.detach(),
                                                  (4, 4), (2, 2), 'bicubic')
    torch.testing.assert_close(m.pos_embed.detach(), expected, rtol=0, atol=0)
    assert m.pretrained_source == str(path)
    assert _trainable(m) == {'prompt_tokens', 'proxy_prompt_tokens'}


@pytest.mark.parametrize('change, match', [
    (dict(embed_dims=32, num_heads=4), 'shape mismatches'),
    (dict(num_layers=3), 'missing keys: layers.3'),
    (dict(num_layers=5), 'unexpected keys: layers.4'),
    (dict(patch_bias=True), 'patch_bias=True'),
])
def test_wrong_checkpoint_is_a_clear_error(tmp_path, change, match):
    other = VisionTransformer(**{**TINY_VIT, **change})
    path = tmp_path / 'other.pth'
    torch.save(other.state_dict(), path)
    m = PromptedVisionTransformer(**TINY_VIT, num_prompts=2, guided_layers=[1],
                                  num_proxy_prompts=2, init_cfg=dict(
                                      type='Pretrained', checkpoint=str(path)))
    with pytest.raises(RuntimeError, match=match) as info:
        m.init_weights()
    assert str(path) in str(info.value)


def test_missing_patch_bias_in_checkpoint_is_an_error(tmp_path):
    path = tmp_path / 'nobias.pth'
    torch.save(VisionTransformer(**TINY_VIT).state_dict(), path)
    m = PromptedVisionTransformer(**TINY_VIT, patch_bias=True, num_prompts=1,
                                  guided_layers=(), init_cfg=dict(
                                      type='Pretrained', checkpoint=str(path)))
    with pytest.raises(RuntimeError,
                       match='missing keys: patch_embed.projection.bias'):
        m.init_weights()
