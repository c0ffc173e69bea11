# Copyright (c) davpt-seg contributors. Apache-2.0.
"""Where do the prompts look? One PNG sheet per image.

    python tools/visualize_prompts.py CONFIG CHECKPOINT IMAGE [IMAGE ...] \
        --out DIR [--layers 11 ...] [--prompts all|assigned] \
        [--ann ANNOTATION ...] [--per-head] [--mapping-from CKPT] \
        [--dpi 100] [--device cpu]

Each sheet shows the image (ground truth outlined with ``--ann``), the
prediction (the config's test pipeline and ``test_cfg``, as
``mmseg.apis.inference_model``), and for each layer (default: the guided
layers, else the last): the [CLS] -> patch attention, the [CLS] -> prompt
attention weights (bar chart, heads averaged, single heads as dots) and each
prompt's attention over the patches (its query against the patch keys,
renormalised over the patches, heads averaged; each head too with
``--per-head``) over the desaturated image. Guided prompts of a DA-VPT
checkpoint are titled with the classes mapped to them (outlined in cyan with
``--ann``, with the "attention precision": the prompt's attention mass on
those classes' pixels vs their area share); other prompts by index.

The attention comes from one whole-image backbone pass under
``PromptedVisionTransformer.capture_attention`` (also for 'slide' test
configs). Works with full and prompt-only checkpoints (the latter need their
pretrained file, see README "Prompt-only checkpoints") and on CPU.
"""
import argparse
import os
import os.path as osp

import mmcv
import numpy as np
import torch
from mmengine.config import DictAction

import davpt_seg.compat
from davpt_seg.analysis.loading import (check_layers, load_annotation,  # noqa
                                        load_model, mapping_from_checkpoint,
                                        checkpoint_mapping,
                                        prepare_image, prompt_class_lists)
from davpt_seg.analysis.prompt_attention import (
    attention_pass, class_fractions, grid_to_image, image_precision, spread)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Prompt attention sheets (one PNG per image)')
    parser.add_argument('config')
    parser.add_argument('checkpoint', help='full or prompt-only checkpoint')
    parser.add_argument('images', nargs='+', metavar='IMAGE')
    parser.add_argument('--out', required=True, help='output directory')
    parser.add_argument('--layers', type=int, nargs='+', default=None,
                        help='0-based layers (negative: from the end); '
                        'default: the guided layers, else the last layer')
    parser.add_argument('--prompts', choices=['all', 'assigned'],
                        default='all', help="'assigned': only prompts with "
                        'classes mapped to them (all prompts of layers '
                        'without a mapping)')
    parser.add_argument('--ann', nargs='+', default=None,
                        metavar='ANNOTATION', help='one annotation per image '
                        '(same order): outlines the ground truth')
    parser.add_argument('--per-head', action='store_true',
                        help='also each head\'s map per prompt')
    parser.add_argument('--mapping-from', metavar='CKPT', default=None,
                        help='title the guided prompts with the class->'
                        'prompt mapping stored in another (DA-VPT) '
                        'checkpoint, e.g. for a VPT-Deep one')
    parser.add_argument('--dpi', type=int, default=100,
                        help='PNG resolution (default: 100)')
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    args = parser.parse_args(argv)
    if args.ann is not None and len(args.ann) != len(args.images):
        parser.error(f'--ann needs one annotation per image: '
                     f'{len(args.ann)} for {len(args.images)} images')
    return args


def prompt_title(layer, k, classes, names, mass, spread, score, per_head):
    """Panel title of prompt k: its attention mass on the patches, the
    spread of its map, its classes and, with ground truth, its attention
    precision."""
    from davpt_seg.analysis.figures import class_list, wrap
    lines = [f'L{layer} p{k}, {mass:.0%} on patches',
             ('heads averaged, ' if per_head else '') +
             f'spread {spread:.0%}']
    if classes is not None:
        lines.append(wrap(class_list(classes, names), 34, 2))
    if score is not None:
        lines.append(score)
    return '\n'.join(lines)


def layer_view(record, layer, b, patch, img_shape, ori_shape, class_lists,
               names, gt, which, per_head, kind_label=None):
    """The dict ``draw_prompt_sheet`` takes for one layer (see there)."""
    lay = record.layout[layer]
    P = lay.num_prompts
    classes = class_lists if lay.prompt_kind == 'proxy' else None
    shown = list(range(P))
    if which == 'assigned' and classes is not None:
        shown = [k for k in shown if classes[k]]
    maps = record.prompt_to_patches(layer)[b].transpose(0, 1)  # [P,H,h,w]
    mass = record.patch_mass(layer)[b].mean(0)[lay.prompts]      # [P]
    to_img = lambda m: grid_to_image(m, patch, img_shape, ori_shape)  # noqa
    mean_maps = to_img(maps.mean(1))
    spreads = spread(maps.mean(1))                               # [P]
    fractions = None
    if gt is not None and classes is not None:
        fractions = class_fractions(gt, list(range(len(names))), img_shape,
                                    lay.hw_shape, patch)
        prec, chance = image_precision(maps.mean(1), fractions)
    titles = []
    for k in shown:
        score = None
        if fractions is not None:
            ids = classes[k]
            if ids and np.isin(gt, ids).any():
                score = (f'on its classes {prec[k, ids].sum():.2f} '
                         f'(area {chance[ids].sum():.2f})')
            else:
                score = 'its classes: not in this image'
        titles.append(prompt_title(layer, k,
                                   None if classes is None else classes[k],
                                   names, float(mass[k]), float(spreads[k]),
                                   score, per_head))
    view = dict(layer=layer, kind=lay.prompt_kind, prompts=shown,
                kind_label=kind_label if classes is not None else None,
                titles=titles, maps=mean_maps[shown].numpy(),
                classes=None if classes is None else
                [classes[k] for k in shown], cls_map=None)
    if per_head:
        view['head_maps'] = torch.stack(
            [to_img(maps[k]) for k in shown]).numpy() if shown else \
            np.zeros((0, maps.shape[1], 1, 1))
    if lay.cls is not None:
        view['cls_map'] = to_img(record.cls_to_patches(layer)[b].mean(
            0, keepdim=True))[0].numpy()
        view['cls_prompt'] = record.cls_to_prompts(layer)[b].numpy()
        view['cls_mass'] = (
            float(record.patch_mass(layer)[b, :, lay.cls].mean()),
            float(view['cls_prompt'].sum(-1).mean()) if P else 0.)
    return view


def sheet_for(model, img_path, ann_path, layers, mapping, args, out_file):
    backbone = model.backbone
    names = list(model.dataset_meta['classes'])
    meta = dict(classes=names, palette=palette_of(model, len(names)))
    data = prepare_image(model, img_path)
    with torch.no_grad():
        pred = model.test_step(data)[0].pred_sem_seg.data[0].cpu().numpy()
    record, samples = attention_pass(model, data, layers)
    img_shape = samples[0].img_shape
    ori_shape = samples[0].ori_shape
    image = mmcv.imread(img_path, channel_order='rgb')
    gt = None
    if ann_path is not None:
        gt = load_annotation(model, ann_path, img_path)
        if gt.shape != tuple(ori_shape):
            gt = mmcv.imresize(gt, ori_shape[::-1], interpolation='nearest')
    method = 'DA-VPT' if backbone.class_mapping is not None else 'VPT-Deep'
    label = None
    if args.mapping_from:
        label = ('titled with the classes of the mapping of '
                 f'{short_path(args.mapping_from)}, by prompt index')
    views = []
    for layer in layers:
        lists = prompt_class_lists(mapping,
                                   record.layout[layer].num_prompts)
        views.append(layer_view(record, layer, 0, backbone.patch_size,
                                img_shape, ori_shape, lists, names, gt,
                                args.prompts, args.per_head, label))
    title = (f'{osp.basename(img_path)} | {method} '
             f'{short_path(args.checkpoint)}\nprompt maps: heads averaged, '
             'renormalised over patches, each scaled to its max; spread = '
             'exp(entropy) / number of patches (100% = uniform)')
    from davpt_seg.analysis.figures import draw_prompt_sheet
    draw_prompt_sheet(out_file, image, pred, gt, meta, views, title,
                      per_head=args.per_head, dpi=args.dpi)


def short_path(path):
    """The last two components of ``path`` (run dir / file)."""
    parts = osp.normpath(path).split(os.sep)
    return '/'.join(parts[-2:])


def palette_of(model, num_classes):
    palette = model.dataset_meta.get('palette')
    if palette is None or len(palette) < num_classes:
        palette = np.random.RandomState(0).randint(0, 256, (num_classes, 3))
    return [list(map(int, c)) for c in palette]


def main(argv=None):
    args = parse_args(argv)
    davpt_seg.compat.install()
    model = load_model(args.config, args.checkpoint, device=args.device,
                       cfg_options=args.cfg_options)
    layers = check_layers(model.backbone, args.layers)
    mapping = checkpoint_mapping(args.checkpoint)
    if args.mapping_from:
        mapping = mapping_from_checkpoint(
            args.mapping_from, model.backbone.num_proxy_prompts,
            len(model.dataset_meta['classes']))
    os.makedirs(args.out, exist_ok=True)
    used = set()
    for i, img in enumerate(args.images):
        stem = osp.splitext(osp.basename(img))[0]
        name, n = stem, 1
        while name in used:
            name, n = f'{stem}_{n}', n + 1
        used.add(name)
        out_file = osp.join(args.out, name + '.png')
        sheet_for(model, img, args.ann[i] if args.ann else None, layers,
                  mapping, args, out_file)
        print(f'{img} -> {out_file}')


if __name__ == '__main__':
    main()
