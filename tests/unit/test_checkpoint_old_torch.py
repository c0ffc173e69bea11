"""Checkpoint loading on torch 2.1-2.5, simulated on the installed torch.

torch 2.1-2.4 lack ``torch.serialization.safe_globals`` (2.5) and torch 2.5
fails on ``(object, 'module.name')`` entries (2.6). The tests take those
APIs away (or make them fail as 2.5 does) and check that tensor files still
load with ``weights_only=True``, that mmengine training checkpoints load as
mmengine loads them there (full unpickling, with a warning), and that the
tensor-only loader still refuses code.
"""
import os

import pytest
import torch
import torch.serialization as serialization
from mmengine.runner import CheckpointLoader

import davpt_seg.weights.io as weights_io
from davpt_seg.compat import install_checkpoint_loader
from davpt_seg.weights import (UnsafeCheckpointError, load_from_local_safe,
                               load_training_checkpoint, load_weights)
from davpt_seg.weights.allowlist import scoped_allowlist_supported
from helpers.mmengine_runs import (SAVED_ITERS, assert_same,  # noqa: F401
                                   isolate, make_runner, mmengine_ckpt)

#: Allowlist APIs and the torch version that added them.
ALLOWLIST_APIS = ('add_safe_globals', 'get_safe_globals', 'clear_safe_globals',
                  'safe_globals', 'get_unsafe_globals_in_checkpoint')


class Torch25SafeGlobals:
    """``safe_globals`` as in torch 2.5: tuple entries fail when used."""

    def __init__(self, entries):
        self.entries = entries

    def __enter__(self):
        for entry in self.entries:
            entry.__module__  # AttributeError for a tuple, as in 2.5
        return self

    def __exit__(self, *exc):
        return False


@pytest.fixture(params=['torch2.1', 'torch2.5'])
def old_torch(request, monkeypatch):
    """Simulate an old torch; yields the list of ``weights_only`` values
    that :func:`torch.load` was called with."""
    if request.param == 'torch2.1':
        for name in ALLOWLIST_APIS:
            monkeypatch.delattr(serialization, name, raising=False)
    else:
        monkeypatch.setattr(serialization, 'safe_globals', Torch25SafeGlobals)
        monkeypatch.delattr(serialization, 'get_unsafe_globals_in_checkpoint')
    scoped_allowlist_supported.cache_clear()
    calls = []
    real_load = torch.load

    def recording_load(*args, **kwargs):
        calls.append(kwargs.get('weights_only'))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, 'load', recording_load)
    yield calls
    scoped_allowlist_supported.cache_clear()


@pytest.fixture
def logged(monkeypatch):
    """Messages passed to the weight-file loaders' ``print_log``."""
    messages = []
    monkeypatch.setattr(weights_io, 'print_log',
                        lambda msg, **kwargs: messages.append(msg))
    return messages


def test_installed_torch_uses_the_scoped_allowlist(mmengine_ckpt, monkeypatch,
                                                   logged):
    assert scoped_allowlist_supported()  # (probes torch.load once)
    calls = []
    real_load = torch.load
    monkeypatch.setattr(
        torch, 'load', lambda *a, **k: calls.append(k['weights_only']) or
        real_load(*a, **k))
    load_training_checkpoint(mmengine_ckpt)
    assert calls == [True]
    assert not logged


def test_training_checkpoint_on_old_torch(old_torch, mmengine_ckpt, logged):
    assert not scoped_allowlist_supported()
    ckpt = load_training_checkpoint(mmengine_ckpt)
    expected = torch.load(mmengine_ckpt, map_location='cpu',
                          weights_only=False)
    assert_same(ckpt, expected)
    # weights_only=True first; the fallback only for what needs it.
    assert old_torch[:2] == [True, False]
    assert len(logged) == 1
    assert mmengine_ckpt in logged[0]
    assert 'weights_only=False' in logged[0] and '2.6' in logged[0]


def test_tensor_files_keep_weights_only_on_old_torch(old_torch, tmp_path,
                                                     logged):
    path = str(tmp_path / 'weights.pth')
    torch.save({'w': torch.ones(2)}, path)
    assert torch.equal(load_weights(path)['w'], torch.ones(2))
    assert torch.equal(load_training_checkpoint(path)['w'], torch.ones(2))
    assert old_torch == [True, True]
    assert not logged


def test_weights_loader_still_refuses_code_on_old_torch(old_torch, tmp_path):
    path = str(tmp_path / 'system.pth')
    torch.save({'hook': os.system}, path)
    with pytest.raises(UnsafeCheckpointError, match=r'\.system') as info:
        load_weights(path)
    assert path in str(info.value)
    assert f'{os.system.__module__}.system' in info.value.unsafe_globals
    assert False not in old_torch


def test_runner_load_checkpoint_on_old_torch(old_torch, mmengine_ckpt,
                                             tmp_path, logged):
    install_checkpoint_loader()
    assert CheckpointLoader._schemes[''] is load_from_local_safe
    runner = make_runner(tmp_path, max_iters=SAVED_ITERS)
    ckpt = runner.load_checkpoint(mmengine_ckpt)
    expected = torch.load(mmengine_ckpt, map_location='cpu',
                          weights_only=False)
    assert_same(dict(runner.model.state_dict()),
                dict(expected['state_dict']))
    assert ckpt['meta']['iter'] == SAVED_ITERS
