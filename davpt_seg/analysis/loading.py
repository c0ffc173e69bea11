# Copyright (c) davpt-seg contributors. Apache-2.0.
"""Model, image, annotation and mapping loading for the prompt-analysis
tools (``tools/visualize_prompts.py``, ``tools/visualize_mapping.py``,
``tools/prompt_attention_metric.py``)."""
import copy
import inspect
import warnings
from typing import List, Optional, Sequence

import numpy as np
import torch
from mmcv.transforms import Compose
from mmengine.dataset import pseudo_collate
from mmseg.apis import init_model
from mmseg.datasets.transforms import LoadAnnotations
from mmseg.registry import DATASETS, TRANSFORMS

from davpt_seg.models.backbones import PromptedVisionTransformer
from davpt_seg.models.davpt import ClassPromptMapping, objective_state
from davpt_seg.weights import load_training_checkpoint


def load_model(config, checkpoint: str, device: str = 'cpu',
               cfg_options: Optional[dict] = None):
    """``mmseg.apis.init_model`` (full or prompt-only checkpoint; the latter
    restores its frozen weights from the pretrained file it records, see
    README "Prompt-only checkpoints"), in eval mode.

    Where the checkpoint stores no ``dataset_meta``, the classes and palette
    come from the config's test dataset instead of mmseg's guess by class
    count. Raises ``TypeError`` unless the backbone is a
    :class:`PromptedVisionTransformer`. A ``Config`` passed in is left as
    it is (``init_model`` would clear its backbone's ``init_cfg``).
    """
    if not isinstance(config, str):
        config = copy.deepcopy(config)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        model = init_model(config, checkpoint, device=device,
                           cfg_options=cfg_options)
    if any('dataset_meta or class names are not saved' in str(w.message)
           for w in caught):
        meta = config_dataset_meta(model.cfg)
        if meta is not None:
            model.dataset_meta = meta
    if not isinstance(model.backbone, PromptedVisionTransformer):
        raise TypeError(
            f'{config}: the backbone is {type(model.backbone).__name__}; '
            'these tools analyse PromptedVisionTransformer prompts')
    return model.eval()


def dataset_cfg(cfg, split: str = 'test') -> dict:
    """The dataset config of ``{split}_dataloader`` (split: train | val |
    test)."""
    key = f'{split}_dataloader'
    if key not in cfg or 'dataset' not in cfg[key]:
        raise KeyError(f'the config has no {key}.dataset')
    return copy.deepcopy(cfg[key]['dataset'])


def config_dataset_meta(cfg, split: str = 'test') -> Optional[dict]:
    """``classes``/``palette`` of the config's dataset class, or None."""
    try:
        ds_type = DATASETS.get(dataset_cfg(cfg, split)['type'])
    except KeyError:
        return None
    meta = getattr(ds_type, 'METAINFO', None) or {}
    if 'classes' not in meta:
        return None
    return dict(classes=meta['classes'], palette=meta.get('palette'))


def is_annotation_loader(transform) -> bool:
    """Whether a pipeline entry (config dict) loads annotations: its type
    is mmseg's ``LoadAnnotations`` or a subclass (``CheckedLoadAnnotations``,
    any registered name or scope)."""
    t = transform.get('type') if isinstance(transform, dict) else None
    if isinstance(t, str):
        t = TRANSFORMS.get(t)
    return inspect.isclass(t) and issubclass(t, LoadAnnotations)


def image_pipeline(cfg) -> List[dict]:
    """The config's test pipeline without its annotation loading (what
    ``mmseg.apis.inference_model`` does, for ``LoadAnnotations`` only)."""
    return [copy.deepcopy(t) for t in cfg.test_pipeline
            if not is_annotation_loader(t)]


def prepare_image(model, img_path: str) -> dict:
    """Collated ``dict(inputs, data_samples)`` of one image through the test
    pipeline, as ``inference_model`` builds it (for ``model.test_step`` or
    ``model.data_preprocessor``)."""
    sample = Compose(image_pipeline(model.cfg))(dict(img_path=img_path))
    return pseudo_collate([sample])


def load_annotation(model, ann_path: str, img_path: str) -> np.ndarray:
    """[H, W] uint8 labels of ``ann_path`` as the test pipeline's
    annotation loader produces them (its ``reduce_zero_label`` and the
    dataset's ``label_map``), at the annotation's own size."""
    cfg = model.cfg
    loaders = [t for t in cfg.test_pipeline if is_annotation_loader(t)]
    loader = TRANSFORMS.build(copy.deepcopy(
        loaders[0] if loaders else dict(type='LoadAnnotations')))
    reduce_zero, label_map = _dataset_label_rules(cfg)
    if getattr(loader, 'reduce_zero_label', None) is not None:
        reduce_zero = loader.reduce_zero_label
    results = loader(dict(img_path=img_path, seg_map_path=ann_path,
                          reduce_zero_label=reduce_zero,
                          label_map=label_map, seg_fields=[]))
    return results['gt_seg_map']


def _dataset_label_rules(cfg):
    """(reduce_zero_label, label_map) of the config's test dataset, built
    lazily (no file is read); (False, None) where it cannot be built."""
    try:
        ds = DATASETS.build(dict(dataset_cfg(cfg), lazy_init=True))
    except Exception:  # e.g. a data_root that does not exist here
        return False, None
    return bool(ds.reduce_zero_label), ds.metainfo.get('label_map')


def build_split(cfg, split: str):
    """The dataset of ``{split}_dataloader`` with its own pipeline (which
    must load the annotations)."""
    ds_cfg = dataset_cfg(cfg, split)
    if not any(is_annotation_loader(t) for t in ds_cfg.get('pipeline', [])):
        raise ValueError(f'the {split} pipeline loads no annotations: the '
                         'metric needs the ground truth')
    return DATASETS.build(ds_cfg)


def load_class_mapping(path: str) -> Optional[ClassPromptMapping]:
    """:func:`class_mapping_from` the checkpoint file ``path``."""
    return class_mapping_from(load_training_checkpoint(path))


def class_mapping_from(checkpoint: dict) -> Optional[ClassPromptMapping]:
    """The class->prompt mapping saved in a loaded DA-VPT checkpoint
    (training, prompt-only, or of an earlier version), or None if it has
    none."""
    state = objective_state(checkpoint)
    if not state or 'mapping.mapping' not in state:
        return None
    buffers = {k[len('mapping.'):]: v for k, v in state.items()
               if k.startswith('mapping.')}
    num_proxy_prompts, embed_dims = buffers['centroids'].shape
    mapping = ClassPromptMapping(len(buffers['mapping']), num_proxy_prompts,
                                 embed_dims)
    mapping.load_state_dict(buffers)
    return mapping


def checkpoint_mapping(path: str) -> Optional[torch.Tensor]:
    """[num_classes] class -> prompt ids of a checkpoint, or None (VPT-Deep).
    Warns if k-means never set it."""
    mapping = load_class_mapping(path)
    if mapping is None:
        return None
    if not bool(mapping.initialized):
        warnings.warn(f'{path}: the class->prompt mapping was never set by '
                      'k-means (placeholder arange % K)')
    return mapping.mapping.long().cpu()


def mapping_from_checkpoint(path: str, num_prompts: int,
                            num_classes: int) -> torch.Tensor:
    """[num_classes] class -> prompt ids stored in another checkpoint (a
    DA-VPT one), for prompts of a checkpoint without a mapping (VPT-Deep)."""
    mapping = checkpoint_mapping(path)
    if mapping is None:
        raise KeyError(f'{path} has no class->prompt mapping: is it a DA-VPT '
                       'checkpoint?')
    if len(mapping) != num_classes:
        raise ValueError(f'{path} maps {len(mapping)} classes, the dataset '
                         f'has {num_classes}')
    if int(mapping.max()) >= num_prompts:
        raise ValueError(f'{path} maps classes to {int(mapping.max()) + 1}+ '
                         f'prompts, but the layer has {num_prompts}')
    return mapping


def prompt_class_lists(mapping: Optional[torch.Tensor],
                       num_prompts: int) -> Optional[List[List[int]]]:
    """Entry k: the class ids mapped to prompt k (None without mapping)."""
    if mapping is None:
        return None
    m = mapping.tolist()
    return [[c for c, k in enumerate(m) if k == p] for p in range(num_prompts)]


def check_layers(backbone, layers: Optional[Sequence[int]]) -> List[int]:
    """0-based layer list (negative = from the end); default: the guided
    layers, else the last layer."""
    n = len(backbone.layers)
    if not layers:
        return list(backbone.guided_layers) or [n - 1]
    bad = [i for i in layers if not -n <= i < n]
    if bad:
        raise ValueError(f'--layers {bad}: the backbone has layers 0..{n - 1}')
    return sorted({i % n for i in layers})
