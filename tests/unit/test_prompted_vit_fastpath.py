"""The prompted ViT's forward skips the prompts' queries, output projection
and FFN (their outputs are dropped): it must equal the plain full-sequence
VPT-Deep computation ``[CLS | prompts | image]`` in outputs, guided features
and gradients."""
import pytest
import torch

import davpt_seg  # noqa: F401
from davpt_seg.models.backbones import PromptedVisionTransformer
from helpers.vit import TINY_VIT, explicit_vpt_forward



def full_sequence_forward(m, x):
    """Reference VPT-Deep: every layer runs on [CLS | prompts | image] with
    explicit attention; returns the out_indices maps, the attention outputs
    at the prompt positions per layer and the final [CLS]."""
    outs, layers, final_cls = explicit_vpt_forward(m, x)
    prompt_out = {i: lay.output[:, lay.prompt_slice]
                  for i, lay in layers.items()}
    return outs, prompt_out, final_cls


@pytest.mark.parametrize('kv, cp, final_norm', [
    (False, False, False), (True, False, True), (True, True, False)])
def test_fast_forward_equals_full_sequence(kv, cp, final_norm):
    torch.manual_seed(0)
    m = PromptedVisionTransformer(
        **TINY_VIT, num_prompts=3, num_proxy_prompts=4, guided_layers=[1],
        tune_kv_bias=kv, with_cp=cp, final_norm=final_norm,
        out_indices=(0, 2, 3))
    m.init_weights()
    with torch.no_grad():
        for p in (m.prompt_tokens, m.proxy_prompt_tokens):
            p.normal_()  # large prompts: a mix-up would show
        if kv:
            m.kv_bias_delta.normal_()
    x = torch.randn(2, 3, 48, 80)

    m.eval()
    with torch.no_grad():
        got = m(x)
        ref, _, _ = full_sequence_forward(m, x)
    for g, r in zip(got, ref):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-4)

    m.train()
    with m.capture_guided() as capture:
        got = m(x)
    feats = capture.pop()
    loss = sum(o.square().mean() for o in got) + \
        feats.layers[1].prompt_output.square().mean() + \
        feats.final_cls.square().mean()
    params = [m.prompt_tokens, m.proxy_prompt_tokens] + \
        ([m.kv_bias_delta] if kv else [])
    grads = torch.autograd.grad(loss, params)
    ref, prompt_out, final_cls = full_sequence_forward(m, x)
    ref_loss = sum(o.square().mean() for o in ref) + \
        prompt_out[1].square().mean() + final_cls.square().mean()
    ref_grads = torch.autograd.grad(ref_loss, params)
    for g, r in zip(got, ref):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(feats.layers[1].prompt_output,
                               prompt_out[1], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(feats.final_cls, final_cls, rtol=1e-4,
                               atol=1e-4)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-3, atol=1e-5)


def test_fast_forward_equals_full_sequence_without_cls_token():
    """Plain VPT-Deep without a [CLS] token (``with_cls_token=False``)."""
    torch.manual_seed(0)
    m = PromptedVisionTransformer(**TINY_VIT, num_prompts=5, guided_layers=(),
                                  with_cls_token=False,
                                  out_indices=(1, 3))
    m.init_weights()
    with torch.no_grad():
        m.prompt_tokens.normal_()
    x = torch.randn(2, 3, 64, 48)
    got = m(x)
    ref, _, _ = full_sequence_forward(m, x)
    for g, r in zip(got, ref):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-4)
    grads = torch.autograd.grad(sum(o.square().mean() for o in got),
                                m.prompt_tokens)
    ref_grads = torch.autograd.grad(sum(o.square().mean() for o in ref),
                                    m.prompt_tokens)
    torch.testing.assert_close(grads, ref_grads, rtol=1e-3, atol=1e-5)
    assert grads[0].abs().sum() > 0
