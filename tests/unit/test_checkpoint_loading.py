"""Checkpoint loading under torch >= 2.6 (``weights_only=True`` default).

A real mmengine training checkpoint is written once per module by a tiny
``Runner`` (Linear model, toy dataset, ``IterBasedTrainLoop``,
``CheckpointHook``). The tests check that plain ``torch.load`` refuses it,
that our loaders read it with a scoped allowlist, and that
``runner.load_checkpoint``, ``resume`` and ``init_cfg=Pretrained`` work once
the loader is installed.
"""
import copy
import os
import pickle

import numpy as np
import pytest
import torch
import torch.nn as nn
from mmengine.hooks import Hook
from mmengine.logging import HistoryBuffer
from mmengine.model import BaseModule
from mmengine.runner import CheckpointLoader
from mmengine.runner.checkpoint import load_from_local, load_from_openmmlab
from safetensors.torch import save_file

from davpt_seg.compat import install_checkpoint_loader
from davpt_seg.weights import (TRUST_ENV_VAR, CheckpointError,
                               CheckpointNotFoundError, UnsafeCheckpointError,
                               load_from_local_safe, load_training_checkpoint,
                               load_weights)
from helpers.mmengine_runs import (SAVED_ITERS, assert_same,  # noqa: F401
                                   isolate, make_runner, mmengine_ckpt)

LOADERS = [load_weights, load_training_checkpoint]


class Opaque:
    """A custom class that only full unpickling can rebuild."""

    def __init__(self, value):
        self.value = value


class RecordStateHook(Hook):
    """Records what a resumed run starts from and which iterations it runs."""

    def __init__(self):
        self.iters = []
        self.state_dict = None
        self.optimizer = None

    def before_train(self, runner):
        # Deep copies: training goes on to update these objects in place.
        self.state_dict = copy.deepcopy(dict(runner.model.state_dict()))
        self.optimizer = copy.deepcopy(runner.optim_wrapper.state_dict())
        self.loss_history = runner.message_hub.get_scalar(
            'train/loss').data[0].copy()
        self.schedulers = copy.deepcopy(
            [s.state_dict() for s in runner.param_schedulers])

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        self.iters.append(runner.iter)


@pytest.fixture
def trusted_ckpt(mmengine_ckpt):
    """The checkpoint read with full unpickling (we wrote it: trusted)."""
    return torch.load(mmengine_ckpt, map_location='cpu', weights_only=False)


# -- the problem ------------------------------------------------------------


def test_plain_torch_load_refuses_mmengine_checkpoint(mmengine_ckpt):
    """Documents the bug: torch >= 2.6 defaults to ``weights_only=True``."""
    with pytest.raises(pickle.UnpicklingError, match='Weights only load'):
        torch.load(mmengine_ckpt)
    # ... which is what mmengine's own local loader does.
    with pytest.raises(pickle.UnpicklingError, match='Weights only load'):
        load_from_local(mmengine_ckpt, map_location='cpu')


# -- load_training_checkpoint -----------------------------------------------


def test_training_checkpoint_equals_full_unpickling(mmengine_ckpt,
                                                    trusted_ckpt):
    safe_globals_before = set(torch.serialization.get_safe_globals())
    ckpt = load_training_checkpoint(mmengine_ckpt)

    assert set(ckpt) == {
        'meta', 'state_dict', 'message_hub', 'optimizer', 'param_schedulers'
    }
    assert isinstance(ckpt['message_hub']['log_scalars']['train/loss'],
                      HistoryBuffer)
    assert ckpt['meta']['iter'] == SAVED_ITERS
    assert_same(ckpt, trusted_ckpt)
    # HistoryBuffer's statistics methods came back through the restricted
    # getattr and still work.
    assert ckpt['message_hub']['log_scalars']['train/loss'].statistics(
        'mean') == pytest.approx(
            trusted_ckpt['message_hub']['log_scalars']['train/loss'].mean())

    # The allowlist was scoped to the call: nothing leaked into torch.
    assert set(torch.serialization.get_safe_globals()) == safe_globals_before
    with pytest.raises(pickle.UnpicklingError, match='Weights only load'):
        torch.load(mmengine_ckpt)


def test_user_allowlist_survives_scoped_allowlist(mmengine_ckpt):
    """Leaving our scope must not remove what the user allowlisted."""
    entry = (HistoryBuffer, 'mmengine.logging.history_buffer.HistoryBuffer')
    before = torch.serialization.get_safe_globals()
    torch.serialization.add_safe_globals([entry])
    try:
        load_training_checkpoint(mmengine_ckpt)
        assert entry in torch.serialization.get_safe_globals()
    finally:
        torch.serialization.clear_safe_globals()
        torch.serialization.add_safe_globals(before)


def test_getattr_is_restricted_to_history_buffer_statistics(tmp_path):
    """``builtins.getattr`` only resolves ``HistoryBuffer.min/max/...``."""
    path = str(tmp_path / 'getattr.pth')
    torch.save({'method': HistoryBuffer.update}, path)
    with pytest.raises(UnsafeCheckpointError,
                       match=r'HistoryBuffer\.update') as info:
        load_training_checkpoint(path)
    assert 'HistoryBuffer.update' in str(info.value)
    assert path in str(info.value)

    torch.save({'method': HistoryBuffer.mean}, path)
    assert load_training_checkpoint(path)['method'] is HistoryBuffer.mean


def test_training_loader_refuses_code(tmp_path):
    path = str(tmp_path / 'system.pth')
    torch.save({'state_dict': {}, 'hook': os.system}, path)
    with pytest.raises(UnsafeCheckpointError, match=r'\.system') as info:
        load_training_checkpoint(path)
    assert f'{os.system.__module__}.system' in info.value.unsafe_globals
    assert path in str(info.value)


# -- mmengine integration ---------------------------------------------------


def test_runner_load_checkpoint(mmengine_ckpt, trusted_ckpt, tmp_path):
    install_checkpoint_loader()
    runner = make_runner(tmp_path, max_iters=SAVED_ITERS)
    ckpt = runner.load_checkpoint(mmengine_ckpt)

    assert_same(ckpt['state_dict'], trusted_ckpt['state_dict'])
    assert_same(
        dict(runner.model.state_dict()), dict(trusted_ckpt['state_dict']))


def test_resume_training(mmengine_ckpt, trusted_ckpt, tmp_path):
    install_checkpoint_loader()
    recorder = RecordStateHook()
    runner = make_runner(
        tmp_path,
        max_iters=SAVED_ITERS + 2,
        resume=True,
        load_from=mmengine_ckpt,
        custom_hooks=[recorder])
    runner.train()

    # Training continued from iteration 4 with the saved state.
    assert recorder.iters == [SAVED_ITERS, SAVED_ITERS + 1]
    assert runner.iter == SAVED_ITERS + 2
    assert_same(recorder.state_dict, dict(trusted_ckpt['state_dict']))
    assert_same(recorder.optimizer, trusted_ckpt['optimizer'])
    assert_same(recorder.schedulers, trusted_ckpt['param_schedulers'])
    np.testing.assert_array_equal(
        recorder.loss_history,
        trusted_ckpt['message_hub']['log_scalars']['train/loss'].data[0])
    # ... and the resumed run wrote a loadable checkpoint itself.
    resumed = load_training_checkpoint(
        tmp_path / f'iter_{SAVED_ITERS + 2}.pth')
    assert resumed['meta']['iter'] == SAVED_ITERS + 2


def test_pretrained_init_cfg(mmengine_ckpt, trusted_ckpt):
    install_checkpoint_loader()

    class Net(BaseModule):

        def __init__(self, init_cfg=None):
            super().__init__(init_cfg=init_cfg)
            self.linear = nn.Linear(2, 1)

    net = Net(init_cfg=dict(type='Pretrained', checkpoint=mmengine_ckpt))
    net.init_weights()
    assert_same(dict(net.state_dict()), dict(trusted_ckpt['state_dict']))


def test_install_is_idempotent_and_keeps_other_schemes():
    # Start from mmengine's own local loader (an earlier test may have
    # installed ours already).
    CheckpointLoader.register_scheme(
        prefixes='', loader=load_from_local, force=True)
    before = dict(CheckpointLoader._schemes)
    install_checkpoint_loader()
    install_checkpoint_loader()
    after = dict(CheckpointLoader._schemes)

    assert set(after) == set(before)
    assert after[''] is load_from_local_safe
    others = {k: v for k, v in after.items() if k != ''}
    assert others == {k: v for k, v in before.items() if k != ''}
    assert all(v.__module__ == 'mmengine.runner.checkpoint'
               for v in others.values())
    for prefix in ('http://', 'https://', 'torchvision://', 'modelzoo://',
                   'open-mmlab://', 'openmmlab://', 'mmcls://', 'pavi://'):
        assert prefix in others
    assert CheckpointLoader._get_checkpoint_loader(
        'open-mmlab://resnet50_v1c') is load_from_openmmlab
    assert CheckpointLoader._get_checkpoint_loader(
        'work_dirs/iter_4.pth') is load_from_local_safe


# -- load_weights -----------------------------------------------------------


def test_load_weights_pth_and_safetensors(tmp_path):
    weights = {
        'linear.weight': torch.randn(3, 2),
        'linear.bias': torch.zeros(3)
    }
    pth = str(tmp_path / 'weights.pth')
    torch.save({'state_dict': weights, 'meta': {'epoch': 3}}, pth)
    st = str(tmp_path / 'weights.safetensors')
    save_file(weights, st)

    assert_same(load_weights(pth)['state_dict'], weights)
    assert_same(load_weights(st), weights)
    # The mmengine loader reads tensor-only files just as well.
    assert_same(load_training_checkpoint(pth)['state_dict'], weights)
    assert_same(load_training_checkpoint(st), weights)


def test_load_weights_refuses_training_checkpoint(mmengine_ckpt):
    with pytest.raises(UnsafeCheckpointError,
                       match='load_training_checkpoint') as info:
        load_weights(mmengine_ckpt)
    message = str(info.value)
    assert mmengine_ckpt in message
    assert 'mmengine.logging.history_buffer.HistoryBuffer' in message
    assert 'load_training_checkpoint' in message


@pytest.mark.parametrize('loader', LOADERS)
def test_custom_class_refused_unless_trusted(loader, tmp_path, monkeypatch):
    path = str(tmp_path / 'custom.pth')
    torch.save({'state_dict': {'w': torch.ones(1)}, 'extra': Opaque(3)}, path)

    with pytest.raises(UnsafeCheckpointError, match='Opaque') as info:
        loader(path)
    message = str(info.value)
    qualified = f'{Opaque.__module__}.{Opaque.__qualname__}'
    assert path in message
    assert qualified in message
    assert info.value.unsafe_globals == [qualified]
    assert f'{TRUST_ENV_VAR}=1' in message

    monkeypatch.setenv(TRUST_ENV_VAR, '1')
    ckpt = loader(path)
    assert isinstance(ckpt['extra'], Opaque) and ckpt['extra'].value == 3


# -- clear errors -----------------------------------------------------------


@pytest.mark.parametrize('loader', LOADERS)
def test_missing_file(loader, tmp_path):
    path = str(tmp_path / 'missing.pth')
    with pytest.raises(CheckpointNotFoundError, match='missing.pth') as info:
        loader(path)
    assert isinstance(info.value, (CheckpointError, FileNotFoundError))
    assert path in str(info.value)


@pytest.mark.parametrize('loader', LOADERS)
@pytest.mark.parametrize('fmt', ['zip', 'legacy', 'safetensors'])
def test_truncated_file(loader, fmt, tmp_path):
    weights = {'w': torch.randn(64, 64)}
    if fmt == 'safetensors':
        path = str(tmp_path / 'weights.safetensors')
        save_file(weights, path)
    else:
        path = str(tmp_path / 'weights.pth')
        torch.save(
            weights, path, _use_new_zipfile_serialization=(fmt == 'zip'))
    with open(path, 'rb') as f:
        data = f.read()
    with open(path, 'wb') as f:
        f.write(data[:len(data) // 2])

    with pytest.raises(CheckpointError, match='corrupt or truncated') as info:
        loader(path)
    assert not isinstance(info.value, UnsafeCheckpointError)
    assert path in str(info.value)


@pytest.mark.parametrize('loader', LOADERS)
def test_unsupported_extension(loader, tmp_path):
    path = str(tmp_path / 'weights.npy')
    np.save(path, np.zeros(3))
    with pytest.raises(CheckpointError, match='unsupported extension') as info:
        loader(path)
    assert path in str(info.value)


def test_errors_through_mmengine(tmp_path):
    """mmengine callers get the same errors (and a FileNotFoundError)."""
    install_checkpoint_loader()
    runner = make_runner(tmp_path, max_iters=1)
    with pytest.raises(FileNotFoundError, match='missing.pth'):
        runner.load_checkpoint(str(tmp_path / 'missing.pth'))
    path = str(tmp_path / 'custom.pth')
    torch.save({'state_dict': {}, 'extra': Opaque(1)}, path)
    with pytest.raises(UnsafeCheckpointError, match='Opaque'):
        runner.load_checkpoint(path)
