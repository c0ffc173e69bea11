"""Shared set-up of the tests that run ``tools/train.py`` on the toy config:
the run's config text and a "pretrained" toy ViT (nothing can be
downloaded, so tests make their own weights)."""
from pathlib import Path
from typing import Optional

import torch
from mmseg.models.backbones import VisionTransformer

ROOT = Path(__file__).resolve().parents[1]
TOY_CONFIG = ROOT / 'configs' / 'davpt_setr_toy.py'


def toy_run_config(data_root, iters: int, *, checkpoint_interval: int,
                   val_interval: Optional[int] = None,
                   logger_interval: int = 1, probes: bool = False,
                   extra: str = '') -> str:
    """Config text: ``configs/davpt_setr_toy.py`` on ``data_root`` for
    ``iters`` iterations (PolyLR ending there), validating every
    ``val_interval`` iterations (default: never) and checkpointing every
    ``checkpoint_interval``. ``probes`` imports ``tests/davpt_probes.py``
    (which then must be on ``PYTHONPATH``); ``extra`` is appended as is
    (e.g. ``custom_hooks``)."""
    imports = "['davpt_seg', 'davpt_probes']" if probes else "['davpt_seg']"
    val = val_interval if val_interval is not None else 10 * iters + 1000
    return f"""_base_ = [{str(TOY_CONFIG)!r}]
custom_imports = dict(imports={imports}, allow_failed_imports=False)
data_root = {str(data_root)!r}
train_dataloader = dict(dataset=dict(data_root=data_root))
val_dataloader = dict(dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
train_cfg = dict(max_iters={iters}, val_interval={val})
param_scheduler = [dict(type='PolyLR', eta_min=1e-4, power=0.9, begin=0,
                        end={iters}, by_epoch=False)]
default_hooks = dict(checkpoint=dict(interval={checkpoint_interval}),
                     logger=dict(interval={logger_interval}))
""" + extra


def save_toy_vit(path, seed: int = 0) -> None:
    """An mmseg-format ViT matching the toy backbone (patch 8, 96 dims, 4
    layers, patch bias), randomly initialised with ``seed``."""
    torch.manual_seed(seed)
    vit = VisionTransformer(img_size=(64, 64), patch_size=8, embed_dims=96,
                            num_layers=4, num_heads=4, mlp_ratio=2,
                            patch_bias=True,
                            norm_cfg=dict(type='LN', eps=1e-6))
    vit.init_weights()
    torch.save(vit.state_dict(), path)
