"""``PromptedVisionTransformer.capture_attention``: the captured maps equal
an explicit softmax(QK^T/sqrt(d)) over the documented ``[CLS | registers |
prompts | image]`` sequence, rows sum to one, the layout names the rows, and
the forward's outputs do not change."""
import pytest
import torch

import davpt_seg  # noqa: F401
from davpt_seg.models.backbones import PromptedVisionTransformer
from helpers.vit import explicit_vpt_forward

TINY = dict(img_size=(32, 32), patch_size=8, embed_dims=32, num_layers=3,
            num_heads=4, mlp_ratio=2, qkv_bias=True, drop_rate=0.,
            norm_cfg=dict(type='LN', eps=1e-6), out_indices=(1, 2))


def reference_attention(m, x):
    """Explicit VPT-Deep forward on ``[CLS | registers | prompts | image]``:
    per layer the [B, heads, T, T] attention probabilities in that order."""
    return {i: lay.attn for i, lay in explicit_vpt_forward(m, x)[1].items()}


def to_documented_order(attn, lay):
    """Captured [.., T, T] (internal order) -> the documented order
    [CLS | registers | prompts | image]."""
    idx = list(range(lay.num_cls)) + \
        list(range(lay.registers.start, lay.registers.stop)) + \
        list(range(lay.prompts.start, lay.prompts.stop)) + \
        list(range(lay.patches.start, lay.patches.stop))
    idx = torch.tensor(idx)
    return attn[..., idx, :][..., idx]


def build(**kw):
    torch.manual_seed(0)
    m = PromptedVisionTransformer(**TINY, **kw)
    m.init_weights()
    with torch.no_grad():
        for p in (m.prompt_tokens, m.proxy_prompt_tokens, m.register_tokens,
                  m.kv_bias_delta):
            if p is not None:
                p.normal_()  # large values: a mix-up would show
    return m.eval()


@pytest.mark.parametrize('kw', [
    dict(num_prompts=3, num_proxy_prompts=4, guided_layers=[1],
         tune_kv_bias=True, num_register_tokens=2,
         prompt_norm='layer'),
    dict(num_prompts=2, guided_layers=(), with_cls_token=False),
    dict(num_prompts=0, num_proxy_prompts=3, guided_layers=[2]),
])
def test_capture_equals_direct_softmax_and_keeps_outputs(kw):
    m = build(**kw)
    x = torch.randn(2, 3, 32, 40)  # 4 x 5 patches
    with torch.no_grad():
        plain = m(x)
        with m.capture_attention() as cap:
            captured = m(x)
        ref = reference_attention(m, x)
    for a, b in zip(plain, captured):
        assert torch.equal(a, b)  # capture adds work, changes nothing
    with torch.no_grad():
        m(x)  # after the block: detached, records nothing
    assert len(cap.records) == 1 and sorted(cap.attn) == [0, 1, 2]
    for i, attn in cap.attn.items():
        lay = cap.layout[i]
        assert lay.hw_shape == (4, 5) and lay.num_patches == 20
        assert lay.num_cls == int(m.with_cls_token)
        assert lay.num_registers == m.num_register_tokens
        prompts = m.layer_prompts(i)
        assert lay.num_prompts == (0 if prompts is None else len(prompts))
        assert attn.shape == (2, 4, lay.num_tokens, lay.num_tokens)
        assert len(lay.token_types()) == lay.num_tokens
        torch.testing.assert_close(attn.sum(-1), torch.ones(attn.shape[:-1]))
        torch.testing.assert_close(to_documented_order(attn, lay), ref[i],
                                   rtol=1e-4, atol=1e-5)


def test_views_of_a_record():
    m = build(num_prompts=3, num_proxy_prompts=4, guided_layers=[1],
              num_register_tokens=1)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad(), m.capture_attention(layers=[-2, 2]) as cap:
        m(x)
        m(x[:, :, :24])  # a second forward: a second record
    assert cap.layers == [1, 2] and len(cap.records) == 2
    first, last = cap.records
    assert last.hw_shape == (3, 4) and first.hw_shape == (4, 4)
    lay = first.layout[1]
    assert lay.prompt_kind == 'proxy' and first.layout[2].prompt_kind == \
        'plain' and lay.cls == 0 and lay.registers == slice(1, 2)
    maps = first.prompt_to_patches(1)
    assert maps.shape == (1, 4, 4, 4, 4)
    torch.testing.assert_close(maps.sum((-2, -1)), torch.ones(1, 4, 4))
    raw = first.prompt_to_patches(1, renormalize=False)
    mass = first.patch_mass(1)[:, :, lay.prompts]
    torch.testing.assert_close(raw.sum((-2, -1)), mass)
    torch.testing.assert_close(maps * mass[..., None, None], raw)
    cls_map = first.cls_to_patches(1)
    assert cls_map.shape == (1, 4, 4, 4)
    torch.testing.assert_close(first.cls_to_prompts(1),
                               first.attn[1][:, :, 0, lay.prompts])
    with pytest.raises(KeyError, match='not captured'):
        first.prompt_to_patches(0)


def test_capture_is_eval_only_and_checks_layers():
    m = build(num_prompts=2, guided_layers=())
    x = torch.randn(1, 3, 32, 32)
    with pytest.raises(ValueError, match='layer 3'):
        with m.capture_attention(layers=[3]):
            pass
    m.train()
    with pytest.raises(RuntimeError, match='eval-only'):
        with m.capture_attention():
            pass
    m.eval()
    with pytest.raises(RuntimeError, match='eval-only'):
        with m.capture_attention(), torch.no_grad():
            m.train()
            m(x)
    m.eval()
    with m.capture_attention() as cap:
        with pytest.raises(RuntimeError, match='already active'):
            with m.capture_attention():
                pass
    with pytest.raises(RuntimeError, match='no forward'):
        cap.last
