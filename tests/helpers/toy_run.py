"""Shared set-up of the tests that run ``tools/train.py`` on the toy config:
the run's config text, a "pretrained" toy ViT (nothing can be downloaded, so
tests make their own weights), the run's logged scalars and the comparison
of two runs' checkpoints."""
import json
from pathlib import Path
from typing import Optional

import torch

from davpt_seg.weights import load_training_checkpoint
from . import TOY_CONFIG
from .vit import save_vit

#: The toy config's backbone as an mmseg ViT (patch 8, 96 dims, 4 layers,
#: patch bias).
TOY_VIT = dict(img_size=(64, 64), patch_size=8, embed_dims=96, num_layers=4,
               num_heads=4, mlp_ratio=2, patch_bias=True,
               norm_cfg=dict(type='LN', eps=1e-6))


def assert_same_training_checkpoint(path_a, path_b, iters: int) -> None:
    """Two runs' ``iter_{iters}.pth`` hold bit-identical weights, buffers,
    DA-VPT objective state, optimizer momentum and scheduler states."""
    a = load_training_checkpoint(str(path_a))
    b = load_training_checkpoint(str(path_b))
    for key in ('state_dict', 'davpt'):
        assert a.get(key, {}).keys() == b.get(key, {}).keys(), key
        for k, v in a.get(key, {}).items():
            assert torch.equal(v, b[key][k]), k
    assert a['meta']['iter'] == b['meta']['iter'] == iters
    assert a['param_schedulers'] == b['param_schedulers']
    sa, sb = a['optimizer']['state'], b['optimizer']['state']
    assert sa.keys() == sb.keys()
    for i in sa:
        assert torch.equal(sa[i]['momentum_buffer'], sb[i]['momentum_buffer'])


def toy_run_config(data_root, iters: int, *, checkpoint_interval: int,
                   val_interval: Optional[int] = None,
                   logger_interval: int = 1, probes: bool = False,
                   extra: str = '', loader: str = '', dataset: str = '',
                   base=TOY_CONFIG) -> str:
    """Config text: ``base`` (default ``configs/davpt_setr_toy.py``) on
    ``data_root`` for ``iters`` iterations (PolyLR ending there), validating
    every ``val_interval`` iterations (default: never) and checkpointing
    every ``checkpoint_interval``. ``probes`` imports
    ``helpers.davpt_probes`` (``tests/`` must then be on ``PYTHONPATH``);
    ``loader`` / ``dataset`` are extra ``key=value, `` items of
    ``train_dataloader`` / its ``dataset``; ``extra`` is appended as is
    (e.g. ``custom_hooks``)."""
    imports = "['davpt_seg', 'helpers.davpt_probes']" if probes \
        else "['davpt_seg']"
    val = val_interval if val_interval is not None else 10 * iters + 1000
    return f"""_base_ = [{str(base)!r}]
custom_imports = dict(imports={imports}, allow_failed_imports=False)
data_root = {str(data_root)!r}
train_dataloader = dict({loader}dataset=dict({dataset}data_root=data_root))
val_dataloader = dict(dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
train_cfg = dict(max_iters={iters}, val_interval={val})
param_scheduler = [dict(type='PolyLR', eta_min=1e-4, power=0.9, begin=0,
                        end={iters}, by_epoch=False)]
default_hooks = dict(checkpoint=dict(interval={checkpoint_interval}),
                     logger=dict(interval={logger_interval}))
""" + extra


def save_toy_vit(path, seed: int = 0) -> dict:
    """An mmseg-format ViT matching the toy backbone (:data:`TOY_VIT`),
    randomly initialised with ``seed``, saved to ``path``; returns its
    state dict."""
    return save_vit(path, seed, **TOY_VIT)


def read_scalars(work_dir) -> list:
    """The rows of a run's ``<timestamp>/vis_data/scalars.json`` (exactly
    one run in ``work_dir``)."""
    [path] = list(Path(work_dir).glob('*/vis_data/scalars.json'))
    return [json.loads(line) for line in path.read_text().splitlines()]
