# Copyright (c) davpt-seg contributors. Apache-2.0.
"""Segment one image with a DA-VPT model and write the coloured prediction.

    python demo/image_demo.py IMAGE CONFIG CHECKPOINT [--out-file OUT.png]
        [--device cpu|cuda:0] [--opacity 0.5] [--with-labels]

CHECKPOINT is a full or a prompt-only checkpoint (``PromptOnlyCheckpointHook``
or ``tools/extract_prompts.py``): a prompt-only one restores the frozen ViT
from the pretrained file it records (``mmseg.apis.init_model`` clears the
config's ``init_cfg``), so that file must still exist. The output is the
image with the predicted classes painted over it in the dataset's palette
(``--opacity 1`` paints the bare colour map), the image's size; the classes
found are printed with their share of the pixels. mmseg's inference APIs do
the work: ``init_model``, ``inference_model``, ``show_result_pyplot``.
"""
import argparse
import os.path as osp

import torch
from mmengine.model import revert_sync_batchnorm
from mmseg.apis import inference_model, init_model, show_result_pyplot

import davpt_seg.compat


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('img', help='image file')
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', help='full or prompt-only checkpoint')
    parser.add_argument(
        '--out-file',
        help='output image (default: <image name>_pred.png in the current '
        'directory)')
    parser.add_argument(
        '--device',
        default='cuda:0' if torch.cuda.is_available() else 'cpu',
        help='device (default: cuda:0 if available, else cpu)')
    parser.add_argument(
        '--opacity',
        type=float,
        default=0.5,
        help='opacity of the painted classes, in (0, 1] (default: 0.5)')
    parser.add_argument(
        '--with-labels',
        action='store_true',
        help='write the class names onto their regions')
    return parser.parse_args(argv)


def class_shares(pred: torch.Tensor, classes) -> list:
    """``[(name, share of pixels)]`` of the classes in ``pred`` ((H, W) class
    ids), largest first."""
    ids, counts = torch.unique(pred, return_counts=True)
    total = float(pred.numel())
    order = torch.argsort(counts, descending=True)
    return [(classes[int(ids[i])] if int(ids[i]) < len(classes) else
             str(int(ids[i])), float(counts[i]) / total) for i in order]


def main(argv=None):
    args = parse_args(argv)
    if not osp.isfile(args.img):
        raise SystemExit(f'image not found: {args.img}')
    if not 0 < args.opacity <= 1:
        raise SystemExit(f'--opacity must be in (0, 1], got {args.opacity}')
    out_file = args.out_file or \
        f'{osp.splitext(osp.basename(args.img))[0]}_pred.png'
    davpt_seg.compat.install()
    model = init_model(args.config, args.checkpoint, device=args.device)
    if args.device == 'cpu':
        model = revert_sync_batchnorm(model)  # SyncBN needs GPUs
    result = inference_model(model, args.img)
    show_result_pyplot(
        model,
        args.img,
        result,
        opacity=args.opacity,
        draw_gt=False,
        with_labels=args.with_labels,
        show=False,
        out_file=out_file)
    pred = result.pred_sem_seg.data[0].cpu()
    shares = class_shares(pred, model.dataset_meta['classes'])
    print(f'{args.img}: {pred.shape[0]}x{pred.shape[1]}, ' + ', '.join(
        f'{name} {share:.1%}' for name, share in shares))
    print(f'wrote {out_file}')


if __name__ == '__main__':
    main()
