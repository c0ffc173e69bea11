"""Annotation loading that fails clearly on bad files and bad labels."""
import logging
from typing import Optional

import numpy as np
from mmengine.logging import print_log
from mmseg.datasets.transforms import LoadAnnotations
from mmseg.registry import TRANSFORMS


@TRANSFORMS.register_module()
class CheckedLoadAnnotations(LoadAnnotations):
    """mmseg's ``LoadAnnotations`` that names the file on every failure and
    checks the labels it produces.

    mmseg's transform raises e.g. ``UnidentifiedImageError: cannot identify
    image file <_io.BytesIO ...>`` or ``OSError: image file is truncated`` for
    a corrupt annotation, without its path, and lets label values the model
    cannot predict through: training then crashes in the cross-entropy loss
    (a device-side assert on GPU), and evaluation silently drops those pixels
    from the ground-truth areas but not from the predicted ones (a wrong
    mIoU). With this transform, for every sample:

    * a missing annotation raises ``FileNotFoundError`` and an unreadable or
      corrupt one ``OSError``, both naming the annotation and the image;
    * with ``num_classes``, a label value (after ``reduce_zero_label`` and
      ``label_map``) outside ``0..num_classes-1`` that is not
      ``ignore_index`` raises ``ValueError`` naming the file and values;
    * with ``check_shape``, an annotation whose size differs from its
      image's (``ori_shape``, set by ``LoadImageFromFile``) raises
      ``ValueError``.

    Nothing is skipped silently. (mmcv's ``LoadImageFromFile`` already names
    the image when it is missing or cannot be decoded.)

    Inference: a sample without a ``seg_map_path`` key passes through
    unchanged (no ``gt_seg_map``; a DEBUG log line says so). mmseg's
    inference APIs (``inference_model``, ``MMSegInferencer``) reuse the
    config's test pipeline and remove only transforms whose type is exactly
    ``'LoadAnnotations'``; their samples carry an image and no annotation
    key. Passing such samples through makes every caller that strips
    annotation loading by that name work (also TTA pipelines and
    ``MMSegInferencer``), without relying on the name; registering this
    class as ``'LoadAnnotations'`` instead would shadow mmseg's transform for
    every config in the process. Datasets always set the key for annotated
    samples (``data_prefix`` with ``seg_map_path``), so a missing or
    unreadable file is still an error, and a ``seg_map_path`` of None is
    too.

    Args:
        num_classes (int, optional): number of classes; None skips the
            label check. Default: None.
        ignore_index (int): label of ignored pixels. Default: 255.
        check_shape (bool): compare the annotation size with the image's.
            Default: True.
        **kwargs: the arguments of ``LoadAnnotations`` (``reduce_zero_label``,
            ``backend_args``, ``imdecode_backend``).
    """

    def __init__(self,
                 num_classes: Optional[int] = None,
                 ignore_index: int = 255,
                 check_shape: bool = True,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        if num_classes is not None and (not isinstance(num_classes, int)
                                        or num_classes < 1):
            raise ValueError(
                f'num_classes must be an int >= 1, got {num_classes!r}')
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.check_shape = check_shape

    def _load_seg_map(self, results: dict) -> None:
        image = results.get('img_path', '?')
        if 'seg_map_path' not in results:
            print_log(
                f'{self.__class__.__name__}: no seg_map_path for {image} '
                '(inference without annotations): no gt_seg_map loaded',
                logger='current', level=logging.DEBUG)
            return
        path = results['seg_map_path']
        try:
            super()._load_seg_map(results)
        except FileNotFoundError as e:
            raise FileNotFoundError(
                f'annotation file not found: {path} (image {image})') from e
        except AssertionError:
            raise  # mmseg's reduce_zero_label consistency check
        except Exception as e:
            raise OSError(f'cannot read the annotation {path} (image '
                          f'{image}): {type(e).__name__}: {e}') from e
        seg = results['gt_seg_map']
        if self.check_shape and 'ori_shape' in results and \
                tuple(seg.shape[:2]) != tuple(results['ori_shape'][:2]):
            raise ValueError(
                f'annotation {path} is {seg.shape[0]}x{seg.shape[1]} but its '
                f'image {image} is {results["ori_shape"][0]}x'
                f'{results["ori_shape"][1]}')
        if self.num_classes is not None:
            values = np.unique(seg)
            bad = values[(values != self.ignore_index)
                         & (values >= self.num_classes)]
            if bad.size:
                raise ValueError(
                    f'{path}: label values {bad[:10].tolist()} are outside '
                    f'0..{self.num_classes - 1} and are not the ignore index '
                    f'{self.ignore_index} (after reduce_zero_label='
                    f'{self.reduce_zero_label} and label_map). Check the '
                    'dataset (reduce_zero_label, label_map) against '
                    'num_classes.')

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(num_classes={self.num_classes}, '
                f'ignore_index={self.ignore_index}, check_shape='
                f'{self.check_shape}, reduce_zero_label='
                f'{self.reduce_zero_label}, imdecode_backend='
                f"'{self.imdecode_backend}', backend_args="
                f'{self.backend_args})')
