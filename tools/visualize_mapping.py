# Copyright (c) davpt-seg contributors. Apache-2.0.
"""The class -> prompt mapping of a DA-VPT checkpoint as a picture.

    python tools/visualize_mapping.py CONFIG CHECKPOINT --out DIR

Writes ``DIR/mapping.png`` (classes grouped by the prompt they are mapped
to, with cluster sizes; the cosine similarity of the k-means centroids) and
``DIR/mapping.json`` (the same numbers). The mapping is ``DAVPTHook``'s
(saved under the checkpoint key ``davpt``), shared by the proxy prompts of
every guided layer. Full and prompt-only checkpoints, also of earlier
versions; no model is built.
"""
import argparse
import json
import os
import os.path as osp

from mmengine.config import Config, DictAction

import davpt_seg  # noqa: F401
from davpt_seg.analysis.loading import (class_mapping_from,
                                        config_dataset_meta)
from davpt_seg.weights import load_training_checkpoint


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Picture of the class->prompt mapping of a checkpoint')
    parser.add_argument('config')
    parser.add_argument('checkpoint', help='full or prompt-only checkpoint')
    parser.add_argument('--out', required=True, help='output directory')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    return parser.parse_args(argv)


def load_mapping(checkpoint: str):
    """The checkpoint's ``ClassPromptMapping`` and ``dataset_meta`` (or
    None)."""
    ckpt = load_training_checkpoint(checkpoint)
    mapping = class_mapping_from(ckpt)
    if mapping is None:
        raise SystemExit(f'{checkpoint} holds no class->prompt mapping: is '
                         'it a DA-VPT checkpoint (VPT-Deep has none)?')
    return mapping, ckpt.get('meta', {}).get('dataset_meta')


def main(argv=None):
    args = parse_args(argv)
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    mapping, meta = load_mapping(args.checkpoint)
    meta = meta or config_dataset_meta(cfg) or {}
    names = list(meta.get('classes') or
                 [f'class {c}' for c in range(mapping.num_classes)])
    if len(names) != mapping.num_classes:
        raise SystemExit(f'{len(names)} class names for a mapping of '
                         f'{mapping.num_classes} classes')
    lists = mapping.prompt_classes()
    sim = mapping.centroid_similarity()
    initialized = bool(mapping.initialized)
    os.makedirs(args.out, exist_ok=True)
    title = (f'{osp.basename(args.checkpoint)}: {mapping.num_classes} '
             f'classes -> {mapping.num_proxy_prompts} prompts '
             f'({int(mapping.num_updates)} k-means updates)')
    if not initialized:
        title += ' -- NOT SET BY K-MEANS (placeholder mapping)'
    from davpt_seg.analysis.figures import draw_mapping
    png = osp.join(args.out, 'mapping.png')
    draw_mapping(png, lists, names, None if sim is None else sim.numpy(),
                 title)
    info = dict(
        checkpoint=args.checkpoint, initialized=initialized,
        num_updates=int(mapping.num_updates),
        cluster_sizes=mapping.cluster_sizes(),
        prompts=[dict(prompt=k, classes=[names[c] for c in ids],
                      class_ids=ids) for k, ids in enumerate(lists)],
        centroid_cosine_similarity=None if sim is None else
        [[round(float(v), 6) for v in row] for row in sim])
    with open(osp.join(args.out, 'mapping.json'), 'w') as f:
        json.dump(info, f, indent=2)
    for k, ids in enumerate(lists):
        print(f'prompt {k} ({len(ids)}): ' +
              ', '.join(names[c] for c in ids))
    print(f'-> {png}')


if __name__ == '__main__':
    main()
