# Copyright (c) davpt-seg contributors. Apache-2.0.
"""Record which label values a training sample's final ground truth holds.

DA-VPT needs, every iteration, the classes present in each cropped and
augmented label map. Scanning the label maps on the main process costs
milliseconds per image, which a GPU step cannot hide
(``docs/benchmark_cpu.md``, "The hook's main-process cost"). This transform
does the scan where the crop is made, in the data loader's worker
processes, and ``DAVPTHook`` reads the result from the sample's metainfo.
"""
from typing import Tuple

import numpy as np
import torch
from mmcv.transforms import BaseTransform
from mmseg.registry import TRANSFORMS

#: Metainfo key of the recorded values (a sorted tuple of ints).
LABEL_VALUES_KEY = 'label_values'


def distinct_label_values(labels) -> Tuple[int, ...]:
    """Sorted distinct values of an integer label map.

    Args:
        labels (np.ndarray | Tensor): integer label map of any shape.

    Returns:
        tuple[int]: the distinct values, ascending (the ignore index
        included when present).
    """
    flat = torch.as_tensor(np.asarray(labels) if not isinstance(
        labels, torch.Tensor) else labels).reshape(-1)
    if flat.numel() == 0:
        return ()
    if flat.is_floating_point() or flat.dtype == torch.bool:
        raise TypeError(f'label maps must be integer, got {flat.dtype}')
    lo, hi = torch.aminmax(flat)
    if lo >= 0 and hi < 65536:  # the usual uint8 / small-int labels
        values = torch.bincount(flat.long()).nonzero().flatten()
    else:
        values = torch.unique(flat)
    return tuple(int(v) for v in values.tolist())


@TRANSFORMS.register_module()
class RecordLabelValues(BaseTransform):
    """Store the distinct values of the packed ground truth in the sample's
    metainfo (``data_sample.metainfo['label_values']``, a sorted tuple of
    ints, the ignore index included when present).

    Place it right after ``PackSegInputs``, the last transform of the
    training pipeline, so that it sees the label map after every crop and
    flip::

        train_pipeline = [..., dict(type='PackSegInputs'),
                          dict(type='RecordLabelValues')]

    ``DAVPTHook`` then reads the classes of each image from the metainfo
    (checking them against ``num_classes`` and the ignore index) instead of
    scanning every label pixel on the main process. Padding added later by
    the data preprocessor uses the ignore index, which the hook leaves out,
    so the classes are the same.

    Required keys: ``data_samples`` (a ``SegDataSample`` with
    ``gt_sem_seg``, as ``PackSegInputs`` makes it).
    Modified keys: ``data_samples`` (metainfo ``label_values`` added).
    """

    def transform(self, results: dict) -> dict:
        sample = results.get('data_samples')
        if sample is None or 'gt_seg_map' in results:
            raise ValueError(
                'RecordLabelValues must come right after PackSegInputs '
                '(it reads data_samples.gt_sem_seg of the packed sample)')
        if 'gt_sem_seg' not in sample:
            return results  # inference: no annotation
        sample.set_metainfo(
            {LABEL_VALUES_KEY: distinct_label_values(sample.gt_sem_seg.data)})
        return results
