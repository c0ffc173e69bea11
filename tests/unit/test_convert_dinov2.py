"""DINOv2-family weights: the ``dinov2`` source of ``tools/convert_weights.py``
(:mod:`davpt_seg.weights.convert.dinov2`) and the backbone's register tokens.

Random timm DINOv2 models (2 blocks, 56 px) in timm names and in the official
facebookresearch/dinov2 names are converted, loaded strictly into a
prompt-free ``PromptedVisionTransformer`` and compared with timm's
``forward_features``. The real ViT-S/14 of ``../shared/data`` (if present) is
compared with an explicit plain-torch forward that applies LayerScale
unfolded.
"""
import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from mmseg.models.backbones import VisionTransformer

import davpt_seg  # noqa: F401
from davpt_seg.models.backbones import PromptedVisionTransformer
from davpt_seg.weights import ConversionError
from davpt_seg.weights.convert import (convert_file, convert_state_dict,
                                       fold_layer_scale)
from helpers import ROOT

timm = pytest.importorskip('timm')

SHARED = Path(os.environ.get('DAVPT_SHARED_DATA',
                             ROOT.parent / 'shared' / 'data'))
REAL = SHARED / 'weights' / 'dinov2_vits14_imgfocus.pth'
IMG, DIMS = 56, 384  # 4 x 4 patches of 14 px
# name -> (registers, patch size, input size)
MODELS = {'vit_small_patch14_dinov2': (0, 14, IMG),
          'vit_small_patch14_reg4_dinov2': (4, 14, IMG),
          'deit3_small_patch16_224': (0, 16, 64)}


# ---------------------------------------------------------------- helpers
@torch.no_grad()
def _timm_model(name: str, seed: int = 0):
    """A 2-block timm model with distinct random values everywhere,
    LayerScale gammas in [0.1, 2)."""
    model = timm.create_model(name, pretrained=False,
                              img_size=MODELS[name][2], depth=2).eval()
    g = torch.Generator().manual_seed(seed)
    for key, p in model.named_parameters():
        noise = torch.randn(p.shape, generator=g)
        if key.endswith('.gamma'):
            p.copy_(0.1 + 1.9 * torch.rand(p.shape, generator=g))
        elif p.ndim == 1:
            p.copy_((1.0 if key.endswith('weight') else 0.0) + 0.1 * noise)
        elif key in ('cls_token', 'pos_embed', 'reg_token'):
            p.copy_(0.5 * noise)
        else:
            p.copy_(noise / p[0].numel()**0.5)
    return model


def _official(sd: dict, chunked: bool = False) -> dict:
    """timm DINOv2 names -> the facebookresearch/dinov2 release's (inverse of
    timm's ``_convert_dinov2``): ``register_tokens``, ``mask_token`` and, for
    register models, a class-token position split off ``cls_token``."""
    sd = dict(sd)
    g = torch.Generator().manual_seed(1)
    if 'reg_token' in sd:
        p0 = torch.randn(1, 1, DIMS, generator=g)
        sd['register_tokens'] = sd.pop('reg_token')
        sd['cls_token'] = sd['cls_token'] - p0
        sd['pos_embed'] = torch.cat([p0, sd['pos_embed']], dim=1)
    sd['mask_token'] = torch.randn(1, DIMS, generator=g)
    if chunked:  # block_chunks=2 of a 2-block model: blocks.<chunk>.<N>
        sd = {('blocks.{0}.{0}.{1}'.format(*k[7:].split('.', 1))
               if k.startswith('blocks.') else k): v for k, v in sd.items()}
    return sd


def _backbone(registers=0, patch=14, img=IMG, depth=2, **kwargs):
    cfg = dict(img_size=img, patch_size=patch, embed_dims=DIMS,
               num_layers=depth, num_heads=6, mlp_ratio=4, qkv_bias=True,
               out_indices=(depth - 1, ), final_norm=True, patch_bias=True,
               with_cls_token=True, interpolate_mode='bicubic',
               norm_cfg=dict(type='LN', eps=1e-6),
               num_register_tokens=registers,
               num_prompts=0, guided_layers=(), num_proxy_prompts=0)
    cfg.update(kwargs)
    return PromptedVisionTransformer(**cfg)


@torch.no_grad()
def _timm_tokens(model, x):
    """timm ``forward_features``: ([B, C, h, w] patch map, [B, C] cls)."""
    tokens = model.forward_features(x)
    patches = tokens[:, model.num_prefix_tokens:]
    b, n, c = patches.shape
    side = int(n**0.5)
    return patches.transpose(1, 2).reshape(b, c, side, side), tokens[:, 0]


def _assert_close(got, ref, tol=1e-4):
    assert got.shape == ref.shape
    err = ((got - ref).abs().max() / ref.abs().max()).item()
    assert err < tol, f'relative error {err:.2e}'


@pytest.fixture(scope='module')
def models():
    """name -> (timm model, its state dict, input, timm map, timm cls)."""
    out = {}
    for name, (_, _, img) in MODELS.items():
        x = torch.randn(2, 3, img, img,
                        generator=torch.Generator().manual_seed(0))
        model = _timm_model(name)
        sd = {k: v.clone() for k, v in model.state_dict().items()}
        out[name] = (model, sd, x) + _timm_tokens(model, x)
    return out


def _loaded(name, models, layout='timm', **kwargs):
    """Convert ``name`` in ``layout`` and load it into a backbone."""
    _, sd, _, _, _ = models[name]
    if layout != 'timm':
        sd = _official(sd, chunked=layout == 'chunked')
    result = convert_state_dict(sd)
    registers, patch, img = MODELS[name]
    model = _backbone(registers, patch, img, **kwargs)
    model.load_pretrained(result.state_dict)
    return model.eval(), result


# ---------------------------------------------------------- conversion
@pytest.mark.parametrize('name, layout', [
    (name, layout) for name in MODELS
    for layout in ('timm', 'official', 'chunked')
    if layout == 'timm' or 'dinov2' in name])  # DeiT III: timm names only
def test_converted_backbone_matches_timm(name, layout, models):
    model, result = _loaded(name, models, layout)
    _, _, x, ref_map, ref_cls = models[name]
    registers = MODELS[name][0]
    assert result.source == 'dinov2' and result.detected
    assert result.spec.num_register_tokens == registers
    assert ('register_tokens' in result.state_dict) == bool(registers)
    assert not any('.ls' in k or 'gamma' in k for k in result.state_dict)
    _, patch, img = MODELS[name]
    assert result.state_dict['pos_embed'].shape[1] == 1 + (img // patch)**2
    if layout != 'timm':
        assert 'mask_token' in result.dropped
    with torch.no_grad():
        _assert_close(model(x)[0], ref_map)
        _assert_close(model.forward_cls(x), ref_cls)


def test_layer_scale_fold_is_exact_and_checked():
    g = torch.Generator().manual_seed(0)
    w, b = torch.randn(8, 8, generator=g), torch.randn(8, generator=g)
    gamma = torch.rand(8, generator=g) + 0.1
    sd = {'blocks.0.attn.proj.weight': w, 'blocks.0.attn.proj.bias': b,
          'blocks.0.mlp.fc2.weight': torch.randn(8, 32, generator=g),
          'blocks.0.ls1.gamma': gamma, 'blocks.0.ls2.gamma': gamma}
    out, n = fold_layer_scale(sd, 'x.pth')
    assert n == 2 and not any('gamma' in k for k in out)
    assert torch.equal(out['blocks.0.attn.proj.weight'],
                       (gamma.double()[:, None] * w.double()).float())
    assert torch.equal(out['blocks.0.attn.proj.bias'],
                       (gamma.double() * b.double()).float())
    h = torch.randn(3, 8, generator=g)
    torch.testing.assert_close(
        F.linear(h, out['blocks.0.attn.proj.weight'],
                 out['blocks.0.attn.proj.bias']), gamma * F.linear(h, w, b))
    with pytest.raises(ConversionError, match='missing blocks.0.ls2.gamma'):
        fold_layer_scale({k: v for k, v in sd.items()
                          if k != 'blocks.0.ls2.gamma'}, 'x.pth')
    with pytest.raises(ConversionError, match=r'shape \(4,\)'):
        fold_layer_scale(dict(sd, **{'blocks.0.ls1.gamma': gamma[:4]}), 'x')


def test_bad_dinov2_checkpoints_are_clear_errors(models):
    _, sd, _, _, _ = models['vit_small_patch14_reg4_dinov2']
    off = _official(sd)
    both = dict(off, reg_token=off['register_tokens'])
    with pytest.raises(ConversionError, match='both'):
        convert_state_dict(both, name='both.pth')
    bad = dict(off, register_tokens=torch.zeros(1, 4, 10))
    with pytest.raises(ConversionError, match=r'register_tokens has shape'):
        convert_state_dict(bad, name='bad.pth')
    swiglu = dict(off, **{'blocks.0.mlp.w12.weight': torch.zeros(2, 2)})
    with pytest.raises(ConversionError, match='SwiGLU'):
        convert_state_dict(swiglu, name='g14.pth')
    with pytest.raises(ConversionError, match='looks like a dinov2'):
        convert_state_dict(off, source='timm', name='reg.pth')


def test_cli_official_reg_file(models, tmp_path, capsys):
    from tools import convert_weights as cli
    name = 'vit_small_patch14_reg4_dinov2'
    _, sd, x, ref_map, _ = models[name]
    src, dst = tmp_path / 'dinov2_reg4.pth', tmp_path / 'out' / 'conv.pth'
    torch.save(_official(sd), src)
    assert cli.main([str(src), str(dst), '--source', 'dinov2']) == 0
    text = capsys.readouterr().out
    assert 'dinov2 (given)' in text and 'num_register_tokens=4' in text
    assert 'mask_token dropped' in text and 'LayerScale folded' in text
    model = _backbone(4, init_cfg=dict(type='Pretrained', checkpoint=str(dst)))
    model.init_weights()
    with torch.no_grad():
        _assert_close(model.eval()(x)[0], ref_map)
    assert convert_file(src).source == 'dinov2'


# ------------------------------------------------------- register tokens
def test_register_keys_frozen_and_validated():
    plain = set(VisionTransformer(
        img_size=IMG, patch_size=14, embed_dims=DIMS, num_layers=2,
        num_heads=6, patch_bias=True, final_norm=True).state_dict())
    assert set(_backbone(0).state_dict()) == plain
    model = _backbone(4, num_prompts=2)
    assert set(model.state_dict()) - plain - set(model.own_state_keys()) \
        == {'register_tokens'}
    assert model.register_tokens.shape == (1, 4, DIMS)
    assert not model.register_tokens.requires_grad
    assert 'register_tokens' in model.frozen_state_keys()
    for bad in (-1, 1.5, True, '4'):
        with pytest.raises(ValueError, match='num_register_tokens'):
            _backbone(bad)


@pytest.mark.parametrize('have, want, match', [
    (4, 0, 'set num_register_tokens=4'),
    (4, 2, r'set num_register_tokens=4 \(now 2\)'),
    (0, 4, "no 'register_tokens'"),
])
def test_register_mismatch_is_a_clear_error(have, want, match, models):
    name = 'vit_small_patch14_reg4_dinov2' if have else \
        'vit_small_patch14_dinov2'
    result = convert_state_dict(models[name][1])
    with pytest.raises(RuntimeError, match=match):
        _backbone(want).load_pretrained(result.state_dict, source='w.pth')


def test_prompted_forward_with_registers(models):
    """Prompts + registers: guided features use the image tokens only,
    [CLS] stays at index 0, with_cp changes nothing, registers get no
    gradient."""
    name = 'vit_small_patch14_reg4_dinov2'
    _, _, x, _, _ = models[name]
    kwargs = dict(num_prompts=3, num_proxy_prompts=2, guided_layers=[0],
                  output_cls_token=True)
    runs = []
    for with_cp in (False, True):
        torch.manual_seed(0)  # same prompts in both runs
        model, _ = _loaded(name, models, with_cp=with_cp, **kwargs)
        model.train()
        with model.capture_guided() as capture:
            (fmap, cls), = model(x)
        assert fmap.shape == (2, DIMS, IMG // 14, IMG // 14)
        feats = capture.pop()
        (fmap.square().mean() + feats.layers[0].prompt_output.sum()
         ).backward()
        assert model.register_tokens.grad is None
        assert model.prompt_tokens.grad is not None
        runs.append((fmap.detach(), cls.detach(), feats,
                     model.prompt_tokens.grad.clone()))
    with torch.no_grad():  # layer-0 input: [CLS | 4 registers | image]
        t, _ = model.patch_embed(x)
        t = t + model.pos_embed[:, 1:]
        cls_in = model.cls_token + model.pos_embed[:, :1]
        q = F.linear(model.layers[0].norm1(t),
                     model.layers[0].attn.attn.in_proj_weight[:DIMS],
                     model.layers[0].attn.attn.in_proj_bias[:DIMS])
        q_cls = F.linear(model.layers[0].norm1(cls_in),
                         model.layers[0].attn.attn.in_proj_weight[:DIMS],
                         model.layers[0].attn.attn.in_proj_bias[:DIMS])
    got = runs[0][2].layers[0]
    torch.testing.assert_close(got.patch_mean, t.mean(1))
    torch.testing.assert_close(got.query_mean, q.mean(1))
    torch.testing.assert_close(got.cls_query, q_cls[:, 0].expand(2, -1))
    torch.testing.assert_close(runs[1][2].final_cls, runs[1][1])
    for a, b in zip(runs[0][:2] + runs[0][3:], runs[1][:2] + runs[1][3:]):
        torch.testing.assert_close(a, b)


def test_prompt_only_checkpoint_restores_registers(models, tmp_path):
    name = 'vit_small_patch14_reg4_dinov2'
    path = tmp_path / 'reg4.pth'
    torch.save(dict(convert_state_dict(models[name][1]).state_dict), path)
    init_cfg = dict(type='Pretrained', checkpoint=str(path))
    trained = _backbone(4, num_prompts=2, init_cfg=init_cfg)
    trained.init_weights()
    prompts = {k: v for k, v in trained.state_dict().items()
               if k in trained.own_state_keys()}
    assert 'register_tokens' not in prompts
    fresh = _backbone(4, num_prompts=2, init_cfg=init_cfg)
    fresh.load_state_dict(prompts, strict=False)
    assert torch.equal(fresh.register_tokens, trained.register_tokens)
    assert torch.equal(fresh.prompt_tokens, trained.prompt_tokens)


# ------------------------------------------------------------ real weights
def _reference_forward(sd, x, heads=6, eps=1e-6):
    """Plain-torch DINOv2 ViT (no registers) on its native grid, LayerScale
    applied explicitly; returns the normed patch tokens [B, N, C]."""
    t = F.conv2d(x, sd['patch_embed.proj.weight'], sd['patch_embed.proj.bias'],
                 stride=sd['patch_embed.proj.weight'].shape[-1])
    t = t.flatten(2).transpose(1, 2)
    B, _, C = t.shape
    t = torch.cat([sd['cls_token'].expand(B, -1, -1), t], 1) + sd['pos_embed']
    depth = 1 + max(int(k.split('.')[1]) for k in sd if k.startswith('blocks'))
    for i in range(depth):
        p = lambda n: sd[f'blocks.{i}.{n}']  # noqa: E731
        h = F.layer_norm(t, (C, ), p('norm1.weight'), p('norm1.bias'), eps)
        q, k, v = F.linear(h, p('attn.qkv.weight'), p('attn.qkv.bias')).view(
            B, -1, 3, heads, C // heads).permute(2, 0, 3, 1, 4)
        a = ((q @ k.transpose(-1, -2)) * (C // heads)**-0.5).softmax(-1) @ v
        a = a.transpose(1, 2).reshape(B, -1, C)
        t = t + p('ls1.gamma') * F.linear(a, p('attn.proj.weight'),
                                          p('attn.proj.bias'))
        h = F.layer_norm(t, (C, ), p('norm2.weight'), p('norm2.bias'), eps)
        h = F.gelu(F.linear(h, p('mlp.fc1.weight'), p('mlp.fc1.bias')))
        t = t + p('ls2.gamma') * F.linear(h, p('mlp.fc2.weight'),
                                          p('mlp.fc2.bias'))
    t = F.layer_norm(t, (C, ), sd['norm.weight'], sd['norm.bias'], eps)
    return t[:, 1:]


@pytest.mark.skipif(not REAL.is_file(),
                    reason=f'real DINOv2 weights not found at {REAL} (set '
                    'DAVPT_SHARED_DATA to the shared data folder)')
def test_real_dinov2_vits14_matches_plain_forward():
    """The real ViT-S/14 at its native 518 px grid (37 x 37, no resize)."""
    sd = torch.load(REAL, map_location='cpu', weights_only=True)
    result = convert_file(REAL)
    assert result.source == 'dinov2' and result.spec.depth == 12
    model = _backbone(0, img=518, depth=12)
    model.load_pretrained(result.state_dict, source=str(REAL))
    x = torch.randn(1, 3, 518, 518, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = _reference_forward(sd, x)
        got = model.eval()(x)[0].flatten(2).transpose(1, 2)
    _assert_close(got, ref)
