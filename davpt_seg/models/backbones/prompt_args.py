# Copyright (c) davpt-seg contributors. Apache-2.0.
"""Arguments of :class:`PromptedVisionTransformer`: mmseg ViT's arguments
mapped with clear errors, and the checks of the prompt settings."""
import difflib
import inspect
from typing import Dict, List, Optional, Sequence

from mmseg.models.backbones import VisionTransformer

PROMPT_NORMS = ('none', 'l2', 'layer')
#: Arguments of earlier versions that moved out of the backbone.
MOVED_ARGUMENTS = {
    'num_classes': 'the class->prompt mapping is now DAVPTHook\'s; it reads '
    'the class count from model.decode_head.num_classes: delete '
    'model.backbone.num_classes',
    'mapping_cfg': 'the class->prompt mapping is now DAVPTHook\'s: move '
    'model.backbone.mapping_cfg to DAVPTHook(mapping=dict(...))',
}


def vit_arguments(cls: type, args: tuple, kwargs: dict) -> dict:
    """Map ``cls(*args, **kwargs)`` onto mmseg ``VisionTransformer``'s
    arguments (positional ones in mmseg's order), with errors that name
    ``cls`` instead of mmseg's ``VisionTransformer.__init__`` and suggest
    close matches for a misspelt name."""
    names = [n for n in inspect.signature(
        VisionTransformer.__init__).parameters if n != 'self']
    if len(args) > len(names):
        raise TypeError(
            f'{cls.__name__} takes at most {len(names)} positional arguments '
            f"(mmseg VisionTransformer's), got {len(args)}")
    bound = dict(zip(names, args))
    if 'frozen_exclude' in bound:
        raise TypeError(f'{cls.__name__}: pass frozen_exclude by keyword')
    twice = [k for k in kwargs if k in bound]
    if twice:
        raise TypeError(f'{cls.__name__} got multiple values for argument '
                        f'{twice[0]!r}')
    moved = [f'{k}: {MOVED_ARGUMENTS[k]}' for k in kwargs
             if k in MOVED_ARGUMENTS and kwargs[k] is not None]
    if moved:
        raise TypeError(f'{cls.__name__}: ' + '; '.join(moved))
    kwargs = {k: v for k, v in kwargs.items() if k not in MOVED_ARGUMENTS}
    unknown = [k for k in kwargs if k not in names]
    if unknown:
        own = [n for n, p in inspect.signature(cls.__init__).parameters.items()
               if p.kind is p.KEYWORD_ONLY]
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(key, own + names, n=2)
            hints += [f'{key!r} (did you mean '
                      f'{" or ".join(map(repr, close))}?)' if close else
                      repr(key)]
        raise TypeError(f'{cls.__name__} got an unexpected argument'
                        f'{"s" if len(unknown) > 1 else ""} '
                        f'{", ".join(hints)}')
    return {**bound, **kwargs}


def layer_indices(layers: Optional[Sequence[int]],
                  num_layers: int) -> List[int]:
    """0-based ``guided_layers``; negative ones count from the end."""
    given = [int(i) for i in (layers or ())]
    bad = [i for i in given if not -num_layers <= i < num_layers]
    if bad:
        raise ValueError(
            f'guided_layers {bad} are outside the model depth: layers are '
            f'0..{num_layers - 1} (or -{num_layers}..-1 from the end) for '
            f'num_layers={num_layers}')
    layers = [i % num_layers for i in given]
    if len(set(layers)) != len(layers):
        raise ValueError(f'guided_layers lists a layer twice: {given} '
                         f'(0-based: {layers})')
    return layers

def check_prompt_args(num_prompts, num_proxy_prompts, guided_layers,
                      prompt_drop_rate, prompt_norm,
                      num_register_tokens=0) -> None:
    """Raise ``ValueError`` on a bad prompt setting of the backbone."""
    if isinstance(num_register_tokens, bool) or not isinstance(
            num_register_tokens, int) or num_register_tokens < 0:
        raise ValueError('num_register_tokens must be an int >= 0, got '
                         f'{num_register_tokens!r}')
    if not isinstance(num_prompts, int) or num_prompts < 0:
        raise ValueError(
            f'num_prompts must be an int >= 0, got {num_prompts!r}')
    if not isinstance(num_proxy_prompts, int) or num_proxy_prompts < 0:
        raise ValueError('num_proxy_prompts must be an int >= 0, got '
                         f'{num_proxy_prompts!r}')
    if guided_layers and num_proxy_prompts == 0:
        raise ValueError('guided_layers need num_proxy_prompts >= 1')
    if not 0 <= prompt_drop_rate < 1:
        raise ValueError(
            f'prompt_drop_rate must be in [0, 1), got {prompt_drop_rate}')
    if prompt_norm not in PROMPT_NORMS:
        raise ValueError(f'prompt_norm must be one of {PROMPT_NORMS}, '
                         f'got {prompt_norm!r}')


def check_gradient_paths(prompt_kinds: Dict[int, str],
                         out_indices: Sequence[int], num_prompts: int) -> None:
    """Unguided prompts of a layer after the last ``out_indices`` layer reach
    no output, so they would silently never train (and DDP with
    ``find_unused_parameters=False`` fails when that is all of them): a
    ``ValueError``. Guided layers are exempt: ``DAVPTHook``'s metric losses
    train them.

    Args:
        prompt_kinds (dict[int, str]): layer -> 'proxy' | 'plain'.
    """
    last_out = max(out_indices)
    dead = [i for i, kind in sorted(prompt_kinds.items())
            if kind == 'plain' and i > last_out]
    if dead:
        raise ValueError(
            f'The prompts of layers {dead} (num_prompts={num_prompts}) come '
            f'after the last output layer (out_indices={list(out_indices)}) '
            'and are not guided: they can never get a gradient. Add a later '
            'layer to out_indices, or set num_prompts=0.')
