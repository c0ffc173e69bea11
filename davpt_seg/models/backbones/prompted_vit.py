# Copyright (c) davpt-seg contributors. Apache-2.0.
"""VPT-Deep prompted Vision Transformer, a drop-in for mmseg's ViT.

Sequence layout of layer ``l`` (``with_cls_token=True``)::

    [CLS (1) | prompts of layer l (P_l) | image tokens (N)]: B x (1+P_l+N) x C

With ``num_register_tokens=R`` (DINOv2 with registers) R frozen pretrained
register tokens follow [CLS] in every layer (``lead = 1 + R`` tokens before
the image tokens, no position embedding); they are never output.

Every layer gets fresh learnable prompts; their outputs are dropped after the
layer. ``guided_layers`` hold ``num_proxy_prompts`` class-assigned prompts
(the proxies of the DA-VPT metric losses), every other layer holds
``num_prompts`` unassigned prompts. See ``davpt-algorithm.md`` §2, §5.2-5.4.

Since prompt outputs are dropped, the forward gives prompts no query, output
projection or FFN (see :func:`prompted_block`).
"""
from functools import partial
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint as cp
from mmseg.models.backbones import VisionTransformer
from mmseg.registry import MODELS

from davpt_seg.weights import pretrained as pretrained_weights
from davpt_seg.weights import prompt_only
from .capture_mixin import CaptureMixin
from .guided_capture import GuidedFeatures, GuidedOutput
from .prompt_args import (check_gradient_paths, check_prompt_args,
                          layer_indices, vit_arguments)
from .prompted_block import prompted_block

#: State-dict key prefixes of what this class adds to mmseg's ViT: prompts,
#: prompt norm, K/V bias offsets and prompt gates.
PROMPT_STATE_PREFIXES = ('prompt_tokens', 'proxy_prompt_tokens',
                         'prompt_norm.', 'kv_bias_delta', 'prompt_gate')
#: Where earlier versions kept the class->prompt mapping (now DAVPTHook's).
LEGACY_MAPPING_PREFIX = 'class_mapping.'


@MODELS.register_module()
class PromptedVisionTransformer(CaptureMixin, VisionTransformer):
    """Frozen ViT with VPT-Deep prompts for DA-VPT / DA-VPT+ / VPT.

    Accepts every argument of :class:`mmseg.models.backbones.VisionTransformer`
    and returns the same outputs from the same weights (identical
    ``state_dict`` keys for all pretrained weights). With ``num_prompts=0``
    and no ``guided_layers`` its features equal mmseg's ViT exactly.

    The backbone is frozen by construction: only the prompts (and the
    ``prompt_norm`` LayerNorm, the K/V bias offsets with ``tune_kv_bias``,
    and names matched by ``frozen_exclude``) require gradients. Freezing
    happens in ``__init__`` so it holds before the runner wraps the model in
    DDP, and survives ``init_weights()`` and checkpoint loading.

    Args:
        num_prompts (int): prompts per unguided layer (P_o). Default: 20.
        num_proxy_prompts (int): class-assigned prompts per guided layer (K),
            also the number of k-means clusters of ``DAVPTHook``'s mapping.
            Default: 10.
        guided_layers (Sequence[int]): layers holding the class-assigned
            prompts, 0-based; negative indices count from the end (-1 is
            the last layer, the paper's best). Stored normalised to 0-based
            indices. Default: (-1,).
        tune_kv_bias (bool): DA-VPT+: also train the attention key and value
            biases of every layer, as a zero-initialised offset
            ``kv_bias_delta`` [L, 2, C] of mmcv's packed ``in_proj_bias``
            (``docs/method.md``). Default: False.
        gated_prompts (bool): give the prompts their own softmax, scaled by
            ``tanh`` of a zero-initialised learnable gate ``prompt_gate``
            [L, heads] and added to the tokens' attention: at
            initialisation the backbone equals the frozen one
            (``docs/prompt_gate.md``). Default: False.
        prompt_drop_rate (float): dropout on the inserted prompts. The loss
            proxies are taken before dropout. Default: 0.
        prompt_norm (str): 'none' | 'l2' | 'layer', applied to the prompts
            before insertion and to the loss proxies. Default: 'none'.
        frozen_exclude (list[str]): substrings of extra backbone parameter
            names to keep trainable (e.g. ``['cls_token']``). mmseg's default
            ``['all']`` means nothing extra here. Default: ['all'].
        num_register_tokens (int): R frozen pretrained register tokens
            (DINOv2 with registers: ``register_tokens`` [1, R, C]) after
            [CLS], without position embedding, never output. 0 adds no
            parameter (same keys as mmseg's ViT). Default: 0.
        *args, **kwargs: every argument of mmseg's ``VisionTransformer``,
            positional ones in its order (``img_size``, ``patch_size``, ...);
            the arguments above are keyword-only.
    """
    def __init__(self,
                 *args,
                 num_prompts: int = 20,
                 num_proxy_prompts: int = 10,
                 guided_layers: Sequence[int] = (-1, ),
                 tune_kv_bias: bool = False,
                 gated_prompts: bool = False,
                 prompt_drop_rate: float = 0.,
                 prompt_norm: str = 'none',
                 frozen_exclude: Sequence[str] = ('all', ),
                 num_register_tokens: int = 0,
                 **kwargs):
        super().__init__(
            frozen_exclude=['all'], **vit_arguments(type(self), args, kwargs))
        num_layers = len(self.layers)
        embed_dims = self.cls_token.shape[-1]
        guided_layers = layer_indices(guided_layers, num_layers)
        check_prompt_args(num_prompts, num_proxy_prompts, guided_layers,
                          prompt_drop_rate, prompt_norm, num_register_tokens)
        self.embed_dims = embed_dims
        self.num_heads = self.layers[0].attn.attn.num_heads
        self.num_prompts = num_prompts
        self.num_proxy_prompts = num_proxy_prompts
        self.guided_layers = guided_layers
        self.tune_kv_bias = tune_kv_bias
        self.frozen_exclude = [n for n in frozen_exclude if n != 'all']
        self.num_register_tokens = num_register_tokens
        # Frozen like every pretrained weight (see _is_trainable); None for
        # R = 0 so that the state-dict keys stay mmseg's.
        self.register_tokens = nn.Parameter(
            torch.zeros(1, num_register_tokens, embed_dims)) \
            if num_register_tokens else None

        unguided = [i for i in range(num_layers) if i not in guided_layers]
        # layer index -> ('proxy' | 'plain', row in the stacked tensor)
        self._prompt_slot = {i: ('proxy', r)
                             for r, i in enumerate(guided_layers)}
        self._prompt_slot.update(
            {i: ('plain', r) for r, i in enumerate(unguided)})
        self.prompt_tokens = self._new_prompts(len(unguided), num_prompts)
        self.proxy_prompt_tokens = self._new_prompts(
            len(guided_layers), num_proxy_prompts)
        self.prompt_norm_type = prompt_norm
        self.prompt_norm = nn.LayerNorm(embed_dims) \
            if prompt_norm == 'layer' else None
        self.prompt_dropout = nn.Dropout(prompt_drop_rate)
        self.kv_bias_delta = nn.Parameter(
            torch.zeros(num_layers, 2, embed_dims)) if tune_kv_bias else None
        self.prompt_gate = nn.Parameter(torch.zeros(
            num_layers, self.num_heads)) if gated_prompts else None

        self.init_prompts()
        self._freeze_pretrained()
        if self.prompt_tokens is not None:
            check_gradient_paths(self.prompt_kinds, self.out_indices,
                                 num_prompts)

    # ------------------------------------------------------------------ setup
    def _new_prompts(self, depth: int, length: int) -> Optional[nn.Parameter]:
        if depth == 0 or length == 0:
            return None
        return nn.Parameter(torch.zeros(depth, length, self.embed_dims))

    @torch.no_grad()
    def init_prompts(self):
        """Reference init: ``xavier_uniform_`` on the stacked [depth, len, C]
        tensor, divided by 8 (the bound depends on the tensor shape)."""
        for p in (self.prompt_tokens, self.proxy_prompt_tokens):
            if p is not None:
                nn.init.xavier_uniform_(p)
                p.div_(8)

    def _is_trainable(self, name: str) -> bool:
        if name.startswith(PROMPT_STATE_PREFIXES):
            return True
        return any(key in name for key in self.frozen_exclude)

    def _freeze_pretrained(self):
        for name, param in self.named_parameters():
            param.requires_grad_(self._is_trainable(name))

    def _freeze(self):
        # mmseg's VisionTransformer calls this in its __init__; our freezing
        # runs at the end of ours (`_freeze_pretrained`), once prompts exist.
        pass

    def own_state_keys(self) -> List[str]:
        """State-dict keys this class adds to mmseg's ``VisionTransformer``
        (those under :data:`PROMPT_STATE_PREFIXES`)."""
        return [k for k in self.state_dict()
                if k.startswith(PROMPT_STATE_PREFIXES)]

    # --------------------------------------------------------------- weights
    #: File the frozen weights were loaded from (see ``pretrained_source``).
    _pretrained_source: Optional[str] = None

    @property
    def pretrained_source(self) -> Optional[str]:
        """Where the pretrained weights in use come from (the ``source`` of
        the last :meth:`load_pretrained`), None if never loaded."""
        return self._pretrained_source

    @property
    def pretrained_file(self) -> Optional[pretrained_weights.PretrainedFile]:
        """``init_cfg``'s pretrained file ``(path, prefix)``, or None."""
        return pretrained_weights.pretrained_file(self.init_cfg)

    def init_weights(self):
        """Load ``init_cfg``'s pretrained file, else initialise the
        pretrained-weight slots randomly (mmseg's jax_impl; prompts were
        initialised in ``__init__`` and are left alone)."""
        if self.pretrained_file is not None:
            pretrained_weights.load_pretrained_file(self, self.pretrained_file)
            return
        super().init_weights()
        if self.register_tokens is not None:
            nn.init.trunc_normal_(self.register_tokens, std=.02)

    def load_pretrained(self, state_dict: Dict[str, torch.Tensor],
                        source: str = '<state_dict>',
                        prefix: Optional[str] = None):
        """Load mmseg-format ViT weights, strictly, and record ``source``
        (:attr:`pretrained_source`). See
        :func:`davpt_seg.weights.pretrained.load_pretrained`.

        Raises:
            PretrainedMismatchError: The weights do not fit this backbone.
        """
        pretrained_weights.load_pretrained(self, state_dict, source, prefix)
        self._pretrained_source = source

    def frozen_state_keys(self) -> List[str]:
        """State-dict keys of the frozen pretrained weights (parameters with
        ``requires_grad=False``): what a prompt-only checkpoint drops."""
        return [n for n, p in self.named_parameters() if not p.requires_grad]

    def _load_from_state_dict(self, state_dict, prefix, local_metadata,
                              strict, missing_keys, unexpected_keys,
                              error_msgs):
        """Check this backbone's own keys and complete a prompt-only state
        dict with the pretrained weights before every load (see
        :func:`davpt_seg.weights.prompt_only.prepare_backbone_state`). The
        mapping keys of earlier versions' checkpoints are dropped: the
        mapping is ``DAVPTHook``'s training state now (migrated there)."""
        for k in [k for k in state_dict
                  if k.startswith(prefix + LEGACY_MAPPING_PREFIX)]:
            del state_dict[k]
        prompt_only.prepare_backbone_state(self, state_dict, prefix,
                                           local_metadata,
                                           PROMPT_STATE_PREFIXES)
        super()._load_from_state_dict(state_dict, prefix, local_metadata,
                                      strict, missing_keys, unexpected_keys,
                                      error_msgs)

    # --------------------------------------------------------------- forward
    @property
    def prompt_kinds(self) -> Dict[int, str]:
        """Layer index -> ``'proxy'`` (guided layer, class-assigned prompts)
        or ``'plain'`` (unguided prompts), for every layer."""
        return {i: kind for i, (kind, _) in self._prompt_slot.items()}

    def layer_prompts(self, i: int) -> Optional[torch.Tensor]:
        """[P_i, C] prompts of layer ``i`` after ``prompt_norm``, or None
        when the layer has none."""
        kind, row = self._prompt_slot[i]
        tokens = self.proxy_prompt_tokens if kind == 'proxy' \
            else self.prompt_tokens
        if tokens is None:
            return None
        p = tokens[row]
        if self.prompt_norm_type == 'l2':
            p = F.normalize(p, dim=-1)
        elif self.prompt_norm_type == 'layer':
            p = self.prompt_norm(p)
        return p

    def _run_layer(self, i: int, x: torch.Tensor, num_lead: int,
                   prompted: bool, collect: bool
                   ) -> Tuple[torch.Tensor, Optional[GuidedFeatures]]:
        """Layer ``i`` with its prompts (if ``prompted``), gradient
        checkpointing (``with_cp``) and the final norm after the last layer.

        Returns:
            (Tensor [B, S, C], GuidedFeatures or None): the features are
            returned for a guided layer when ``collect`` is set.
        """
        prompts = self.layer_prompts(i) if prompted else None
        tokens = None if prompts is None else self.prompt_dropout(
            prompts.expand(x.shape[0], -1, -1))
        want = collect and self._prompt_slot[i][0] == 'proxy'
        kv_bias = None if self.kv_bias_delta is None else \
            self.kv_bias_delta[i]
        record = None if self._attn_capture is None else partial(
            self._attn_capture.record, i)  # eval-only analysis
        gate = None if self.prompt_gate is None else self.prompt_gate[i]
        args = (self.layers[i], x, tokens, num_lead, self.num_heads, kv_bias,
                want, self.training, record, gate)
        if self.with_cp and (x.requires_grad or (
                tokens is not None and tokens.requires_grad)):
            x, feats = cp.checkpoint(prompted_block, *args,
                                     use_reentrant=False)
        else:
            x, feats = prompted_block(*args)
        if i == len(self.layers) - 1 and self.final_norm:
            x = self.norm1(x)
        return x, None if feats is None else GuidedFeatures(prompts, *feats)

    def _to_map(self, x: torch.Tensor, hw_shape, num_skip: int):
        out = x[:, num_skip:]
        B, _, C = out.shape
        out = out.reshape(B, hw_shape[0], hw_shape[1],
                          C).permute(0, 3, 1, 2).contiguous()
        if self.output_cls_token:
            out = [out, x[:, 0]]
        return out

    def embed_tokens(self, inputs: torch.Tensor, with_cls: bool):
        """Tokens entering the first layer: [B, lead + N, C] =
        ([CLS] if ``with_cls``, registers, image tokens), the patch grid and
        ``lead``, the number of tokens before the image tokens.

        Position embeddings are added to [CLS] and the image tokens before
        the registers are inserted (DINOv2 / timm); ``pre_norm`` follows.
        """
        B = inputs.shape[0]
        x, hw_shape = self.patch_embed(inputs)
        x = torch.cat((self.cls_token.expand(B, -1, -1), x), dim=1)
        x = self._pos_embeding(x, hw_shape, self.pos_embed)
        if not with_cls:
            x = x[:, 1:]
        if self.register_tokens is not None:
            n = 1 if with_cls else 0
            x = torch.cat((x[:, :n], self.register_tokens.expand(B, -1, -1),
                           x[:, n:]), dim=1)
        if self.pre_norm:
            x = self.pre_ln(x)
        return x, hw_shape, int(with_cls) + self.num_register_tokens

    def forward(self, inputs: torch.Tensor):
        """
        Args:
            inputs (Tensor): [B, 3, H, W] images.
        Returns:
            tuple[Tensor]: [B, C, H/p, W/p] per ``out_indices`` (or
            ``[map, cls [B, C]]`` with ``output_cls_token``), as mmseg's ViT.
            A training forward also records a :class:`GuidedOutput` in the
            attached :meth:`capture_guided`, if any.
        """
        x, hw_shape, lead = self.embed_tokens(inputs, self.with_cls_token)
        collect = self.training and self._guided_capture is not None
        guided, outs, patches = {}, [], None
        if self.out_origin:
            outs.append(self._to_map(x, hw_shape, lead))
        for i in range(len(self.layers)):
            # x holds [lead | image] tokens only (prompts are dropped
            # inside each block)
            x, feats = self._run_layer(i, x, lead, True, collect)
            if feats is not None:
                guided[i] = feats
                patches = self._patch_grid(x.detach(), hw_shape, lead)
            if i in self.out_indices:
                outs.append(self._to_map(x, hw_shape, lead))
        if collect:
            self._guided_capture.record(
                GuidedOutput(guided, x[:, 0], patches))
        return tuple(outs)

    @staticmethod
    def _patch_grid(x: torch.Tensor, hw_shape, lead: int) -> torch.Tensor:
        """[B, h, w, C] image tokens of [B, lead + h * w, C] tokens."""
        return x[:, lead:].reshape(x.shape[0], *hw_shape, x.shape[-1])

    def _frozen_tokens(self, inputs: torch.Tensor, with_cls: bool,
                       last_layer: int):
        """Tokens [B, lead + N, C] after layer ``last_layer`` of the
        prompt-free frozen ViT, the patch grid and ``lead``."""
        x, hw_shape, lead = self.embed_tokens(inputs, with_cls)
        for i in range(last_layer + 1):
            x, _ = self._run_layer(i, x, lead, False, False)
        return x, hw_shape, lead

    @torch.no_grad()
    def forward_frozen_patches(self, inputs: torch.Tensor,
                               layer: int) -> torch.Tensor:
        """[B, h, w, C] output image tokens of ``layer`` of the prompt-free
        frozen ViT (the features of an initial ``'class_patches'``
        mapping)."""
        return self._patch_grid(
            *self._frozen_tokens(inputs, self.with_cls_token, layer))

    @torch.no_grad()
    def forward_cls(self, inputs: torch.Tensor) -> torch.Tensor:
        """[B, C] final [CLS] of the prompt-free frozen ViT (the features of
        the initial class->prompt mapping)."""
        if not self.with_cls_token:
            raise RuntimeError('forward_cls needs with_cls_token=True')
        x, _, _ = self._frozen_tokens(inputs, True, len(self.layers) - 1)
        return x[:, 0]

    def train(self, mode: bool = True):
        # mmseg's ViT.train() returns None; keep nn.Module's contract.
        super().train(mode)
        return self
