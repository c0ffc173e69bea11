"""CheckpointEncoderDecoder: the heads' losses are recomputed in backward.

Checked against mmseg's plain EncoderDecoder built from the same config and
weights: the same losses, the same gradients for every trainable parameter,
BatchNorm running statistics updated exactly once, and far fewer bytes kept
for backward (counted with saved-tensor hooks, not timed)."""
import copy

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmseg.registry import MODELS

import davpt_seg  # noqa: F401
from davpt_seg.models.segmentors import CheckpointEncoderDecoder
from helpers import TOY_CONFIG
from helpers.batches import seg_batch
from helpers.processes import run_python
from helpers.toy_run import read_scalars

CFG = str(TOY_CONFIG)


def _build(type_, dropout=0., with_cp=False, **kwargs):
    init_default_scope('mmseg')
    cfg = copy.deepcopy(Config.fromfile(CFG).model)
    cfg.update(type=type_, **kwargs)
    cfg['backbone']['with_cp'] = with_cp
    for h in [cfg['decode_head']] + cfg['auxiliary_head']:
        h['dropout_ratio'] = dropout
    torch.manual_seed(0)
    model = MODELS.build(cfg)
    model.init_weights()
    return model


def _batch(n=2, size=64, num_classes=8):
    g = torch.Generator().manual_seed(1)
    inputs = [torch.randint(0, 256, (3, size, size), generator=g,
                            dtype=torch.uint8) for _ in range(n)]
    labels = []
    for _ in range(n):
        label = torch.randint(0, num_classes, (size // 8, size // 8),
                              generator=g)
        label = label.repeat_interleave(8, 0).repeat_interleave(8, 1)
        label[:4] = 255
        labels.append(label)
    return seg_batch(inputs, labels)


def _loss_and_grads(model, data, seed=0):
    model.train()
    batch = model.data_preprocessor(copy.deepcopy(data), True)
    torch.manual_seed(seed)
    losses = model.loss(batch['inputs'], batch['data_samples'])
    total = sum(v for k, v in losses.items() if 'loss' in k)
    model.zero_grad()
    total.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()
             if p.requires_grad}
    return losses, grads


def _bn_buffers(model):
    return {n: b.clone() for n, b in model.named_buffers()
            if any(s in n for s in ('running_', 'num_batches_tracked'))}


@pytest.mark.parametrize('dropout, with_cp', [(0., False), (0.3, True)])
def test_same_losses_grads_and_bn_statistics_as_encoder_decoder(
        dropout, with_cp):
    ref = _build('EncoderDecoder', dropout, with_cp)
    cp = _build('CheckpointEncoderDecoder', dropout, with_cp)
    cp.load_state_dict(ref.state_dict())
    data = _batch()
    bn0 = _bn_buffers(ref)
    assert bn0, 'the toy heads have BatchNorm layers'
    ref_losses, ref_grads = _loss_and_grads(ref, data)
    cp_losses, cp_grads = _loss_and_grads(cp, data)

    assert ref_losses.keys() == cp_losses.keys()
    assert {'decode.loss_ce', 'aux_0.loss_ce'} <= set(cp_losses)
    for k in ref_losses:
        torch.testing.assert_close(cp_losses[k], ref_losses[k], rtol=0,
                                   atol=0)
    assert ref_grads.keys() == cp_grads.keys()
    assert any(n.startswith('decode_head.') for n in cp_grads)
    assert any('prompt' in n for n in cp_grads)
    for n in ref_grads:
        torch.testing.assert_close(cp_grads[n], ref_grads[n], rtol=1e-5,
                                   atol=1e-7, msg=n)
    # Running statistics moved, and exactly as far as with one forward.
    ref_bn, cp_bn = _bn_buffers(ref), _bn_buffers(cp)
    assert any(not torch.equal(ref_bn[k], bn0[k]) for k in bn0)
    for k in ref_bn:
        torch.testing.assert_close(cp_bn[k], ref_bn[k], rtol=0, atol=0,
                                   msg=k)
    assert all(v.item() == 1 for k, v in cp_bn.items()
               if k.endswith('num_batches_tracked'))


def _saved_bytes(model, data):
    """Bytes autograd keeps for backward during one ``loss`` call."""
    model.train()
    batch = model.data_preprocessor(copy.deepcopy(data), True)
    total = 0

    def pack(t):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model.loss(batch['inputs'], batch['data_samples'])
    return total


def test_heads_keep_far_less_for_backward():
    data = _batch(size=128)
    ref = _saved_bytes(_build('EncoderDecoder', with_cp=True), data)
    cp = _saved_bytes(_build('CheckpointEncoderDecoder', with_cp=True), data)
    off = _saved_bytes(
        _build('CheckpointEncoderDecoder', with_cp=True,
               checkpoint_heads=False), data)
    assert off == ref
    # Only the backbone's checkpoint inputs and each head's inputs remain.
    assert cp < 0.25 * ref, (cp, ref)


def test_inference_and_eval_mode_are_untouched():
    ref = _build('EncoderDecoder')
    cp = _build('CheckpointEncoderDecoder')
    cp.load_state_dict(ref.state_dict())
    data = _batch()
    ref.eval()
    cp.eval()
    with torch.no_grad():
        a = ref.test_step(copy.deepcopy(data))
        b = cp.test_step(copy.deepcopy(data))
    for x, y in zip(a, b):
        assert torch.equal(x.seg_logits.data, y.seg_logits.data)
    # Gradients disabled in training mode: a plain forward, no checkpoint.
    cp.train()
    batch = cp.data_preprocessor(copy.deepcopy(data), True)
    with torch.no_grad():
        losses = cp.loss(batch['inputs'], batch['data_samples'])
    assert torch.isfinite(losses['decode.loss_ce'])


def test_bad_checkpoint_heads_value():
    with pytest.raises(TypeError, match='checkpoint_heads must be a bool'):
        _build('CheckpointEncoderDecoder', checkpoint_heads='yes')
    assert isinstance(_build('CheckpointEncoderDecoder'),
                      CheckpointEncoderDecoder)


def test_train_with_cp_flag(tmp_path):
    """``tools/train.py --with-cp`` trains the toy config with both the
    backbone's and the heads' checkpointing, and says so in the dumped
    config."""
    from davpt_seg.datasets import generate_toy_dataset
    data = tmp_path / 'toy_ade'
    generate_toy_dataset(str(data), num_train=8, num_val=2)
    cfg = tmp_path / 'toy_cp.py'
    cfg.write_text(f"""_base_ = [{str(TOY_CONFIG)!r}]
data_root = {str(data)!r}
train_dataloader = dict(dataset=dict(data_root=data_root))
val_dataloader = dict(dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
train_cfg = dict(max_iters=4, val_interval=100)
default_hooks = dict(checkpoint=dict(interval=100), logger=dict(interval=2))
""")
    work = tmp_path / 'work'
    run_python('tools/train.py', cfg, '--work-dir', work, '--with-cp',
               timeout=600)
    dumped = Config.fromfile(str(work / 'toy_cp.py'))
    assert dumped.model.type == 'CheckpointEncoderDecoder'
    assert dumped.model.checkpoint_heads is True
    assert dumped.model.backbone.with_cp is True
    logged = read_scalars(work)
    losses = [r['decode.loss_ce'] for r in logged if 'decode.loss_ce' in r]
    assert losses and all(torch.isfinite(torch.tensor(losses)))
    assert any('loss_davpt_token' in r for r in logged)


def test_with_cp_flag_rejects_other_segmentors():
    from davpt_seg.engine.launch import enable_gradient_checkpointing
    cfg = Config.fromfile(CFG)
    enable_gradient_checkpointing(cfg)
    assert cfg.model.type == 'CheckpointEncoderDecoder'
    assert cfg.model.backbone.with_cp
    cfg.model.type = 'CascadeEncoderDecoder'
    with pytest.raises(SystemExit, match='--with-cp supports EncoderDecoder'):
        enable_gradient_checkpointing(cfg)


def test_backward_recomputes_heads_but_not_the_accuracy_topk():
    """The backward pass reruns the heads' convolutions and log-softmax
    (they were not kept) but reuses mmseg's accuracy top-k, which is
    expensive to recompute and small to keep."""
    from collections import Counter

    from torch.utils._python_dispatch import TorchDispatchMode

    class OpCounter(TorchDispatchMode):

        def __init__(self):
            super().__init__()
            self.counts = Counter()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.counts[func.overloadpacket.__name__] += 1
            return func(*args, **(kwargs or {}))

    counts = {}
    for type_ in ('EncoderDecoder', 'CheckpointEncoderDecoder'):
        model = _build(type_)
        model.train()
        batch = model.data_preprocessor(_batch(), True)
        losses = model.loss(batch['inputs'], batch['data_samples'])
        total = sum(v for k, v in losses.items() if 'loss' in k)
        with OpCounter() as counter:
            total.backward()
        counts[type_] = counter.counts
    plain, ckpt = counts['EncoderDecoder'], counts['CheckpointEncoderDecoder']
    assert plain['convolution'] == plain['_log_softmax'] == 0
    num_heads = 2  # toy config: decode head + 1 auxiliary head
    assert ckpt['_log_softmax'] == num_heads
    assert ckpt['convolution'] >= 2 * num_heads
    assert ckpt['topk'] == plain['topk'] == 0
