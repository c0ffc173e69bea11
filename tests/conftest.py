import os

# Oversubscribed BLAS/OpenMP threads make CPU inference ~20x slower on small machines.
os.environ.setdefault('OMP_NUM_THREADS', '1')
os.environ.setdefault('MKL_NUM_THREADS', '1')

import pytest  # noqa: E402
import torch  # noqa: E402

from helpers.toy_run import save_toy_vit  # noqa: E402

torch.set_num_threads(int(os.environ['OMP_NUM_THREADS']))


@pytest.fixture(scope='session')
def toy_vit_path(tmp_path_factory):
    """A "pretrained" mmseg-format toy ViT (seed 0, the toy config's
    backbone; random: nothing can be downloaded), shared by the session."""
    path = tmp_path_factory.mktemp('toy_vit') / 'toy_vit.pth'
    save_toy_vit(path)
    return path
