# Copyright (c) davpt-seg contributors. Apache-2.0.
"""One step of a row as a zero-argument callable, and the timer of the
DA-VPT hook's host time."""
import time
from types import SimpleNamespace
from typing import Callable, List

import torch
from mmengine.logging import MMLogger

from .build import BuiltRow, normalized_inputs


def sync(device: torch.device) -> None:
    """Wait for the device (CUDA) so that host timers see the work."""
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def infer_step(model: torch.nn.Module, backbone_only: bool, data: dict,
               device: torch.device) -> Callable[[], None]:
    """Eval forward without gradients of ``model`` (a segmentor or, with
    ``backbone_only``, its backbone / a backbone) on ``data``."""
    if backbone_only:
        net = getattr(model, 'backbone', model)
        x = normalized_inputs(data, device)

        def step():
            net.eval()
            with torch.no_grad():
                net(x)
            net.train()
        return step
    proc = model.data_preprocessor(data, False)
    metas = [s.metainfo for s in proc['data_samples']]

    def step():
        model.eval()
        with torch.no_grad():
            model.encode_decode(proc['inputs'], metas)
        model.train()
    return step


def backbone_train_step(row: BuiltRow, data: dict,
                        device: torch.device) -> Callable[[], None]:
    """Forward, backward of the mean of the outputs, optimiser step."""
    x = normalized_inputs(data, device)
    net, ow = row.model, row.optim_wrapper

    def step():
        with ow.optim_context(net):
            outs = net(x)
            loss = sum(o.float().mean() for o in outs)
        ow.update_params(loss)
    return step


def train_step(row: BuiltRow, data: dict) -> Callable[[], None]:
    """``segmentor.train_step``; on DA-VPT rows framed by the hook's
    per-iteration calls, as mmengine's training loop makes them.

    ``DAVPTHook.before_train_iter`` / ``after_train_iter`` read only
    ``runner.iter`` (and ``runner.logger`` when a mapping update is due), so
    they get a ``SimpleNamespace`` with those two attributes. The classes of
    each image come from the batch's ``label_values`` metainfo
    (:func:`~davpt_seg.bench.cost.build.make_batch` records them as the
    shipped pipelines do), read by the hook's forward pre-hook.
    """
    seg, ow, hook = row.model, row.optim_wrapper, row.hook
    if hook is None:
        return lambda: seg.train_step(data, ow)
    runner = SimpleNamespace(iter=0, logger=MMLogger.get_current_instance())

    def step():
        hook.before_train_iter(runner, runner.iter)
        seg.train_step(data, ow)
        hook.after_train_iter(runner, runner.iter)
        runner.iter += 1
    return step


def make_step(row: BuiltRow, data: dict,
              device: torch.device) -> Callable[[], None]:
    """The step of a training row, or of an inference row on its own
    model."""
    backbone_only = bool(row.options.get('backbone_only'))
    if row.kind == 'infer':
        return infer_step(row.model, backbone_only, data, device)
    if backbone_only:
        return backbone_train_step(row, data, device)
    return train_step(row, data)


class ForwardHookTimer:
    """Host wall time (ms) of the forward hooks a module had when this
    timer was installed (e.g. ``DAVPTHook``'s: class presence, target draw,
    class statistics, metric losses). No device synchronisation is added.

    Two public torch forward hooks bracket them: one prepended (runs first,
    when the module's ``forward`` has returned) and one appended (runs
    last). Samples are taken while :attr:`record` is True.
    """

    def __init__(self, module: torch.nn.Module):
        self.samples: List[float] = []
        self.record = False
        self._t0 = None
        self._handles = [
            module.register_forward_hook(self._start, prepend=True),
            module.register_forward_hook(self._stop)]

    def _start(self, module, args, output):
        self._t0 = time.perf_counter()

    def _stop(self, module, args, output):
        if self.record and self._t0 is not None:
            self.samples.append((time.perf_counter() - self._t0) * 1e3)
        self._t0 = None

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
