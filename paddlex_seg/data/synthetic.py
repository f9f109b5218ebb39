"""A small synthetic segmentation data set, written to disk in PaddleX format.

Each image shows a few filled shapes (circle, rectangle, triangle, ...) on a
textured, noisy background. Each foreground class has its own shape and
colour, both jittered, so a network has to learn something but can learn it
in a few epochs. Used by tests, examples and benchmarks; no download needed.
"""
import dataclasses
import os

import cv2
import numpy as np
from PIL import Image

from .._zlib_first import check_png_writes

__all__ = ['make_synthetic_dataset', 'SyntheticDataset', 'class_names']

SHAPES = ('circle', 'rectangle', 'triangle')
# Saturated BGR colours, one per foreground class (cycled); the background
# is drawn from muted colours so classes differ from it by hue, not only shape.
_CLASS_COLOURS = ((40, 40, 220), (40, 200, 40), (220, 60, 40), (30, 200, 230),
                  (200, 40, 200), (220, 200, 40), (120, 40, 120),
                  (40, 120, 220))


@dataclasses.dataclass(frozen=True)
class SyntheticDataset:
    """Paths of a data set written by :func:`make_synthetic_dataset`.

    Attributes:
        root (str): Folder holding everything; the ``data_dir`` of SegDataset.
        train_list (str): ``train.txt``.
        val_list (str): ``val.txt``.
        label_list (str): ``labels.txt``, one class name per line.
        num_classes (int): Number of classes, background included.
    """
    root: str
    train_list: str
    val_list: str
    label_list: str
    num_classes: int


def make_synthetic_dataset(root,
                           num_train=32,
                           num_val=8,
                           image_size=(96, 96),
                           num_classes=3,
                           seed=0,
                           palette_labels=False):
    """Writes a synthetic segmentation data set under ``root``.

    Layout: ``images/{train,val}_NNNN.{jpg,png}`` (even indices JPEG, odd
    PNG, so both decoders are exercised), ``annotations/{train,val}_NNNN.png``
    (class ids; 0 is background), and ``train.txt``, ``val.txt``,
    ``labels.txt`` in PaddleX format with paths relative to ``root``.
    The same arguments give byte-identical files.

    Args:
        root (str): Output folder, created if missing; files are overwritten.
        num_train (int): Training samples, >= 1. Default: 32.
        num_val (int): Validation samples, >= 0. Default: 8.
        image_size (tuple[int, int]): (height, width), each >= 16.
            Default: (96, 96).
        num_classes (int): Classes including background, 2..255. Class k >= 1
            is shape ``SHAPES[(k - 1) % 3]`` in its own colour. Default: 3.
        seed (int): Random seed. Default: 0.
        palette_labels (bool): Write labels as palette ('P') PNGs instead of
            grayscale ('L'). Default: False.

    Returns:
        SyntheticDataset: The paths written and the number of classes.
    """
    _check_int('num_train', num_train, 1)
    _check_int('num_val', num_val, 0)
    _check_int('num_classes', num_classes, 2, 255)
    _check_int('seed', seed, 0)
    if (not isinstance(image_size, (tuple, list)) or len(image_size) != 2 or
            not all(isinstance(v, int) and v >= 16 for v in image_size)):
        raise ValueError(f'image_size must be (height, width) with ints >= '
                         f'16, got {image_size!r}')
    if not isinstance(palette_labels, bool):
        raise ValueError(
            f'palette_labels must be True or False, got {palette_labels!r}')

    root = os.path.abspath(os.fspath(root))
    os.makedirs(os.path.join(root, 'images'), exist_ok=True)
    os.makedirs(os.path.join(root, 'annotations'), exist_ok=True)
    palette = _palette(num_classes) if palette_labels else None
    lists = {}
    # Separate streams: the val set does not change when num_train does.
    for stream, (split, count) in enumerate((('train', num_train),
                                             ('val', num_val))):
        rng = np.random.default_rng([seed, stream])
        lines = []
        for index in range(count):
            image, label = _draw_sample(rng, image_size, num_classes)
            name = f'{split}_{index:04d}'
            image_rel = f'images/{name}.{"jpg" if index % 2 == 0 else "png"}'
            label_rel = f'annotations/{name}.png'
            _write_image(os.path.join(root, image_rel), image)
            _write_label(os.path.join(root, label_rel), label, palette)
            lines.append(f'{image_rel} {label_rel}\n')
        lists[split] = os.path.join(root, f'{split}.txt')
        with open(lists[split], 'w', encoding='utf-8') as f:
            f.writelines(lines)
    label_list = os.path.join(root, 'labels.txt')
    with open(label_list, 'w', encoding='utf-8') as f:
        f.writelines(name + '\n' for name in class_names(num_classes))
    return SyntheticDataset(root, lists['train'], lists['val'], label_list,
                            num_classes)


def class_names(num_classes):
    """Names of the synthetic classes: 'background', then shape names."""
    names = ['background']
    for k in range(1, num_classes):
        shape = SHAPES[(k - 1) % len(SHAPES)]
        repeat = (k - 1) // len(SHAPES)
        names.append(shape if repeat == 0 else f'{shape}_{repeat + 1}')
    return names


def _draw_sample(rng, image_size, num_classes):
    height, width = image_size
    image = _background(rng, height, width)
    label = np.zeros((height, width), np.uint8)
    for _ in range(int(rng.integers(1, 5))):
        class_id = int(rng.integers(1, num_classes))
        colour = np.array(_CLASS_COLOURS[(class_id - 1) % len(_CLASS_COLOURS)])
        colour = tuple(int(c) for c in np.clip(
            colour + rng.integers(-30, 31, 3), 0, 255))
        shape = SHAPES[(class_id - 1) % len(SHAPES)]
        _draw_shape(rng, shape, image, colour, label, class_id)
    noise = rng.normal(0.0, 8.0, image.shape)
    image = np.clip(image.astype(np.float32) + noise, 0, 255)
    return image.astype(np.uint8), label


def _background(rng, height, width):
    """A muted colour gradient with stripes: texture the net must ignore."""
    start, end = rng.integers(60, 170, (2, 3)).astype(np.float32)
    angle = rng.uniform(0, np.pi)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    along = xs * np.cos(angle) + ys * np.sin(angle)
    along = (along - along.min()) / max(float(np.ptp(along)), 1.0)
    image = start + (end - start) * along[..., None]
    period = rng.uniform(6, 20)
    stripes = 12.0 * np.sin(2 * np.pi * (xs * np.sin(angle) -
                                         ys * np.cos(angle)) / period)
    return np.clip(image + stripes[..., None], 0, 255).astype(np.uint8)


def _draw_shape(rng, shape, image, colour, label, class_id):
    height, width = label.shape
    size = int(rng.integers(min(height, width) // 8,
                            min(height, width) // 3 + 1))
    cx = int(rng.integers(0, width))
    cy = int(rng.integers(0, height))
    if shape == 'circle':
        # Anti-aliased edges on the image only, as a real photo would have.
        cv2.circle(image, (cx, cy), size, colour, -1, cv2.LINE_AA)
        cv2.circle(label, (cx, cy), size, class_id, -1, cv2.LINE_8)
        return
    if shape == 'rectangle':
        half_w = size
        half_h = int(rng.integers(size // 2, size + 1))
        corners = np.array([[cx - half_w, cy - half_h],
                            [cx + half_w, cy - half_h],
                            [cx + half_w, cy + half_h],
                            [cx - half_w, cy + half_h]], np.int32)
    else:
        start = rng.uniform(0, 2 * np.pi)
        angles = start + np.array([0, 2 * np.pi / 3, 4 * np.pi / 3])
        corners = np.stack([cx + size * np.cos(angles),
                            cy + size * np.sin(angles)], 1).astype(np.int32)
    cv2.fillPoly(image, [corners], colour, cv2.LINE_AA)
    cv2.fillPoly(label, [corners], class_id, cv2.LINE_8)


def _palette(num_classes):
    """PIL palette: background black, classes in their drawing colours."""
    colours = [(0, 0, 0)]
    for k in range(1, num_classes):
        b, g, r = _CLASS_COLOURS[(k - 1) % len(_CLASS_COLOURS)]
        colours.append((r, g, b))
    flat = [c for colour in colours for c in colour]
    return flat + [0] * (768 - len(flat))


def _write_image(path, image):
    extension = os.path.splitext(path)[1]
    ok, encoded = cv2.imencode(extension, image)
    if not ok:
        raise OSError(f'OpenCV could not encode {path}')
    encoded.tofile(path)  # tofile: works for non-ASCII paths too


def _write_label(path, label, palette):
    check_png_writes(path)
    height, width = label.shape
    if palette is None:
        Image.frombytes('L', (width, height), label.tobytes()).save(path)
        return
    image = Image.frombytes('P', (width, height), label.tobytes())
    image.putpalette(palette)
    image.save(path)


def _check_int(name, value, low, high=None):
    if (isinstance(value, bool) or not isinstance(value, int) or value < low or
            (high is not None and value > high)):
        allowed = f'{low}..{high}' if high is not None else f'>= {low}'
        raise ValueError(
            f'{name} must be an int {allowed}, got {value!r}')
