"""Procedurally generated toy segmentation data in ADE20K's on-disk layout.

The toy dataset lets the full MMSegmentation training loop (data pipeline,
model, loss, evaluation) run on a CPU in minutes, with no download. It is laid
out exactly like ``ADEChallengeData2016``::

    root/
    ├── images/
    │   ├── training/toy_00000.jpg ...
    │   └── validation/toy_00000.jpg ...
    ├── annotations/
    │   ├── training/toy_00000.png ...
    │   └── validation/toy_00000.png ...
    └── toy_meta.json

Annotations are single-channel ``uint8`` PNGs using ADE20K's convention for
``reduce_zero_label=True``: the value ``0`` marks "other"/unlabelled pixels
(ignored in training) and the classes are ``1..num_classes`` on disk, i.e.
``0..num_classes-1`` once the zero label is reduced.

Every image is a partition of the canvas into 2-5 regions (warped Voronoi
cells, optionally with a star-shaped polygon "object" on top), each of a
different class. A class has its own base colour *and* its own texture
(stripes of a given orientation and period, checkerboard, dots, pixel noise
or smooth shading), both jittered per image, so that neither is a perfect cue
on its own but a small model separates the classes easily. A few percent of
the pixels are "other": thin bands along region boundaries (like ADE20K's
unlabelled boundaries) and small clutter blobs of random appearance.

Each sample is drawn from its own generator seeded with
``(seed, split, index)``, so the output is deterministic for a given seed and
an image does not change when the size of either split changes.
"""
import colorsys
import json
import os
from pathlib import Path
from typing import Dict, List, Tuple, Union

import cv2
import numpy as np

#: Bumped whenever the rendered content changes, so stale data is rebuilt.
GENERATOR_VERSION = 1
META_FILE = 'toy_meta.json'
SPLITS = ('training', 'validation')
FILE_PREFIX = 'toy_'

#: RGB base colours of the first eight classes; also the dataset palette.
TOY_PALETTE = [[200, 60, 50], [70, 160, 60], [50, 80, 200], [220, 200, 60],
               [150, 70, 180], [60, 190, 200], [230, 130, 40], [140, 120, 100]]

#: Class textures as ``(kind, angle in degrees, period in pixels,
#: amplitude in grey levels)``, for the first eight classes.
_TEXTURES = (
    ('smooth', 0., 0., 14.),
    ('stripes', 0., 8., 45.),
    ('stripes', 90., 6., 45.),
    ('checker', 0., 12., 40.),
    ('stripes', 45., 10., 45.),
    ('noise', 0., 0., 40.),
    ('dots', 0., 9., 50.),
    ('stripes', 135., 4., 40.),
)


def toy_class_names(num_classes: int = 8) -> Tuple[str, ...]:
    """Names of the toy classes: ``('toy_0', ..., 'toy_{num_classes-1}')``."""
    return tuple(f'toy_{i}' for i in range(num_classes))


def _class_style(
        cls: int) -> Tuple[np.ndarray, Tuple[str, float, float, float]]:
    """Base RGB colour and texture of a (zero-based) class.

    The first eight classes use :data:`TOY_PALETTE` and ``_TEXTURES``; later
    ones get golden-ratio hues and rescaled / rotated copies of the textures.
    """
    if cls < len(TOY_PALETTE):
        colour = np.asarray(TOY_PALETTE[cls], dtype=np.float32)
    else:
        hue = (cls * 0.618034) % 1.0
        colour = np.asarray(
            colorsys.hsv_to_rgb(hue, 0.65, 0.8), dtype=np.float32) * 255
    kind, angle, period, amp = _TEXTURES[cls % len(_TEXTURES)]
    cycle = cls // len(_TEXTURES)
    return colour, (kind, angle + 20. * cycle, period * (1 + 0.5 * cycle), amp)


def _smooth_field(rng: np.random.Generator,
                  size: int,
                  grid: int = 4,
                  channels: int = 1) -> np.ndarray:
    """Smooth random field of shape ``(size, size, channels)``, unit scale."""
    coarse = rng.standard_normal((grid, grid, channels)).astype(np.float32)
    field = cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)
    return field.reshape(size, size, channels)


def _texture(rng: np.random.Generator, cls: int, yy: np.ndarray,
             xx: np.ndarray) -> np.ndarray:
    """Per-image jittered texture of ``cls``, roughly in ``[-1, 1]``."""
    kind, angle, period, _ = _class_style(cls)[1]
    theta = np.deg2rad(angle + rng.uniform(-8, 8))
    period *= rng.uniform(0.85, 1.15)
    phase = rng.uniform(0, 2 * np.pi, size=2)
    # Coordinates along and across the texture orientation.
    u = xx * np.cos(theta) + yy * np.sin(theta)
    v = -xx * np.sin(theta) + yy * np.cos(theta)
    if kind == 'stripes':
        return np.tanh(3 * np.sin(2 * np.pi * u / period + phase[0]))
    if kind == 'checker':
        return np.sign(
            np.sin(2 * np.pi * u / period + phase[0]) *
            np.sin(2 * np.pi * v / period + phase[1]))
    if kind == 'dots':
        blobs = (
            np.cos(2 * np.pi * u / period + phase[0]) +
            np.cos(2 * np.pi * v / period + phase[1]))
        return np.where(blobs > 1.0, 1.0, -0.4)
    if kind == 'noise':
        return np.clip(rng.standard_normal(yy.shape) / 2, -1, 1)
    # 'smooth': gentle low-frequency shading.
    return _smooth_field(rng, yy.shape[0], grid=3)[..., 0]


def _star_polygon(rng: np.random.Generator, size: int, min_radius: float,
                  max_radius: float) -> np.ndarray:
    """Filled mask of a random star-shaped polygon."""
    centre = rng.uniform(0.15, 0.85, size=2) * size
    radius = rng.uniform(min_radius, max_radius) * size
    num_vertices = int(rng.integers(5, 11))
    angles = np.sort(rng.uniform(0, 2 * np.pi, num_vertices))
    radii = radius * rng.uniform(0.55, 1.0, num_vertices)
    xs = centre[0] + radii * np.cos(angles)
    ys = centre[1] + radii * np.sin(angles)
    points = np.round(np.stack([xs, ys], axis=1)).astype(np.int32)
    mask = np.zeros((size, size), dtype=np.uint8)
    cv2.fillPoly(mask, [points], 1)
    return mask.astype(bool)


def _layout(rng: np.random.Generator, size: int,
            num_regions: int) -> np.ndarray:
    """Partition the canvas into ``num_regions`` regions.

    Returns:
        np.ndarray: ``(size, size)`` int map of region indices.
    """
    num_objects = int(num_regions >= 3 and rng.random() < 0.5)
    num_cells = num_regions - num_objects
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    # Warping the coordinates bends the straight Voronoi edges into curves.
    warp = _smooth_field(rng, size, grid=4, channels=2) * (0.08 * size)
    seeds = rng.uniform(0, size, size=(num_cells, 2)).astype(np.float32)
    dist = ((yy + warp[..., 0])[..., None] - seeds[:, 0])**2 + (
        (xx + warp[..., 1])[..., None] - seeds[:, 1])**2
    regions = dist.argmin(axis=-1)
    for i in range(num_objects):
        regions[_star_polygon(rng, size, 0.15, 0.3)] = num_cells + i
    return regions


def synthesize_toy_sample(
        rng: np.random.Generator,
        img_size: int = 128,
        num_classes: int = 8) -> Tuple[np.ndarray, np.ndarray]:
    """Render one toy image and its annotation.

    Args:
        rng (np.random.Generator): Source of randomness; the sample is a
            deterministic function of its state.
        img_size (int): Height and width in pixels. Defaults to 128.
        num_classes (int): Number of classes. Defaults to 8.

    Returns:
        tuple[np.ndarray, np.ndarray]: The ``(H, W, 3)`` uint8 RGB image and
        the ``(H, W)`` uint8 annotation with ``0`` for "other" and
        ``1..num_classes`` for the classes (ADE20K convention).
    """
    size = img_size
    num_regions = min(int(rng.integers(2, 6)), num_classes)
    classes = rng.choice(num_classes, size=num_regions, replace=False)
    regions = _layout(rng, size, num_regions)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)

    img = np.empty((size, size, 3), dtype=np.float32)
    for region, cls in enumerate(classes):
        mask = regions == region
        if not mask.any():
            continue
        base, (_, _, _, amp) = _class_style(int(cls))
        colour = base * rng.uniform(0.85, 1.15) + rng.normal(0, 12, size=3)
        pattern = _texture(rng, int(cls), yy, xx)[mask]
        img[mask] = colour + (amp * rng.uniform(0.8, 1.2)) * pattern[:, None]
    label = (classes + 1).astype(np.uint8)[regions]

    # "Other" pixels: unlabelled bands along region boundaries ...
    if rng.random() < 0.6:
        edges = np.zeros((size, size), dtype=np.uint8)
        edges[:, :-1] |= regions[:, :-1] != regions[:, 1:]
        edges[:-1] |= regions[:-1] != regions[1:]
        label[cv2.dilate(edges, np.ones((3, 3), np.uint8)) > 0] = 0
    # ... and small clutter blobs that look like none of the classes.
    for _ in range(int(rng.integers(0, 3))):
        mask = _star_polygon(rng, size, 0.04, 0.1)
        colour = rng.uniform(0, 255, size=3)
        img[mask] = colour + rng.normal(0, 30, size=(int(mask.sum()), 3))
        label[mask] = 0

    # Global illumination gradient and sensor noise.
    img += _smooth_field(rng, size, grid=2) * 10
    img += rng.normal(0, 3, size=img.shape)
    return np.clip(np.round(img), 0, 255).astype(np.uint8), label


def _expected_files(root: Path, meta: dict) -> List[Path]:
    files = []
    for split, num in zip(SPLITS, (meta['num_train'], meta['num_val'])):
        for idx in range(num):
            name = f'{FILE_PREFIX}{idx:05d}'
            files.append(root / 'images' / split / f'{name}.jpg')
            files.append(root / 'annotations' / split / f'{name}.png')
    return files


def _is_complete(root: Path, meta: dict) -> bool:
    """Whether ``root`` holds a finished dataset generated with ``meta``."""
    try:
        with open(root / META_FILE, encoding='utf-8') as f:
            if json.load(f) != meta:
                return False
    except (OSError, ValueError):
        return False
    return all(path.is_file() for path in _expected_files(root, meta))


def _clear(root: Path) -> None:
    """Remove the metadata and every ``toy_*`` file a previous run wrote."""
    (root / META_FILE).unlink(missing_ok=True)
    for kind, suffix in (('images', '.jpg'), ('annotations', '.png')):
        for split in SPLITS:
            folder = root / kind / split
            if folder.is_dir():
                for path in folder.glob(f'{FILE_PREFIX}*{suffix}'):
                    path.unlink()


def _write_image(path: Path,
                 array: np.ndarray,
                 ext: str,
                 params: Tuple[int, ...] = ()) -> None:
    ok, buf = cv2.imencode(ext, array, list(params))
    if not ok:
        raise OSError(f'could not encode {path}')
    path.write_bytes(buf.tobytes())


def _check_toy_args(num_train: int, num_val: int, img_size: int,
                    num_classes: int, seed: int) -> None:
    if num_train < 0 or num_val < 0:
        raise ValueError('num_train and num_val must be non-negative, got '
                         f'{num_train} and {num_val}')
    if img_size < 16:
        raise ValueError(f'img_size must be at least 16, got {img_size}')
    if not 1 <= num_classes <= 254:
        # Disk value 255 would be ignored after reduce_zero_label.
        raise ValueError(f'num_classes must be in [1, 254], got {num_classes}')
    if seed < 0:
        raise ValueError(f'seed must be non-negative, got {seed}')



def _write_split(root: Path, split: str, split_id: int, num: int, seed: int,
                 img_size: int, num_classes: int) -> None:
    """Images and annotations of one split (sample ``idx`` is drawn from
    ``default_rng([seed, split_id, idx])``)."""
    img_dir = root / 'images' / split
    ann_dir = root / 'annotations' / split
    img_dir.mkdir(parents=True, exist_ok=True)
    ann_dir.mkdir(parents=True, exist_ok=True)
    for idx in range(num):
        rng = np.random.default_rng([seed, split_id, idx])
        img, label = synthesize_toy_sample(rng, img_size, num_classes)
        name = f'{FILE_PREFIX}{idx:05d}'
        _write_image(img_dir / f'{name}.jpg', img[..., ::-1], '.jpg',
                     (cv2.IMWRITE_JPEG_QUALITY, 95))
        _write_image(ann_dir / f'{name}.png', label, '.png')


def generate_toy_dataset(root: Union[str, os.PathLike],
                         num_train: int = 96,
                         num_val: int = 24,
                         img_size: int = 128,
                         num_classes: int = 8,
                         seed: int = 0,
                         overwrite: bool = False) -> Dict:
    """Generate the toy dataset under ``root`` in ADE20K's layout.

    Idempotent: when ``root`` already holds a complete dataset generated with
    the same parameters (recorded in ``root/toy_meta.json``, written last),
    nothing is done unless ``overwrite=True``. Otherwise the ``toy_*`` files
    of any previous run are removed and the dataset is written afresh; other
    files under ``root`` are left alone.

    Args:
        root (str | os.PathLike): Dataset root, e.g. ``'data/toy_ade'``.
        num_train (int): Number of training images. Defaults to 96.
        num_val (int): Number of validation images. Defaults to 24.
        img_size (int): Height and width of the square images.
            Defaults to 128.
        num_classes (int): Number of classes, stored as ``1..num_classes``
            on disk. :class:`ToyADE20KDataset` expects the default of 8.
            Defaults to 8.
        seed (int): Non-negative random seed. Defaults to 0.
        overwrite (bool): Regenerate even if a matching dataset exists.
            Defaults to False.

    Returns:
        dict: ``root``, ``num_train``, ``num_val``, ``img_size``,
        ``num_classes``, ``seed``, ``classes`` (the class names) and
        ``generated`` (False when an existing dataset was reused).
    """
    _check_toy_args(num_train, num_val, img_size, num_classes, seed)
    root = Path(root)
    classes = toy_class_names(num_classes)
    meta = dict(
        generator_version=GENERATOR_VERSION,
        num_train=int(num_train),
        num_val=int(num_val),
        img_size=int(img_size),
        num_classes=int(num_classes),
        seed=int(seed),
        classes=list(classes))
    summary = dict(
        root=str(root),
        num_train=meta['num_train'],
        num_val=meta['num_val'],
        img_size=meta['img_size'],
        num_classes=meta['num_classes'],
        seed=meta['seed'],
        classes=classes,
        generated=False)
    if not overwrite and _is_complete(root, meta):
        return summary

    _clear(root)
    for split_id, (split, num) in enumerate(zip(SPLITS, (num_train, num_val))):
        _write_split(root, split, split_id, num, seed, img_size, num_classes)

    tmp = root / f'{META_FILE}.tmp'
    with open(tmp, 'w', encoding='utf-8') as f:
        json.dump(meta, f, indent=2)
    os.replace(tmp, root / META_FILE)
    summary['generated'] = True
    return summary
