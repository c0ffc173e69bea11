# Copyright (c) davpt-seg contributors. Apache-2.0.
"""Per-image DA-VPT targets from (cropped, augmented) segmentation labels.

The paper draws, each iteration, one non-background class present in the
image as its metric-learning target (``docs/method.md`` §3, §5);
the authors' code instead takes the most frequent prompt among the image's
classes (``'mode'``). Both are here; images with no valid class get ``-1``
("no target") and are left out of the metric losses.
"""
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from davpt_seg.datasets.label_values import (LABEL_VALUES_KEY,
                                             distinct_label_values)
from davpt_seg.utils.device import to_device_async


def _raise_bad_labels(who: str, values: list, num_classes: int,
                      ignore_index: int) -> None:
    raise ValueError(
        f'{who}: label values {values} are outside 0..{num_classes - 1} '
        f'and are not the ignore index {ignore_index}. Check the '
        'dataset (reduce_zero_label, label_map) against num_classes.')


def present_class_mask(labels: torch.Tensor,
                       num_classes: int,
                       ignore_index: int = 255,
                       background_ids: Sequence[int] = (),
                       names: Optional[Sequence[str]] = None) -> torch.Tensor:
    """Which classes each label map contains: one batched count of the
    label values on their device (the value range and the check are read
    on the host: two syncs per call; training reads
    :func:`label_values_mask` instead where the pipeline records them).

    Args:
        labels (Tensor): [B, H, W] (or [B, 1, H, W]) integer label maps.
        num_classes (int): valid class ids are ``0..num_classes-1``.
        ignore_index (int): label of ignored pixels (padding included).
        background_ids (Sequence[int]): classes never used as targets or
            class statistics (e.g. ``(0, )`` for 60-class PASCAL Context).
        names (Sequence[str], optional): per-image names for error messages.

    Returns:
        Tensor: [B, num_classes] bool, ``True`` where the class is present
        and is neither ignored nor background.

    Raises:
        ValueError: a label is negative or ``>= num_classes`` and is not the
            ignore index (a dataset/``num_classes`` mismatch that would
            otherwise corrupt the mapping or crash the loss on GPU).
    """
    B = labels.shape[0]
    flat = labels.reshape(B, -1)
    if flat.is_floating_point() or flat.dtype == torch.bool:
        raise TypeError(f'label maps must be integer, got {flat.dtype}')
    if flat.numel() == 0:
        counts = flat.new_zeros(B, num_classes)
    else:
        lo, hi = (int(v) for v in torch.aminmax(flat))  # the host sync
        if lo >= 0 and hi < 65536:  # counts of every value in one pass
            bins = max(hi + 1, num_classes)
            offsets = torch.arange(B, device=flat.device)[:, None] * bins
            counts = torch.bincount((flat.long() + offsets).reshape(-1),
                                    minlength=B * bins).view(B, bins)
        else:  # negative or huge values: check them, then count
            counts = _class_counts(flat.long(), num_classes, ignore_index,
                                   names)
        _check_counts(counts, num_classes, ignore_index, names)
    present = counts[:, :num_classes] > 0
    if len(background_ids):
        present[:, list(background_ids)] = False
    return present


def _class_counts(flat: torch.Tensor, num_classes: int, ignore_index: int,
                  names: Optional[Sequence[str]]) -> torch.Tensor:
    """[B, num_classes] counts of the class ids of ``flat`` [B, N]; values
    that are neither a class id nor ``ignore_index`` raise."""
    keep = (flat >= 0) & (flat < num_classes)
    bad = (flat != ignore_index) & ~keep
    if bad.any():
        i = int(bad.any(1).nonzero()[0])
        who = names[i] if names is not None else f'image {i} of the batch'
        _raise_bad_labels(who, flat[i][bad[i]].unique().tolist()[:10],
                          num_classes, ignore_index)
    counts = torch.zeros(flat.shape[0], num_classes, dtype=torch.long,
                         device=flat.device)
    return counts.scatter_add_(1, torch.where(keep, flat, 0), keep.long())


def _check_counts(counts: torch.Tensor, num_classes: int,
                  ignore_index: int, names: Optional[Sequence[str]]) -> None:
    """Raise for values past the classes (columns ``>= num_classes`` of
    ``counts``, the ignore index's excluded) that occur."""
    extra = counts[:, num_classes:].clone()
    if 0 <= ignore_index - num_classes < extra.shape[1]:
        extra[:, ignore_index - num_classes] = 0
    if extra.numel() == 0 or not bool(extra.any()):
        return
    i = int(extra.any(1).nonzero()[0])
    who = names[i] if names is not None else f'image {i} of the batch'
    values = (extra[i].nonzero().flatten() + num_classes).tolist()[:10]
    _raise_bad_labels(who, values, num_classes, ignore_index)


def label_values_mask(values: Sequence[Sequence[int]],
                      num_classes: int,
                      ignore_index: int = 255,
                      background_ids: Sequence[int] = (),
                      names: Optional[Sequence[str]] = None) -> torch.Tensor:
    """:func:`present_class_mask` from each image's distinct label values
    (as :class:`~davpt_seg.datasets.RecordLabelValues` records them): the
    same mask and the same error, without touching a pixel.

    Args:
        values (Sequence[Sequence[int]]): per image, its distinct labels.
        num_classes, ignore_index, background_ids, names: as in
            :func:`present_class_mask`.

    Returns:
        Tensor: [B, num_classes] bool on the CPU.
    """
    rows, cols = [], []
    for i, image_values in enumerate(values):
        classes = [int(v) for v in image_values if v != ignore_index]
        bad = [v for v in classes if not 0 <= v < num_classes]
        if bad:
            who = names[i] if names is not None else \
                f'image {i} of the batch'
            _raise_bad_labels(who, sorted(bad)[:10], num_classes,
                              ignore_index)
        rows += [i] * len(classes)
        cols += classes
    present = torch.zeros(len(values), num_classes, dtype=torch.bool)
    present[rows, cols] = True
    if len(background_ids):
        present[:, list(background_ids)] = False
    return present


def stack_label_maps(data_samples: Sequence,
                     ignore_index: int = 255) -> torch.Tensor:
    """[B, H, W] ground truth of ``data_samples`` on their device, padded
    bottom/right with ``ignore_index`` where sizes differ."""
    maps = [s.gt_sem_seg.data.reshape(s.gt_sem_seg.data.shape[-2:])
            for s in data_samples]
    h = max(m.shape[0] for m in maps)
    w = max(m.shape[1] for m in maps)
    return torch.stack([
        m if m.shape == (h, w) else F.pad(
            m, (0, w - m.shape[1], 0, h - m.shape[0]), value=ignore_index)
        for m in maps])


def sample_names(data_samples: Sequence) -> list:
    """Each sample's annotation (or image) file, for error messages."""
    return [s.metainfo.get('seg_map_path', s.metainfo.get(
        'img_path', f'image {i}')) for i, s in enumerate(data_samples)]


def has_label_values(data_samples: Sequence) -> bool:
    """Whether every sample carries ``RecordLabelValues``' metainfo."""
    return len(data_samples) > 0 and all(
        LABEL_VALUES_KEY in s.metainfo for s in data_samples)


def present_classes(data_samples: Sequence,
                    num_classes: int,
                    ignore_index: int = 255,
                    background_ids: Sequence[int] = ()) -> torch.Tensor:
    """The classes present in each of a batch of ``SegDataSample``, with
    the label check of :func:`present_class_mask` (errors name the file).

    From the recorded ``label_values`` metainfo when every sample has it
    (:func:`label_values_mask`, no pixel work); otherwise by scanning the
    ground truth: on an accelerator one batched :func:`present_class_mask`
    over the stacked maps, on the CPU each map's distinct values (a map
    stays in the cache: several times faster there than one pass over the
    batch).

    Returns:
        Tensor: [B, num_classes] bool, on the CPU from metainfo, else on the
        labels' device.
    """
    if not len(data_samples):
        return torch.zeros(0, num_classes, dtype=torch.bool)
    names = sample_names(data_samples)
    if has_label_values(data_samples):
        values = [s.metainfo[LABEL_VALUES_KEY] for s in data_samples]
    elif data_samples[0].gt_sem_seg.data.device.type == 'cpu':
        values = [distinct_label_values(s.gt_sem_seg.data)
                  for s in data_samples]
    else:
        return present_class_mask(
            stack_label_maps(data_samples, ignore_index), num_classes,
            ignore_index, background_ids, names)
    return label_values_mask(values, num_classes, ignore_index,
                             background_ids, names)
    return present_class_mask(stack_label_maps(data_samples, ignore_index),
                              num_classes, ignore_index, background_ids,
                              names)


def draw_target_classes(present: torch.Tensor,
                        generator: Optional[torch.Generator] = None
                        ) -> torch.Tensor:
    """One class per image, uniformly among its present classes.

    Args:
        present (Tensor): [B, num_classes] bool.
        generator (torch.Generator, optional): CPU generator for the draw.

    Returns:
        Tensor: [B] long class ids on ``present.device``; ``-1`` for images
        with no present class.
    """
    scores = to_device_async(torch.rand(present.shape, generator=generator),
                             present.device)
    scores = scores.masked_fill(~present, -1.)
    target = scores.argmax(1)
    return torch.where(present.any(1), target, torch.full_like(target, -1))


def mode_target_prompts(present: torch.Tensor,
                        mapping: torch.Tensor,
                        num_proxy_prompts: int,
                        generator: Optional[torch.Generator] = None
                        ) -> torch.Tensor:
    """The authors' rule: the most frequent prompt among an image's classes,
    ties broken uniformly at random.

    Args:
        present (Tensor): [B, num_classes] bool.
        mapping (Tensor): [num_classes] long class -> prompt.
        num_proxy_prompts (int): K.

    Returns:
        Tensor: [B] long prompt ids, ``-1`` where nothing is present.
    """
    onehot = torch.nn.functional.one_hot(mapping, num_proxy_prompts).float()
    votes = present.float() @ onehot  # [B, K]
    jitter = to_device_async(torch.rand(votes.shape, generator=generator),
                             votes.device)
    prompt = (votes + 0.5 * jitter).argmax(1)  # jitter < 1 breaks ties only
    return torch.where(present.any(1), prompt, torch.full_like(prompt, -1))
