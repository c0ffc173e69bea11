# Copyright (c) davpt-seg contributors. Apache-2.0.
"""How far do the prompts move a frozen backbone? Per layer, the share of
the image patches' attention that goes to the prompts, and the cosine of
the output features with and without the prompts.

    python tools/prompt_influence.py CONFIG [CHECKPOINT] --images A.png ...
        --out FILE.json [--seed 0] [--device cpu]

Without CHECKPOINT the model is the config's at initialisation (``--seed``
draws the prompts; ``init_weights`` loads the pretrained backbone): step 0.
The reference is the config's backbone without prompts (the frozen ViT,
pretrained weights loaded the same way). Images go through the config's
test pipeline and are batched (they must share a size). Writes FILE.json
(see ``davpt_seg.analysis.prompt_influence``).
"""
import argparse
import json
import os
import os.path as osp

import torch
from mmengine.config import Config
from mmengine.dataset import pseudo_collate

import davpt_seg.compat
from davpt_seg.analysis.loading import load_model, prepare_image
from davpt_seg.analysis.prompt_influence import frozen_reference, influence


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('config')
    p.add_argument('checkpoint', nargs='?', default=None,
                   help='trained checkpoint; none: the model at step 0')
    p.add_argument('--images', nargs='+', required=True)
    p.add_argument('--out', required=True, help='FILE.json')
    p.add_argument('--seed', type=int, default=0,
                   help='seed of the prompts at step 0 (default: 0)')
    p.add_argument('--device', default='cpu')
    return p.parse_args(argv)


def step0_model(cfg: Config, seed: int, device: str):
    """The config's segmentor as training starts: built and
    ``init_weights()``-ed (pretrained backbone) after seeding, in eval mode.
    (``mmseg.apis.init_model`` would drop the backbone's ``init_cfg``.)"""
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    torch.manual_seed(seed)
    model = MODELS.build(cfg.model)
    model.init_weights()
    model.cfg = cfg
    return model.to(device).eval()


def main(argv=None) -> None:
    args = parse_args(argv)
    davpt_seg.compat.install()
    cfg = Config.fromfile(args.config)
    model = load_model(cfg, args.checkpoint, args.device) \
        if args.checkpoint else step0_model(cfg, args.seed, args.device)
    batch = pseudo_collate([prepare_image(model, p)['inputs'][0]
                            for p in args.images])
    inputs = model.data_preprocessor(dict(inputs=batch), False)['inputs']
    result = influence(model.backbone, frozen_reference(cfg, args.device),
                       inputs.to(args.device))
    result.update(config=args.config, checkpoint=args.checkpoint,
                  seed=None if args.checkpoint else args.seed,
                  images=[osp.basename(p) for p in args.images])
    os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
    with open(args.out, 'w') as f:
        json.dump(result, f, indent=1)
    shares = ', '.join(f'{s:.3f}' for s in result['attention_to_prompts'])
    print(f'attention of patches on prompts per layer: {shares}')
    print(f"output cosine with the frozen backbone: {result['output_cosine']}")


if __name__ == '__main__':
    main()
