# Copyright (c) davpt-seg contributors. Apache-2.0.
"""Fingerprints of a backbone's frozen weights (prompt-only checkpoints).

They hash the weights as loaded into the model, so they do not depend on
the pretrained file's format (``.pth``/``.safetensors``, nesting,
prefixes), only on the values the prompts were trained with.
"""
import hashlib
import math
from typing import Dict, List, Mapping

import torch

__all__ = [
    'frozen_weights_sha256', 'frozen_weights_summary', 'summaries_match'
]


def frozen_weights_sha256(tensors: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 over the names, dtypes, shapes and bytes of ``tensors``
    (in name order): the fingerprint of a backbone's frozen weights."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach()
        digest.update(f'{name}|{t.dtype}|{tuple(t.shape)}\n'.encode())
        raw = t.cpu().contiguous().reshape(-1).view(torch.uint8)
        digest.update(memoryview(raw.numpy()))
    return digest.hexdigest()


def frozen_weights_summary(
        tensors: Mapping[str, torch.Tensor]) -> Dict[str, List[float]]:
    """Per tensor ``[numel, sum, sum of squares]`` in float64: a second
    fingerprint of the frozen weights that tolerates last-bit differences.

    The SHA-256 is exact, but a resized position embedding (bicubic
    interpolation when the crop differs from the pretraining size, as for
    ViT-L/384 at 512 px) can differ in the last bits between CPUs or torch
    builds; other weights differ in these sums by far more than rounding.
    """
    out = {}
    for name, t in tensors.items():
        t = t.detach().double()
        out[name] = [float(t.numel()), float(t.sum()), float(t.square().sum())]
    return out


def summaries_match(got: Dict[str, List[float]],
                    expected: Dict[str, List[float]],
                    rtol: float = 1e-5) -> bool:
    """Whether two :func:`frozen_weights_summary` agree up to float32
    rounding: same tensors and sizes, sums of squares within ``rtol``, sums
    within ``rtol`` of their Cauchy-Schwarz scale sqrt(n * sum of squares)."""
    if set(got) != set(expected):
        return False
    for name, (n, s, ss) in got.items():
        n2, s2, ss2 = expected[name]
        if n != n2:
            return False
        if abs(ss - ss2) > rtol * max(ss, ss2) + 1e-30:
            return False
        if abs(s - s2) > rtol * math.sqrt(n * max(ss, ss2)) + 1e-30:
            return False
    return True

