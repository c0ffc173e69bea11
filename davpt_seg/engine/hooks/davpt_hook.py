# Copyright (c) davpt-seg contributors. Apache-2.0.
"""DAVPTHook: turns a stock mmseg segmentor with a prompted backbone into
DA-VPT training (``docs/method.md`` §3-§5, ``docs/architecture.md``).

The hook only routes runner events; the method lives in
:class:`~davpt_seg.models.davpt.DAVPTObjective` (losses, mapping) and the
backbone's :meth:`capture_guided`. Per training forward (``mode='loss'``),
on every rank:

1. A forward pre-hook on the segmentor takes the classes present in each
   image of *this* forward's batch (ignore index and ``background_ids``
   excluded): from the ``label_values`` that
   :class:`~davpt_seg.datasets.RecordLabelValues` recorded in the data
   loader's workers, or, for a pipeline without it, from one batched scan of
   the ground truth on its device (logged once). Either way the labels are
   checked before the forward: values that are neither a class id nor the
   ignore index raise ``ValueError`` naming the annotation file.
2. The segmentor's ``loss`` forward runs unchanged; the backbone records its
   guided features in the capture; a forward hook on the segmentor adds the
   objective's ``loss_davpt_token`` and ``loss_davpt_cls`` to the loss dict,
   so MMEngine sums and logs them with the segmentation losses. All of it is
   queued on the model's device without host syncs.
3. ``after_train_iter``: non-finite metric losses stop training with
   ``FloatingPointError`` (read from the outputs, which mmengine has already
   brought to the host); every ``mapping_interval`` iterations the mapping
   is re-clustered (k-means on rank 0, broadcast; its duration is logged).

``before_train`` builds the initial mapping (one prompt-free pass) unless a
checkpoint provided one. The objective's state is saved under
``checkpoint['davpt']`` (``before_save_checkpoint``; updates run before
``CheckpointHook``, so a checkpoint at a due update holds it) and restored
in ``after_load_checkpoint``, where checkpoints of earlier versions
(``backbone.class_mapping.*`` in the model state) are migrated. Target
draws use generators seeded by (seed, iteration, rank): a resumed run
continues exactly like the uninterrupted one (deterministic settings,
``num_workers=0``). ``after_train`` detaches everything the hook attached.
"""
import inspect
import logging
import math
import time
from typing import Optional, Sequence

import torch
from mmengine.dist import get_rank, get_world_size
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmseg.registry import HOOKS

from davpt_seg.models.backbones import PromptedVisionTransformer
from davpt_seg.models.davpt import (DAVPTObjective, check_objective_args,
                                    has_label_values, objective_state,
                                    present_classes, stack_label_maps)
from davpt_seg.models.davpt.saved_state import CHECKPOINT_KEY
from ..initial_mapping import build_initial_mapping
from .checkpoint_check_hook import head_mismatch_allowed, unwrap_model
from .param_report_hook import format_parameter_report, parameter_report


def segmentor_of(runner):
    """The runner's segmentor, without DDP / TTA wrappers."""
    return unwrap_model(runner.model)


@HOOKS.register_module()
class DAVPTHook(Hook):
    """DA-VPT metric losses and class->prompt mapping for mmseg training.

    Args:
        token_loss_weight, cls_loss_weight, token_feature, metric_loss,
        target_rule: see :class:`DAVPTObjective` (defaults 0.05, 0.05,
            'output', ProxyAnchorLoss(alpha=32, delta=0.1, scale=5,
            pos_norm='all'), 'random').
        mapping (dict, optional): arguments of :class:`ClassPromptMapping`
            (``kmeans_norm``, ``max_iter``, ``tol``, ``unseen``, ``seed``,
            ``init``, ``n_init``). Default: None (its defaults).
        mapping_feature, min_class_patches: the mapping's per-class feature,
            see :class:`DAVPTObjective` (defaults 'cls', 4).
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
            mapping pass; None is one full pass. Default: None.
        init_dataloader (dict, optional): overrides of the training
            dataloader config for the initial pass (e.g. ``batch_size``).
            Default: None.
        seed (int, optional): seed of the per-image target draws, combined
            with the iteration and rank; None uses the runner's seed.
            Default: None.
    """

    priority = 'NORMAL'  # before CheckpointHook: a due update is saved

    def __init__(self,
                 token_loss_weight: float = 0.05,
                 cls_loss_weight: float = 0.05,
                 token_feature: str = 'output',
                 metric_loss: Optional[dict] = None,
                 target_rule: str = 'random',
                 mapping: Optional[dict] = None,
                 mapping_feature: str = 'cls',
                 min_class_patches: int = 4,
                 background_ids: Sequence[int] = (),
                 ignore_index: Optional[int] = None,
                 mapping_interval: Optional[int] = None,
                 init_max_batches: Optional[int] = None,
                 init_dataloader: Optional[dict] = None,
                 seed: Optional[int] = None):
        check_objective_args(token_loss_weight, cls_loss_weight,
                             token_feature, target_rule, mapping_feature,
                             min_class_patches)
        if mapping_interval is not None and mapping_interval < 0:
            raise ValueError('mapping_interval must be >= 0 or None')
        if init_max_batches is not None and init_max_batches < 1:
            raise ValueError('init_max_batches must be >= 1 or None')
        self.objective_cfg = dict(
            token_loss_weight=token_loss_weight,
            cls_loss_weight=cls_loss_weight, token_feature=token_feature,
            metric_loss=metric_loss, target_rule=target_rule,
            mapping=mapping, mapping_feature=mapping_feature,
            min_class_patches=min_class_patches)
        self.background_ids = tuple(int(i) for i in background_ids)
        self.ignore_index = ignore_index
        self.mapping_interval = mapping_interval
        self.init_max_batches = init_max_batches
        self.init_dataloader = init_dataloader or {}
        self.seed = seed
        #: The objective (losses + mapping), built from the model at
        #: ``before_run``; None before.
        self.objective: Optional[DAVPTObjective] = None
        self._capture = None  # backbone.capture_guided() while training
        self._handles = []  # the segmentor's forward (pre-)hooks
        self._signature = None  # of the segmentor's forward
        self._present = None  # [B, num_classes] of the forward under way
        self._labels = None  # [B, H, W] of it ('class_patches' only)
        self._scan_logged = False
        self._iter = 0

    # ------------------------------------------------------------ set-up
    def build_objective(self, segmentor) -> DAVPTObjective:
        """The :class:`DAVPTObjective` for ``segmentor`` (unwrapped): classes
        from its decode head, K and C from its prompted backbone."""
        backbone = getattr(segmentor, 'backbone', None)
        if not isinstance(backbone, PromptedVisionTransformer):
            raise TypeError(
                'DAVPTHook needs model.backbone of type '
                f'PromptedVisionTransformer, got {type(backbone).__name__}')
        if not backbone.guided_layers:
            raise ValueError(
                'DAVPTHook needs guided layers: set model.backbone.'
                'guided_layers (e.g. [-1]) and num_proxy_prompts; without '
                'them the config is plain VPT: drop the hook for that.')
        head = getattr(segmentor, 'decode_head', None)
        num_classes = getattr(head, 'num_classes', None)
        if not isinstance(num_classes, int):
            raise ValueError('DAVPTHook reads the number of classes from '
                             'model.decode_head.num_classes, which is not set')
        bad = [i for i in self.background_ids if not 0 <= i < num_classes]
        if bad:
            raise ValueError(f'background_ids {bad} are not class ids '
                             f'0..{num_classes - 1}')
        if self.ignore_index is None:
            self.ignore_index = getattr(head, 'ignore_index', 255)
        objective = DAVPTObjective(num_classes, backbone.num_proxy_prompts,
                                   backbone.embed_dims, **self.objective_cfg)
        return objective.to(backbone.cls_token.device)

    def present(self, data_samples) -> torch.Tensor:
        """[B, num_classes] bool classes of each sample (the label check):
        from their ``label_values`` metainfo, else from one batched scan of
        their ground truth on its device (logged once)."""
        if not self._scan_logged and not has_label_values(data_samples):
            self._scan_logged = True
            print_log(
                'DAVPTHook: the samples carry no label_values; the classes '
                'of each image are found by scanning its label map each '
                'iteration (slow on a GPU). Add dict(type=\'RecordLabelValues'
                '\') after PackSegInputs in the training pipeline.',
                logger='current', level=logging.WARNING)
        return present_classes(data_samples, self.objective.num_classes,
                               self.ignore_index, self.background_ids)

    # ------------------------------------------------------ checkpoints
    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        """Take the objective's state out of the checkpoint (out of the
        model state for checkpoints of earlier versions, which kept the
        mapping there) and load it."""
        state = objective_state(checkpoint, pop=True)
        if state is None or self.objective is None:
            return
        expected = self.objective.state_dict()
        wrong = [f'{k}: checkpoint {tuple(v.shape)} vs model '
                 f'{tuple(expected[k].shape)}' for k, v in state.items()
                 if k in expected and v.shape != expected[k].shape]
        if wrong and head_mismatch_allowed(runner):
            print_log('allow_head_mismatch: the checkpoint\'s class->prompt '
                      f'mapping does not fit ({"; ".join(wrong)}); a new one '
                      'is built', logger='current', level=logging.WARNING)
            return
        if wrong:
            raise RuntimeError(
                'The checkpoint\'s class->prompt mapping does not fit this '
                f'run: {"; ".join(wrong)}. Check num_classes of the heads '
                'and num_proxy_prompts of model.backbone (to fine-tune on '
                'another dataset set `allow_head_mismatch = True`).')
        self.objective.load_state_dict(state)

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        if self.objective is not None:
            checkpoint[CHECKPOINT_KEY] = self.objective.state_dict()

    # ------------------------------------------------------------ events
    def before_run(self, runner) -> None:
        self.objective = self.build_objective(segmentor_of(runner))

    def before_train(self, runner) -> None:
        segmentor = segmentor_of(runner)
        seed = self.seed if self.seed is not None else (runner.seed or 0)
        self.seed = seed
        loader = runner.train_dataloader
        if self.mapping_interval is None:
            self.mapping_interval = math.ceil(
                len(loader.dataset) / (loader.batch_size * get_world_size()))
        backbone = segmentor.backbone
        runner.logger.info(format_parameter_report(
            parameter_report(segmentor)))
        runner.logger.info(
            f'DA-VPT: {len(backbone.guided_layers)} guided layer(s) '
            f'{backbone.guided_layers}, {self.objective.num_proxy_prompts} '
            f'proxy prompts, {self.objective.num_classes} classes, mapping '
            f'update every {self.mapping_interval} iterations')
        mapping = self.objective.mapping
        if bool(mapping.initialized):
            runner.logger.info(
                'DA-VPT: class->prompt mapping restored from the checkpoint '
                f'(update {int(mapping.num_updates)}); cluster sizes '
                f'{mapping.cluster_sizes()}')
        else:
            build_initial_mapping(runner, segmentor, self.objective,
                                  self.present, seed, self.init_max_batches,
                                  self.init_dataloader)
        self.attach(segmentor)

    def before_train_iter(self, runner, batch_idx: int,
                          data_batch=None) -> None:
        self._iter = runner.iter

    def after_train_iter(self, runner, batch_idx: int, data_batch=None,
                         outputs=None) -> None:
        check_finite(outputs, runner.iter + 1)
        if not self.mapping_interval or \
                not self.every_n_train_iters(runner, self.mapping_interval):
            return
        mapping = self.objective.mapping
        start = time.perf_counter()
        changed = mapping.update()
        state = 'updated' if changed else 'kept (update rejected)'
        runner.logger.info(
            f'DA-VPT mapping {state} at iter {runner.iter + 1} in '
            f'{time.perf_counter() - start:.3f} s; {mapping.summary()}')

    def after_train(self, runner) -> None:
        self.detach()

    # ------------------------------------------------------ metric losses
    def attach(self, segmentor) -> None:
        """Wire the objective into ``segmentor`` (unwrapped): capture its
        backbone's guided features and add the metric losses to its
        ``mode='loss'`` forwards in training. Builds the objective if
        needed; :meth:`detach` undoes it."""
        if self.objective is None:
            self.objective = self.build_objective(segmentor)
        if self._capture is None:
            self._capture = segmentor.backbone.capture_guided()
            self._signature = inspect.signature(segmentor.forward)
            self._handles = [
                segmentor.register_forward_pre_hook(self._take_classes,
                                                    with_kwargs=True),
                segmentor.register_forward_hook(self._add_metric_losses)]

    def detach(self) -> None:
        """Remove what :meth:`attach` added (the objective stays)."""
        if self._capture is not None:
            self._capture.remove()
            self._capture = None
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._present = self._labels = None

    def target_generator(self, iteration: int) -> torch.Generator:
        """CPU generator of the target draws of ``iteration`` on this rank
        (seeded by seed, iteration and rank: resume-safe)."""
        g = torch.Generator()
        g.manual_seed(((self.seed or 0) * 1_000_003 + iteration * 7919 +
                       get_rank() * 104_729) % (2**63))
        return g

    def _take_classes(self, module, args, kwargs):
        """Forward pre-hook on the segmentor: the classes of this
        ``mode='loss'`` training forward's batch (None for other calls)."""
        call = self._signature.bind(*args, **kwargs)
        call.apply_defaults()
        self._present = self._labels = None
        if call.arguments.get('mode') == 'loss' and module.training:
            samples = call.arguments['data_samples']
            self._present = self.present(samples)
            if self.objective.mapping_feature == 'class_patches':
                self._labels = stack_label_maps(samples, self.ignore_index)
        return None

    def _add_metric_losses(self, module, args, output):
        """Forward hook on the segmentor: extend the ``mode='loss'`` dict
        with the metric losses of this forward's batch."""
        present, self._present = self._present, None
        labels, self._labels = self._labels, None
        guided = self._capture.pop()
        if present is None or guided is None:
            return None
        losses = self.objective(guided, present,
                                self.target_generator(self._iter), labels)
        return {**output, **losses}


def check_finite(outputs: Optional[dict], iteration: int) -> None:
    """Raise ``FloatingPointError`` if a DA-VPT loss in a training step's
    ``outputs`` is NaN or infinite. mmengine's ``RuntimeInfoHook`` has read
    every loss to the host already, so this adds no device sync."""
    for name in ('loss_davpt_token', 'loss_davpt_cls'):
        value = (outputs or {}).get(name)
        if value is not None and not math.isfinite(float(value)):
            raise FloatingPointError(
                f'DA-VPT: {name} is {float(value)} at iteration {iteration}; '
                'stopping (check the learning rate, AMP settings and '
                'metric_loss options)')
