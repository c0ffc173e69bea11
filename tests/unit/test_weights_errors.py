"""The one error family of :mod:`davpt_seg.weights`."""
import pytest
import torch
from mmseg.models.backbones import VisionTransformer

from davpt_seg.models.backbones import PromptedVisionTransformer
from davpt_seg.weights import (CheckpointError, CheckpointNotFoundError,
                               ConversionError, FingerprintMismatchError,
                               PretrainedMismatchError, PromptOnlyRestoreError,
                               PromptOnlyWriteError, PromptStateMismatchError,
                               UnsafeCheckpointError, WeightsError,
                               load_weights)

TINY = dict(img_size=(32, 32), patch_size=16, embed_dims=32, num_layers=2,
            num_heads=2, mlp_ratio=2)


@pytest.mark.parametrize('error, also', [
    (CheckpointError, RuntimeError),
    (CheckpointNotFoundError, FileNotFoundError),
    (UnsafeCheckpointError, CheckpointError),
    (ConversionError, ValueError),
    (PretrainedMismatchError, RuntimeError),
    (PromptStateMismatchError, RuntimeError),
    (PromptOnlyRestoreError, RuntimeError),
    (FingerprintMismatchError, RuntimeError),
    (PromptOnlyWriteError, ValueError),
])
def test_every_error_is_a_weights_error(error, also):
    assert issubclass(error, WeightsError) and issubclass(error, also)
    assert issubclass(WeightsError, RuntimeError)


def test_missing_file_and_mismatch_raise_their_class(tmp_path):
    with pytest.raises(CheckpointNotFoundError, match='does not exist'):
        load_weights(tmp_path / 'missing.pth')
    path = tmp_path / 'deeper.pth'
    torch.save(VisionTransformer(**{**TINY, 'num_layers': 3}).state_dict(),
               path)
    backbone = PromptedVisionTransformer(
        **TINY, num_prompts=1, guided_layers=(),
        init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    with pytest.raises(PretrainedMismatchError, match='unexpected keys'):
        backbone.init_weights()
    assert backbone.pretrained_source is None
    state = backbone.state_dict()
    state['prompt_tokens'] = torch.zeros(2, 5, 32)
    with pytest.raises(PromptStateMismatchError, match='prompt_tokens'):
        backbone.load_state_dict(state)
