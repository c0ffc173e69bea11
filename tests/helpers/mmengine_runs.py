"""A real mmengine training checkpoint for the checkpoint-loading tests:
a tiny iteration-based ``Runner`` (Linear model, toy dataset,
``CheckpointHook``), the isolation of mmengine's process-wide state around
each test, and a recursive equality check.

Import the fixtures (``mmengine_ckpt``, ``isolate``) into a test module to
use them there.
"""
import os.path as osp
import uuid
from collections import OrderedDict
from collections.abc import Mapping
from contextlib import contextmanager

import numpy as np
import pytest
import torch
import torch.nn as nn
from mmengine.logging import MessageHub, MMLogger
from mmengine.model import BaseModel
from mmengine.registry import DefaultScope
from mmengine.runner import CheckpointLoader, Runner
from mmengine.visualization import Visualizer
from torch.utils.data import Dataset

from davpt_seg.weights import TRUST_ENV_VAR

#: The iteration of the checkpoint :func:`mmengine_ckpt` writes.
SAVED_ITERS = 4


class ToyModel(BaseModel):
    """``y = Wx + b`` trained with an MSE loss."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(2, 1)

    def forward(self, inputs, labels=None, mode='tensor'):
        outputs = self.linear(inputs)
        if mode == 'loss':
            return dict(loss=((outputs - labels)**2).mean())
        return outputs


class ToyDataset(Dataset):
    """Eight ``(inputs, labels)`` pairs with mmseg-like metainfo."""

    metainfo = dict(
        classes=('background', 'object'), palette=[[0, 0, 0], [255, 0, 0]])

    def __len__(self):
        return 8

    def __getitem__(self, index):
        return dict(inputs=torch.full((2, ), float(index)),
                    labels=torch.ones(1))


def make_runner(work_dir, max_iters, **kwargs):
    """A tiny iteration-based runner; every runner gets its own name so
    that runners in one process do not share a MessageHub."""
    return Runner(
        model=ToyModel(),
        work_dir=str(work_dir),
        experiment_name=f'ckpt_test_{uuid.uuid4().hex}',
        train_dataloader=dict(
            dataset=ToyDataset(),
            sampler=dict(type='DefaultSampler', shuffle=True),
            collate_fn=dict(type='default_collate'),
            batch_size=2,
            num_workers=0),
        optim_wrapper=dict(
            optimizer=dict(type='SGD', lr=0.01, momentum=0.9)),
        param_scheduler=[
            dict(type='LinearLR', start_factor=0.1, by_epoch=False,
                 begin=0, end=2),
            dict(type='PolyLR', by_epoch=False, begin=2, end=8),
        ],
        train_cfg=dict(by_epoch=False, max_iters=max_iters),
        default_hooks=dict(
            checkpoint=dict(type='CheckpointHook', by_epoch=False,
                            interval=2),
            logger=dict(type='LoggerHook', interval=1)),
        randomness=dict(seed=0),
        default_scope='mmengine',
        **kwargs)


@contextmanager
def isolated_mmengine_globals():
    """Forget the default scope, message hub, logger and visualizer that a
    Runner makes "current", so that later tests (e.g. ``MODELS.build`` in
    the mmseg scope) do not see this file's ``default_scope='mmengine'``.

    mmengine has no public way to forget its ``ManagerMixin`` instances, so
    this saves and restores their ``_instance_dict``."""
    managers = (DefaultScope, MessageHub, MMLogger, Visualizer)
    saved = {cls: OrderedDict(cls._instance_dict) for cls in managers}
    try:
        yield
    finally:
        for cls, instances in saved.items():
            cls._instance_dict.clear()
            cls._instance_dict.update(instances)


@pytest.fixture(scope='module')
def mmengine_ckpt(tmp_path_factory):
    """Path of a checkpoint written by mmengine's ``CheckpointHook`` after
    ``SAVED_ITERS`` iterations (once per test module)."""
    work_dir = tmp_path_factory.mktemp('train')
    with isolated_mmengine_globals():
        make_runner(work_dir, max_iters=SAVED_ITERS).train()
    path = osp.join(work_dir, f'iter_{SAVED_ITERS}.pth')
    assert osp.isfile(path)
    return path


@pytest.fixture(autouse=True)
def isolate(monkeypatch):
    """Undo ``install_checkpoint_loader``, the trust opt-in and the mmengine
    globals of any Runner built in the test (mmengine has no public API to
    unregister a checkpoint scheme: ``_schemes`` is restored)."""
    monkeypatch.setattr(CheckpointLoader, '_schemes',
                        OrderedDict(CheckpointLoader._schemes))
    monkeypatch.delenv(TRUST_ENV_VAR, raising=False)
    with isolated_mmengine_globals():
        yield


def assert_same(actual, expected, where='checkpoint'):
    """Recursive equality for tensors, arrays, containers and objects."""
    assert type(actual) is type(expected), where
    if isinstance(expected, torch.Tensor):
        assert torch.equal(actual, expected), where
    elif isinstance(expected, np.ndarray):
        assert actual.dtype == expected.dtype, where
        np.testing.assert_array_equal(actual, expected, err_msg=where)
    elif isinstance(expected, Mapping):
        # Key order is not significant (safetensors sorts keys).
        assert set(actual) == set(expected), where
        for key in expected:
            assert_same(actual[key], expected[key], f'{where}[{key!r}]')
    elif isinstance(expected, (list, tuple)):
        assert len(actual) == len(expected), where
        for i, (a, e) in enumerate(zip(actual, expected)):
            assert_same(a, e, f'{where}[{i}]')
    elif hasattr(expected, '__dict__') and not isinstance(expected, type):
        assert_same(vars(actual), vars(expected), f'{where}.__dict__')
    else:
        assert actual == expected, where
