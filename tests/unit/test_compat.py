"""``import davpt_seg`` changes nothing in mmengine; ``davpt_seg.compat``'s
``install()`` (and importing ``davpt_seg.compat.enable``, as configs do)
installs the checkpoint loader, the frozen-parameter log filter and the SDPA
FLOP handle, idempotently. Each case runs in a fresh interpreter."""
import json
import logging
import subprocess
import sys

import pytest

from davpt_seg.compat import FrozenParamLogFilter
from helpers import ROOT
from helpers.processes import subprocess_env

PROBE = r'''
import json, logging, sys
import torch
import torch.nn.functional as F
from mmengine.analysis import FlopAnalyzer
from mmengine.logging import MMLogger, print_log
from mmengine.optim.optimizer import default_constructor
from mmengine.runner import CheckpointLoader
import mmengine.logging

FROZEN = ' is skipped since its requires_grad=False'
MMLogger.get_instance('before')  # current when installing
import davpt_seg
for _ in range(int(sys.argv[1])):
    import davpt_seg.compat
    davpt_seg.compat.install()
if sys.argv[2] == 'enable':
    import davpt_seg.compat.enable
print_log('backbone.a' + FROZEN, logger='current', level=logging.WARNING)
print_log('PROBE kept before', logger='current', level=logging.WARNING)
MMLogger.get_instance('runner')  # as Runner.build_logger, later
print_log('backbone.b' + FROZEN, logger='current', level=logging.WARNING)
print_log('PROBE kept runner', logger='current', level=logging.WARNING)


class Attention(torch.nn.Module):
    def forward(self, q, k, v):
        return F.scaled_dot_product_attention(q, k, v)


x = torch.zeros(1, 2, 4, 8)
flops = FlopAnalyzer(Attention(), (x, x, x))
flops.unsupported_ops_warnings(False)
flops.uncalled_modules_warnings(False)
print(json.dumps(dict(
    loader=CheckpointLoader._get_checkpoint_loader('a.pth').__name__,
    http_loader=CheckpointLoader._get_checkpoint_loader('http://a').__name__,
    print_log=default_constructor.print_log is mmengine.logging.print_log,
    sdpa_flops=flops.total())))
'''


def probe(installs: int, enable: bool = False):
    """Run :data:`PROBE` in a fresh interpreter; returns its JSON line and
    the log output."""
    out = subprocess.run(
        [sys.executable, '-c', PROBE, str(installs),
         'enable' if enable else 'no'],
        cwd=ROOT, env=subprocess_env(), capture_output=True, text=True,
        timeout=300)
    assert out.returncode == 0, out.stderr
    *log, last = out.stdout.strip().splitlines()
    return json.loads(last), '\n'.join(log)


def test_import_patches_nothing():
    state, log = probe(installs=0)
    assert state == dict(loader='load_from_local',
                         http_loader='load_from_http', print_log=True,
                         sdpa_flops=0)
    assert 'backbone.a is skipped' in log and 'backbone.b is skipped' in log


@pytest.mark.parametrize('installs, enable', [(1, False), (2, False),
                                              (0, True), (1, True)])
def test_install_and_enable_install_everything_once(installs, enable):
    state, log = probe(installs, enable)
    # SDPA of [1, 2, 4, 8] q/k/v: Q K^T and attn V, 2 x 4 x 4 x 8 each.
    assert state == dict(loader='load_from_local_safe',
                         http_loader='load_from_http', print_log=True,
                         sdpa_flops=2 * (2 * 4 * 4 * 8))
    assert 'is skipped since' not in log
    assert 'PROBE kept before' in log and 'PROBE kept runner' in log


@pytest.mark.parametrize('msg, kept', [
    ('backbone.layers.0.ln1.weight is skipped since its requires_grad=False',
     False),
    ('backbone.x is skipped since its requires_grad=True', True),
    ('decode_head is duplicate. It is skipped since bypass_duplicate=True',
     True),
    ('Loads checkpoint by local_safe backend from path: a.pth', True)])
def test_frozen_param_filter_drops_only_that_message(msg, kept):
    record = logging.LogRecord('mmengine', logging.WARNING, __file__, 1, msg,
                               None, None)
    assert FrozenParamLogFilter().filter(record) is kept
