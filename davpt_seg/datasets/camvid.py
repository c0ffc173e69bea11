# Copyright (c) davpt-seg contributors. Apache-2.0.
"""CamVid (11 classes) in the SegNet tutorial's on-disk layout."""
from typing import Dict, Optional, Sequence

from mmseg.datasets import BaseSegDataset
from mmseg.registry import DATASETS

#: Label value of CamVid's "void" pixels in the SegNet annotations.
CAMVID_VOID = 11


@DATASETS.register_module()
class CamVidDataset(BaseSegDataset):
    """CamVid street scenes, 11 classes (Brostow et al. 2009; SegNet split).

    Layout (``data_root`` is the folder holding the split folders)::

        data_root/
        ├── train/  0001TP_006690.png ...   (RGB photos, 480 x 360)
        ├── trainannot/ 0001TP_006690.png ... (uint8 labels, same names)
        ├── val/  valannot/
        └── test/ testannot/

    configured as ``data_prefix=dict(img_path='train',
    seg_map_path='trainannot')``. Labels 0..10 are the classes below; 11
    (void) becomes the ignore index 255 through the dataset's ``label_map``,
    which mmseg's ``LoadAnnotations`` applies. A class subset given in
    ``metainfo=dict(classes=...)`` maps the other classes to 255 as well.
    """
    METAINFO = dict(
        classes=('sky', 'building', 'pole', 'road', 'sidewalk', 'tree',
                 'sign', 'fence', 'car', 'pedestrian', 'bicyclist'),
        palette=[[128, 128, 128], [128, 0, 0], [192, 192, 128],
                 [128, 64, 128], [0, 0, 192], [128, 128, 0],
                 [192, 128, 128], [64, 64, 128], [64, 0, 128],
                 [64, 64, 0], [0, 128, 192]])

    def __init__(self,
                 img_suffix: str = '.png',
                 seg_map_suffix: str = '.png',
                 reduce_zero_label: bool = False,
                 **kwargs) -> None:
        if reduce_zero_label:
            raise ValueError('CamVid labels start at 0 (sky): '
                             'reduce_zero_label must be False')
        super().__init__(
            img_suffix=img_suffix,
            seg_map_suffix=seg_map_suffix,
            reduce_zero_label=False,
            **kwargs)

    @classmethod
    def get_label_map(cls, new_classes: Optional[Sequence] = None
                      ) -> Dict[int, int]:
        """mmseg's class-subset map, plus void (11) -> 255."""
        label_map = super().get_label_map(new_classes) or {}
        label_map[CAMVID_VOID] = 255
        return label_map
