# Copyright (c) davpt-seg contributors. All rights reserved.
"""Class -> prompt mapping of DA-VPT (§4 of the algorithm reference)."""
import logging

import torch
import torch.nn as nn
from mmengine import dist
from mmengine.logging import print_log
from torch import Tensor

from .kmeans import INITS as _KMEANS_INITS
from .kmeans import cosine_kmeans

_UNSEEN_MODES = ('random', 'keep')
_KMEANS_NORMS = ('layer', 'none')


class ClassPromptMapping(nn.Module):
    """Distribution-aware mapping from semantic classes to guided prompts.

    Every class is mapped to one of ``num_proxy_prompts`` proxy prompts by
    clustering the per-class mean of a feature (the final [CLS] of the
    images containing the class, or its pooled patch tokens) with cosine
    k-means (:func:`cosine_kmeans`); the cluster id is the prompt id.

    The module has no parameters. All of its state lives in persistent
    buffers (training-only state: ``DAVPTHook`` saves them under the
    checkpoint key ``'davpt'``, so a resumed run continues exactly):

    - ``mapping`` (num_classes, ), long: prompt id of every class. It starts
      as ``arange(num_classes) % num_proxy_prompts`` but is only meaningful
      once ``initialized`` is True.
    - ``centroids`` (num_proxy_prompts, embed_dims), float32: k-means
      centroids (layer-normalised space), used to warm-start the next update.
    - ``has_centroids`` (), bool: whether ``centroids`` holds a valid
      solution (otherwise the next k-means starts cold).
    - ``initialized`` (), bool: whether ``mapping`` has been set by k-means.
    - ``num_updates`` (), long: number of :meth:`update` calls so far. It
      also seeds the update's random generator (``seed + num_updates``), so
      updates are deterministic and resume-safe without storing RNG state.
    - ``feat_sum`` (num_classes, embed_dims), float32 and ``feat_count``
      (num_classes, ), float32: statistics accumulated since the last update.

    Distributed training: :meth:`accumulate` and :meth:`update` are
    collectives and must be called by every rank. :meth:`accumulate`
    all-reduces the batch contribution (one all-reduce of
    ``num_classes x (embed_dims + 1)`` floats per call) before adding it, and
    :meth:`update` runs k-means on rank 0 and broadcasts the result. Hence all
    buffers are identical on every rank at all times, which makes DDP buffer
    broadcasting harmless and checkpoints/resume exact for any world size.

    Args:
        num_classes (int): Number of semantic classes (ignore index excluded).
        num_proxy_prompts (int): Number of guided prompts = number of clusters.
            Must satisfy ``2 <= num_proxy_prompts <= num_classes``.
        embed_dims (int): Channels of the [CLS] feature.
        kmeans_norm (str): Row normalisation before k-means, ``'layer'``
            (reference) or ``'none'``. Defaults to 'layer'.
        max_iter (int): Maximum number of k-means iterations. Defaults to 20.
        tol (float): k-means convergence threshold on the summed centroid
            shift. Defaults to 1e-4.
        unseen (str): What happens to a class without samples since the last
            update: ``'random'`` assigns a uniformly random prompt (reference
            behaviour), ``'keep'`` keeps its current prompt.
            Defaults to 'random'.
        seed (int): Base seed of the update's random generator. Defaults to 0.
        init (str): Seeding of a cold-start k-means (the initial mapping, or
            the update after a rejected one): ``'random'`` draws
            ``num_proxy_prompts`` random class means (reference behaviour),
            ``'k-means++'`` uses spherical k-means++ seeding. Warm-started
            updates ignore it. Defaults to 'random'.
        n_init (int): Number of cold-start k-means runs; the one with the
            lowest within-cluster cosine distortion is kept. Warm-started
            updates ignore it (they run once from the previous centroids).
            Defaults to 1 (reference behaviour).
    """

    def __init__(self,
                 num_classes: int,
                 num_proxy_prompts: int,
                 embed_dims: int,
                 kmeans_norm: str = 'layer',
                 max_iter: int = 20,
                 tol: float = 1e-4,
                 unseen: str = 'random',
                 seed: int = 0,
                 init: str = 'random',
                 n_init: int = 1) -> None:
        super().__init__()
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(
                f'`num_classes` must be an integer >= 1, got {num_classes!r}.')
        if not isinstance(num_proxy_prompts, int) or \
                not 2 <= num_proxy_prompts <= num_classes:
            raise ValueError(
                f'num_proxy_prompts ({num_proxy_prompts!r}) must be between 2 '
                f'and num_classes ({num_classes}) for DA-VPT: each '
                'class-assigned prompt is a k-means cluster of classes, so '
                'there must be at least 2 of them and at least as many '
                'classes as prompts.')
        if not isinstance(embed_dims, int) or embed_dims < 1:
            raise ValueError(
                f'`embed_dims` must be an integer >= 1, got {embed_dims!r}.')
        if kmeans_norm not in _KMEANS_NORMS:
            raise ValueError(f'`kmeans_norm` must be one of {_KMEANS_NORMS}, '
                             f'got {kmeans_norm!r}.')
        if not isinstance(max_iter, int) or max_iter < 1:
            raise ValueError(
                f'`max_iter` must be an integer >= 1, got {max_iter!r}.')
        if tol < 0:
            raise ValueError(f'`tol` must be >= 0, got {tol!r}.')
        if unseen not in _UNSEEN_MODES:
            raise ValueError(f'`unseen` must be one of {_UNSEEN_MODES}, got '
                             f'{unseen!r}.')
        if not isinstance(seed, int):
            raise ValueError(f'`seed` must be an integer, got {seed!r}.')
        if init not in _KMEANS_INITS:
            raise ValueError(f'`init` must be one of {_KMEANS_INITS}, got '
                             f'{init!r}.')
        if (isinstance(n_init, bool) or not isinstance(n_init, int)
                or n_init < 1):
            raise ValueError(
                f'`n_init` must be an integer >= 1, got {n_init!r}.')

        self.num_classes = num_classes
        self.num_proxy_prompts = num_proxy_prompts
        self.embed_dims = embed_dims
        self.kmeans_norm = kmeans_norm
        self.max_iter = max_iter
        self.tol = tol
        self.unseen = unseen
        self.seed = seed
        self.init = init
        self.n_init = n_init

        self.register_buffer('mapping',
                             torch.arange(num_classes) % num_proxy_prompts)
        self.register_buffer('centroids',
                             torch.zeros(num_proxy_prompts, embed_dims))
        self.register_buffer('has_centroids', torch.tensor(False))
        self.register_buffer('initialized', torch.tensor(False))
        self.register_buffer('num_updates', torch.tensor(0, dtype=torch.long))
        self.register_buffer('feat_sum', torch.zeros(num_classes, embed_dims))
        self.register_buffer('feat_count', torch.zeros(num_classes))

    @torch.no_grad()
    def accumulate(self, feats: Tensor, present: Tensor) -> None:
        """Add a batch of image features to the per-class statistics.

        Each image's feature is added to the sum of **every** class present
        in it (or, with per-class features, each present class's own
        feature), and the count of each of those classes grows by one. In a
        distributed run the batch contribution is summed over all ranks first,
        so every rank must call this method (it is a collective).

        Args:
            feats (Tensor): Image features (the final [CLS] token), shape
                (B, embed_dims), or per-image class features (the pooled
                patch tokens), shape (B, num_classes, embed_dims). Detached
                internally.
            present (Tensor): Boolean mask of the classes present in each
                image, shape (B, num_classes).
        """
        shapes = ((feats.size(0), self.embed_dims),
                  (feats.size(0), self.num_classes, self.embed_dims))
        if tuple(feats.shape) not in shapes:
            raise ValueError(
                f'`feats` must have shape (B, {self.embed_dims}) or (B, '
                f'{self.num_classes}, {self.embed_dims}), got '
                f'{tuple(feats.shape)}.')
        if present.dtype != torch.bool:
            raise ValueError(
                f'`present` must be a bool tensor, got {present.dtype}.')
        if tuple(present.shape) != (feats.size(0), self.num_classes):
            raise ValueError(
                f'`present` must have shape ({feats.size(0)}, '
                f'{self.num_classes}), got {tuple(present.shape)}.')

        device = self.feat_sum.device
        feats = feats.detach().to(device=device, dtype=torch.float32)
        present = present.to(device=device, dtype=torch.float32)
        per_class = feats.dim() == 3
        if dist.get_world_size() == 1:  # no temporaries, no collective
            if per_class:
                self.feat_sum += torch.einsum('bk,bkc->kc', present, feats)
            else:
                self.feat_sum.addmm_(present.t(), feats)
            self.feat_count += present.sum(dim=0)
            return
        # (num_classes, C + 1): per-class feature sums and counts, packed so
        # that a single all-reduce synchronises both.
        sums = torch.einsum('bk,bkc->kc', present, feats) if per_class \
            else present.t() @ feats
        contribution = torch.cat(
            [sums, present.sum(dim=0, keepdim=True).t()], dim=1)
        dist.all_reduce(contribution, op='sum')
        self.feat_sum += contribution[:, :-1]
        self.feat_count += contribution[:, -1]

    @torch.no_grad()
    def update(self) -> bool:
        """Re-cluster the classes from the accumulated statistics.

        The class means of the classes seen since the last update are
        clustered with cosine k-means, warm-started from ``centroids`` when
        ``has_centroids`` is set. Classes without samples are handled as
        configured by ``unseen``. The new mapping is rejected (the old one is
        kept) when

        - fewer than ``num_proxy_prompts`` classes were seen and k-means has to
          start cold (or no class was seen at all), or
        - it uses fewer than 2 distinct prompts; ``has_centroids`` is then
          cleared so that the next k-means starts cold.

        Whatever the outcome, ``num_updates`` is incremented and the
        statistics are reset. In a distributed run k-means runs on rank 0 and
        the result is broadcast, so every rank must call this method and all
        ranks return the same value.

        Returns:
            bool: True iff the mapping was (re)set.
        """
        rank = dist.get_rank()
        if rank == 0:
            success = self._update_mapping()
        else:
            success = False

        if dist.get_world_size() > 1:
            # Two broadcasts: one float (centroids), one long (mapping, flags).
            state = torch.cat([
                self.mapping,
                torch.stack([
                    self.has_centroids.long(),
                    self.initialized.long(),
                    torch.tensor(int(success), device=self.mapping.device),
                ])
            ])
            dist.broadcast(self.centroids, src=0)
            dist.broadcast(state, src=0)
            self.mapping.copy_(state[:self.num_classes])
            self.has_centroids.fill_(bool(state[-3]))
            self.initialized.fill_(bool(state[-2]))
            success = bool(state[-1])

        self.num_updates += 1
        self.feat_sum.zero_()
        self.feat_count.zero_()
        return success

    def _update_mapping(self) -> bool:
        """Run k-means on the local statistics and set the buffers.

        Returns:
            bool: True iff the mapping was (re)set.
        """
        generator = torch.Generator(device='cpu')
        generator.manual_seed(self.seed + int(self.num_updates))

        seen = self.feat_count > 0
        num_seen = int(seen.sum())
        warm_start = bool(self.has_centroids)
        if num_seen == 0 or (not warm_start
                             and num_seen < self.num_proxy_prompts):
            print_log(
                f'ClassPromptMapping: only {num_seen} of {self.num_classes} '
                f'classes have samples, {self.num_proxy_prompts} are needed '
                'for a cold-start k-means; the mapping is left unchanged.',
                logger='current',
                level=logging.WARNING)
            return False

        class_means = self.feat_sum[seen] / self.feat_count[seen, None]
        centroids, assignment = cosine_kmeans(
            class_means,
            self.num_proxy_prompts,
            init_centroids=self.centroids if warm_start else None,
            norm=self.kmeans_norm,
            max_iter=self.max_iter,
            tol=self.tol,
            generator=generator,
            init=self.init,
            n_init=self.n_init)

        mapping = self.mapping.clone()
        mapping[seen] = assignment
        num_unseen = self.num_classes - num_seen
        if num_unseen > 0 and self.unseen == 'random':
            mapping[~seen] = torch.randint(self.num_proxy_prompts,
                                           (num_unseen, ),
                                           generator=generator).to(
                                               mapping.device)

        if mapping.unique().numel() < 2:
            print_log(
                'ClassPromptMapping: k-means mapped every class to a single '
                'prompt; the mapping is left unchanged and the next k-means '
                'starts cold.',
                logger='current',
                level=logging.WARNING)
            self.centroids.zero_()
            self.has_centroids.fill_(False)
            return False

        self.mapping.copy_(mapping)
        self.centroids.copy_(centroids)
        self.has_centroids.fill_(True)
        self.initialized.fill_(True)
        print_log(
            f'ClassPromptMapping: update {int(self.num_updates)} '
            f'({"warm" if warm_start else "cold"} start, {num_seen}/'
            f'{self.num_classes} classes seen), classes per prompt: '
            f'{self.cluster_sizes()}.',
            logger='current')
        return True

    def map_classes(self, class_ids: Tensor) -> Tensor:
        """Map class ids to prompt ids.

        Args:
            class_ids (Tensor): Class id per image, shape (B, ), integer
                dtype, values in ``[-1, num_classes)``; -1 means "no target".

        Returns:
            Tensor: Prompt id per image, shape (B, ), dtype long, on the
            device of ``class_ids``; -1 where ``class_ids`` is -1.
        """
        if (class_ids.dtype == torch.bool or class_ids.is_floating_point()
                or class_ids.is_complex()):
            raise ValueError('`class_ids` must be an integer tensor, got '
                             f'{class_ids.dtype}.')
        class_ids = class_ids.long()
        if class_ids.numel() > 0 and (class_ids.min() < -1
                                      or class_ids.max() >= self.num_classes):
            raise ValueError(
                f'`class_ids` must lie in [-1, {self.num_classes}), got '
                f'values in [{int(class_ids.min())}, '
                f'{int(class_ids.max())}].')
        return self.lookup(class_ids)

    def lookup(self, class_ids: Tensor) -> Tensor:
        """:meth:`map_classes` without its checks (no host sync): for ids
        known to lie in ``[-1, num_classes)``.

        Args:
            class_ids (Tensor): (B, ) long class ids, -1 = no target.

        Returns:
            Tensor: (B, ) long prompt ids, -1 where ``class_ids`` is -1.
        """
        mapping = self.mapping.to(class_ids.device)
        prompt_ids = mapping[class_ids.clamp(min=0)]
        return torch.where(class_ids >= 0, prompt_ids,
                           torch.full_like(prompt_ids, -1))

    def cluster_sizes(self) -> list:
        """Number of classes mapped to each prompt.

        Returns:
            list[int]: Length ``num_proxy_prompts``.
        """
        return torch.bincount(self.mapping,
                              minlength=self.num_proxy_prompts).tolist()

    def prompt_classes(self) -> list:
        """Classes mapped to each prompt (only meaningful once
        ``initialized``; before that ``mapping`` is the placeholder
        ``arange(num_classes) % num_proxy_prompts``).

        Returns:
            list[list[int]]: Length ``num_proxy_prompts``; entry ``k`` lists
            the class ids mapped to prompt ``k`` in increasing order.
        """
        mapping = self.mapping.tolist()
        return [[c for c, k in enumerate(mapping) if k == p]
                for p in range(self.num_proxy_prompts)]

    def centroid_similarity(self):
        """Cosine similarity of the k-means centroids.

        Returns:
            Tensor | None: (num_proxy_prompts, num_proxy_prompts) float32 on
            CPU, or None while ``has_centroids`` is False (no valid k-means
            solution is stored).
        """
        if not bool(self.has_centroids):
            return None
        c = torch.nn.functional.normalize(
            self.centroids.detach().float().cpu(), dim=1)
        return c @ c.t()

    def summary(self) -> str:
        """One log line: cluster sizes and the mean / max cosine between
        distinct centroids, e.g. ``cluster sizes [2, 1, 1]; centroid cosine
        mean 0.412 max 0.903`` (``n/a`` without centroids)."""
        sim = self.centroid_similarity()
        cos = 'n/a'
        if sim is not None and self.num_proxy_prompts > 1:
            off = sim[~torch.eye(len(sim), dtype=torch.bool)]
            cos = f'mean {off.mean():.3f} max {off.max():.3f}'
        return f'cluster sizes {self.cluster_sizes()}; centroid cosine {cos}'

    def extra_repr(self) -> str:
        return (f'num_classes={self.num_classes}, '
                f'num_proxy_prompts={self.num_proxy_prompts}, '
                f'embed_dims={self.embed_dims}, '
                f'kmeans_norm={self.kmeans_norm!r}, '
                f'max_iter={self.max_iter}, tol={self.tol}, '
                f'unseen={self.unseen!r}, seed={self.seed}, '
                f'init={self.init!r}, n_init={self.n_init}')
