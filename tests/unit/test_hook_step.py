"""DAVPTHook's work in one training forward: each forward uses its own
batch's classes, recorded label values and the label scan give the same
step, the scan is logged once, and the hook adds no host sync."""
import logging

import torch
from mmengine.logging import MMLogger
from torch.utils._python_dispatch import TorchDispatchMode

from davpt_seg.datasets import RecordLabelValues
from helpers.batches import seg_batch

from davpt_seg.engine.hooks import DAVPTHook
from test_davpt_hook import tiny_segmentor

#: aten ops that make the host wait for the device (a value read back, or
#: an output whose size depends on the data).
SYNC_OPS = ('_local_scalar_dense', 'nonzero', '_unique2', 'unique_dim',
            'unique_consecutive', 'masked_select', 'is_nonzero', 'equal')


class SyncOps(TorchDispatchMode):
    """Records the syncing aten ops dispatched while active (and every
    indexing by a bool mask, which is a ``nonzero``)."""

    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.__name__.split('.')[0]
        bool_index = name == 'index' and any(
            isinstance(i, torch.Tensor) and i.dtype == torch.bool
            for i in (args[1] if len(args) > 1 else []) if i is not None)
        if name in SYNC_OPS or bool_index:
            self.ops.append(name)
        return func(*args, **(kwargs or {}))


def ready_hook(model):
    """A hook attached to ``model`` with a k-means mapping."""
    hook = DAVPTHook(seed=0)
    hook.attach(model)
    mapping = hook.objective.mapping
    n = mapping.num_classes
    mapping.accumulate(torch.randn(n, 32), torch.eye(n, dtype=torch.bool))
    assert mapping.update()
    return hook


def _batch(class_sets, record=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = []
    for classes in class_sets:
        pick = torch.randint(len(classes), (32, 32), generator=g)
        labels.append(torch.tensor(classes)[pick])
    data = seg_batch([torch.rand(3, 32, 32, generator=g) * 255
                      for _ in labels], labels)
    if record:
        for sample in data['data_samples']:
            RecordLabelValues()(dict(data_samples=sample))
    return data


def _loss_forward(model, data):
    model.train()
    return model(**model.data_preprocessor(data, True), mode='loss')


def test_each_forward_uses_its_own_batch_classes():
    model = tiny_segmentor(num_classes=8)
    hook = ready_hook(model)  # attached: no Runner, direct forwards
    counts = hook.objective.mapping.feat_count
    counts.zero_()
    _loss_forward(model, _batch([[1, 2], [1, 2]]))
    assert counts.nonzero().flatten().tolist() == [1, 2]
    _loss_forward(model, _batch([[5, 6], [6, 5]]))
    assert counts.tolist() == [0, 2, 2, 0, 0, 2, 2, 0]
    _loss_forward(model, _batch([[3], [7]], record=False))  # scanned
    assert counts.tolist() == [0, 2, 2, 1, 0, 2, 2, 1]


def test_recorded_values_and_the_scan_give_the_same_step():
    out = []
    for record in (True, False):
        torch.manual_seed(0)
        model = tiny_segmentor(num_classes=8)
        hook = ready_hook(model)
        losses = _loss_forward(model, _batch([[0, 3, 255], [4, 7], [1]],
                                             record=record))
        out.append((losses, hook.objective.state_dict()))
    for key in ('loss_davpt_token', 'loss_davpt_cls', 'decode.loss_ce'):
        assert torch.equal(out[0][0][key], out[1][0][key]), key
    for key, value in out[0][1].items():
        assert torch.equal(value, out[1][1][key]), key


def test_the_label_scan_is_logged_once():
    model = tiny_segmentor(num_classes=8)
    ready_hook(model)
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = MMLogger.get_current_instance()
    logger.addHandler(handler)
    try:
        _loss_forward(model, _batch([[1, 2]]))  # recorded: no message
        for _ in range(3):
            _loss_forward(model, _batch([[1, 2]], record=False))
    finally:
        logger.removeHandler(handler)
    scans = [r for r in records if 'RecordLabelValues' in r.getMessage()]
    assert len(scans) == 1 and scans[0].levelno == logging.WARNING


def test_the_hook_adds_no_host_sync_to_a_training_forward():
    model = tiny_segmentor(num_classes=8)
    hook = ready_hook(model)
    data = model.data_preprocessor(_batch([[0, 3], [4, 7, 255]]), True)
    model.train()
    model(**data, mode='loss')  # warm-up

    def syncs():
        with SyncOps() as mode:
            losses = model(**data, mode='loss')
        return mode.ops, losses

    with_hook, losses = syncs()
    assert 'loss_davpt_token' in losses
    hook.detach()
    without_hook, losses = syncs()
    assert 'loss_davpt_token' not in losses
    assert sorted(with_hook) == sorted(without_hook)  # the heads' own


def test_the_sync_probe_sees_syncs():
    x = torch.arange(4)
    with SyncOps() as mode:
        bool(x.sum() > 0)
        x[x > 1]
        x.unique()
    assert mode.ops == ['_local_scalar_dense', 'index', '_unique2']
