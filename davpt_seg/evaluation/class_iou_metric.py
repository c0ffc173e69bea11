# Copyright (c) davpt-seg contributors. Apache-2.0.
"""mmseg's IoUMetric that also returns the per-class IoU."""
import math
from typing import Dict, List

import torch
from mmseg.evaluation import IoUMetric
from mmseg.registry import METRICS


@METRICS.register_module()
class ClassIoUMetric(IoUMetric):
    """:class:`mmseg.evaluation.IoUMetric` whose result also holds
    ``IoU.<class name>`` (percent, 2 decimals) for every class with any
    ground-truth or predicted pixel; classes with neither (IoU 0/0, left out
    of mmseg's mIoU) get no entry. ``aAcc``/``mIoU``/``mAcc`` are mmseg's,
    unchanged; the per-class table is still logged by mmseg."""

    def compute_metrics(self, results: List[tuple]) -> Dict[str, float]:
        metrics = super().compute_metrics(results)
        areas = tuple(zip(*results))
        per_class = self.total_area_to_metrics(
            sum(areas[0]), sum(areas[1]), sum(areas[2]), sum(areas[3]),
            ['mIoU'], None, self.beta)['IoU']
        names = self.dataset_meta['classes']
        for name, iou in zip(names, torch.as_tensor(per_class).tolist()):
            if not math.isnan(iou):
                metrics[f'IoU.{name}'] = round(iou * 100, 2)
        return metrics
