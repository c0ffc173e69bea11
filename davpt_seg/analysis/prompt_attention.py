# Copyright (c) davpt-seg contributors. Apache-2.0.
"""Prompt attention maps of one image and the "attention precision" metric.

Attention precision of prompt k on an image, for a set of classes S (the
classes mapped to k): with ``a`` the prompt's attention over the image
patches (heads averaged, renormalised to sum to one over the patches) and
``f_S(j)`` the fraction of patch j's pixels that belong to S (ground truth
downsampled to the patch grid by area; padding and ignored pixels count as
"not S")::

    precision = sum_j a(j) f_S(j)        chance = mean_j f_S(j)

``chance`` is the precision of uniform attention over the patches (= the
area share of S in the image when the grid has no padding). Classes are
disjoint, so both are sums over the classes of S of per-class values; an
image counts for (k, S) only if some class of S is present in it.
"""
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from davpt_seg.models.backbones import AttentionRecord


@torch.no_grad()
def attention_pass(model, data: dict, layers: Sequence[int]):
    """One backbone forward on the preprocessed image(s) of ``data`` under
    :meth:`PromptedVisionTransformer.capture_attention`.

    This is a single whole-image pass (position embeddings interpolated to
    the image's patch grid, as mmseg's 'whole' inference), also for
    configs that predict with 'slide' inference.

    Returns:
        tuple: (:class:`AttentionRecord` with [B, heads, T, T] maps on the
        CPU, list of ``SegDataSample`` with ``img_shape``/``ori_shape``).
    """
    processed = model.data_preprocessor(data, False)
    with model.backbone.capture_attention(layers) as cap:
        model.backbone(processed['inputs'])
    record = cap.last
    for layer in record.attn:  # the tools work on CPU (numpy, figures)
        record.attn[layer] = record.attn[layer].cpu()
    return record, processed['data_samples']


def spread(maps: Tensor) -> Tensor:
    """How diffuse attention maps are: ``exp(entropy) / N``, the effective
    share of the N patches attended (1 = uniform, 1/N = a single patch).

    Args:
        maps (Tensor): [..., h, w], each summing to one.
    Returns:
        Tensor: [...] in (0, 1].
    """
    p = maps.flatten(-2).double()
    entropy = -(p * p.clamp_min(1e-30).log()).sum(-1)
    return (entropy.exp() / p.shape[-1]).float()


def grid_to_image(maps: Tensor, patch_size: int, img_shape: Tuple[int, int],
                  out_shape: Tuple[int, int]) -> Tensor:
    """Patch-grid maps to image pixels for display.

    Args:
        maps (Tensor): [N, h, w] on the patch grid of the network input
            (corner padding: the grid may extend past the image).
        patch_size (int): p.
        img_shape (tuple): (H, W) of the image region of the input.
        out_shape (tuple): (H0, W0) to resize to (the original image).
    Returns:
        Tensor: [N, H0, W0]; each patch's value fills its pixels (nearest),
        then a bilinear resize to ``out_shape``.
    """
    x = maps.float().repeat_interleave(patch_size, -2).repeat_interleave(
        patch_size, -1)[..., :img_shape[0], :img_shape[1]]
    if tuple(x.shape[-2:]) == tuple(out_shape):
        return x
    return F.interpolate(x[None], size=tuple(out_shape), mode='bilinear',
                         align_corners=False)[0]


def class_fractions(gt: np.ndarray, classes: Sequence[int],
                    img_shape: Tuple[int, int], hw_shape: Tuple[int, int],
                    patch_size: int) -> Tensor:
    """Fraction of each patch's pixels that belong to each class.

    Args:
        gt (ndarray): [H0, W0] labels (original or image size).
        classes (Sequence[int]): class ids.
        img_shape (tuple): (H, W) image region of the network input; the
            labels are area-resized to it if their size differs.
        hw_shape (tuple): (h, w) patch grid; h * p >= H (padding counts as
            no class).
        patch_size (int): p.
    Returns:
        Tensor: [len(classes), h, w] float32 in [0, 1] (area average).
    """
    gt = torch.as_tensor(np.asarray(gt)).long()
    onehot = torch.stack([(gt == c).float() for c in classes]) if classes \
        else torch.zeros(0, *gt.shape)
    if tuple(onehot.shape[-2:]) != tuple(img_shape):
        onehot = F.interpolate(onehot[None], size=tuple(img_shape),
                               mode='area')[0]
    h, w = hw_shape
    pad_h, pad_w = h * patch_size - img_shape[0], w * patch_size - \
        img_shape[1]
    if pad_h < 0 or pad_w < 0:
        raise ValueError(f'the {h}x{w} patch grid of {patch_size} px does '
                         f'not cover the {img_shape} image')
    onehot = F.pad(onehot, (0, pad_w, 0, pad_h))
    return F.avg_pool2d(onehot[None], patch_size)[0]


def image_precision(maps: Tensor, fractions: Tensor):
    """Per-class attention precision and chance of one image.

    Args:
        maps (Tensor): [P, h, w] prompt attention over the patches, each
            summing to one.
        fractions (Tensor): [C, h, w] class fractions per patch.
    Returns:
        tuple: precision [P, C] and chance [C] (float64 numpy arrays).
    """
    prec = torch.einsum('phw,chw->pc', maps.double(), fractions.double())
    chance = fractions.double().mean((-2, -1))
    return prec.numpy(), chance.numpy()


class PrecisionAccumulator:
    """Per-image, per-class attention precision of the prompts of some
    layers, summarised at the end for any class -> prompt assignment.

    Args:
        num_classes (int): C, classes of the ground truth (other labels,
            e.g. the ignore index, never count as a class).
    """

    def __init__(self, num_classes: int):
        self.num_classes = num_classes
        self.prec: Dict[int, List[np.ndarray]] = {}   # layer -> [P, C]s
        self.spread: Dict[int, List[np.ndarray]] = {}  # layer -> [P]s
        self.chance: List[np.ndarray] = []            # [C] per image
        self.present: List[np.ndarray] = []           # [C] bool per image

    def add(self, record: AttentionRecord, gt: np.ndarray,
            img_shape: Tuple[int, int], patch_size: int, b: int = 0) -> None:
        """Add image ``b`` of ``record`` (every captured layer)."""
        classes = list(range(self.num_classes))
        fr = class_fractions(gt, classes, img_shape, record.hw_shape,
                             patch_size)
        chance = None
        for layer in record.attn:
            maps = record.prompt_to_patches(layer)[b].mean(0)  # [P, h, w]
            prec, chance = image_precision(maps, fr)
            self.prec.setdefault(layer, []).append(prec)
            self.spread.setdefault(layer, []).append(spread(maps).numpy())
        if chance is None:
            chance = fr.double().mean((-2, -1)).numpy()
        self.chance.append(chance)
        self.present.append(fr.sum((-2, -1)).numpy() > 0)

    @property
    def num_images(self) -> int:
        return len(self.chance)

    def set_scores(self, layer: int, prompt: int, classes: Sequence[int]):
        """Per image where a class of ``classes`` is present: (precision,
        chance) of the prompt for that class set; two [n] arrays."""
        cls = list(classes)
        if not cls or not self.num_images:
            return np.zeros(0), np.zeros(0)
        prec = np.stack(self.prec[layer])[:, prompt, cls].sum(1)
        chance = np.stack(self.chance)[:, cls].sum(1)
        keep = np.stack(self.present)[:, cls].any(1)
        return prec[keep], chance[keep]

    def best_class(self, layer: int, prompt: int, min_images: int = 1):
        """The class with the largest mean (precision - chance) for the
        prompt, over the images where it is present (chosen post hoc on
        the same images, so optimistic). None if no class qualifies."""
        best, best_gain = None, -np.inf
        for c in range(self.num_classes):
            prec, chance = self.set_scores(layer, prompt, [c])
            if len(prec) >= min_images and (prec - chance).mean() > best_gain:
                best, best_gain = c, (prec - chance).mean()
        return best


def _stats(prec: np.ndarray, chance: np.ndarray) -> dict:
    if len(prec) == 0:
        return dict(num_images=0, precision=None, chance=None, ratio=None)
    p, c = float(prec.mean()), float(chance.mean())
    return dict(num_images=int(len(prec)), precision=p, chance=c,
                ratio=p / c if c > 0 else None)


def summarize(acc: PrecisionAccumulator,
              assignments: Dict[int, Optional[List[List[int]]]],
              class_names: Sequence[str], min_images: int = 1) -> dict:
    """Per-prompt and overall attention precision.

    Args:
        acc (PrecisionAccumulator): the collected images.
        assignments (dict): layer -> per prompt the list of its class ids,
            or None (no mapping: only the post-hoc best class).
        class_names (Sequence[str]): names of the class ids.
        min_images (int): images a class needs to be a post-hoc best class.
    Returns:
        dict: ``prompts`` (list of per-prompt dicts: ``spread``, the mean
        :func:`spread` of the prompt's map over all images, and the scores
        for its ``mapped`` classes and its ``best_class``) and ``overall``
        (``spread``: mean over prompts; for the mapping and for the post-hoc
        best class: macro means over prompts, micro means over (prompt,
        image) pairs).
    """
    prompts = []
    pairs = {'mapped': ([], []), 'best_class': ([], [])}
    for layer in sorted(acc.prec):
        num_prompts = acc.prec[layer][0].shape[0] if acc.prec[layer] else 0
        assign = assignments.get(layer)
        for k in range(num_prompts):
            entry = dict(layer=layer, prompt=k, spread=float(
                np.mean([s[k] for s in acc.spread[layer]])))
            if assign is not None:
                prec, chance = acc.set_scores(layer, k, assign[k])
                entry['mapped'] = dict(
                    class_ids=list(assign[k]),
                    classes=[class_names[c] for c in assign[k]],
                    **_stats(prec, chance))
                pairs['mapped'][0].append(prec)
                pairs['mapped'][1].append(chance)
            best = acc.best_class(layer, k, min_images)
            prec, chance = acc.set_scores(layer, k, [] if best is None
                                          else [best])
            entry['best_class'] = {
                'class_id': best,
                'class': None if best is None else class_names[best],
                **_stats(prec, chance)}
            pairs['best_class'][0].append(prec)
            pairs['best_class'][1].append(chance)
            prompts.append(entry)
    overall = dict(spread=_mean([e['spread'] for e in prompts]))
    for key, (precs, chances) in pairs.items():
        if not precs:
            continue
        per_prompt = [e[key] for e in prompts if e.get(key) and
                      e[key]['num_images']]
        micro = _stats(np.concatenate(precs), np.concatenate(chances))
        overall[key] = dict(
            num_prompts=len(per_prompt),
            precision=_mean([e['precision'] for e in per_prompt]),
            chance=_mean([e['chance'] for e in per_prompt]),
            prompts_above_chance=sum(e['precision'] > e['chance']
                                     for e in per_prompt),
            num_pairs=micro['num_images'],
            micro_precision=micro['precision'],
            micro_chance=micro['chance'])
    return dict(prompts=prompts, overall=overall)


def _mean(values: List[float]) -> Optional[float]:
    return float(np.mean(values)) if values else None
