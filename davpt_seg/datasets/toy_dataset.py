"""ADE20K-style dataset for the procedurally generated toy data."""
from mmseg.datasets import BaseSegDataset
from mmseg.registry import DATASETS

from .toy_data import TOY_PALETTE


@DATASETS.register_module()
class ToyADE20KDataset(BaseSegDataset):
    """Toy dataset written by :func:`generate_toy_dataset`, ADE20K style.

    The data has ADE20K's on-disk layout (drawn in
    :mod:`davpt_seg.datasets.toy_data`; ``data_root`` is the ``root`` given to
    the generator, ``data/toy_ade`` by default),
    so it is configured like ``ADE20KDataset``, e.g. ``data_prefix=dict(
    img_path='images/training', seg_map_path='annotations/training')``.

    As in ADE20K, 0 in an annotation stands for "other" pixels, which are not
    among the 8 categories, and the classes are stored as 1..8.
    ``reduce_zero_label`` hence defaults to True (0 becomes the ignore index
    255 and the classes 0..7). The ``img_suffix`` defaults to '.jpg' and
    ``seg_map_suffix`` to '.png'.

    The classes match the generator's default ``num_classes=8``; data
    generated with fewer classes can select a subset through
    ``metainfo=dict(classes=...)``.

    Generate the data with::

        python tools/make_toy_data.py --root data/toy_ade
    """
    METAINFO = dict(
        classes=('toy_0', 'toy_1', 'toy_2', 'toy_3', 'toy_4', 'toy_5', 'toy_6',
                 'toy_7'),
        palette=[list(colour) for colour in TOY_PALETTE])

    def __init__(self,
                 img_suffix='.jpg',
                 seg_map_suffix='.png',
                 reduce_zero_label=True,
                 **kwargs) -> None:
        super().__init__(
            img_suffix=img_suffix,
            seg_map_suffix=seg_map_suffix,
            reduce_zero_label=reduce_zero_label,
            **kwargs)
