"""``gated_prompts``: a zero gate gives exactly the frozen backbone, a
non-zero gate equals the explicit reference; gradients reach the gate at
step 0 and the prompts once the gate moved; it composes with DA-VPT+,
prompt-only checkpoints, the attention capture and the parameter report
(``with_cp``: ``test_prompted_vit.py``)."""
import copy

import torch
from mmengine.registry import init_default_scope
from mmengine.runner import load_checkpoint
from mmseg.models.backbones import VisionTransformer
from mmseg.registry import MODELS

import davpt_seg  # noqa: F401
from davpt_seg.engine.hooks.param_report_hook import parameter_report
from davpt_seg.models.backbones import PromptedVisionTransformer
from davpt_seg.weights import make_prompt_only
from helpers.vit import TINY_VIT, explicit_vpt_forward, save_vit

GATED = dict(num_prompts=3, num_proxy_prompts=2, guided_layers=[2],
             gated_prompts=True, out_indices=(1, 3))


def gated(seed=0, gate=None, **kw):
    """A random gated prompted ViT with large prompts (and K/V offsets);
    ``gate``: None keeps the zero init, a float fills N(0, gate)."""
    torch.manual_seed(seed)
    m = PromptedVisionTransformer(**TINY_VIT, **{**GATED, **kw})
    m.init_weights()
    with torch.no_grad():
        for p in (m.prompt_tokens, m.proxy_prompt_tokens):
            p.normal_()
        if gate is not None:
            m.prompt_gate.normal_(0, gate)
    return m


def test_zero_gate_equals_the_frozen_backbone():
    m = gated(tune_kv_bias=True)
    assert m.prompt_gate.shape == (4, 4) and not m.prompt_gate.any()
    ref = VisionTransformer(**TINY_VIT, out_indices=(1, 3))
    ref.load_state_dict(
        {k: v for k, v in m.state_dict().items()
         if k not in m.own_state_keys()})
    x = torch.randn(2, 3, 64, 64)
    for mode in (False, True):  # eval and training forwards (no dropout)
        m.train(mode)
        ref.train(mode)
        with torch.no_grad():
            for a, b in zip(m(x), ref(x)):
                torch.testing.assert_close(a, b)
    # The same prompts without the gate change the features.
    ungated = copy.deepcopy(m)
    ungated.prompt_gate = None
    with torch.no_grad():
        assert not torch.allclose(ungated(x)[1], ref(x)[1], atol=1e-3)


def test_gated_forward_and_capture_equal_the_explicit_reference():
    m = gated(gate=1.0, tune_kv_bias=True).eval()
    with torch.no_grad():
        m.kv_bias_delta.normal_()
        x = torch.randn(2, 3, 64, 80)
        with m.capture_attention() as cap:
            outs = m(x)
        ref_outs, traces, _ = explicit_vpt_forward(m, x)
    for a, b in zip(outs, ref_outs):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    for i, attn in cap.attn.items():
        lay = cap.layout[i]
        g = m.prompt_gate[i].detach().tanh().view(1, -1, 1)
        # rows: softmax over the tokens (sum 1) + tanh(gate) x prompts' own
        torch.testing.assert_close(attn[..., :lay.prompts.start].sum(-1),
                                   torch.ones(attn.shape[:-1]))
        torch.testing.assert_close(attn[..., lay.prompts].sum(-1),
                                   g.expand(attn.shape[:-1]))
        # documented order [CLS | prompts | image] of the reference
        ref = traces[i].attn
        n = lay.num_prompts
        torch.testing.assert_close(attn[..., 1:1 + 20, 1:1 + 20],
                                   ref[..., 1 + n:, 1 + n:],
                                   rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(attn[..., 1:1 + 20, lay.prompts],
                                   ref[..., 1 + n:, 1:1 + n],
                                   rtol=1e-4, atol=1e-6)


def test_gradients_reach_the_gate_then_the_prompts():
    m = gated(tune_kv_bias=True).train()
    x = torch.randn(2, 3, 64, 64)
    sum(o.square().mean() for o in m(x)).backward()
    assert (m.prompt_gate.grad.abs() > 0).all()  # every layer and head
    assert (m.kv_bias_delta.grad.abs().sum((1, 2)) > 0).all()
    # tanh(0) = 0: the prompts' only path is through the gate
    assert not m.prompt_tokens.grad.any()
    assert not m.proxy_prompt_tokens.grad.any()
    with torch.no_grad():  # one SGD step
        for p in m.parameters():
            if p.grad is not None:
                p -= 0.1 * p.grad
                p.grad = None
    sum(o.square().mean() for o in m(x)).backward()
    assert (m.prompt_tokens.grad.abs().sum((1, 2)) > 0).all()
    assert m.proxy_prompt_tokens.grad.abs().sum() > 0
    assert {n for n, p in m.named_parameters() if p.requires_grad} == {
        'prompt_tokens', 'proxy_prompt_tokens', 'kv_bias_delta',
        'prompt_gate'}


def test_prompt_only_checkpoint_keeps_the_gate(tmp_path):
    init_default_scope('mmseg')
    save_vit(tmp_path / 'vit.pth', **TINY_VIT)
    cfg = dict(
        type='EncoderDecoder',
        data_preprocessor=dict(type='SegDataPreProcessor', size=(64, 64)),
        backbone=dict(type='PromptedVisionTransformer', **TINY_VIT,
                      **GATED, init_cfg=dict(type='Pretrained',
                                             checkpoint=str(tmp_path /
                                                            'vit.pth'))),
        decode_head=dict(type='FCNHead', in_channels=64, channels=8,
                         num_convs=1, num_classes=4, in_index=-1,
                         loss_decode=dict(type='CrossEntropyLoss')),
        test_cfg=dict(mode='whole'))
    trained = MODELS.build(cfg)
    trained.init_weights()
    with torch.no_grad():
        trained.backbone.prompt_gate.normal_()
    small = make_prompt_only(dict(state_dict=trained.state_dict(), meta={}),
                             trained)
    assert 'backbone.prompt_gate' in small['state_dict']
    torch.save(small, tmp_path / 'prompts.pth')
    model = MODELS.build(cfg)  # as runner.test(): no init_weights()
    load_checkpoint(model, str(tmp_path / 'prompts.pth'), map_location='cpu')
    x = torch.randn(1, 3, 64, 64)
    trained.eval()
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x, mode='tensor'),
                           trained(x, mode='tensor'))


def test_parameter_report_counts_the_gates():
    counts = parameter_report(gated(tune_kv_bias=True))
    assert counts['prompt_gates'] == 4 * 4
    assert counts['prompts'] == 3 * 3 * 64 + 2 * 64
    assert counts['kv_biases'] == 4 * 2 * 64
    assert counts['trainable'] == 16 + 3 * 3 * 64 + 2 * 64 + 4 * 2 * 64
