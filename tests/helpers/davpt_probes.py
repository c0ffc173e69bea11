"""Test-only hooks, imported by the configs that tests/test_distributed.py,
tests/test_resume.py and tests/test_bad_input.py write (``custom_imports``
with ``tests/`` on ``PYTHONPATH``). They observe training and write JSON into
the work dir; only :class:`NaNInjectionHook` and :class:`StallHook` change
anything, and only when a test asks for it.
"""
import hashlib
import json
import os
import os.path as osp
import time

import numpy as np
import torch
from mmengine.dist import get_rank, get_world_size
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmseg.registry import HOOKS


def _segmentor(runner):
    model = runner.model
    return model.module if is_model_wrapper(model) else model


def _objective(runner):
    """The DAVPTHook's DAVPTObjective (mapping and metric losses)."""
    from davpt_seg.engine.hooks import DAVPTHook
    hook, = [h for h in runner.hooks if isinstance(h, DAVPTHook)]
    return hook.objective


def digest(*tensors) -> str:
    """sha256 of the exact bytes (dtype, shape and values) of tensors."""
    h = hashlib.sha256()
    for t in tensors:
        t = t.detach().cpu().contiguous()
        h.update(f'{t.dtype}{tuple(t.shape)}'.encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else
                 t.float().numpy().tobytes())
    return h.hexdigest()


def _tensors(obj):
    """All tensors (and numbers) of a nested state dict, in a fixed order."""
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for k in sorted(obj, key=str):
            yield from _tensors(obj[k])
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _tensors(v)
    elif isinstance(obj, (int, float, bool, np.number)):
        yield torch.tensor(float(obj), dtype=torch.float64)


MAPPING_BUFFERS = ('mapping', 'centroids', 'has_centroids', 'initialized',
                   'num_updates')


def state_digests(runner) -> dict:
    """Digests of everything a resumed run must continue from."""
    seg = _segmentor(runner)
    mapping = _objective(runner).mapping
    trainable = {n: p for n, p in seg.backbone.named_parameters()
                 if p.requires_grad}
    heads = {k: v for k, v in seg.state_dict().items()
             if k.startswith(('decode_head.', 'auxiliary_head.'))}
    optim = runner.optim_wrapper.optimizer.state_dict()
    scheds = runner.param_schedulers
    if isinstance(scheds, dict):
        scheds = [s for v in scheds.values() for s in v]
    sched_states = [s.state_dict() for s in (scheds or [])]
    return dict(
        prompts=digest(*(trainable[k] for k in sorted(trainable))),
        heads=digest(*(heads[k] for k in sorted(heads))),
        mapping=digest(*(getattr(mapping, b) for b in MAPPING_BUFFERS)),
        stats=digest(mapping.feat_sum, mapping.feat_count),
        optimizer=digest(*_tensors(optim['state'])),
        lr=[g['lr'] for g in optim['param_groups']],
        scheduler=digest(*_tensors(sched_states)),
        mapping_list=mapping.mapping.tolist(),
        num_updates=int(mapping.num_updates))


class _JsonHook(Hook):

    def _write(self, runner, name, data):
        path = osp.join(runner.work_dir, f'{name}_rank{get_rank()}.json')
        tmp = path + '.tmp'
        with open(tmp, 'w') as f:
            json.dump(data, f, indent=1)
        os.replace(tmp, path)


@HOOKS.register_module()
class MappingProbeHook(_JsonHook):
    """Records, per rank, every ``ClassPromptMapping.update``: digests of the
    statistics it starts from and of the buffers it leaves, plus this rank's
    own (pre-all-reduce) present-class counts and images since the previous
    update. Also records the DDP wrapper and the state at ``before_train``.

    Runs first (VERY_HIGH), so it wraps the mapping before DAVPTHook's
    initial pass and sees whether the mapping was restored from a checkpoint
    (DAVPTHook builds its objective at ``before_run`` and loads a
    checkpoint's state in ``after_load_checkpoint``, both earlier).
    """

    priority = 'VERY_HIGH'

    def before_train(self, runner):
        mapping = _objective(runner).mapping
        model = runner.model
        self.data = dict(
            rank=get_rank(),
            world_size=get_world_size(),
            wrapper=type(model).__name__,
            find_unused_parameters=getattr(model, 'find_unused_parameters',
                                           None),
            start_iter=runner.iter,
            initialized_at_start=bool(mapping.initialized),
            updates=[])
        self._local = torch.zeros(mapping.num_classes, dtype=torch.float64)
        self._images = 0
        accumulate, update = mapping.accumulate, mapping.update

        def probed_accumulate(feats, present):
            self._local += present.sum(0).double().cpu()
            self._images += int(present.shape[0])
            return accumulate(feats, present)

        def probed_update():
            record = dict(
                iter=runner.iter,
                stats=digest(mapping.feat_sum, mapping.feat_count),
                feat_count=mapping.feat_count.tolist(),
                local_count=self._local.tolist(),
                local_images=self._images)
            changed = update()
            record.update(
                changed=bool(changed),
                buffers=digest(*(getattr(mapping, b)
                                 for b in MAPPING_BUFFERS)),
                mapping=mapping.mapping.tolist(),
                num_updates=int(mapping.num_updates),
                stats_after=digest(mapping.feat_sum, mapping.feat_count))
            self.data['updates'].append(record)
            self._local.zero_()
            self._images = 0
            self._write(runner, 'mapping_probe', self.data)
            return changed

        mapping.accumulate = probed_accumulate
        mapping.update = probed_update
        self._write(runner, 'mapping_probe', self.data)

    def after_train(self, runner):
        seg = _segmentor(runner)
        self.data['final_prompts'] = digest(
            *(p for _, p in sorted(seg.named_parameters())
              if p.requires_grad))
        self._write(runner, 'mapping_probe', self.data)


@HOOKS.register_module()
class StateProbeHook(_JsonHook):
    """Records :func:`state_digests` when training starts (after resume and
    DAVPTHook's ``before_train``) and after the iterations in ``at_iters``
    (1-based, after every other hook incl. the mapping update and the
    checkpoint), and at the end."""

    priority = 'LOWEST'

    def __init__(self, at_iters=()):
        self.at_iters = set(at_iters)
        self.data = {}

    def before_train(self, runner):
        self.data['start'] = dict(iter=runner.iter, **state_digests(runner))
        self._write(runner, 'state_probe', self.data)

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None):
        if runner.iter + 1 in self.at_iters:
            self.data[str(runner.iter + 1)] = state_digests(runner)
            self._write(runner, 'state_probe', self.data)

    def after_train(self, runner):
        self.data['end'] = dict(iter=runner.iter, **state_digests(runner))
        self._write(runner, 'state_probe', self.data)


@HOOKS.register_module()
class StallHook(Hook):
    """After iteration ``at`` (1-based, after the checkpoint hook), write
    ``stalled`` into the work dir and sleep, so a test can SIGKILL the run at
    a known point."""

    priority = 'LOWEST'

    def __init__(self, at):
        self.at = at

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None):
        if runner.iter + 1 == self.at:
            with open(osp.join(runner.work_dir, 'stalled'), 'w') as f:
                f.write(str(runner.iter + 1))
            time.sleep(600)


@HOOKS.register_module()
class NaNInjectionHook(Hook):
    """From iteration ``at`` (1-based) on, replace one guided feature
    (``'cls_query'`` or ``'prompt_output'``) with ``value`` (NaN/Inf) in the
    features the DA-VPT metric losses read."""

    priority = 'LOW'

    def __init__(self, at, feature='cls_query', value=float('nan')):
        self.at, self.feature, self.value = at, feature, value

    def before_train(self, runner):
        objective = _objective(runner)
        forward = objective.forward

        def poisoned(guided, *args, **kwargs):
            if runner.iter + 1 >= self.at:
                guided = guided._replace(layers={
                    i: f._replace(**{self.feature: torch.full_like(
                        getattr(f, self.feature), self.value)})
                    for i, f in guided.layers.items()})
            return forward(guided, *args, **kwargs)

        objective.forward = poisoned


def read_probe(work_dir, name: str, rank: int = 0) -> dict:
    """What the probe hook ``name`` (``'state_probe'``, ``'mapping_probe'``)
    of ``rank`` last wrote into ``work_dir``; ``{}`` before it wrote."""
    path = osp.join(work_dir, f'{name}_rank{rank}.json')
    if not osp.exists(path):
        return {}
    with open(path) as f:
        return json.load(f)


def resume_probes(full, resumed, ranks=None) -> dict:
    """The state and mapping probes of an uninterrupted run (``full``) and
    of a resumed one: keys ``full_state``, ``resumed_state``,
    ``full_mapping``, ``resumed_mapping``; rank 0's, or a list over
    ``ranks``."""
    def read(work, name):
        if ranks is None:
            return read_probe(work, name)
        return [read_probe(work, name, r) for r in ranks]

    return {f'{run}_{kind}': read(work, f'{kind}_probe')
            for run, work in (('full', full), ('resumed', resumed))
            for kind in ('state', 'mapping')}
