"""Tests for ``tools/convert_weights.py`` / :mod:`davpt_seg.weights.convert`.

Every supported source layout (timm ``.pth`` and ``.safetensors``, Google
JAX ``.npz``, MAE, MoCo v3) is produced from a timm ViT with random weights,
converted, loaded *strictly* into mmseg's ``VisionTransformer`` and checked
to give the same last-layer patch features as timm's ``forward_features``.
"""
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from mmseg.models.backbones import VisionTransformer
from safetensors.torch import save_file

from davpt_seg.weights import ConversionError, resize_pos_embed
from davpt_seg.weights.convert import (convert_file, convert_state_dict,
                                       detect_source, load_source_file)
from helpers import ROOT

timm = pytest.importorskip('timm')
from timm.layers import resample_abs_pos_embed  # noqa: E402

CLI = ROOT / 'tools' / 'convert_weights.py'
LAYOUTS = ('timm_pth', 'timm_safetensors', 'jax', 'mae', 'mocov3')
EXPECTED_SOURCE = {'timm_pth': 'timm', 'timm_safetensors': 'timm',
                   'jax': 'jax', 'mae': 'mae', 'mocov3': 'mocov3'}
TINY = dict(depth=12, dims=192, heads=3, img=64)  # vit_tiny_patch16 @ 64px


# ---------------------------------------------------------------- helpers
def _cli():
    """``tools/convert_weights.py`` as a module (``main(argv)`` in-process)."""
    from tools import convert_weights
    return convert_weights


@torch.no_grad()
def _randomize(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Give *every* parameter distinct random values.

    timm's init leaves biases at 0 and LayerNorms at (1, 0), which would
    hide swapped norms/biases; fan-in scaling keeps deep models stable.
    """
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        noise = torch.randn(p.shape, generator=g)
        if p.ndim == 1:
            base = 1.0 if name.endswith('weight') else 0.0
            p.copy_(base + 0.1 * noise)
        elif name in ('cls_token', 'pos_embed'):
            p.copy_(0.5 * noise)
        else:
            p.copy_(noise / p[0].numel()**0.5)
    return model.eval()


def _timm_vit(name: str, seed: int = 0, meta_init: bool = False, **kwargs):
    """A timm ViT with random weights (``meta_init`` skips timm's init)."""
    if meta_init:
        with torch.device('meta'):
            model = timm.create_model(name, pretrained=False, **kwargs)
        model = model.to_empty(device='cpu')
    else:
        model = timm.create_model(name, pretrained=False, **kwargs)
    return _randomize(model, seed)


def timm_to_jax(sd, num_heads: int) -> dict:
    """Inverse of ``timm.models.vision_transformer._load_weights``.

    Writes the original google-research/vision_transformer layout
    (classic, un-prefixed ``.npz`` keys) from a timm state dict.
    """

    def n(t):
        return t.detach().float().contiguous().numpy()

    dims = sd['cls_token'].shape[-1]
    head_dim = dims // num_heads
    depth = 1 + max(
        int(k.split('.')[1]) for k in sd if k.startswith('blocks.'))
    w = {  # conv OIHW -> HWIO
        'embedding/kernel': n(sd['patch_embed.proj.weight'].permute(
            2, 3, 1, 0)),
        'embedding/bias': n(sd['patch_embed.proj.bias']),
        'cls': n(sd['cls_token']),
        'Transformer/posembed_input/pos_embedding': n(sd['pos_embed']),
        'Transformer/encoder_norm/scale': n(sd['norm.weight']),
        'Transformer/encoder_norm/bias': n(sd['norm.bias']),
    }
    if 'head.weight' in sd:
        w['head/kernel'] = n(sd['head.weight'].T)
        w['head/bias'] = n(sd['head.bias'])
    for i in range(depth):
        b, p = f'blocks.{i}.', f'Transformer/encoderblock_{i}/'
        mha = p + 'MultiHeadDotProductAttention_1/'
        w[p + 'LayerNorm_0/scale'] = n(sd[b + 'norm1.weight'])
        w[p + 'LayerNorm_0/bias'] = n(sd[b + 'norm1.bias'])
        w[p + 'LayerNorm_2/scale'] = n(sd[b + 'norm2.weight'])
        w[p + 'LayerNorm_2/bias'] = n(sd[b + 'norm2.bias'])
        qkv_w = sd[b + 'attn.qkv.weight'].chunk(3)
        qkv_b = sd[b + 'attn.qkv.bias'].chunk(3)
        for name, qw, qb in zip(('query', 'key', 'value'), qkv_w, qkv_b):
            w[mha + name + '/kernel'] = n(qw.T.reshape(dims, num_heads,
                                                       head_dim))
            w[mha + name + '/bias'] = n(qb.reshape(num_heads, head_dim))
        w[mha + 'out/kernel'] = n(sd[b + 'attn.proj.weight'].T.reshape(
            num_heads, head_dim, dims))
        w[mha + 'out/bias'] = n(sd[b + 'attn.proj.bias'])
        for r in range(2):
            dense = p + f'MlpBlock_3/Dense_{r}/'
            w[dense + 'kernel'] = n(sd[b + f'mlp.fc{r + 1}.weight'].T)
            w[dense + 'bias'] = n(sd[b + f'mlp.fc{r + 1}.bias'])
    return w


def to_mae(sd) -> dict:
    """MAE pre-training layout: timm keys + decoder under ``'model'``."""
    dims = sd['cls_token'].shape[-1]
    g = torch.Generator().manual_seed(1)
    model = {k: v for k, v in sd.items() if not k.startswith('head.')}
    model['mask_token'] = torch.randn(1, 1, 64, generator=g)
    model['decoder_embed.weight'] = torch.randn(64, dims, generator=g)
    model['decoder_embed.bias'] = torch.randn(64, generator=g)
    model['decoder_pos_embed'] = torch.randn(*sd['pos_embed'].shape[:2], 64,
                                             generator=g)
    model['decoder_blocks.0.norm1.weight'] = torch.randn(64, generator=g)
    model['decoder_blocks.0.attn.qkv.weight'] = torch.randn(192, 64,
                                                            generator=g)
    model['decoder_norm.weight'] = torch.randn(64, generator=g)
    model['decoder_pred.weight'] = torch.randn(768, 64, generator=g)
    return {'model': model}


def to_mocov3(sd) -> dict:
    """MoCo v3 training checkpoint: DDP-prefixed base/momentum encoders.

    The momentum encoder holds *different* values, so picking it by
    mistake fails the feature check.
    """
    dims = sd['cls_token'].shape[-1]
    enc = {k: v for k, v in sd.items() if not k.startswith('head.')}
    # MoCo v3 replaces the classifier by a projection MLP with BatchNorm.
    enc['head.0.weight'] = torch.randn(256, dims)
    enc['head.1.weight'] = torch.ones(256)
    enc['head.1.running_mean'] = torch.zeros(256)
    enc['head.1.num_batches_tracked'] = torch.tensor(7)
    state = {f'module.base_encoder.{k}': v for k, v in enc.items()}
    state.update({f'module.momentum_encoder.{k}': v + 1.0
                  if v.is_floating_point() else v for k, v in enc.items()})
    state['module.predictor.0.weight'] = torch.randn(256, 256)
    state['module.predictor.1.running_var'] = torch.ones(256)
    return {
        'epoch': 300,
        'arch': 'vit_tiny',
        'state_dict': state,
        'optimizer': {'state': {}, 'param_groups': [{'lr': 1.5e-4,
                                                     'params': [0, 1]}]},
    }


def write_layout(layout: str, sd, num_heads: int, tmp: Path) -> Path:
    """Save ``sd`` (timm keys) as ``layout``; returns the file."""
    if layout == 'timm_pth':
        path = tmp / 'vit_timm.pth'
        torch.save({'state_dict': sd}, path)  # nested, as timm train ckpts
    elif layout == 'timm_safetensors':
        path = tmp / 'model.safetensors'
        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    elif layout == 'jax':
        path = tmp / 'ViT-Ti_16.npz'
        np.savez(path, **timm_to_jax(sd, num_heads))
    elif layout == 'mae':
        path = tmp / 'mae_pretrain_vit.pth'
        torch.save(to_mae(sd), path)
    elif layout == 'mocov3':
        path = tmp / 'vit-ti-300ep.pth.tar'
        torch.save(to_mocov3(sd), path)
    else:
        raise ValueError(layout)
    return path


def mmseg_vit(dims, depth, heads, img, **kwargs):
    """mmseg ViT matching a converted checkpoint (see module docstring)."""
    cfg = dict(
        img_size=img,
        patch_size=16,
        embed_dims=dims,
        num_layers=depth,
        num_heads=heads,
        mlp_ratio=4,
        out_indices=[depth - 1],
        qkv_bias=True,
        patch_bias=True,
        final_norm=True,
        with_cls_token=True,
        interpolate_mode='bicubic',
        norm_cfg=dict(type='LN', eps=1e-6))
    cfg.update(kwargs)
    return VisionTransformer(**cfg)


@torch.no_grad()
def timm_patch_features(model, x, norm=None) -> torch.Tensor:
    """timm ``forward_features(x)[:, 1:]`` as an NCHW map."""
    tokens = model.forward_features(x)
    if norm is not None:
        tokens = norm(tokens)
    b, _, c = tokens.shape
    h, w = x.shape[-2] // 16, x.shape[-1] // 16
    return tokens[:, 1:].reshape(b, h, w, c).permute(0, 3, 1, 2)


@torch.no_grad()
def assert_same_features(state_dict, ref, x, dims, depth, heads, img,
                         model=None):
    """Strict-load ``state_dict`` into mmseg's ViT, compare to ``ref``."""
    if model is None:
        model = mmseg_vit(dims, depth, heads, img)
    model.load_state_dict(state_dict, strict=True)
    model.eval()  # mmseg ViT.train() returns None
    out = model(x)[0]
    assert out.shape == ref.shape
    err = (out - ref).abs().max() / ref.abs().max()
    assert err < 1e-4, f'relative error {err:.2e}'


def _with_pos(model, grid):
    """timm ``model`` evaluated on another grid, pos_embed resized the
    reference way (timm's own resampler, bilinear, no antialias)."""
    model.pos_embed = torch.nn.Parameter(
        resample_abs_pos_embed(
            model.pos_embed.detach(), new_size=grid, num_prefix_tokens=1,
            interpolation='bilinear', antialias=False))
    model.patch_embed.set_input_size(img_size=tuple(16 * g for g in grid))
    return model


# ------------------------------------------------------------------ tests
@pytest.fixture(scope='module')
def tiny():
    """Random vit_tiny_patch16 @ 64px: model, timm state dict, input."""
    model = _timm_vit('vit_tiny_patch16_224', seed=0, img_size=TINY['img'])
    x = torch.randn(2, 3, TINY['img'], TINY['img'],
                    generator=torch.Generator().manual_seed(0))
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    return model, sd, x, timm_patch_features(model, x)


def test_jax_helper_matches_timm_loader(tiny, tmp_path):
    """The test's JAX writer is the exact inverse of timm's JAX reader."""
    from timm.models.vision_transformer import _load_weights
    _, sd, _, _ = tiny
    path = write_layout('jax', sd, TINY['heads'], tmp_path)
    fresh = timm.create_model('vit_tiny_patch16_224', pretrained=False,
                              img_size=TINY['img'])
    _load_weights(fresh, str(path))
    for k, v in fresh.state_dict().items():
        torch.testing.assert_close(v, sd[k], rtol=0, atol=0, msg=k)


@pytest.mark.parametrize('layout', LAYOUTS)
def test_cli_converts_each_layout(layout, tiny, tmp_path, capsys):
    """timm .pth/.safetensors, JAX .npz, MAE, MoCo v3 -> same features."""
    model, sd, x, ref = tiny
    src = write_layout(layout, sd, TINY['heads'], tmp_path)
    dst = tmp_path / 'out' / 'vit_mmseg.pth'
    assert _cli().main([str(src), str(dst)]) == 0
    summary = capsys.readouterr().out
    assert f'source format : {EXPECTED_SOURCE[layout]} (detected)' in summary
    assert 'depth         : 12' in summary
    assert 'patch_bias=True' in summary
    if layout == 'jax':
        assert 'num heads     : 3 (from the weights)' in summary
    converted = torch.load(dst, weights_only=True)
    assert type(converted) is dict and all(
        isinstance(v, torch.Tensor) for v in converted.values())
    assert not any(k.startswith(('head', 'decoder', 'mask_token', 'base_'))
                   for k in converted)
    assert_same_features(converted, ref, x, TINY['dims'], TINY['depth'],
                         TINY['heads'], TINY['img'])


@pytest.mark.parametrize('layout', LAYOUTS)
def test_explicit_source(layout, tiny, tmp_path):
    """``auto`` detects each layout; a contradicting --source is refused."""
    _, sd, _, _ = tiny
    src = write_layout(layout, sd, TINY['heads'], tmp_path)
    obj, container = load_source_file(src)
    assert detect_source(obj, container, str(src)) == EXPECTED_SOURCE[layout]
    result = convert_file(src, source=EXPECTED_SOURCE[layout])
    assert not result.detected and result.spec.depth == TINY['depth']
    wrong = 'timm' if layout in ('jax', 'mocov3') else 'mocov3'
    with pytest.raises(ConversionError, match='looks like'):
        convert_file(src, source=wrong)


def test_pos_embed_resize_matches_timm_and_mmseg(tiny):
    """--img-size: same result as timm's resampler and mmseg's resize."""
    model, sd, _, _ = tiny
    result = convert_state_dict(sd, img_size=96)
    assert result.spec.pos_grid == (6, 6) and result.src_pos_grid == (4, 4)
    x = torch.randn(1, 3, 96, 96, generator=torch.Generator().manual_seed(1))
    ref_model = _timm_vit('vit_tiny_patch16_224', seed=0, img_size=64)
    ref = timm_patch_features(_with_pos(ref_model, (6, 6)), x)
    assert_same_features(result.state_dict, ref, x, TINY['dims'],
                         TINY['depth'], TINY['heads'], 96)
    # Non-square grid, against mmseg's own static resize.
    for mode in ('bilinear', 'bicubic'):
        out = convert_state_dict(sd, img_size=(64, 112),
                                 interpolate_mode=mode)
        assert out.spec.pos_grid == (4, 7)
        expected = VisionTransformer.resize_pos_embed(
            sd['pos_embed'], (4, 7), (4, 4), mode)
        torch.testing.assert_close(out.state_dict['pos_embed'], expected,
                                   rtol=0, atol=0)
    assert resize_pos_embed(sd['pos_embed'], (4, 4), (4, 4)) is \
        sd['pos_embed']


def test_fc_norm_and_bias_free_variants(tmp_path):
    """MAE fine-tuned (fc_norm, no norm) and bias-free qkv/patch models."""
    model = _timm_vit('vit_tiny_patch16_224', seed=3, img_size=32, depth=2,
                      global_pool='avg', fc_norm=True, qkv_bias=False)
    sd = model.state_dict()
    assert 'norm.weight' not in sd and 'fc_norm.weight' in sd
    del sd['patch_embed.proj.bias']
    with torch.no_grad():
        model.patch_embed.proj.bias.zero_()
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    ref = timm_patch_features(model, x, norm=model.fc_norm)
    torch.save({'model': sd}, tmp_path / 'mae_finetuned.pth')
    result = convert_file(tmp_path / 'mae_finetuned.pth', source='mae')
    assert not result.spec.qkv_bias and not result.spec.patch_bias
    assert any('fc_norm' in n for n in result.notes)
    assert_same_features(result.state_dict, ref, x, 192, 2, 3, 32)


def test_pretrained_init_cfg_loads_output(tiny, tmp_path):
    """The saved file works as ``init_cfg=dict(type='Pretrained')``."""
    _, sd, x, ref = tiny
    dst = tmp_path / 'vit.pth'
    assert _cli().main([str(write_layout('jax', sd, 3, tmp_path)),
                        str(dst)]) == 0
    model = mmseg_vit(TINY['dims'], TINY['depth'], TINY['heads'],
                      TINY['img'],
                      init_cfg=dict(type='Pretrained', checkpoint=str(dst)))
    model.init_weights()
    with torch.no_grad():
        model.eval()  # mmseg ViT.train() returns None
    out = model(x)[0]
    assert (out - ref).abs().max() / ref.abs().max() < 1e-4


@pytest.mark.parametrize('layout', LAYOUTS)
def test_prompted_backbone_matches_timm(layout, tiny, tmp_path):
    """Converted weights in our PromptedVisionTransformer (no prompts,
    loaded through its strict ``init_cfg=Pretrained`` path) give timm's
    patch features for the same input."""
    from davpt_seg.models.backbones import PromptedVisionTransformer
    _, sd, x, ref = tiny
    dst = tmp_path / 'vit.pth'
    src = write_layout(layout, sd, TINY['heads'], tmp_path)
    assert _cli().main([str(src), str(dst)]) == 0
    model = PromptedVisionTransformer(
        img_size=TINY['img'], patch_size=16, embed_dims=TINY['dims'],
        num_layers=TINY['depth'], num_heads=TINY['heads'], mlp_ratio=4,
        out_indices=[TINY['depth'] - 1], qkv_bias=True, patch_bias=True,
        final_norm=True, with_cls_token=True, interpolate_mode='bicubic',
        norm_cfg=dict(type='LN', eps=1e-6), num_prompts=0, guided_layers=(),
        init_cfg=dict(type='Pretrained', checkpoint=str(dst)))
    model.init_weights()
    model.eval()
    with torch.no_grad():
        out = model(x)[0]
    assert (out - ref).abs().max() / ref.abs().max() < 1e-4


@pytest.mark.slow
def test_vit_large_patch16_384_all_layouts():
    """Real ViT-L/16-384 architecture (24 blocks, 1024 dims, 16 heads,
    24x24 pos grid), random weights, in every layout.

    Affordable on CPU: timm's init is skipped (meta device + our own random
    fill), conversion runs in memory (the file containers are covered by
    the tiny model above) and pos_embed is resized 24x24 -> 4x4
    (``img_size=64``), so the forward passes see 16 patches.
    """
    model = _timm_vit('vit_large_patch16_384', seed=7, meta_init=True)
    sd = dict(model.state_dict())
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    ref = timm_patch_features(_with_pos(model, (4, 4)), x)
    layouts = {
        'timm': {'state_dict': sd},
        'jax': timm_to_jax(sd, num_heads=16),
        'mae': to_mae(sd),
        'mocov3': to_mocov3(sd),
    }
    from davpt_seg.models.backbones import PromptedVisionTransformer
    mmseg_model = mmseg_vit(1024, 24, 16, 64)
    prompted = PromptedVisionTransformer(
        img_size=64, patch_size=16, embed_dims=1024, num_layers=24,
        num_heads=16, mlp_ratio=4, out_indices=[23], qkv_bias=True,
        patch_bias=True, final_norm=True, with_cls_token=True,
        interpolate_mode='bicubic', norm_cfg=dict(type='LN', eps=1e-6),
        num_prompts=0, guided_layers=())
    for source, obj in layouts.items():
        result = convert_state_dict(obj, img_size=64, name=source)
        assert result.source == source, source
        s = result.spec
        assert (s.depth, s.embed_dims, s.mlp_hidden, s.patch_size) == \
            (24, 1024, 4096, 16)
        assert result.src_pos_grid == (24, 24) and s.pos_grid == (4, 4)
        if source == 'jax':
            assert s.num_heads == 16
        assert_same_features(result.state_dict, ref, x, 1024, 24, 16, 64,
                             model=mmseg_model)
        if source == 'timm':  # and through our prompted backbone
            prompted.load_pretrained(result.state_dict, source=source)
            prompted.eval()
            with torch.no_grad():
                out = prompted(x)[0]
            assert (out - ref).abs().max() / ref.abs().max() < 1e-4
        layouts[source] = result = None  # free memory early


# ----------------------------------------------------------------- errors
def _error(path, **kwargs) -> str:
    with pytest.raises(ConversionError, match=re.escape(str(path))) as info:
        convert_file(path, **kwargs)
    msg = str(info.value)
    assert str(path) in msg, msg
    return msg


@pytest.mark.parametrize('layout', ('timm_pth', 'timm_safetensors', 'jax'))
def test_corrupt_and_truncated_files(layout, tiny, tmp_path):
    """Truncated, random-byte, empty and missing files: clear errors."""
    _, sd, _, _ = tiny
    src = write_layout(layout, sd, TINY['heads'], tmp_path)
    data = src.read_bytes()
    truncated = src.with_name('truncated_' + src.name)
    truncated.write_bytes(data[:len(data) // 2])
    assert 'truncated' in _error(truncated)
    corrupt = src.with_name('corrupt_' + src.name)
    corrupt.write_bytes(os.urandom(4096))
    _error(corrupt)
    empty = src.with_name('empty_' + src.name)
    empty.write_bytes(b'')
    assert 'empty' in _error(empty)
    assert 'no such file' in _error(tmp_path / 'missing.pth')


def test_resnet_state_dict_is_rejected(tmp_path):
    """A CNN state dict (auto or --source timm) and a non-ViT .npz."""
    resnet = timm.create_model('resnet18', pretrained=False)
    path = tmp_path / 'resnet18.pth'
    torch.save(resnet.state_dict(), path)
    assert 'CNN' in _error(path)
    assert 'patch_embed.proj.weight' in _error(path, source='timm')
    np.savez(tmp_path / 'not_vit.npz', conv1=np.zeros((2, 2), np.float32))
    assert 'not a JAX ViT' in _error(tmp_path / 'not_vit.npz')


def test_broken_vits_are_rejected(tiny, tmp_path):
    """Missing blocks/keys, wrong shapes, unsupported variants."""
    _, sd, _, _ = tiny

    def save(name, d):
        torch.save(d, tmp_path / name)
        return tmp_path / name

    no_block = {k: v for k, v in sd.items() if not k.startswith('blocks.5.')}
    assert 'missing transformer block(s) [5]' in _error(
        save('missing_block.pth', no_block))
    no_key = {k: v for k, v in sd.items() if k != 'blocks.3.mlp.fc2.bias'}
    assert 'missing blocks.3.mlp.fc2.bias' in _error(
        save('missing_key.pth', no_key))
    bad = dict(sd, **{'blocks.2.mlp.fc1.weight': torch.zeros(700, 192)})
    assert 'blocks.2.mlp.fc1.weight has shape (700, 192)' in _error(
        save('bad_shape.pth', bad))
    bad_pos = dict(sd, pos_embed=torch.zeros(1, 20, 192))
    assert 'pos_embed has 20 positions' in _error(save('bad_pos.pth',
                                                       bad_pos))
    layer_scale = dict(sd, **{'blocks.0.ls1.gamma': torch.ones(192)})
    assert 'LayerScale' in _error(save('deit3.pth', layer_scale))
    assert 'patch size 16' in _error(save('ok.pth', sd), patch_size=14)

    jax = timm_to_jax(sd, TINY['heads'])
    jax = {k: v for k, v in jax.items() if 'encoderblock_5/' not in k}
    np.savez(tmp_path / 'jax_missing_block.npz', **jax)
    assert 'missing transformer block(s) [5]' in _error(
        tmp_path / 'jax_missing_block.npz')


def test_cli_subprocess(tiny, tmp_path):
    """The script runs standalone (one subprocess: ~10 s of imports)."""
    _, sd, _, _ = tiny
    src = write_layout('mocov3', sd, TINY['heads'], tmp_path)
    dst = tmp_path / 'vit_mmseg_96.pth'
    env = dict(os.environ, OMP_NUM_THREADS='1')
    proc = subprocess.run(
        [sys.executable, str(CLI), str(src), str(dst), '--img-size', '96',
         '--source', 'auto'],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert 'mocov3 (detected)' in proc.stdout
    assert 'resized from 4x4' in proc.stdout
    assert torch.load(dst, weights_only=True)['pos_embed'].shape == \
        (1, 37, 192)


def test_cli_failure_is_clean(tmp_path, capsys):
    """A bad input gives exit status 1 and a one-line error naming it."""
    bad = tmp_path / 'garbage.npz'
    bad.write_bytes(b'not a zip archive at all')
    assert _cli().main([str(bad), str(tmp_path / 'out.pth')]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f'error: {bad}:') and 'Traceback' not in err
    assert not (tmp_path / 'out.pth').exists()


def test_cli_on_a_training_checkpoint_gives_cli_advice(tmp_path, capsys):
    """An mmengine training checkpoint is already in our format: the
    command-line user is told which command to use, not a Python call."""
    from mmengine.logging import MessageHub
    hub = MessageHub.get_instance('convert_weights_training_ckpt')
    hub.update_scalar('train/loss', 1.0)
    src = tmp_path / 'iter_4.pth'
    torch.save(dict(meta=dict(iter=4, seed=np.int64(0)),
                    state_dict={'backbone.cls_token': torch.zeros(1, 1, 8)},
                    message_hub=hub.state_dict()), src)
    assert _cli().main([str(src), str(tmp_path / 'out.pth')]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f'error: {src} is a training checkpoint')
    for command in ('tools/test.py CONFIG CHECKPOINT', '--resume',
                    'load_from=CHECKPOINT', 'tools/extract_prompts.py'):
        assert command in err
    assert 'load_training_checkpoint' not in err and 'Traceback' not in err
    assert not (tmp_path / 'out.pth').exists()
