# Copyright (c) davpt-seg contributors. Apache-2.0.
"""DAVPTHook: turns a stock mmseg segmentor with a prompted backbone into
DA-VPT training (``docs/method.md`` §3-§5).

Per training iteration (on every rank, on its own batch):

1. For each image, the classes present in its cropped, augmented ground
   truth (ignore index and ``background_ids`` excluded); one is drawn at
   random as the target (``target_rule='random'``, the paper) or the most
   frequent prompt is taken (``'mode'``, the authors' code). An image with
   no valid class gets no target and is left out of the metric losses.
2. The segmentor's ``loss`` forward runs unchanged; the backbone keeps the
   guided-layer features; a forward hook on the segmentor adds
   ``loss_davpt_token`` and ``loss_davpt_cls`` to its loss dict, so MMEngine
   sums and logs them with the segmentation losses.
3. The final [CLS] of each image is added to the statistics of every class
   it contains (all-reduced over ranks).
4. Every ``mapping_interval`` iterations the class->prompt mapping is
   re-clustered (warm-started cosine k-means on rank 0, broadcast).

At ``before_train``, unless the model already holds a mapping (resume, or
``load_from`` a DA-VPT checkpoint), the initial mapping is built from one
pass of the prompt-free frozen backbone over training batches.

Distributed training: the metric losses are computed on each rank's own
batch (no gather, as in the reference); DDP averages their gradients like
those of the segmentation losses. The class statistics are all-reduced and
the mapping is clustered on rank 0 and broadcast (``ClassPromptMapping``), so
every rank holds identical mapping buffers. Every trainable tensor gets a
gradient (a zero one if no image of the batch has a valid class) in every
step, so mmengine's default ``find_unused_parameters=False`` is right; a
prompt tensor that cannot reach the outputs is a config error (see
``_check_gradient_paths``).

Resume: the mapping, centroids, pending statistics and update counter are
persistent buffers of the backbone, saved in every checkpoint; updates run
before ``CheckpointHook`` (priority), so a checkpoint taken at a due update
holds the updated mapping. A resumed run skips the initial pass, draws its
targets from generators seeded by (seed, iteration, rank), and -- since the
initial pass restores the global RNG states -- continues exactly like the
uninterrupted run (deterministic settings, ``num_workers=0``).

Bad input: label values outside ``0..num_classes-1`` other than the ignore
index raise ``ValueError`` naming the annotation file, before the forward
pass (``before_train_iter``) and in the initial pass. Non-finite metric
losses are not skipped: training stops with ``FloatingPointError`` naming
the loss and the iteration (fail fast; a NaN would otherwise reach the
prompts through DDP's gradient average on every rank).
"""
import contextlib
import copy
import logging
import math
import random
from typing import Optional, Sequence

import numpy as np
import torch
from mmengine.dist import get_rank, get_world_size
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmseg.registry import HOOKS, MODELS

from davpt_seg.models.backbones import PromptedVisionTransformer
from davpt_seg.models.utils.class_targets import (draw_target_classes,
                                                  mode_target_prompts,
                                                  present_class_mask)
from .param_report_hook import format_parameter_report, parameter_report

TOKEN_FEATURES = ('output', 'patch_mean', 'query_mean')


@contextlib.contextmanager
def _preserved_global_rng():
    """Restore the global Python, numpy, torch and CUDA RNG states on exit."""
    states = (random.getstate(), np.random.get_state(),
              torch.get_rng_state())
    cuda = torch.cuda.get_rng_state_all() \
        if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)


@HOOKS.register_module()
class DAVPTHook(Hook):
    """DA-VPT metric losses and class->prompt mapping for mmseg training.

    Args:
        token_loss_weight (float): weight of the token->prompt term.
            Default: 0.05.
        cls_loss_weight (float): weight of the [CLS]->prompt term.
            Default: 0.05.
        token_feature (str): visual-token feature of the token->prompt term:
            ``'output'`` (attention output at the image's assigned prompt),
            ``'patch_mean'`` (mean input image token) or ``'query_mean'``
            (its query projection). Default: 'output'.
        metric_loss (dict): config of the metric loss (registered in MODELS,
            ``loss(features [B, C], labels [B], proxies [K, C])``). Default:
            ``ProxyAnchorLoss(alpha=32, delta=0.1, scale=5, pos_norm='all')``.
        target_rule (str): ``'random'`` or ``'mode'`` (see module doc).
            Default: 'random'.
        background_ids (Sequence[int]): classes never drawn as targets nor
            used for class statistics. ``()`` for ADE20K, ``(0, )`` for the
            60-class PASCAL Context. Default: ().
        ignore_index (int, optional): label to ignore; None reads the decode
            head's ``ignore_index``. Default: None.
        mapping_interval (int, optional): iterations between mapping updates;
            None means one epoch's worth of iterations of the config
            (``ceil(len(train set) / (batch size x world size))``), 0 turns
            updates off. Default: None.
        init_max_batches (int, optional): batches (per rank) of the initial
            mapping pass; None is one full pass over the training set.
            Default: None.
        init_dataloader (dict, optional): overrides of the training
            dataloader config for the initial pass (e.g. ``batch_size``,
            ``num_workers``). Its sampler is always a finite, shuffled
            ``DefaultSampler``. Default: None.
        seed (int, optional): seed of the per-image class draws, combined
            with the iteration and rank (so draws are reproducible and
            resume-safe); None uses the runner's seed. Default: None.
    """

    priority = 'NORMAL'  # before CheckpointHook: a due update is saved

    def __init__(self,
                 token_loss_weight: float = 0.05,
                 cls_loss_weight: float = 0.05,
                 token_feature: str = 'output',
                 metric_loss: Optional[dict] = None,
                 target_rule: str = 'random',
                 background_ids: Sequence[int] = (),
                 ignore_index: Optional[int] = None,
                 mapping_interval: Optional[int] = None,
                 init_max_batches: Optional[int] = None,
                 init_dataloader: Optional[dict] = None,
                 seed: Optional[int] = None):
        if token_feature not in TOKEN_FEATURES:
            raise ValueError(f'token_feature must be one of {TOKEN_FEATURES},'
                             f' got {token_feature!r}')
        if target_rule not in ('random', 'mode'):
            raise ValueError("target_rule must be 'random' or 'mode', got "
                             f'{target_rule!r}')
        for name, w in (('token_loss_weight', token_loss_weight),
                        ('cls_loss_weight', cls_loss_weight)):
            if not (isinstance(w, (int, float)) and math.isfinite(w)
                    and w >= 0):
                raise ValueError(f'{name} must be a finite number >= 0, '
                                 f'got {w!r}')
        if mapping_interval is not None and mapping_interval < 0:
            raise ValueError('mapping_interval must be >= 0 or None')
        if init_max_batches is not None and init_max_batches < 1:
            raise ValueError('init_max_batches must be >= 1 or None')
        self.token_loss_weight = float(token_loss_weight)
        self.cls_loss_weight = float(cls_loss_weight)
        self.token_feature = token_feature
        self.metric_loss_cfg = metric_loss or dict(
            type='ProxyAnchorLoss', alpha=32., delta=0.1, scale=5.,
            pos_norm='all')
        self.target_rule = target_rule
        self.background_ids = tuple(int(i) for i in background_ids)
        self.ignore_index = ignore_index
        self.mapping_interval = mapping_interval
        self.init_max_batches = init_max_batches
        self.init_dataloader = init_dataloader or {}
        self.seed = seed
        self._handle = None
        self._iter = 0

    # ----------------------------------------------------------- helpers
    @staticmethod
    def _segmentor(runner):
        model = runner.model
        return model.module if is_model_wrapper(model) else model

    def _setup(self, segmentor):
        backbone = getattr(segmentor, 'backbone', None)
        if not isinstance(backbone, PromptedVisionTransformer):
            raise TypeError(
                'DAVPTHook needs model.backbone of type '
                f'PromptedVisionTransformer, got {type(backbone).__name__}')
        if backbone.class_mapping is None:
            raise ValueError(
                'DAVPTHook needs the class->prompt mapping: set '
                'model.backbone.num_classes (= the dataset classes) and '
                'guided_layers. Without them the config is plain VPT; drop '
                'the hook for that.')
        head = getattr(segmentor, 'decode_head', None)
        head_classes = getattr(head, 'num_classes', None)
        if head_classes is not None and head_classes != backbone.num_classes:
            raise ValueError(
                f'model.backbone.num_classes={backbone.num_classes} but '
                f'model.decode_head.num_classes={head_classes}: they must '
                'both be the number of dataset classes')
        bad = [i for i in self.background_ids
               if not 0 <= i < backbone.num_classes]
        if bad:
            raise ValueError(f'background_ids {bad} are not class ids '
                             f'0..{backbone.num_classes - 1}')
        if self.ignore_index is None:
            self.ignore_index = getattr(head, 'ignore_index', 255)
        self._check_gradient_paths(backbone)
        self.backbone = backbone
        self.mapping = backbone.class_mapping
        self.loss_fn = MODELS.build(self.metric_loss_cfg)
        backbone.collect_guided_features = True
        if self._handle is None:
            self._handle = segmentor.register_forward_hook(
                self._add_metric_losses, with_kwargs=True)

    @staticmethod
    def _check_gradient_paths(backbone) -> None:
        """Unguided prompts of layers after the last ``out_indices`` layer
        reach neither the outputs nor the metric losses. If that is all of
        them, the ``prompt_tokens`` tensor never gets a gradient: DDP with
        ``find_unused_parameters=False`` fails at the 2nd iteration and a
        single process silently never trains it, so it is an error here."""
        if backbone.prompt_tokens is None:
            return
        last_out = max(backbone.out_indices)
        unguided = [i for i in range(len(backbone.layers))
                    if i not in backbone.guided_layers]
        dead = [i for i in unguided if i > last_out]
        if dead and len(dead) == len(unguided):
            raise ValueError(
                f'The prompts of layers {dead} (num_prompts='
                f'{backbone.num_prompts}) come after the last output layer '
                f'(out_indices={list(backbone.out_indices)}) and are not '
                'guided: they can never get a gradient (and DDP would fail '
                'with find_unused_parameters=False). Add a later layer to '
                'out_indices or set num_prompts=0.')
        if dead:
            print_log(
                f'DA-VPT: the prompts of layers {dead} come after the last '
                f'output layer (out_indices={list(backbone.out_indices)}) '
                'and will not train', logger='current', level=logging.WARNING)

    def _check_labels(self, data_samples) -> None:
        """Raise, naming the file, on label values that are neither a class
        id nor the ignore index -- before the forward pass, where the
        cross-entropy loss would fail without naming it (or, on GPU, with a
        device-side assert)."""
        n = self.backbone.num_classes
        for i, s in enumerate(data_samples):
            labels = s.gt_sem_seg.data
            valid = labels != self.ignore_index
            if not valid.any():
                continue
            values = labels[valid]
            if values.min() < 0 or values.max() >= n:
                name = s.metainfo.get('seg_map_path',
                                      s.metainfo.get('img_path', f'image {i}'))
                present_class_mask(labels.reshape(1, -1), n,
                                   self.ignore_index, (), [name])

    def _generator(self, purpose: int) -> torch.Generator:
        g = torch.Generator()
        g.manual_seed((self._seed * 1_000_003 + self._iter * 7919 +
                       get_rank() * 104_729 + purpose) % (2**63))
        return g

    def _present(self, data_samples) -> torch.Tensor:
        labels = torch.stack([s.gt_sem_seg.data for s in data_samples])
        names = [s.metainfo.get('seg_map_path', s.metainfo.get(
            'img_path', f'image {i}')) for i, s in enumerate(data_samples)]
        return present_class_mask(labels, self.backbone.num_classes,
                                  self.ignore_index, self.background_ids,
                                  names)

    # ------------------------------------------------------------- hooks
    def before_train(self, runner) -> None:
        segmentor = self._segmentor(runner)
        self._setup(segmentor)
        self._seed = self.seed if self.seed is not None else \
            (runner.seed or 0)
        dataloader = runner.train_dataloader
        iters_per_epoch = math.ceil(
            len(dataloader.dataset) /
            (dataloader.batch_size * get_world_size()))
        if self.mapping_interval is None:
            self.mapping_interval = iters_per_epoch
        runner.logger.info(format_parameter_report(
            parameter_report(segmentor)))
        runner.logger.info(
            f'DA-VPT: {len(self.backbone.guided_layers)} guided layer(s) '
            f'{self.backbone.guided_layers}, {self.mapping.num_prompts} '
            f'proxy prompts, {self.backbone.num_classes} classes, mapping '
            f'update every {self.mapping_interval} iterations')
        if bool(self.mapping.initialized):
            runner.logger.info(
                'DA-VPT: class->prompt mapping restored from the checkpoint '
                f'(update {int(self.mapping.num_updates)}); cluster sizes '
                f'{self.mapping.cluster_sizes()}')
            return
        self.initial_mapping(runner, segmentor)

    @torch.no_grad()
    def initial_mapping(self, runner, segmentor) -> None:
        """One pass of the prompt-free frozen backbone over training batches:
        per-class means of the final [CLS], then k-means.

        The pass leaves the global ``random`` / numpy / torch (and CUDA) RNG
        states as it found them (its augmentations draw from them), so the
        training run that follows sees the same random stream as a run
        resumed from one of its checkpoints, which skips this pass.
        """
        with _preserved_global_rng():
            self._initial_mapping(runner, segmentor)

    def _initial_mapping(self, runner, segmentor) -> None:
        cfg = copy.deepcopy(runner.cfg.train_dataloader)
        cfg.update(self.init_dataloader)
        cfg['sampler'] = dict(type='DefaultSampler', shuffle=True)
        cfg.pop('batch_sampler', None)
        loader = runner.build_dataloader(cfg, seed=self._seed)
        num = len(loader) if self.init_max_batches is None else \
            min(self.init_max_batches, len(loader))
        was_training = self.backbone.training
        self.backbone.eval()
        seen = 0
        for i, data in enumerate(loader):
            if i >= num:
                break
            data = segmentor.data_preprocessor(data, True)
            cls = self.backbone.forward_cls(data['inputs'])
            self.mapping.accumulate(cls.float(),
                                    self._present(data['data_samples']))
            seen += len(data['data_samples'])
        self.backbone.train(was_training)
        changed = self.mapping.update()
        runner.logger.info(
            f'DA-VPT initial mapping from {num} batches ({seen} images on '
            f'rank {get_rank()}): {"set" if changed else "NOT set"}; '
            f'cluster sizes {self.mapping.cluster_sizes()}')
        if not changed:
            raise RuntimeError(
                'DA-VPT: the initial class->prompt mapping could not be '
                'built (too few classes seen, or k-means collapsed to one '
                'prompt). Increase init_max_batches or check the labels.')

    def before_train_iter(self, runner, batch_idx: int,
                          data_batch=None) -> None:
        self._iter = runner.iter
        if isinstance(data_batch, dict) and 'data_samples' in data_batch:
            self._check_labels(data_batch['data_samples'])

    def after_train_iter(self, runner, batch_idx: int, data_batch=None,
                         outputs=None) -> None:
        if not self.mapping_interval or \
                not self.every_n_train_iters(runner, self.mapping_interval):
            return
        changed = self.mapping.update()
        state = 'updated' if changed else 'kept (update rejected)'
        runner.logger.info(
            f'DA-VPT mapping {state} at iter {runner.iter + 1}; cluster '
            f'sizes {self.mapping.cluster_sizes()}')

    # ------------------------------------------------------ metric losses
    def _add_metric_losses(self, module, args, kwargs, output):
        """Forward hook on the segmentor: extend the ``mode='loss'`` dict."""
        mode = kwargs.get('mode', args[2] if len(args) > 2 else 'tensor')
        if mode != 'loss' or not module.training:
            return None
        feats = self.backbone.pop_guided_features()
        if feats is None:
            return None
        data_samples = kwargs.get('data_samples',
                                  args[1] if len(args) > 1 else None)
        present = self._present(data_samples)
        self.mapping.accumulate(feats['final_cls'].detach().float(), present)
        if self.target_rule == 'random':
            classes = draw_target_classes(present, self._generator(0))
            prompt_ids = self.mapping.map_classes(classes)
        else:
            prompt_ids = mode_target_prompts(present, self.mapping.mapping,
                                             self.mapping.num_prompts,
                                             self._generator(1))
        token, cls = self.metric_losses(feats['layers'], prompt_ids)
        output = dict(output)
        output['loss_davpt_token'] = self.token_loss_weight * token
        output['loss_davpt_cls'] = self.cls_loss_weight * cls
        for name in ('loss_davpt_token', 'loss_davpt_cls'):
            if not torch.isfinite(output[name]).all():
                raise FloatingPointError(
                    f'DA-VPT: {name} is {output[name].item()} at iteration '
                    f'{self._iter + 1}; stopping (check the learning rate, '
                    'AMP settings and metric_loss options)')
        return output

    def metric_losses(self, layers: dict, prompt_ids: torch.Tensor):
        """Unweighted token->prompt and [CLS]->prompt losses, averaged over
        guided layers.

        Args:
            layers (dict[int, GuidedFeatures]): backbone's guided features.
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
