# Copyright (c) davpt-seg contributors. Apache-2.0.
"""Per-iteration and per-epoch costs of DA-VPT outside the rows: the
class->prompt mapping update and the initial mapping pass."""
import time

import torch

from davpt_seg.models.davpt import ClassPromptMapping
from .build import BuiltRow
from .stats import summarize
from .steps import sync

#: The mapping update's size at ADE20K / ViT-L, whatever the preset.
MAPPING_SHAPE = (150, 10, 1024)  # classes, prompts, dims


def time_mapping_update(device: torch.device, reps: int) -> dict:
    """Time ``ClassPromptMapping.update()``: k-means of 150 classes x 1024
    dims into 10 prompts, a cold start then ``reps`` warm starts.

    Returns:
        dict: ``cold_ms``, ``warm`` (:func:`summarize`), ``shape``.
    """
    n, k, c = MAPPING_SHAPE
    mapping = ClassPromptMapping(n, k, c).to(device)
    g = torch.Generator().manual_seed(1)
    present = torch.eye(n, dtype=torch.bool, device=device)
    cold, warm = None, []
    for r in range(reps + 1):
        mapping.accumulate(torch.randn(n, c, generator=g).to(device),
                           present)
        sync(device)
        t0 = time.perf_counter()
        mapping.update()
        sync(device)
        dt = (time.perf_counter() - t0) * 1e3
        if r == 0:
            cold = dt
        else:
            warm.append(dt)
    return dict(cold_ms=cold, warm=summarize(warm),
                shape=f'{n} classes x {c} dims -> {k} prompts')


def time_initial_pass(row: BuiltRow, data: dict, device: torch.device,
                      reps: int) -> dict:
    """Time the hook's initial-mapping work for one batch: data
    preprocessor, prompt-free ``forward_cls``, class presence and
    ``accumulate`` (one untimed warm-up). The statistics are reset after.

    Returns:
        dict: :func:`summarize` of the ``reps`` times, ms.
    """
    hook, seg = row.hook, row.model
    mapping = hook.objective.mapping
    samples = []
    for r in range(reps + 1):
        sync(device)
        t0 = time.perf_counter()
        with torch.no_grad():
            seg.backbone.eval()
            batch = seg.data_preprocessor(data, True)
            cls = seg.backbone.forward_cls(batch['inputs'])
            mapping.accumulate(cls.float(),
                               hook.present(batch['data_samples']))
            seg.backbone.train()
        sync(device)
        if r:
            samples.append((time.perf_counter() - t0) * 1e3)
    mapping.feat_sum.zero_()
    mapping.feat_count.zero_()
    return summarize(samples)
