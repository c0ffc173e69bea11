# Copyright (c) davpt-seg contributors. Apache-2.0.
"""Do prompts attend to their classes? "Attention precision" over a split.

    python tools/prompt_attention_metric.py CONFIG CHECKPOINT --out FILE.json
        [--split val] [--max-images N] [--layers 11 ...]
        [--mapping-from DAVPT_CKPT] [--min-images 1] [--device cpu]

For every prompt of the analysed layers (default: the guided layers) and
every image of the split: the share of the prompt's attention mass (its
query against the patch keys, heads averaged, renormalised over the patches)
that falls on the ground-truth pixels of the classes mapped to it (each
head's patch attention renormalised, then the heads averaged), against
the area share of those pixels (chance: the same number for uniform
attention). The ground truth is downsampled to the patch grid by area
(fraction of each patch's pixels); padding and ignored pixels belong to no
class. Only images where a mapped class is present count for a prompt.
Averages per prompt, over prompts (macro) and over (prompt, image) pairs
(micro). Also the mean "spread" of each prompt's map (exp(entropy) / number
of patches: 1 = uniform, how diffuse it is). See docs/prompt_attention.md.

Which classes a prompt "should" attend to:

* DA-VPT checkpoint: its own class->prompt mapping (``mapped``).
* VPT-Deep checkpoint (no mapping): with ``--mapping-from`` the mapping of
  another (DA-VPT) checkpoint, assigned to the prompts by index -- VPT's
  prompt k has no relation to cluster k, so this is the "arbitrary fixed
  assignment" baseline; without it, only ``best_class``.
* Always also ``best_class``: per prompt, the single class with the largest
  mean (precision - chance), chosen post hoc on the same images (optimistic,
  for both methods alike).

Writes FILE.json and FILE.md (a table) and prints the table. Uses one
whole-image backbone pass per image (``capture_attention``), so no
prediction is run.
"""
import argparse
import json
import os
import os.path as osp

import torch
from mmengine.config import DictAction
from mmengine.dataset import pseudo_collate

import davpt_seg.compat
from davpt_seg.analysis.loading import (build_split, check_layers,  # noqa
                                        load_model, mapping_from_checkpoint,
                                        checkpoint_mapping, prompt_class_lists)
from davpt_seg.analysis.prompt_attention import (
    PrecisionAccumulator, attention_pass, summarize)

DEFINITION = (
    'attention precision = sum over patches of a(j) * f_S(j), a = prompt '
    'attention over the patches (each head\'s attention on the patches '
    'renormalised to sum to one, then averaged over heads), f_S(j) = '
    'fraction of patch j\'s pixels in the classes S mapped to the prompt '
    '(area downsampling; padding and ignored pixels in no class); '
    'chance = mean_j f_S(j) (uniform attention = area share). '
    'Per prompt: mean over the images where a class of S is present.')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Prompt attention '
                                     'precision over a dataset split')
    parser.add_argument('config')
    parser.add_argument('checkpoint', help='full or prompt-only checkpoint')
    parser.add_argument('--out', required=True, help='FILE.json (and .md)')
    parser.add_argument('--split', default='val',
                        choices=['train', 'val', 'test'])
    parser.add_argument('--max-images', type=int, default=None)
    parser.add_argument('--layers', type=int, nargs='+', default=None)
    parser.add_argument('--mapping-from', metavar='CKPT', default=None,
                        help='use the class->prompt mapping of this (DA-VPT)'
                        ' checkpoint for the guided-layer prompts')
    parser.add_argument('--min-images', type=int, default=5,
                        help='images a class must be present in to be a '
                        'prompt\'s post-hoc best class (default: 5)')
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    return parser.parse_args(argv)


def collect(model, dataset, layers, max_images, num_classes):
    """Run the attention pass on the first ``max_images`` images."""
    acc = PrecisionAccumulator(num_classes)
    n = len(dataset) if max_images is None else min(max_images, len(dataset))
    for i in range(n):
        record, samples = attention_pass(
            model, pseudo_collate([dataset[i]]), layers)
        gt = samples[0].gt_sem_seg.data[0].cpu().numpy()
        acc.add(record, gt, samples[0].img_shape, model.backbone.patch_size)
    return acc


def _fmt(v):
    return '-' if v is None else f'{v:.3f}'


def markdown(result: dict) -> str:
    """The per-prompt and overall tables of a result."""
    rows = ['| layer | prompt | spread | classes | images | precision | '
            'chance | best class (post hoc) | images | precision | chance |',
            '|---|---|---|---|---|---|---|---|---|---|---|']
    for e in result['prompts']:
        m = e.get('mapped')
        b = e['best_class']
        mapped = ['-'] * 4 if m is None else [
            ', '.join(m['classes']) or '(none)', str(m['num_images']),
            _fmt(m['precision']), _fmt(m['chance'])]
        rows.append('| ' + ' | '.join(
            [str(e['layer']), str(e['prompt']), _fmt(e['spread'])] + mapped +
            [b['class'] or '-', str(b['num_images']), _fmt(b['precision']),
             _fmt(b['chance'])]) + ' |')
    rows += ['', '| assignment | prompts | above chance | precision (macro) '
             '| chance (macro) | pairs | precision (micro) | chance (micro) |',
             '|---|---|---|---|---|---|---|---|']
    for key, o in result['overall'].items():
        if key == 'spread':
            continue
        name = result['assignment'] if key == 'mapped' else \
            'best class (post hoc)'
        rows.append(f'| {name} | {o["num_prompts"]} | '
                    f'{o["prompts_above_chance"]} | {_fmt(o["precision"])} '
                    f'| {_fmt(o["chance"])} | {o["num_pairs"]} | '
                    f'{_fmt(o["micro_precision"])} | '
                    f'{_fmt(o["micro_chance"])} |')
    rows += ['', f'Mean spread of the prompts\' maps (exp(entropy) / '
             f'patches, 1 = uniform): {_fmt(result["overall"]["spread"])}']
    return '\n'.join(rows) + '\n'


def main(argv=None):
    args = parse_args(argv)
    davpt_seg.compat.install()
    model = load_model(args.config, args.checkpoint, device=args.device,
                       cfg_options=args.cfg_options)
    backbone = model.backbone
    layers = check_layers(backbone, args.layers)
    names = list(model.dataset_meta['classes'])
    mapping, source = checkpoint_mapping(args.checkpoint), 'checkpoint mapping'
    if args.mapping_from:
        mapping = mapping_from_checkpoint(
            args.mapping_from, backbone.num_proxy_prompts, len(names))
        source = f'mapping of {osp.basename(args.mapping_from)} by index'
    assignments = {
        layer: prompt_class_lists(mapping, backbone.num_proxy_prompts)
        if backbone.prompt_kinds[layer] == 'proxy' else None
        for layer in layers}
    dataset = build_split(model.cfg, args.split)
    with torch.no_grad():
        acc = collect(model, dataset, layers, args.max_images, len(names))
    result = dict(
        config=args.config, checkpoint=args.checkpoint, split=args.split,
        num_images=acc.num_images, layers=layers,
        method='DA-VPT' if backbone.class_mapping is not None else
        'VPT-Deep (no mapping)',
        assignment=source if mapping is not None else None,
        definition=DEFINITION,
        note=('best_class: per prompt the single class with the largest '
              'mean (precision - chance) over the images where it is '
              f'present (>= {args.min_images}), chosen post hoc on the same '
              'images (optimistic)'),
        **summarize(acc, assignments, names, args.min_images))
    os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
    with open(args.out, 'w') as f:
        json.dump(result, f, indent=2)
    table = markdown(result)
    md = osp.splitext(args.out)[0] + '.md'
    with open(md, 'w') as f:
        f.write(f'{result["method"]}: {args.checkpoint}, {args.split} split,'
                f' {acc.num_images} images, layers {layers}\n\n' + table)
    print(table)
    print(f'-> {args.out}, {md}')


if __name__ == '__main__':
    main()
