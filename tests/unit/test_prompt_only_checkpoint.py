"""Prompt-only checkpoints: identical features and predictions to the full
checkpoint through every loading path that never calls init_weights(),
including mmseg.apis.init_model (which clears init_cfg: the checkpoint's own
record of its pretrained file and fingerprint is used)."""
import copy
import io
import shutil
from functools import partial

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.runner import load_checkpoint
from mmseg.apis import inference_model, init_model
from mmseg.registry import MODELS

import davpt_seg  # noqa: F401
from davpt_seg.models.davpt import DAVPTObjective
from davpt_seg.weights import (PRETRAINED_RECORD, frozen_weights_sha256,
                               frozen_weights_summary, make_prompt_only)
import helpers.vit
from helpers import TOY_CONFIG
from helpers.processes import run_python
from helpers.toy_run import save_toy_vit

VIT = dict(img_size=(32, 32), patch_size=8, embed_dims=32, num_layers=2,
           num_heads=2, mlp_ratio=2, patch_bias=True,
           norm_cfg=dict(type='LN', eps=1e-6))


def model_cfg(pretrained, **change):
    backbone = dict(type='PromptedVisionTransformer', **VIT,
                    out_indices=(1, ), num_prompts=2, num_proxy_prompts=3,
                    guided_layers=[0],
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


def train_and_save(tmp_path, pretrained, **change):
    """A "trained" model on ``pretrained``: full.pth, prompts.pth (as the
    hook writes it: state_dict() with _metadata, DAVPTHook's mapping under
    'davpt'), old_prompts.pth (a prompt-only checkpoint from before the
    record existed, with the mapping in the model state as then)."""
    trained = MODELS.build(model_cfg(pretrained, **change))
    trained.init_weights()
    with torch.no_grad():  # "training": prompts, heads, BN stats, mapping
        for name, p in trained.named_parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.1)
        bn = trained.decode_head.convs[0].bn
        bn.running_mean.normal_()
    objective = DAVPTObjective(4, 3, 32)
    objective.mapping.accumulate(torch.randn(4, 32),
                                 torch.eye(4, dtype=torch.bool))
    objective.mapping.update()
    davpt = objective.state_dict()
    full = dict(state_dict=trained.state_dict(), meta={}, davpt=davpt)
    torch.save(full, tmp_path / 'full.pth')
    small = make_prompt_only(
        dict(state_dict=trained.state_dict(), meta={}, davpt=davpt), trained)
    torch.save(small, tmp_path / 'prompts.pth')
    old = make_prompt_only(  # plain dict, then strip the record
        dict(state_dict=dict(trained.state_dict()), meta={}), trained)
    del old['state_dict']._metadata['backbone'][PRETRAINED_RECORD]
    old['state_dict'].update({  # the mapping where earlier versions kept it
        'backbone.class_mapping.' + k[len('mapping.'):]: v
        for k, v in davpt.items()})
    torch.save(old, tmp_path / 'old_prompts.pth')
    trained.eval()
    return trained


save_vit = partial(helpers.vit.save_vit, **VIT)  # (path, seed)


@pytest.fixture()
def saved(tmp_path):
    init_default_scope('mmseg')
    pretrained = tmp_path / 'vit.pth'
    save_vit(pretrained, 0)
    trained = train_and_save(tmp_path, pretrained)
    return tmp_path, pretrained, trained


def outputs(model, x):
    model.eval()
    with torch.no_grad():
        return model.backbone(x)[0], model(x, mode='tensor')


def config_file(tmp, pretrained, name='cfg.py'):
    cfg = Config(dict(
        model=model_cfg(pretrained), default_scope='mmseg',
        test_pipeline=[dict(type='LoadImageFromFile'),
                       dict(type='PackSegInputs')]))
    cfg.dump(str(tmp / name))
    return str(tmp / name)


def predict(model, img):
    result = inference_model(model, img)
    return result.seg_logits.data, result.pred_sem_seg.data


def test_prompt_only_is_small_and_complete(saved):
    tmp, pretrained, trained = saved
    ckpt = torch.load(tmp / 'prompts.pth', weights_only=True)
    state = ckpt['state_dict']
    assert not any(k.startswith('backbone.layers') for k in state)
    assert 'backbone.pos_embed' not in state
    assert {'mapping.mapping', 'mapping.centroids'} <= set(ckpt['davpt'])
    for key in ('backbone.prompt_tokens', 'backbone.proxy_prompt_tokens',
                'decode_head.conv_seg.weight',
                'decode_head.convs.0.bn.running_mean'):
        assert key in state, key
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    assert (tmp / 'prompts.pth').stat().st_size < \
        0.5 * (tmp / 'full.pth').stat().st_size
    # The record: in the backbone's _metadata entry (reaches
    # _load_from_state_dict on every path), next to its usual 'version'.
    backbone = trained.backbone
    frozen = {n: p for n, p in backbone.named_parameters()
              if not p.requires_grad}
    entry = state._metadata['backbone']
    assert entry['version'] == backbone._version
    record = entry[PRETRAINED_RECORD]
    assert record == dict(checkpoint=str(pretrained),
                          abs_checkpoint=str(pretrained), prefix=None,
                          sha256=frozen_weights_sha256(frozen),
                          summary=frozen_weights_summary(frozen),
                          num_tensors=len(frozen))
    assert ckpt['meta']['davpt_prompt_only']['pretrained_sha256'] == \
        record['sha256']
    # A plain-dict state dict gets the same record.
    plain = make_prompt_only(
        dict(state_dict=dict(trained.state_dict())), trained)['state_dict']
    assert plain._metadata['backbone'][PRETRAINED_RECORD] == record
    assert set(plain) == set(state)


def test_runner_style_load_gives_identical_features_and_predictions(saved):
    tmp, pretrained, trained = saved
    x = torch.randn(2, 3, 32, 32)
    ref_feat, ref_pred = outputs(trained, x)
    for ckpt in ('full.pth', 'prompts.pth', 'old_prompts.pth'):
        # As runner.test() does: build, load, never init_weights().
        model = MODELS.build(model_cfg(pretrained))
        load_checkpoint(model, str(tmp / ckpt), map_location='cpu')
        feat, pred = outputs(model, x)
        torch.testing.assert_close(feat, ref_feat, rtol=0, atol=0)
        torch.testing.assert_close(pred, ref_pred, rtol=0, atol=0)
        # old_prompts.pth's legacy mapping keys are not model state
        assert not any('class_mapping' in k for k in model.state_dict())


def test_init_model_with_prompt_only_checkpoint(saved):
    """init_model clears backbone.init_cfg; the prompt-only checkpoint's
    recorded file is used and predictions are bit-identical to the full
    checkpoint's (and to the trained model's)."""
    tmp, pretrained, trained = saved
    cfg_path = config_file(tmp, pretrained)
    img = np.random.RandomState(0).randint(0, 256, (32, 32, 3), np.uint8)
    full = init_model(cfg_path, str(tmp / 'full.pth'), device='cpu')
    small = init_model(cfg_path, str(tmp / 'prompts.pth'), device='cpu')
    assert small.cfg.model.backbone.init_cfg is None
    assert small.backbone.pretrained_source == str(pretrained)
    for a, b in zip(predict(full, img), predict(small, img)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    x = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(outputs(small, x)[1], outputs(trained, x)[1],
                               rtol=0, atol=0)
    # torch's own load_state_dict, strict, on a model without init_cfg.
    cfg = model_cfg(pretrained)
    cfg['backbone']['init_cfg'] = None
    model = MODELS.build(cfg)
    model.load_state_dict(
        torch.load(tmp / 'prompts.pth', weights_only=True)['state_dict'])
    torch.testing.assert_close(outputs(model, x)[1], outputs(trained, x)[1],
                               rtol=0, atol=0)


def test_init_model_with_old_prompt_only_checkpoint_is_a_clear_error(saved):
    tmp, pretrained, _ = saved
    cfg_path = config_file(tmp, pretrained)
    with pytest.raises(RuntimeError, match='names no pretrained backbone'):
        init_model(cfg_path, str(tmp / 'old_prompts.pth'), device='cpu')


def test_moved_or_missing_pretrained_file(saved):
    tmp, pretrained, trained = saved
    cfg_path = config_file(tmp, pretrained)
    moved = tmp / 'elsewhere' / 'vit_moved.pth'
    moved.parent.mkdir()
    shutil.move(pretrained, moved)
    # init_cfg cleared, recorded file gone: names the recorded file.
    with pytest.raises(RuntimeError,
                       match=r'needs the pretrained backbone.*no candidate '
                       r'file.*vit\.pth \(recorded in the checkpoint\)'):
        init_model(cfg_path, str(tmp / 'prompts.pth'), device='cpu')
    # init_cfg file missing too: names both.
    model = MODELS.build(model_cfg(tmp / 'gone.pth'))
    with pytest.raises(RuntimeError,
                       match='it needs the pretrained backbone') as err:
        load_checkpoint(model, str(tmp / 'prompts.pth'))
    msg = str(err.value)
    assert 'prompt-only checkpoint: it needs the pretrained backbone' in msg
    assert 'gone.pth (model.backbone.init_cfg)' in msg
    assert f'{pretrained} (recorded in the checkpoint)' in msg
    # An old checkpoint still only knows init_cfg.
    with pytest.raises(RuntimeError, match=r'gone\.pth'):
        load_checkpoint(MODELS.build(model_cfg(tmp / 'gone.pth')),
                        str(tmp / 'old_prompts.pth'))
    # Pointing init_cfg at the moved file works (same fingerprint).
    x = torch.randn(1, 3, 32, 32)
    model = MODELS.build(model_cfg(moved))
    load_checkpoint(model, str(tmp / 'prompts.pth'))
    torch.testing.assert_close(outputs(model, x)[1], outputs(trained, x)[1],
                               rtol=0, atol=0)


def test_missing_init_cfg_file_falls_back_to_recorded_file(saved):
    tmp, pretrained, trained = saved
    model = MODELS.build(model_cfg(tmp / 'gone.pth'))
    load_checkpoint(model, str(tmp / 'prompts.pth'))
    assert model.backbone.pretrained_source == str(pretrained)
    x = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(outputs(model, x)[1], outputs(trained, x)[1],
                               rtol=0, atol=0)


def test_fingerprint_mismatch_is_a_clear_error(saved):
    tmp, pretrained, _ = saved
    other = tmp / 'other_vit.pth'
    save_vit(other, 1)  # same architecture, other weights
    match = r'trained on other frozen backbone weights.*other_vit\.pth'
    # init_cfg names the wrong file
    with pytest.raises(RuntimeError, match=match):
        load_checkpoint(MODELS.build(model_cfg(other)),
                        str(tmp / 'prompts.pth'))
    # ... and init_weights() already ran (Runner.train, then resume)
    model = MODELS.build(model_cfg(other))
    model.init_weights()
    with pytest.raises(RuntimeError, match=match):
        load_checkpoint(model, str(tmp / 'prompts.pth'))
    # the recorded file was replaced (init_model)
    shutil.copy(other, pretrained)
    with pytest.raises(RuntimeError, match=r'trained on other frozen '
                       r'backbone weights than those loaded from .*vit\.pth'):
        init_model(config_file(tmp, pretrained), str(tmp / 'prompts.pth'),
                   device='cpu')
    # an old checkpoint cannot tell (unchanged behaviour)
    load_checkpoint(MODELS.build(model_cfg(other)),
                    str(tmp / 'old_prompts.pth'))


def test_relative_recorded_path(tmp_path, monkeypatch):
    """A relative init_cfg path is recorded as written and made absolute
    against the writer's current directory. Loading tries the absolute path
    first, then the path as written relative to the current directory (a
    moved tree, run from its root again); the fingerprint guards both."""
    init_default_scope('mmseg')
    run_a = tmp_path / 'a'
    (run_a / 'pretrain').mkdir(parents=True)
    monkeypatch.chdir(run_a)
    save_vit(run_a / 'pretrain' / 'vit.pth', 0)
    trained = train_and_save(run_a, 'pretrain/vit.pth')
    record = torch.load('prompts.pth', weights_only=True)[
        'state_dict']._metadata['backbone'][PRETRAINED_RECORD]
    assert record['checkpoint'] == 'pretrain/vit.pth'
    assert record['abs_checkpoint'] == str(run_a / 'pretrain' / 'vit.pth')
    x = torch.randn(1, 3, 32, 32)
    ref = outputs(trained, x)[1]
    cfg_path = config_file(run_a, 'pretrain/vit.pth')
    # Another working directory: the absolute path is found.
    monkeypatch.chdir(tmp_path)
    model = init_model(cfg_path, str(run_a / 'prompts.pth'), device='cpu')
    assert model.backbone.pretrained_source == record['abs_checkpoint']
    torch.testing.assert_close(outputs(model, x)[1], ref, rtol=0, atol=0)
    # The tree moved: the relative path, from the new root.
    run_b = tmp_path / 'b'
    shutil.move(run_a, run_b)
    monkeypatch.chdir(run_b)
    model = init_model(str(run_b / 'cfg.py'), 'prompts.pth', device='cpu')
    assert model.backbone.pretrained_source == 'pretrain/vit.pth'
    torch.testing.assert_close(outputs(model, x)[1], ref, rtol=0, atol=0)
    # Neither resolves: both are named.
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RuntimeError, match="'pretrain/vit.pth'") as err:
        init_model(str(run_b / 'cfg.py'), str(run_b / 'prompts.pth'),
                   device='cpu')
    assert record['abs_checkpoint'] in str(err.value)
    assert "'pretrain/vit.pth'" in str(err.value)


def test_trainable_pretrained_parameters_are_kept(tmp_path):
    """frozen_exclude: a trainable pretrained parameter stays in the
    prompt-only checkpoint and must not be replaced by its pretrained value
    (nor hide that the checkpoint is prompt-only)."""
    init_default_scope('mmseg')
    pretrained = tmp_path / 'vit.pth'
    save_vit(pretrained, 0)
    trained = train_and_save(tmp_path, pretrained,
                             frozen_exclude=['cls_token'])
    state = torch.load(tmp_path / 'prompts.pth',
                       weights_only=True)['state_dict']
    assert 'backbone.cls_token' in state
    assert 'backbone.pos_embed' not in state
    x = torch.randn(1, 3, 32, 32)
    for ckpt in ('prompts.pth', 'old_prompts.pth'):
        model = MODELS.build(model_cfg(pretrained,
                                       frozen_exclude=['cls_token']))
        load_checkpoint(model, str(tmp_path / ckpt))
        assert torch.equal(model.backbone.cls_token,
                           trained.backbone.cls_token)
        torch.testing.assert_close(outputs(model, x)[1],
                                   outputs(trained, x)[1], rtol=0, atol=0)


def test_no_pretrained_in_config_is_a_clear_error(saved):
    tmp, pretrained, _ = saved
    cfg = model_cfg(pretrained)
    cfg['backbone']['init_cfg'] = None
    with pytest.raises(RuntimeError, match='names no pretrained backbone'):
        load_checkpoint(MODELS.build(cfg), str(tmp / 'old_prompts.pth'))


@pytest.mark.parametrize('change', [
    dict(num_prompts=5), dict(num_proxy_prompts=2),
    dict(guided_layers=[0, 1])
])
def test_prompt_only_checkpoint_of_another_config_is_an_error(saved, change):
    tmp, pretrained, _ = saved
    model = MODELS.build(model_cfg(pretrained, **change))
    with pytest.raises(RuntimeError, match='does not fit'):
        load_checkpoint(model, str(tmp / 'prompts.pth'))


def test_legacy_mapping_of_any_size_is_not_model_state(saved):
    """Checkpoints of earlier versions kept the mapping in the model
    state; any class count loads (the keys are DAVPTHook's business)."""
    tmp, pretrained, _ = saved
    ckpt = torch.load(tmp / 'full.pth', weights_only=True)
    ckpt['state_dict']['backbone.class_mapping.mapping'] = torch.zeros(
        6, dtype=torch.long)
    torch.save(ckpt, tmp / 'legacy6.pth')
    model = MODELS.build(model_cfg(pretrained))
    load_checkpoint(model, str(tmp / 'legacy6.pth'), strict=True)


def _perturbed_copy(src, dst, scale):
    """``src`` with the position embedding changed: by one ulp per element
    (``scale=None``, as a resize on another CPU could) or by ``scale``."""
    state = torch.load(src, weights_only=True)
    pos = state['pos_embed']
    if scale is None:
        state['pos_embed'] = torch.nextafter(pos, torch.full_like(pos, 1e9))
    else:
        state['pos_embed'] = pos * (1 + scale)
    torch.save(state, dst)


def test_float_rounding_differences_are_accepted_real_ones_are_not(saved):
    tmp, pretrained, trained = saved
    x = torch.randn(1, 3, 32, 32)
    ulp = tmp / 'vit_ulp.pth'
    _perturbed_copy(pretrained, ulp, None)
    model = MODELS.build(model_cfg(ulp))
    load_checkpoint(model, str(tmp / 'prompts.pth'))  # accepted
    torch.testing.assert_close(outputs(model, x)[1], outputs(trained, x)[1],
                               rtol=1e-4, atol=1e-5)
    changed = tmp / 'vit_changed.pth'
    _perturbed_copy(pretrained, changed, 1e-3)
    with pytest.raises(RuntimeError, match='trained on other frozen'):
        load_checkpoint(MODELS.build(model_cfg(changed)),
                        str(tmp / 'prompts.pth'))


@pytest.mark.slow
def test_hook_in_a_real_run_then_init_model(tmp_path):
    """tools/train.py with PromptOnlyCheckpointHook writes prompt-only
    checkpoints carrying the record; init_model loads one with the frozen
    weights of the pretrained file and the trained values of the rest."""
    from davpt_seg.datasets import generate_toy_dataset
    data = tmp_path / 'toy_ade'
    generate_toy_dataset(str(data), num_train=8, num_val=2)
    save_toy_vit(tmp_path / 'toy_vit.pth')
    cfg = tmp_path / 'toy_prompts.py'
    cfg.write_text(f"""_base_ = [{str(TOY_CONFIG)!r}]
data_root = {str(data)!r}
model = dict(backbone=dict(init_cfg=dict(
    _delete_=True, type='Pretrained',
    checkpoint={str(tmp_path / 'toy_vit.pth')!r})))
train_dataloader = dict(dataset=dict(data_root=data_root))
val_dataloader = dict(dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
train_cfg = dict(max_iters=2, val_interval=100)
default_hooks = dict(checkpoint=dict(interval=2), logger=dict(interval=1))
custom_hooks = [
    dict(type='DAVPTHook', background_ids=(), mapping_interval=None),
    dict(type='PromptOnlyCheckpointHook')]
""")
    work = tmp_path / 'work'
    run_python('tools/train.py', cfg, '--work-dir', work, timeout=600)
    ckpt_path = work / 'iter_2.pth'
    ckpt = torch.load(ckpt_path, weights_only=False)
    state = ckpt['state_dict']
    assert 'backbone.layers.0.attn.attn.in_proj_weight' not in state
    record = state._metadata['backbone'][PRETRAINED_RECORD]
    assert record['abs_checkpoint'] == str(tmp_path / 'toy_vit.pth')

    model = init_model(str(work / 'toy_prompts.py'), str(ckpt_path),
                       device='cpu')
    pretrained = torch.load(tmp_path / 'toy_vit.pth', weights_only=True)
    got = model.backbone.state_dict()
    for k, v in pretrained.items():
        if k in got:
            assert torch.equal(got[k], v), k
    assert torch.equal(model.backbone.prompt_tokens,
                       state['backbone.prompt_tokens'])
    assert torch.equal(model.decode_head.conv_seg.weight,
                       state['decode_head.conv_seg.weight'])
    assert 'mapping.mapping' in ckpt['davpt']  # DAVPTHook's state kept


def test_extract_prompts_checks_the_config_pretrained_file(saved, capsys):
    """tools/extract_prompts.py with the config of another pretrained file
    is an error (it would record the wrong file); the right one works."""
    from tools.extract_prompts import main as extract
    tmp, pretrained, trained = saved
    other = tmp / 'vit_other.pth'
    save_vit(other, 1)
    out = tmp / 'extracted.pth'
    with pytest.raises(SystemExit,
                       match='^error: the frozen backbone weights') as info:
        extract([config_file(tmp, other, 'wrong.py'), str(tmp / 'full.pth'),
                 str(out)])
    msg = str(info.value)
    assert msg.startswith('error: the frozen backbone weights in ')
    assert str(other) in msg and 'wrong.py' in msg
    assert not out.exists()
    # --no-verify writes it anyway (the user's call).
    extract([config_file(tmp, other, 'wrong.py'), str(tmp / 'full.pth'),
             str(out), '--no-verify'])
    assert out.exists()
    out.unlink()
    # A missing pretrained file cannot be checked: say so.
    moved = tmp / 'vit_missing.pth'
    with pytest.raises(SystemExit, match='--no-verify'):
        extract([config_file(tmp, moved, 'missing.py'),
                 str(tmp / 'full.pth'), str(out)])
    extract([config_file(tmp, pretrained), str(tmp / 'full.pth'), str(out)])
    assert 'frozen backbone tensors dropped' in capsys.readouterr().out
    model = MODELS.build(model_cfg(pretrained))
    load_checkpoint(model, str(out), map_location='cpu')
    x = torch.randn(2, 3, 32, 32)
    for got, expected in zip(outputs(model, x), outputs(trained, x)):
        torch.testing.assert_close(got, expected)


def test_init_model_with_a_moved_pretrained_file(saved, monkeypatch):
    """init_model clears init_cfg (setting it cannot help): the error says
    to set DAVPT_PRETRAINED, and doing so works; a wrong file is refused."""
    tmp, pretrained, trained = saved
    cfg_path = config_file(tmp, pretrained)
    moved = tmp / 'elsewhere' / 'vit_moved.pth'
    moved.parent.mkdir()
    shutil.move(pretrained, moved)
    monkeypatch.delenv('DAVPT_PRETRAINED', raising=False)
    with pytest.raises(RuntimeError, match='DAVPT_PRETRAINED=PATH') as err:
        init_model(cfg_path, str(tmp / 'prompts.pth'), device='cpu')
    assert 'DAVPT_PRETRAINED=PATH' in str(err.value)
    assert 'mmseg.apis.init_model' in str(err.value)
    monkeypatch.setenv('DAVPT_PRETRAINED', str(moved))
    model = init_model(cfg_path, str(tmp / 'prompts.pth'), device='cpu')
    assert model.backbone.pretrained_source == str(moved)
    x = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(outputs(model, x)[1], outputs(trained, x)[1],
                               rtol=0, atol=0)
    other = tmp / 'other_vit.pth'
    save_vit(other, 1)
    monkeypatch.setenv('DAVPT_PRETRAINED', str(other))
    with pytest.raises(RuntimeError, match='trained on other frozen'):
        init_model(cfg_path, str(tmp / 'prompts.pth'), device='cpu')


def _saved_size(obj) -> int:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.tell()


@pytest.mark.parametrize('save_optimizer', [True, False])
def test_hook_save_optimizer(saved, save_optimizer):
    """PromptOnlyCheckpointHook(save_optimizer=False) also drops the
    optimizer state: with SGD momentum (one tensor per trainable parameter)
    the checkpoint is about half as large."""
    from types import SimpleNamespace

    from davpt_seg.engine.hooks import PromptOnlyCheckpointHook
    _, _, trained = saved
    params = [p for p in trained.parameters() if p.requires_grad]
    sgd = torch.optim.SGD(params, lr=0.1, momentum=0.9)
    for p in params:
        p.grad = torch.ones_like(p)
    sgd.step()
    ckpt = dict(state_dict=trained.state_dict(), meta={},
                optimizer=sgd.state_dict())
    with_optimizer = _saved_size(make_prompt_only(copy.deepcopy(ckpt),
                                                  trained))
    hook = PromptOnlyCheckpointHook(save_optimizer=save_optimizer)
    hook.before_save_checkpoint(SimpleNamespace(model=trained), ckpt)
    assert ('optimizer' in ckpt) == save_optimizer
    assert 'backbone.layers.0.ln1.weight' not in ckpt['state_dict']
    assert 'backbone.prompt_tokens' in ckpt['state_dict']
    size = _saved_size(ckpt)
    if save_optimizer:
        assert size == with_optimizer
    else:
        assert size < 0.6 * with_optimizer
