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


def present_class_mask(labels: torch.Tensor,
                       num_classes: int,
                       ignore_index: int = 255,
                       background_ids: Sequence[int] = (),
                       names: Optional[Sequence[str]] = None) -> torch.Tensor:
    """Which classes each label map contains.

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
    flat = labels.reshape(B, -1).long()
    valid = flat != ignore_index
    bad = valid & ((flat < 0) | (flat >= num_classes))
    if bad.any():
        i = int(bad.any(1).nonzero()[0])
        values = sorted(set(flat[i][bad[i]].unique().tolist()))[:10]
        who = names[i] if names is not None else f'image {i} of the batch'
        raise ValueError(
            f'{who}: label values {values} are outside 0..{num_classes - 1} '
            f'and are not the ignore index {ignore_index}. Check the '
            'dataset (reduce_zero_label, label_map) against num_classes.')
    offsets = torch.arange(B, device=flat.device)[:, None] * num_classes
    counts = torch.bincount((flat + offsets)[valid],
                            minlength=B * num_classes)
    present = counts.view(B, num_classes) > 0
    if len(background_ids):
        present[:, list(background_ids)] = False
    return present


def present_classes(data_samples: Sequence,
                    num_classes: int,
                    ignore_index: int = 255,
                    background_ids: Sequence[int] = ()) -> torch.Tensor:
    """:func:`present_class_mask` of a batch of ``SegDataSample`` (their
    ``gt_sem_seg``; sizes may differ before padding), naming each image's
    annotation file in errors.

    Returns:
        Tensor: [B, num_classes] bool on the labels' device.
    """
    rows = []
    for i, sample in enumerate(data_samples):
        meta = sample.metainfo
        name = meta.get('seg_map_path', meta.get('img_path', f'image {i}'))
        rows.append(present_class_mask(sample.gt_sem_seg.data[None],
                                       num_classes, ignore_index,
                                       background_ids, [name]))
    return torch.cat(rows) if rows else torch.zeros(0, num_classes,
                                                     dtype=torch.bool)


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
    scores = torch.rand(present.shape, generator=generator).to(present.device)
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
    jitter = torch.rand(votes.shape, generator=generator).to(votes.device)
    prompt = (votes + 0.5 * jitter).argmax(1)  # jitter < 1 breaks ties only
    return torch.where(present.any(1), prompt, torch.full_like(prompt, -1))
