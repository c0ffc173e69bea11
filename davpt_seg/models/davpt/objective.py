# Copyright (c) davpt-seg contributors. Apache-2.0.
"""DA-VPT's training objective: guided features + present classes -> losses.

:class:`DAVPTObjective` owns the class->prompt mapping and its statistics
(training-only state: ``DAVPTHook`` saves it under the checkpoint key
``'davpt'``, see :mod:`davpt_seg.models.davpt.saved_state`). One call per
training step (``docs/method.md`` §3-§5)::

    losses = objective(guided, present, generator)
    # guided: GuidedOutput of the backbone's capture_guided()
    # present: [B, num_classes] bool, from present_classes(data_samples, ...)
    # ('class_patches' also takes labels=[B, H, W] ground truth)
    # -> {'loss_davpt_token': Tensor[], 'loss_davpt_cls': Tensor[]}

It adds every image's final [CLS] to the statistics of the classes it
contains (or, with ``mapping_feature='class_patches'``, each class's
pooled patch tokens; a collective in distributed runs), picks one target
prompt per image (``target_rule``) and returns the weighted token->prompt
and [CLS]->prompt metric losses, averaged over the guided layers.
"""
import math
from typing import Dict, Optional, Tuple

import torch
import torch.nn as nn
from mmseg.registry import MODELS

from davpt_seg.models.backbones.guided_capture import (GuidedFeatures,
                                                       GuidedOutput)
from davpt_seg.utils.device import to_device_async
from .class_pooling import class_pooled_features, labels_on_grid
from .mapping import ClassPromptMapping
from .targets import draw_target_classes, mode_target_prompts

TOKEN_FEATURES = ('output', 'patch_mean', 'query_mean')
TARGET_RULES = ('random', 'mode')
MAPPING_FEATURES = ('cls', 'class_patches')
#: The paper's metric loss (``metric_loss=None``); its labels (the target
#: prompts) are valid by construction, so their check, a host sync per
#: call on a GPU, is off.
DEFAULT_METRIC_LOSS = dict(
    type='ProxyAnchorLoss', alpha=32., delta=0.1, scale=5., pos_norm='all',
    check_labels=False)


def check_objective_args(token_loss_weight: float, cls_loss_weight: float,
                         token_feature: str, target_rule: str,
                         mapping_feature: str = 'cls',
                         min_class_patches: int = 1) -> None:
    """Raise ``ValueError`` on a bad :class:`DAVPTObjective` setting (also
    called by ``DAVPTHook.__init__``, so config errors surface at build)."""
    if mapping_feature not in MAPPING_FEATURES:
        raise ValueError(f'mapping_feature must be one of '
                         f'{MAPPING_FEATURES}, got {mapping_feature!r}')
    if not (isinstance(min_class_patches, int) and min_class_patches >= 1):
        raise ValueError('min_class_patches must be an int >= 1, got '
                         f'{min_class_patches!r}')
    if token_feature not in TOKEN_FEATURES:
        raise ValueError(f'token_feature must be one of {TOKEN_FEATURES},'
                         f' got {token_feature!r}')
    if target_rule not in TARGET_RULES:
        raise ValueError("target_rule must be 'random' or 'mode', got "
                         f'{target_rule!r}')
    for name, w in (('token_loss_weight', token_loss_weight),
                    ('cls_loss_weight', cls_loss_weight)):
        if not (isinstance(w, (int, float)) and math.isfinite(w) and w >= 0):
            raise ValueError(f'{name} must be a finite number >= 0, '
                             f'got {w!r}')


class DAVPTObjective(nn.Module):
    """Metric losses of DA-VPT and the class->prompt mapping they use.

    Args:
        num_classes (int): dataset classes (the decode head's).
        num_proxy_prompts (int): K, class-assigned prompts per guided layer
            (the backbone's ``num_proxy_prompts``), the k-means clusters.
        embed_dims (int): C of the backbone.
        token_loss_weight (float): weight of the token->prompt term.
            Default: 0.05.
        cls_loss_weight (float): weight of the [CLS]->prompt term.
            Default: 0.05.
        token_feature (str): visual-token feature of the token->prompt term:
            ``'output'`` (attention output at the image's assigned prompt),
            ``'patch_mean'`` (mean input image token) or ``'query_mean'``
            (its query projection). Default: 'output'.
        metric_loss (dict, optional): config of the metric loss (MODELS,
            ``loss(features [B, C], labels [B], proxies [K, C])``). Default:
            :data:`DEFAULT_METRIC_LOSS`.
        target_rule (str): ``'random'`` (one present class per image, the
            paper) or ``'mode'`` (most frequent prompt among its classes,
            the authors' code). Default: 'random'.
        mapping (dict, optional): further arguments of
            :class:`ClassPromptMapping` (``kmeans_norm``, ``max_iter``,
            ``tol``, ``unseen``, ``seed``, ``init``, ``n_init``).
        mapping_feature (str): per-class feature the mapping clusters:
            ``'cls'`` (final [CLS] of the images containing the class, the
            paper) or ``'class_patches'`` (the last guided layer's patch
            tokens pooled under the class's mask, ``docs/class_mapping.md``).
            Default: 'cls'.
        min_class_patches (int): with ``'class_patches'``, fewest patches of
            a class in a crop for it to count. Default: 4.
    """

    def __init__(self,
                 num_classes: int,
                 num_proxy_prompts: int,
                 embed_dims: int,
                 token_loss_weight: float = 0.05,
                 cls_loss_weight: float = 0.05,
                 token_feature: str = 'output',
                 metric_loss: Optional[dict] = None,
                 target_rule: str = 'random',
                 mapping: Optional[dict] = None,
                 mapping_feature: str = 'cls',
                 min_class_patches: int = 4):
        super().__init__()
        check_objective_args(token_loss_weight, cls_loss_weight,
                             token_feature, target_rule, mapping_feature,
                             min_class_patches)
        self.mapping_feature = mapping_feature
        self.min_class_patches = min_class_patches
        self.token_loss_weight = float(token_loss_weight)
        self.cls_loss_weight = float(cls_loss_weight)
        self.token_feature = token_feature
        self.target_rule = target_rule
        self.mapping = ClassPromptMapping(num_classes, num_proxy_prompts,
                                          embed_dims, **(mapping or {}))
        self.loss_fn = MODELS.build(metric_loss or DEFAULT_METRIC_LOSS)

    @property
    def num_classes(self) -> int:
        return self.mapping.num_classes

    @property
    def num_proxy_prompts(self) -> int:
        return self.mapping.num_proxy_prompts

    def target_prompts(self, present: torch.Tensor,
                       generator: Optional[torch.Generator] = None
                       ) -> torch.Tensor:
        """[B] long target prompt per image (-1: no valid class), drawn with
        ``generator`` (CPU) by ``target_rule`` from ``present``
        [B, num_classes] bool."""
        if self.target_rule == 'random':
            classes = draw_target_classes(present, generator)
            return self.mapping.lookup(classes)  # in range: no check
        return mode_target_prompts(present, self.mapping.mapping,
                                   self.num_proxy_prompts, generator)

    def metric_losses(self, layers: Dict[int, GuidedFeatures],
                      prompt_ids: torch.Tensor
                      ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Unweighted token->prompt and [CLS]->prompt losses, averaged over
        guided layers.

        Args:
            layers (dict[int, GuidedFeatures]): the backbone's guided
                features.
            prompt_ids (Tensor): [B] long target prompt per image, -1 = none.
        """
        token_total, cls_total = 0., 0.
        rows = torch.arange(prompt_ids.shape[0], device=prompt_ids.device)
        for f in layers.values():
            if self.token_feature == 'output':
                z = f.prompt_output[rows, prompt_ids.clamp(min=0)]
            else:
                z = getattr(f, self.token_feature)
            token_total = token_total + self.loss_fn(z, prompt_ids, f.proxies)
            cls_total = cls_total + self.loss_fn(f.cls_query, prompt_ids,
                                                 f.proxies)
        return token_total / len(layers), cls_total / len(layers)

    def accumulate(self, present: torch.Tensor,
                   final_cls: Optional[torch.Tensor] = None,
                   patch_tokens: Optional[torch.Tensor] = None,
                   labels: Optional[torch.Tensor] = None) -> None:
        """Add one batch to the mapping's statistics (a collective), by
        ``mapping_feature``: ``final_cls`` [B, C] (``'cls'``), or
        ``patch_tokens`` [B, h, w, C] pooled under ``labels`` [B, H, W]
        (``'class_patches'``; only classes in ``present`` [B, K] count)."""
        if self.mapping_feature == 'cls':
            self.mapping.accumulate(final_cls.detach().float(), present)
            return
        if patch_tokens is None or labels is None:
            raise ValueError("mapping_feature='class_patches' needs the "
                             'patch tokens and the label maps')
        grid = labels_on_grid(labels.to(patch_tokens.device),
                              patch_tokens.shape[1:3])
        feats, valid = class_pooled_features(
            patch_tokens.detach(), grid, self.num_classes,
            min_patches=self.min_class_patches)
        self.mapping.accumulate(feats, valid & present)

    def forward(self, guided: GuidedOutput, present: torch.Tensor,
                generator: Optional[torch.Generator] = None,
                labels: Optional[torch.Tensor] = None
                ) -> Dict[str, torch.Tensor]:
        """Accumulate the class statistics and return the weighted losses.

        Args:
            guided (GuidedOutput): one training forward's guided features.
            present (Tensor): [B, num_classes] bool classes per image
                (ignore index and background excluded).
            generator (torch.Generator, optional): CPU generator of the
                target draw.
            labels (Tensor, optional): [B, H, W] ground truth (needed by
                ``mapping_feature='class_patches'``).
        Returns:
            dict: ``loss_davpt_token`` and ``loss_davpt_cls``, scalars.
        """
        present = to_device_async(present, guided.final_cls.device)
        self.accumulate(present, guided.final_cls, guided.patch_tokens,
                        labels)
        prompt_ids = self.target_prompts(present, generator)
        token, cls = self.metric_losses(guided.layers, prompt_ids)
        return dict(loss_davpt_token=self.token_loss_weight * token,
                    loss_davpt_cls=self.cls_loss_weight * cls)
