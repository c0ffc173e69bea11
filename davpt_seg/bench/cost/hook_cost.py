# Copyright (c) davpt-seg contributors. Apache-2.0.
"""What DA-VPT's hook costs the main process per iteration, apart from the
model, at ADE20K's label shape (``tools/benchmark.py --preset
ade20k-hook``; ``docs/benchmark_cpu.md``).

The model is a stand-in: a one-layer prompted ViT of ViT-L's width (the
guided features have the real shapes) under a segmentor without heads, fed
tiny images, while the data samples carry ADE20K-shaped 512x512 label maps.
Two public forward-hook pairs bracket the hooks the segmentor had when they
were installed (``DAVPTHook``'s pre-hook: the classes of the batch;
its forward hook: statistics, targets, metric losses), so the time is the
hook's alone. Rows: the classes from ``RecordLabelValues``' metainfo (what
the shipped configs do), from the batched label scan (a pipeline without
it), and the earlier hook's per-image scan; plus the worker-side
``RecordLabelValues`` per image and the mapping update.
"""
import time
from types import SimpleNamespace
from typing import Callable, Dict, List, Optional

import torch
import torch.nn as nn
from torch.utils._python_dispatch import TorchDispatchMode
from mmengine.structures import PixelData
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

from davpt_seg.datasets import RecordLabelValues
from davpt_seg.models.davpt import present_class_mask
from .build import attach_davpt_hook
from .extras import time_mapping_update
from .stats import summarize
from .steps import sync
from .system import device_name

HOOK_PRESETS = {
    # ADE20K: 512 px crops, 150 classes, 8 GPUs x 2 = batch 16 per step
    # (a GPU's process sees 2; the whole batch is the harder target);
    # ViT-L: 1024 channels, 10 proxy prompts in one guided layer.
    'ade20k-hook': dict(crop=512, batch=16, num_classes=150,
                        embed_dims=1024, num_proxy_prompts=10,
                        mean_classes=8., max_classes=30,
                        warmup=5, reps=50, mapping_reps=20),
}
#: Main-process time of the hook per iteration (whole batch), ms.
HOOK_LIMIT_MS = 1.0


def ade_like_labels(preset: dict, seed: int = 0) -> List[torch.Tensor]:
    """``batch`` label maps [S, S] (long) shaped like ADE20K crops: per
    image k = 1 + Poisson(mean_classes - 1) classes (at most
    ``max_classes``) drawn with Zipf-like frequencies (ADE20K's classes are
    long-tailed), as Voronoi cells of 3 seeds per class, plus 3 cells of
    the ignore index 255 ('other', about 1 / (k + 1) of the pixels)."""
    g = torch.Generator().manual_seed(seed)
    s, n = preset['crop'], preset['num_classes']
    freq = 1. / torch.arange(1, n + 1, dtype=torch.float)
    yy, xx = torch.meshgrid(torch.arange(s), torch.arange(s), indexing='ij')
    grid = torch.stack([yy, xx], -1).reshape(-1, 1, 2).float()
    labels = []
    for _ in range(preset['batch']):
        k = 1 + int(torch.poisson(torch.tensor(preset['mean_classes'] - 1.),
                                  generator=g))
        classes = torch.multinomial(freq, min(k, preset['max_classes']),
                                    generator=g)
        owner = torch.cat([classes.repeat(3), torch.full((3, ), 255)])
        seeds = torch.rand(len(owner), 2, generator=g) * s
        cell = (grid - seeds[None]).pow(2).sum(-1).argmin(1)
        labels.append(owner[cell].reshape(s, s))
    return labels


class BackboneOnlySegmentor(nn.Module):
    """A segmentor stand-in for the hook: its prompted backbone's forward,
    no heads; ``decode_head`` only names the classes and ignore index."""

    def __init__(self, backbone: nn.Module, num_classes: int):
        super().__init__()
        self.backbone = backbone
        self.decode_head = SimpleNamespace(num_classes=num_classes,
                                           ignore_index=255)

    def forward(self, inputs, data_samples=None, mode='tensor'):
        self.backbone(inputs)
        return {}


class HookTimer:
    """Host time (ms) of the forward pre-hooks (:attr:`pre`) and forward
    hooks (:attr:`post`) a module had when this timer was installed, one
    sample of each per forward."""

    def __init__(self, module: nn.Module):
        self.pre: List[float] = []
        self.post: List[float] = []
        self._t0 = None
        self._handles = [
            module.register_forward_pre_hook(self._start, prepend=True),
            module.register_forward_pre_hook(self._stop_pre),
            module.register_forward_hook(self._start, prepend=True),
            module.register_forward_hook(self._stop_post)]

    def _start(self, *args):
        self._t0 = time.perf_counter()

    def _stop_pre(self, *args):
        self.pre.append((time.perf_counter() - self._t0) * 1e3)

    def _stop_post(self, *args):
        self.post.append((time.perf_counter() - self._t0) * 1e3)

    @property
    def samples(self) -> List[float]:
        """Pre-hooks + forward hooks of each forward."""
        return [a + b for a, b in zip(self.pre, self.post)]

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


def build_stand_in(preset: dict, device: torch.device):
    """The stand-in segmentor (train mode) with an attached, initialised
    :class:`DAVPTHook` (one random feature per class, as the bench's other
    DA-VPT rows)."""
    torch.manual_seed(0)
    backbone = MODELS.build(dict(
        type='PromptedVisionTransformer', img_size=(28, 28), patch_size=14,
        embed_dims=preset['embed_dims'], num_layers=1, num_heads=16,
        mlp_ratio=1, out_indices=(0, ), num_prompts=preset[
            'num_proxy_prompts'], num_proxy_prompts=preset[
                'num_proxy_prompts'], guided_layers=[0]))
    model = BackboneOnlySegmentor(backbone, preset['num_classes'])
    model.to(device).train()
    return model, attach_davpt_hook(model)


class _OpCounter(TorchDispatchMode):
    """Counts the aten ops dispatched while active (each one a kernel
    launch, or a few, on a GPU)."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += 1
        return func(*args, **(kwargs or {}))


def hook_op_count(model: nn.Module, inputs: torch.Tensor,
                  samples: list) -> int:
    """aten ops of the hook's work in one forward (the forward with the
    hook's pre-hook and forward hook minus the one without them)."""
    counts = []
    for wrap in (True, False):
        with _OpCounter() as ops:
            if wrap:
                model(inputs=inputs, data_samples=samples, mode='loss')
            else:
                model.forward(inputs=inputs, data_samples=samples,
                              mode='loss')
        counts.append(ops.count)
    return counts[0] - counts[1]


def _time(fn: Callable, warmup: int, reps: int,
          device: torch.device) -> List[float]:
    out = []
    for r in range(warmup + reps):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        if r >= warmup:
            out.append((time.perf_counter() - t0) * 1e3)
    return out


def _one_thread(fn: Callable) -> Callable:
    """``fn`` run with one torch thread, as in a data loader's worker."""
    def run():
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            fn()
        finally:
            torch.set_num_threads(threads)
    return run


def run_hook_benchmark(name: str, device: torch.device,
                       warmup: Optional[int] = None,
                       reps: Optional[int] = None) -> Dict:
    """Every figure of the hook preset ``name`` (``warmup`` / ``reps``:
    None = the preset's); returns the ``hook_cost.json`` result."""
    preset = HOOK_PRESETS[name]
    warmup = preset['warmup'] if warmup is None else warmup
    reps = preset['reps'] if reps is None else reps
    labels = ade_like_labels(preset)
    recorded = [SegDataSample(gt_sem_seg=PixelData(data=label[None]))
                for label in labels]
    record = RecordLabelValues()
    worker = _time(_one_thread(lambda: [record(dict(data_samples=s))
                                        for s in recorded]),
                   1, 5, torch.device('cpu'))
    scanned = [SegDataSample(gt_sem_seg=PixelData(data=label[None].to(
        device))) for label in labels]
    model, hook = build_stand_in(preset, device)
    inputs = torch.rand(preset['batch'], 3, 28, 28, device=device)
    hook_ms = {}
    for key, samples in (('recorded', recorded), ('scan', scanned)):
        timer = HookTimer(model)
        for r in range(warmup + reps):
            hook.before_train_iter(SimpleNamespace(iter=r), r)
            model(inputs=inputs, data_samples=samples, mode='loss')
            sync(device)
        timer.remove()
        hook_ms[key] = summarize(timer.samples[warmup:])
        hook_ms[key + '_classes'] = summarize(timer.pre[warmup:])
    ops = hook_op_count(model, inputs, recorded)
    per_image = _time(lambda: [present_class_mask(
        s.gt_sem_seg.data[None], preset['num_classes']) for s in scanned],
        1, 10, device)
    hook_ms['per_image_scan'] = summarize(per_image)
    classes = [len(s.metainfo['label_values']) for s in recorded]
    fast = hook_ms['recorded']['median']
    classes_ms = hook_ms['recorded_classes']['median']
    return dict(
        meta=dict(preset=name, device=device.type, warmup=warmup, reps=reps,
                  threads=torch.get_num_threads(), torch=torch.__version__,
                  device_name=device_name(device), preset_cfg=preset,
                  classes_per_crop=classes,
                  ignored_share=float(sum((x == 255).float().mean()
                                          for x in labels) / len(labels))),
        hook_ms=hook_ms, hook_ops_per_iteration=ops,
        record_label_values_ms_per_image=summarize(
            [t / preset['batch'] for t in worker]),
        mapping_update_ms=time_mapping_update(device,
                                              preset['mapping_reps']),
        targets=[
            dict(id='hook_main_process_ms', limit=HOOK_LIMIT_MS, value=fast,
                 met=fast <= HOOK_LIMIT_MS, description='DAVPTHook main-'
                 'process time per iteration, whole batch, classes recorded '
                 'by RecordLabelValues (on a CPU this includes the '
                 'objective\'s arithmetic)'),
            dict(id='hook_classes_ms', limit=HOOK_LIMIT_MS, value=classes_ms,
                 met=classes_ms <= HOOK_LIMIT_MS, description='of which '
                 'the classes of the batch (the forward pre-hook; the '
                 'earlier hook scanned every label pixel here)')])


def hook_markdown(result: dict) -> str:
    """``hook_cost.md``: the figures of :func:`run_hook_benchmark`."""
    meta, ms = result['meta'], result['hook_ms']
    cfg = meta['preset_cfg']
    cls = meta['classes_per_crop']
    lines = [
        f"# DAVPTHook main-process cost: preset `{meta['preset']}`", '',
        f"{meta['device_name']}, {meta['threads']} torch threads, torch "
        f"{meta['torch']}; {meta['warmup']} warm-up + {meta['reps']} timed "
        'iterations.', '',
        f"Batch {cfg['batch']} of {cfg['crop']}x{cfg['crop']} label maps, "
        f"{cfg['num_classes']} classes, {min(cls)}-{max(cls)} classes per "
        f"crop (mean {sum(cls) / len(cls):.1f}), "
        f"{100 * meta['ignored_share']:.0f} % ignored pixels; guided "
        f"features of {cfg['embed_dims']} channels, "
        f"{cfg['num_proxy_prompts']} proxy prompts.", '',
        '| per iteration, whole batch | median ms | IQR ms |',
        '|---|---:|---|']
    names = dict(recorded='hook, classes from RecordLabelValues (shipped '
                 'configs)', recorded_classes='of which the classes of the '
                 'batch (pre-hook)', scan='hook, label scan (a pipeline '
                 'without it)', scan_classes='of which the classes of the '
                 'batch (pre-hook)', per_image_scan='per-image label scan of '
                 'the earlier hook (scan only)')
    for key, label in names.items():
        lines.append(f"| {label} | {ms[key]['median']:.3f} | "
                     f"{ms[key]['q1']:.3f}-{ms[key]['q3']:.3f} |")
    rec = result['record_label_values_ms_per_image']
    upd = result['mapping_update_ms']
    lines += [
        '', f"The hook queues {result['hook_ops_per_iteration']} tensor ops "
        'per iteration (with recorded classes), each a kernel launch of a '
        'few microseconds on a GPU, and reads nothing back.', '',
        f"RecordLabelValues, in a data worker: {rec['median']:.2f} ms "
        'per image.', f"Mapping update ({upd['shape']}): cold "
        f"{upd['cold_ms']:.1f} ms, warm {upd['warm']['median']:.1f} ms "
        '(once per epoch).', '', '| target | limit | value | verdict |',
        '|---|---:|---:|---|']
    for t in result['targets']:
        lines.append(f"| {t['description']} | <= {t['limit']} ms | "
                     f"{t['value']:.3f} ms | "
                     f"{'met' if t['met'] else 'MISSED'} |")
    return '\n'.join(lines) + '\n'
