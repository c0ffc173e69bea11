"""Every config under configs/: loads, builds, counts its trainable
parameters (the paper's numbers for ADE20K SETR-PUP ViT-L), builds its
hooks and optimiser, and takes one CPU training step at 64x64.

The drop-in configs are checked to differ from the stock mmseg configs they
inherit only in the DA-VPT diff, the PASCAL Context 60/59 configs to differ
only where their datasets do, and the variants only in what they vary.

The ViT-L models are built once per config (module-scoped, parametrised
fixture: pytest runs all tests of one config before building the next).
"""
import copy
import inspect
import math
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.model import revert_sync_batchnorm
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope
from mmseg.registry import HOOKS, MODELS

import davpt_seg  # noqa: F401  (registration)
from davpt_seg.engine.hooks import DAVPTHook
from davpt_seg.engine.hooks.param_report_hook import parameter_report
from davpt_seg.models.backbones import PromptedVisionTransformer
from helpers import CONFIG_DIR, ROOT
from helpers.batches import seg_sample
MMSEG_CONFIGS = Path(__import__('mmseg').__file__).parent / '.mim' / 'configs'

init_default_scope('mmseg')

# Trainable parameters in millions, rounded to 1e-3 M as the paper reports
# them. 'heads' = decode_head + auxiliary_head, 'other' = anything else
# trainable (necks). ADE20K SETR-PUP ViT-L: the paper's Table 2 (13.625M /
# 13.674M, docs/method.md §2); PASCAL Context: the ADE20K heads with
# 60/59 instead of 150 classifier outputs (test_pascal_heads_*).
ADE_PUP = dict(trainable=13.625, prompts=0.481, kv_biases=0., heads=13.144,
               other=0.)
ADE_PUP_PLUS = dict(ADE_PUP, trainable=13.674, kv_biases=0.049)
PC60 = dict(trainable=13.532, prompts=0.481, kv_biases=0., heads=13.051,
            other=0.)
PC60_PLUS = dict(PC60, trainable=13.582, kv_biases=0.049)
PC59 = dict(trainable=13.531, prompts=0.481, kv_biases=0., heads=13.050,
            other=0.)
PC59_PLUS = dict(PC59, trainable=13.581, kv_biases=0.049)
EXPECTED = {
    'davpt_setr_ade20k.py': ADE_PUP,
    'davptplus_setr_ade20k.py': ADE_PUP_PLUS,
    'vpt_setr_ade20k.py': ADE_PUP,
    'davpt_setr_ade20k_adamw.py': ADE_PUP,
    'davpt_setr_pascal-context.py': PC60,
    'davptplus_setr_pascal-context.py': PC60_PLUS,
    'vpt_setr_pascal-context.py': PC60,
    'davpt_setr_pascal-context-59.py': PC59,
    'davptplus_setr_pascal-context-59.py': PC59_PLUS,
    'vpt_setr_pascal-context-59.py': PC59,
    'davpt_setr_toy.py': dict(trainable=0.067, prompts=0.002, kv_biases=0.,
                              heads=0.066, other=0.),
    'dropin/davpt_vit-b16_mln_upernet_8xb2-80k_ade20k-512x512.py': dict(
        trainable=57.917, prompts=0.177, kv_biases=0., heads=34.141,
        other=23.599),
    'dropin/davpt_setr_vit-l_mla_8xb2-160k_ade20k-512x512.py': dict(
        trainable=5.904, prompts=0.481, kv_biases=0., heads=2.003,
        other=3.420),
}


# Trainable share of all parameters, as the README's table states it
# (the paper rounds DA-VPT+ to 4.3 %).
README_PERCENT = {'vpt_setr_ade20k.py': '4.29',
                  'davpt_setr_ade20k.py': '4.29',
                  'davptplus_setr_ade20k.py': '4.30'}


def background(name: str) -> tuple:
    """Classes never drawn as prompt targets (DAVPTHook.background_ids):
    the background class 0 of the 60-class PASCAL Context."""
    return (0, ) if name.endswith('pascal-context.py') else ()


CONFIGS = sorted(
    str(p.relative_to(CONFIG_DIR)) for p in CONFIG_DIR.rglob('*.py')
    if '_base_' not in p.parts and 'camvid' not in p.parts)  # test_camvid.py

DROPINS = {
    'dropin/davpt_vit-b16_mln_upernet_8xb2-80k_ade20k-512x512.py':
    'vit/vit_vit-b16_mln_upernet_8xb2-80k_ade20k-512x512.py',
    'dropin/davpt_setr_vit-l_mla_8xb2-160k_ade20k-512x512.py':
    'setr/setr_vit-l_mla_8xb2-160k_ade20k-512x512.py',
}
# The arguments PromptedVisionTransformer adds to mmseg's ViT.
DAVPT_ARGS = {
    name for name, p in inspect.signature(
        PromptedVisionTransformer.__init__).parameters.items()
    if p.kind is inspect.Parameter.KEYWORD_ONLY
}


def load(name: str) -> Config:
    return Config.fromfile(str(CONFIG_DIR / name))


def flatten(obj, prefix=''):
    """{'a.b.0.c': leaf} for nested dicts and lists of dicts."""
    out = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.update(flatten(v, f'{prefix}.{k}' if prefix else str(k)))
    elif isinstance(obj, (list, tuple)) and any(
            isinstance(v, (dict, list, tuple)) for v in obj):
        for i, v in enumerate(obj):
            out.update(flatten(v, f'{prefix}.{i}'))
        out[f'{prefix}.__len__'] = len(obj)
    else:
        out[prefix] = obj
    return out


def config_diff(a: Config, b: Config, ignore_scope: bool = False) -> set:
    """Dotted keys whose values differ. ``ignore_scope``: leave out the
    ``_scope_='mmseg'`` tags mmengine adds to what comes from an ``mmseg::``
    base (the default scope is mmseg anyway)."""
    fa, fb = flatten(a.to_dict()), flatten(b.to_dict())
    return {k for k in fa.keys() | fb.keys() if fa.get(k, '<absent>') !=
            fb.get(k, '<absent>')
            and not (ignore_scope and k.endswith('._scope_'))}


def strip_scope(obj):
    if isinstance(obj, dict):
        return {k: strip_scope(v) for k, v in obj.items() if k != '_scope_'}
    if isinstance(obj, (list, tuple)):
        return type(obj)(strip_scope(v) for v in obj)
    return obj


def millions(n: int) -> float:
    return round(n / 1e6, 3)


def test_every_config_has_expectations():
    assert set(CONFIGS) == set(EXPECTED), (
        'add the parameter counts of new configs to EXPECTED')
    assert set(DROPINS) <= set(CONFIGS)


# ---------------------------------------------------------------- per config
@pytest.fixture(scope='module', params=CONFIGS)
def built(request):
    name = request.param
    cfg = load(name)
    torch.manual_seed(0)
    model = revert_sync_batchnorm(MODELS.build(copy.deepcopy(cfg.model)))
    yield name, cfg, model
    del model


def test_config_builds(built):
    name, cfg, model = built
    backbone = model.backbone
    assert isinstance(backbone, PromptedVisionTransformer)
    assert cfg.custom_imports['imports'] == ['davpt_seg',
                                             'davpt_seg.compat.enable']
    # The pretrained file is documented, not present: nothing was loaded.
    if name == 'davpt_setr_toy.py':
        assert backbone.init_cfg is None
    else:
        assert backbone.init_cfg == dict(
            type='Pretrained',
            checkpoint='pretrain/vit_base_patch16_224.pth'
            if 'vit-b16' in name else 'pretrain/vit_large_p16.pth')
    # Frozen backbone: only DA-VPT's own parameters train.
    own = set(backbone.own_state_keys())
    for n, p in backbone.named_parameters():
        assert p.requires_grad == (n in own), n
    # DA-VPT configs (with the hook) guide at least one layer.
    if davpt_hook_cfg(cfg) is not None:
        assert backbone.guided_layers


def test_parameter_counts(built):
    name, cfg, model = built
    counts = parameter_report(model)
    got = dict(
        trainable=millions(counts['trainable']),
        prompts=millions(counts['prompts']),
        kv_biases=millions(counts['kv_biases']),
        heads=millions(counts['decode_head'] + counts['auxiliary_heads']),
        other=millions(counts['other']))
    print(f'{name}: total {counts["total"] / 1e6:.3f}M, {got}')
    assert got == EXPECTED[name]
    if name in README_PERCENT:
        percent = f'{100 * counts["trainable"] / counts["total"]:.2f}'
        assert percent == README_PERCENT[name]
        row = [line for line in (ROOT / 'README.md').read_text().splitlines()
               if line.startswith(f'| `configs/{name}`')]
        assert len(row) == 1 and \
            f'{EXPECTED[name]["trainable"]:.3f}M ({percent} %)' in row[0], row
    # Exact integers where the paper's arithmetic gives them.
    backbone = model.backbone
    if backbone.embed_dims == 1024 and backbone.num_prompts == 20:
        assert counts['prompts'] == (23 * 20 + 10) * 1024
        assert counts['kv_biases'] == \
            (2 * 24 * 1024 if backbone.tune_kv_bias else 0)


def test_hooks_build(built):
    name, cfg, model = built
    hooks = [HOOKS.build(copy.deepcopy(h)) for h in cfg.custom_hooks]
    davpt = [h for h in hooks if isinstance(h, DAVPTHook)]
    if name.startswith('vpt_'):
        assert not davpt
        return
    (hook, ) = davpt
    assert hook.background_ids == background(name)
    assert hook.mapping_interval is None  # one epoch, computed by the hook
    # checks backbone / head / background consistency
    objective = hook.build_objective(model)
    assert objective.num_classes == model.decode_head.num_classes
    assert objective.num_proxy_prompts == model.backbone.num_proxy_prompts


def test_optimizer(built):
    name, cfg, model = built
    optim_wrapper = build_optim_wrapper(model,
                                        copy.deepcopy(cfg.optim_wrapper))
    groups = optim_wrapper.optimizer.param_groups
    in_optim = {id(p): g for g in groups for p in g['params']}
    for n, p in model.named_parameters():
        assert (id(p) in in_optim) == p.requires_grad, n
    base_lr = cfg.optim_wrapper.optimizer.lr
    optim_type = cfg.optim_wrapper.optimizer.type
    for n, p in model.named_parameters():
        if not p.requires_grad:
            continue
        g = in_optim[id(p)]
        if name.startswith(('dropin/', 'davpt_setr_toy')):
            continue  # stock recipes
        if optim_type == 'SGD':
            assert g['weight_decay'] == 0.
            assert math.isclose(g['lr'],
                                base_lr * (10 if 'head' in n else 1)), n
        else:
            assert optim_type == 'AdamW' and g['lr'] == base_lr
            decays = 'head' in n and n.endswith('.weight') and p.ndim == 4
            assert g['weight_decay'] == (0.01 if decays else 0.), n


def davpt_hook_cfg(cfg):
    """The config's DAVPTHook entry (a copy), or None."""
    found = [h for h in cfg.get('custom_hooks', [])
             if h['type'] == 'DAVPTHook']
    return copy.deepcopy(found[0]) if found else None


def _batch(num_classes: int, background: tuple, n: int = 2, size: int = 64):
    """Random images; labels in 16x16 blocks of several classes (and 255),
    with the background class if the dataset has one."""
    g = torch.Generator().manual_seed(0)
    inputs, samples = [], []
    for i in range(n):
        classes = torch.randperm(num_classes, generator=g)[:5]
        blocks = classes[torch.randint(5, (4, 4), generator=g)]
        blocks[0, 0] = 255
        if background:
            blocks[1, 1] = background[0]
        label = blocks.repeat_interleave(size // 4, 0).repeat_interleave(
            size // 4, 1)
        samples.append(seg_sample(label, seg_map_path=f'random_{i}.png'))
        inputs.append(torch.randint(0, 256, (3, size, size), generator=g,
                                    dtype=torch.uint8))
    return dict(inputs=inputs, data_samples=samples)


def test_train_step(built):
    """One SGD/AdamW step at 64x64 (img_size as configured: the position
    embedding is resized): finite losses, DA-VPT losses with the hook,
    prompts (and K/V offsets, heads) change, frozen weights do not."""
    name, cfg, model = built
    backbone = model.backbone
    model.data_preprocessor.size = (64, 64)  # no padding to the full crop
    model.train()
    optim_wrapper = build_optim_wrapper(model,
                                        copy.deepcopy(cfg.optim_wrapper))
    num_classes = model.decode_head.num_classes
    hook = None
    if davpt_hook_cfg(cfg) is not None:
        hook = HOOKS.build(dict(davpt_hook_cfg(cfg), seed=0))
        hook.attach(model)  # as before_train does in a runner
        # Initial mapping from random class features (every valid class).
        present = torch.eye(num_classes, dtype=torch.bool)
        present[:, list(hook.background_ids)] = False
        mapping = hook.objective.mapping
        mapping.accumulate(
            torch.randn(num_classes, backbone.embed_dims), present)
        assert mapping.update()
    frozen = {n: p.detach().clone() for n, p in model.named_parameters()
              if not p.requires_grad}
    trainable = {n: p.detach().clone() for n, p in model.named_parameters()
                 if p.requires_grad}
    data = _batch(num_classes, background(name))
    if hook is not None and hook.background_ids:
        # Class 0 is in the labels but never a target nor a statistic.
        labels = torch.stack([s.gt_sem_seg.data for s in data['data_samples']])
        assert (labels == 0).any()
        assert not hook.present(data['data_samples'])[:, 0].any()
    try:
        log_vars = model.train_step(data, optim_wrapper)
    finally:
        if hook is not None:
            hook.detach()
    print(name, {k: round(float(v), 4) for k, v in log_vars.items()})
    assert math.isfinite(float(log_vars['loss']))
    loss_keys = {k for k in log_vars if k.startswith(('loss', 'decode.loss',
                                                       'aux'))}
    assert all(math.isfinite(float(log_vars[k])) for k in loss_keys)
    davpt_keys = {'loss_davpt_token', 'loss_davpt_cls'}
    if hook is not None:
        assert davpt_keys <= set(log_vars), sorted(log_vars)
        assert float(log_vars['loss_davpt_cls']) > 0
    else:
        assert not davpt_keys & set(log_vars)
    params = dict(model.named_parameters())
    for n, before in frozen.items():
        assert torch.equal(params[n], before), f'frozen {n} changed'
    changed = {n for n, before in trainable.items()
               if not torch.equal(params[n], before)}
    # Every prompted layer's prompts moved.
    for key in ('backbone.prompt_tokens', 'backbone.proxy_prompt_tokens'):
        before, after = trainable[key], params[key].detach()
        for layer in range(before.shape[0]):
            assert not torch.equal(before[layer], after[layer]), \
                f'{key}[{layer}] unchanged'
    if backbone.tune_kv_bias:
        assert 'backbone.kv_bias_delta' in changed
    assert any(n.startswith('decode_head.conv_seg') for n in changed)


# ------------------------------------------------------- config relationships
@pytest.mark.parametrize('dropin', sorted(DROPINS))
def test_dropin_is_stock_plus_davpt_diff(dropin, tmp_path):
    """A drop-in config = the stock mmseg config + backbone type + DA-VPT
    arguments + custom_imports + custom_hooks + RecordLabelValues appended
    to the training pipeline. Two ViT arguments are allowed
    besides: patch_bias (the pretrained ViTs have a patch-embedding bias,
    which mmseg's default patch_bias=False drops and
    PromptedVisionTransformer refuses to drop) and, for SETR-MLA, whose stock
    ViT drops the [CLS] token, with_cls_token (DA-VPT's [CLS] loss and
    class->prompt mapping need it)."""
    assert (MMSEG_CONFIGS / DROPINS[dropin]).is_file()
    # Loaded as the drop-in loads it (through `mmseg::`, which also tags
    # every `type` with `_scope_='mmseg'`).
    stock_file = tmp_path / 'stock.py'
    stock_file.write_text(f"_base_ = ['mmseg::{DROPINS[dropin]}']\n")
    stock = Config.fromfile(str(stock_file))
    ours = load(dropin)
    diff = config_diff(stock, ours)
    top = {k.split('.')[0] for k in diff}
    assert top == {'model', 'custom_imports', 'custom_hooks',
                   'train_dataloader'}, diff
    pipeline = ours.train_dataloader.dataset.pipeline
    assert strip_scope(pipeline[:-1]) == strip_scope(
        stock.train_dataloader.dataset.pipeline)
    assert pipeline[-1] == dict(type='RecordLabelValues')
    assert all(k.startswith('train_dataloader.dataset.pipeline.')
               for k in diff if k.startswith('train_dataloader.')), diff
    backbone_diff = {k for k in diff if k.startswith('model.')}
    assert all(k.startswith('model.backbone.') for k in backbone_diff), diff
    args = {k[len('model.backbone.'):].split('.')[0] for k in backbone_diff}
    extra = {'type', 'patch_bias'}
    if not stock.model.backbone.get('with_cls_token', True):
        extra.add('with_cls_token')
    assert args - DAVPT_ARGS == extra, args
    assert ours.model.backbone.type == 'PromptedVisionTransformer'
    assert stock.model.backbone.type == 'VisionTransformer'
    assert [h['type'] for h in ours.custom_hooks] == ['DAVPTHook']
    guided = ours.model.backbone.guided_layers
    assert all(0 <= i < ours.model.backbone.num_layers for i in guided)


def test_pascal_context_60_and_59_resolve_from_one_base(tmp_path):
    """Both PASCAL Context configs are the shared base
    (``_base_/davpt_setr-pup_vit-l16_pascal-context.py``) plus a dataset
    config, the class count, RecordLabelValues appended to the training
    pipeline and, for 60 classes, ``background_ids`` and the tta_pipeline;
    so they differ only there."""
    base = CONFIG_DIR / '_base_' / 'davpt_setr-pup_vit-l16_pascal-context.py'
    datasets = {'davpt_setr_pascal-context.py': 'pascal_context.py',
                'davpt_setr_pascal-context-59.py': 'pascal_context_59.py'}
    for name, dataset in datasets.items():
        assert f"'./_base_/{base.name}'" in (CONFIG_DIR / name).read_text()
        both = tmp_path / f'base_{dataset}'
        both.write_text(f"_base_ = [{str(base)!r}, "
                        f"'mmseg::_base_/datasets/{dataset}']\n")
        diff = config_diff(Config.fromfile(str(both)), load(name))
        rest = {k for k in diff
                if not k.endswith('.num_classes')
                and not k.startswith(('num_classes', 'tta_pipeline',
                                      'img_ratios', 'custom_hooks.0.'
                                      'background_ids',
                                      'train_dataloader.batch_size',
                                      'train_dataloader.dataset.pipeline.'
                                      ))}
        assert not rest, (name, rest)
        assert 'model.decode_head.num_classes' in diff
    diff = config_diff(load('davpt_setr_pascal-context.py'),
                       load('davpt_setr_pascal-context-59.py'),
                       ignore_scope=True)
    allowed_prefixes = ('dataset_type', 'train_pipeline', 'test_pipeline',
                        'train_dataloader.dataset', 'val_dataloader.dataset',
                        'test_dataloader.dataset', 'num_classes',
                        'custom_hooks.0.background_ids')
    rest = {k for k in diff if not k.startswith(allowed_prefixes)
            and not k.endswith('.num_classes')}
    assert not rest, rest
    assert 'model.decode_head.num_classes' in diff
    assert 'custom_hooks.0.background_ids' in diff


def test_pascal_context_tta_pipeline():
    """The 60-class config adds the tta_pipeline mmseg's 59-class dataset
    config has (ratios 0.5-1.75, flip); ADE20K's comes from mmseg."""
    pc60, pc59 = load('davpt_setr_pascal-context.py'), load(
        'davpt_setr_pascal-context-59.py')
    assert strip_scope(pc60.tta_pipeline) == strip_scope(pc59.tta_pipeline)
    ratios = [t['scale_factor']
              for t in pc60.tta_pipeline[1]['transforms'][0]]
    assert ratios == [0.5, 0.75, 1.0, 1.25, 1.5, 1.75]
    for cfg in (pc60, pc59, load('davpt_setr_ade20k.py')):
        assert cfg.tta_model.type == 'SegTTAModel'
        assert cfg.model.test_cfg.mode == 'slide'


def test_pascal_context_recipe():
    for name in ('davpt_setr_pascal-context.py',
                 'davpt_setr_pascal-context-59.py'):
        cfg = load(name)
        assert cfg.crop_size == (480, 480)
        assert cfg.model.backbone.img_size == (480, 480)
        assert cfg.model.data_preprocessor.size == (480, 480)
        assert cfg.model.test_cfg == dict(
            mode='slide', crop_size=(480, 480), stride=(320, 320))
        assert cfg.train_cfg.max_iters == 80000
        (poly, ) = cfg.param_scheduler
        assert (poly.type, poly.power, poly.eta_min, poly.end) == \
            ('PolyLR', 0.9, 1e-4, 80000)
        assert cfg.optim_wrapper.optimizer.type == 'SGD'
        assert cfg.optim_wrapper.optimizer.lr == 1e-3
        assert cfg.optim_wrapper.optimizer.weight_decay == 0.
        assert cfg.optim_wrapper.paramwise_cfg == dict(
            custom_keys={'head': dict(lr_mult=10.)})
        assert cfg.train_dataloader.batch_size == 2
        assert cfg.train_dataloader.dataset.type == (
            'PascalContextDataset59' if '59' in name else
            'PascalContextDataset')
        # The SETR-PUP ADE20K heads, apart from the classes.
        ade = load('davpt_setr_ade20k.py')
        strip = lambda h: {k: v for k, v in h.items() if k != 'num_classes'}
        assert strip(cfg.model.decode_head) == strip(ade.model.decode_head)
        assert [strip(h) for h in cfg.model.auxiliary_head] == \
            [strip(h) for h in ade.model.auxiliary_head]
        assert {k: v for k, v in cfg.model.backbone.items()
                if k not in ('img_size', 'num_classes')} == \
            {k: v for k, v in ade.model.backbone.items()
             if k not in ('img_size', 'num_classes')}


def _head_shapes(cfg):
    heads = {'decode_head': cfg.model.decode_head}
    heads.update((f'auxiliary_head.{i}', h)
                 for i, h in enumerate(cfg.model.auxiliary_head))
    shapes = {}
    for prefix, head_cfg in heads.items():
        head = MODELS.build(copy.deepcopy(head_cfg))
        shapes.update((f'{prefix}.{n}', tuple(p.shape))
                      for n, p in head.named_parameters())
    return shapes


@pytest.mark.parametrize('name,num_classes',
                         [('davpt_setr_pascal-context.py', 60),
                          ('davpt_setr_pascal-context-59.py', 59)])
def test_pascal_heads_differ_from_ade_only_in_conv_seg(name, num_classes):
    ade = _head_shapes(load('davpt_setr_ade20k.py'))
    pc = _head_shapes(load(name))
    assert ade.keys() == pc.keys()
    diff = {k for k in ade if ade[k] != pc[k]}
    assert diff and all('conv_seg' in k for k in diff), diff
    for k in diff:
        assert ade[k][0] == 150 and pc[k][0] == num_classes
        assert ade[k][1:] == pc[k][1:]
    count = lambda shapes: sum(math.prod(s) for s in shapes.values())
    # Four heads, each a 1x1 conv 256 -> classes with bias.
    assert count(ade) - count(pc) == 4 * (256 + 1) * (150 - num_classes)
    assert millions(count(ade)) == ADE_PUP['heads']


@pytest.mark.parametrize('variant,base,allowed', [
    ('davptplus_setr_ade20k.py', 'davpt_setr_ade20k.py',
     {'model.backbone.tune_kv_bias'}),
    ('davptplus_setr_pascal-context.py', 'davpt_setr_pascal-context.py',
     {'model.backbone.tune_kv_bias'}),
    ('davptplus_setr_pascal-context-59.py', 'davpt_setr_pascal-context-59.py',
     {'model.backbone.tune_kv_bias'}),
    ('vpt_setr_ade20k.py', 'davpt_setr_ade20k.py',
     {'model.backbone.num_classes', 'model.backbone.mapping_cfg',
      'custom_hooks'}),
    ('vpt_setr_pascal-context.py', 'davpt_setr_pascal-context.py',
     {'model.backbone.num_classes', 'model.backbone.mapping_cfg',
      'custom_hooks'}),
    ('vpt_setr_pascal-context-59.py', 'davpt_setr_pascal-context-59.py',
     {'model.backbone.num_classes', 'model.backbone.mapping_cfg',
      'custom_hooks'}),
    ('davpt_setr_ade20k_adamw.py', 'davpt_setr_ade20k.py',
     {'optim_wrapper', 'param_scheduler', 'max_iters', 'warmup_iters'}),
])
def test_variants_differ_only_in(variant, base, allowed):
    diff = config_diff(load(base), load(variant))
    assert diff
    assert all(k.startswith(tuple(allowed)) for k in diff), diff


def test_adamw_schedule():
    cfg = load('davpt_setr_ade20k_adamw.py')
    warmup, cosine = cfg.param_scheduler
    assert warmup.type == 'LinearLR' and warmup.end == cosine.begin
    assert cosine.type == 'CosineAnnealingLR'
    assert cosine.end == cfg.train_cfg.max_iters == 160000
    assert cfg.optim_wrapper.clip_grad == dict(type='value', clip_value=10.)
    # Warm-up reaches the base lr, then cosine decays it.
    from mmengine.optim import OptimWrapper
    from mmengine.registry import PARAM_SCHEDULERS
    param = torch.nn.Parameter(torch.zeros(1))
    wrapper = OptimWrapper(torch.optim.AdamW([param], lr=1e-3))
    schedulers = [PARAM_SCHEDULERS.build(dict(s, optimizer=wrapper))
                  for s in copy.deepcopy(cfg.param_scheduler)]
    lrs = []
    for _ in range(warmup.end + 2000):
        lrs.append(wrapper.optimizer.param_groups[0]['lr'])
        for s in schedulers:
            s.step()
    assert lrs[0] < 1e-8
    assert lrs[warmup.end] == pytest.approx(1e-3)
    assert all(b <= a for a, b in zip(lrs[warmup.end:], lrs[warmup.end + 1:]))
    assert lrs[-1] < 1e-3
