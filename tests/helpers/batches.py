"""Segmentation batches as a dataloader yields them (before the data
preprocessor), for model-level unit tests."""
import torch
from mmengine.structures import PixelData
from mmseg.structures import SegDataSample


def seg_sample(label: torch.Tensor, **metainfo) -> SegDataSample:
    """A data sample with ground truth ``label`` [H, W] (class ids, 255 =
    ignore); ``img_shape``, ``ori_shape`` and ``pad_shape`` are (H, W),
    ``metainfo`` adds to them."""
    shape = tuple(label.shape)
    return SegDataSample(
        gt_sem_seg=PixelData(data=label[None].long()),
        metainfo=dict(img_shape=shape, ori_shape=shape, pad_shape=shape,
                      **metainfo))


def seg_batch(inputs, labels) -> dict:
    """``dict(inputs, data_samples)`` from images ``inputs`` ([3, H, W]
    each) and their ``labels`` ([H, W] each, see :func:`seg_sample`)."""
    return dict(inputs=list(inputs),
                data_samples=[seg_sample(label) for label in labels])
