# Copyright (c) davpt-seg contributors. Apache-2.0.
"""Mixed precision on CPU for the cost benchmark's ``*_amp`` rows.

mmengine's ``AmpOptimWrapper`` (0.10) asserts a CUDA / NPU / MLU / MUSA
device, so the CPU rows use this wrapper instead: bf16 autocast in
``optim_context``, no loss scaling (bf16 has float32's exponent range).
"""
import contextlib

import torch
from mmengine.optim import OptimWrapper
from mmengine.runner.amp import autocast
from mmseg.registry import OPTIM_WRAPPERS


@OPTIM_WRAPPERS.register_module()
class CPUBf16AutocastOptimWrapper(OptimWrapper):
    """``OptimWrapper`` whose ``optim_context`` is CPU bfloat16 autocast."""

    @contextlib.contextmanager
    def optim_context(self, model: torch.nn.Module):
        with super().optim_context(model), autocast(
                device_type='cpu', dtype=torch.bfloat16):
            yield
