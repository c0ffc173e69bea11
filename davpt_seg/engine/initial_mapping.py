# Copyright (c) davpt-seg contributors. Apache-2.0.
"""The initial class->prompt mapping of a DA-VPT run: one pass of the
prompt-free frozen backbone over training batches, per-class means of the
objective's mapping feature (final [CLS], or the last guided layer's patch
tokens pooled under the class masks), then k-means (``docs/method.md`` §4)."""
import contextlib
import copy
import random
import time
from typing import Callable, Optional

import numpy as np
import torch
from mmengine.dist import get_rank

from davpt_seg.models.davpt import DAVPTObjective, stack_label_maps


@contextlib.contextmanager
def preserved_global_rng():
    """Restore the global Python, numpy, torch and CUDA RNG states on exit."""
    states = (random.getstate(), np.random.get_state(),
              torch.get_rng_state())
    cuda = torch.cuda.get_rng_state_all() \
        if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)


@torch.no_grad()
def build_initial_mapping(runner, segmentor, objective: DAVPTObjective,
                          present_fn: Callable, seed: int,
                          max_batches: Optional[int] = None,
                          dataloader_overrides: Optional[dict] = None
                          ) -> None:
    """Fill ``objective.mapping`` from one pass over the training set.

    The pass leaves the global ``random`` / numpy / torch (and CUDA) RNG
    states as it found them (its augmentations draw from them), so the
    training run that follows sees the same random stream as a run resumed
    from one of its checkpoints, which skips this pass.

    Args:
        runner (Runner): builds the dataloader (the training one, with
            ``dataloader_overrides``, a finite shuffled ``DefaultSampler``).
        segmentor (BaseSegmentor): unwrapped; its ``data_preprocessor`` and
            ``backbone.forward_cls`` (or ``forward_frozen_patches``) are
            used.
        objective (DAVPTObjective): its mapping is accumulated and updated
            (collective).
        present_fn (Callable): ``data_samples -> [B, num_classes]`` bool
            (called on the data preprocessor's output).
        seed (int): seed of the pass's sampler.
        max_batches (int, optional): batches per rank; None = all.
        dataloader_overrides (dict, optional): e.g. ``batch_size``.
    Raises:
        RuntimeError: the mapping could not be built.
    """
    start = time.perf_counter()
    with preserved_global_rng():
        cfg = copy.deepcopy(runner.cfg.train_dataloader)
        cfg.update(dataloader_overrides or {})
        cfg['sampler'] = dict(type='DefaultSampler', shuffle=True)
        cfg.pop('batch_sampler', None)
        loader = runner.build_dataloader(cfg, seed=seed)
        num = len(loader) if max_batches is None else \
            min(max_batches, len(loader))
        backbone = segmentor.backbone
        was_training = backbone.training
        backbone.eval()
        seen = 0
        for i, data in enumerate(loader):
            if i >= num:
                break
            data = segmentor.data_preprocessor(data, True)
            present = present_fn(data['data_samples'])
            objective.accumulate(present.to(data['inputs'].device),
                                 **frozen_features(backbone, objective,
                                                   data))
            seen += len(data['data_samples'])
        backbone.train(was_training)
        changed = objective.mapping.update()
    runner.logger.info(
        f'DA-VPT initial mapping from {num} batches ({seen} images on '
        f'rank {get_rank()}) in {time.perf_counter() - start:.2f} s: '
        f'{"set" if changed else "NOT set"}; '
        f'{objective.mapping.summary()}')
    if not changed:
        raise RuntimeError(
            'DA-VPT: the initial class->prompt mapping could not be '
            'built (too few classes seen, or k-means collapsed to one '
            'prompt). Increase init_max_batches or check the labels.')


def frozen_features(backbone, objective: DAVPTObjective, data: dict) -> dict:
    """The prompt-free backbone's features of a preprocessed batch, as
    keyword arguments of ``objective.accumulate``."""
    if objective.mapping_feature == 'cls':
        return dict(final_cls=backbone.forward_cls(data['inputs']))
    return dict(
        patch_tokens=backbone.forward_frozen_patches(
            data['inputs'], backbone.guided_layers[-1]),
        labels=stack_label_maps(data['data_samples']))
