# Copyright (c) davpt-seg contributors. Apache-2.0.
"""Generated data in CamVid's SegNet layout (for tests and the smoke bench)."""
import os
from pathlib import Path
from typing import Dict, Union

import cv2
import numpy as np

from .camvid import CAMVID_VOID
from .toy_data import synthesize_toy_sample

#: split folder -> annotation folder, as in the SegNet CamVid copy.
CAMVID_SPLITS = {'train': 'trainannot', 'val': 'valannot',
                 'test': 'testannot'}


def generate_camvid_like(root: Union[str, os.PathLike],
                         num_images: Dict[str, int] = None,
                         img_size: int = 64,
                         seed: int = 0) -> Dict[str, int]:
    """Write toy photos and labels in CamVid's layout under ``root``.

    Each split ``s`` gets ``root/s/NAME.png`` (RGB) and
    ``root/{s}annot/NAME.png`` (uint8 labels): the toy generator's 8 shape
    classes as CamVid labels 0..7 and its background as void (11), so
    classes 8..10 never occur; the last two rows are always void. Existing files are overwritten.

    Args:
        num_images (dict): images per split. Default: train 8, val 4.
        img_size (int): height and width of the square images.
    Returns:
        dict: the number of images written per split.
    """
    num_images = dict(train=8, val=4) if num_images is None else num_images
    unknown = set(num_images) - set(CAMVID_SPLITS)
    if unknown:
        raise ValueError(f'unknown CamVid splits {sorted(unknown)}; '
                         f'expected some of {list(CAMVID_SPLITS)}')
    root = Path(root)
    for split_id, (split, num) in enumerate(sorted(num_images.items())):
        img_dir, ann_dir = root / split, root / CAMVID_SPLITS[split]
        img_dir.mkdir(parents=True, exist_ok=True)
        ann_dir.mkdir(parents=True, exist_ok=True)
        for idx in range(num):
            rng = np.random.default_rng([seed, split_id, idx])
            img, label = synthesize_toy_sample(rng, img_size, 8)
            label = np.where(label == 0, CAMVID_VOID, label - 1)
            label[-2:] = CAMVID_VOID  # a void strip in every image
            name = f'{split}_{idx:04d}.png'
            if not (cv2.imwrite(str(img_dir / name), img[..., ::-1])
                    and cv2.imwrite(str(ann_dir / name),
                                    label.astype(np.uint8))):
                raise OSError(f'cannot write {img_dir / name}')
    return dict(num_images)
