"""FLOP counts: SDPA is counted like the stock ViT's attention matmuls
(``davpt_seg.utils.flops``, ``tools/get_flops.py``)."""
import pytest
import torch
from mmengine.analysis import FlopAnalyzer, get_model_complexity_info
from mmseg.models.backbones import VisionTransformer

import davpt_seg.compat
from davpt_seg.models.backbones import PromptedVisionTransformer
from davpt_seg.utils.flops import SDPA_OP, flop_analyzer
from helpers import TOY_CONFIG
from helpers.vit import TINY_VIT
from tools import get_flops

#: Non-square and not the configured size: 4 x 6 patches (+ [CLS]).
X = torch.zeros(2, 3, 64, 96)
SEQ = 1 + 4 * 6


def _quiet(analyzer):
    analyzer.unsupported_ops_warnings(False)
    analyzer.uncalled_modules_warnings(False)
    return analyzer


def _stock(**kwargs):
    vit = VisionTransformer(**{**TINY_VIT, **kwargs})
    vit.eval()  # (mmseg's ViT.train() returns None)
    return vit


def _prompted(**kwargs):
    kwargs = {**dict(num_prompts=0, guided_layers=()), **kwargs}
    return PromptedVisionTransformer(**TINY_VIT, **kwargs).eval()


@pytest.mark.parametrize('vit_kwargs', [
    dict(), dict(with_cls_token=False), dict(out_indices=(1, 3),
                                             final_norm=True)])
def test_prompt_free_flops_equal_stock_vit(vit_kwargs):
    stock = _quiet(FlopAnalyzer(_stock(**vit_kwargs), (X, )))
    ours = _quiet(flop_analyzer(_prompted(**vit_kwargs), (X, )))
    assert ours.total() == pytest.approx(stock.total(), rel=1e-9)
    # Same attention cost, counted on SDPA instead of the two bmm's.
    assert ours.by_operator()['scaled_dot_product_attention'] == \
        stock.by_operator()['bmm'] > 0
    assert SDPA_OP not in ours.unsupported_ops()


def test_mmengine_complexity_info_counts_sdpa_after_install():
    """``davpt_seg.compat.install()`` adds the handle to mmengine's
    defaults, so mmengine's (and mmseg's) own tools count it too."""
    davpt_seg.compat.install()
    stock = get_model_complexity_info(_stock(), inputs=(X, ),
                                      show_table=False, show_arch=False)
    ours = get_model_complexity_info(_prompted(), inputs=(X, ),
                                     show_table=False, show_arch=False)
    assert ours['flops'] == stock['flops']
    assert ours['params'] == stock['params']


def test_flops_grow_with_prompts():
    B, C, L = X.shape[0], TINY_VIT['embed_dims'], TINY_VIT['num_layers']
    base = _quiet(flop_analyzer(_prompted(), (X, ))).by_operator()
    for num_prompts in (4, 16):
        ops = _quiet(flop_analyzer(_prompted(num_prompts=num_prompts),
                                   (X, ))).by_operator()
        # Per layer, the prompts add their Q/K/V projection (no output
        # projection or FFN: their outputs are dropped) and, as keys and
        # values, one column per image/[CLS] query in Q K^T and attn V.
        P = num_prompts
        assert ops['linear'] - base['linear'] == L * B * P * C * 3 * C
        assert ops['scaled_dot_product_attention'] - base[
            'scaled_dot_product_attention'] == L * B * SEQ * P * 2 * C
    guided = _quiet(flop_analyzer(_prompted(
        num_prompts=4, num_proxy_prompts=2, guided_layers=[-1]), (X, )))
    assert base['linear'] < guided.by_operator()['linear']


def test_get_flops_tool(capsys):
    config = str(TOY_CONFIG)
    assert get_flops.main([config, '--shape', '64', '96']) == 0
    out = capsys.readouterr().out
    assert 'Input shape: 1 x 3 x 64 x 96' in out
    assert 'Params: 391.152K total, 67.152K trainable' in out
    assert 'attention (SDPA) included' in out
    from mmengine.config import Config
    result = get_flops.complexity(Config.fromfile(config))
    assert result['input'] == (1, 3, 64, 64)  # the config's crop_size
    assert set(result['flops_by_part']) == {'backbone', 'decode_head'}
    assert sum(result['flops_by_part'].values()) == result['flops']
    assert SDPA_OP not in result['uncounted']
