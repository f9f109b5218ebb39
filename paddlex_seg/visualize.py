"""Overlay a predicted label map on its image (PaddleX 2.x ``paddlex.seg.visualize``).

    result = model.predict('photo.jpg')
    paddlex_seg.visualize('photo.jpg', result, weight=0.6, save_dir='output/vis')
    # -> output/vis/visualize_photo.jpg

Colours come from a fixed palette (class id -> colour), the same in every run and
every program: the PASCAL VOC colour map, where the bits of the class id are spread
over the three channels (0 black, 1 dark red, 2 dark green, 3 olive, ...).
"""
import os

import cv2
import numpy as np

from ._zlib_first import check_png_writes

__all__ = ["visualize", "get_color_map", "ARRAY_IMAGE_NAME"]

# File name used for an image given as an array (it has no name of its own).
ARRAY_IMAGE_NAME = "image.png"
_LEGEND_ROW = 22          # pixels per legend entry
_LEGEND_SWATCH = 16


def get_color_map(num_classes=256):
    """The palette: ``num_classes`` BGR colours as a (num_classes, 3) uint8 array.

    Class ``i``'s colour takes bit ``3k``, ``3k+1``, ``3k+2`` of ``i`` into bit ``7-k``
    of red, green and blue respectively (the PASCAL VOC convention).
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    ids = np.arange(num_classes)
    rgb = np.zeros((num_classes, 3), dtype=np.int64)
    for k in range(8):
        for channel in range(3):
            bit = (ids >> (3 * k + channel)) & 1
            rgb[:, channel] |= bit << (7 - k)
    return rgb[:, ::-1].astype(np.uint8)  # OpenCV images are BGR


def visualize(image, result, weight=0.6, save_dir="./", color=None, legend=False, labels=None):
    """Blend the colour-coded label map of ``result`` with ``image``.

    Args:
        image (str|np.ndarray): the image path, or an HWC BGR uint8 array (as
            ``cv2.imread`` returns).
        result (dict|np.ndarray): a ``predict`` result (its ``label_map`` (H, W) is
            used), or the label map itself, at the image's size.
        weight (float): weight of the image in the blend, in [0, 1]; the colour mask
            gets ``1 - weight``. 0.0 shows the colour mask alone. Default: 0.6.
        save_dir (str|None): where to write ``visualize_<image file name>`` (for an
            array: ``visualize_image.png``); the extension picks the format, with PNG
            when OpenCV cannot write it. None returns the picture instead. Default: './'.
        color (list|None): BGR colours per class id: a flat list ``[b0, g0, r0, b1, ...]``
            or a list of triples; ids beyond it keep the palette's. Default: None.
        legend (bool): add a panel at the right naming the classes present, with their
            colours. Default: False.
        labels (list[str]|None): class names for the legend (index = class id); None
            writes ``class <id>``. Non-ASCII characters are shown as '?', the limit of
            OpenCV's fonts. Default: None.

    Returns:
        str|np.ndarray: the path written, or with ``save_dir=None`` the picture,
        (H, W, 3) BGR uint8 (wider by the legend panel when ``legend``).

    Raises:
        ValueError: a bad argument, or a label map whose size differs from the image's.
    """
    im, name = _load_image(image)
    label_map = result.get("label_map") if isinstance(result, dict) else result
    if not isinstance(label_map, np.ndarray) or label_map.ndim != 2:
        raise ValueError("result must be a predict() result with a 'label_map' (H, W) array, or "
                         f"that array; got {type(result).__name__}"
                         + (f" of shape {label_map.shape}" if isinstance(label_map, np.ndarray) else ""))
    if label_map.shape != im.shape[:2]:
        raise ValueError(f"the label map is {label_map.shape[0]}x{label_map.shape[1]} but the image "
                         f"is {im.shape[0]}x{im.shape[1]} (h x w): pass the image that was predicted")
    if isinstance(weight, bool) or not isinstance(weight, (int, float, np.floating)) or not 0 <= weight <= 1:
        raise ValueError(f"weight must be a number in [0, 1], got {weight!r}")
    palette = _palette(color)
    ids = np.clip(label_map.astype(np.int64), 0, 255)
    mask = palette[ids]
    picture = cv2.addWeighted(im, float(weight), mask, 1.0 - float(weight), 0)
    if legend:
        picture = _with_legend(picture, np.unique(ids), palette, labels)
    if save_dir is None:
        return picture
    os.makedirs(save_dir, exist_ok=True)
    path = os.path.join(save_dir, f"visualize_{name}")
    ext = os.path.splitext(path)[1]
    if not ext or not cv2.haveImageWriter(path):
        path = os.path.splitext(path)[0] + ".png"
    check_png_writes(path)
    if not cv2.imwrite(path, picture):
        raise ValueError(f"OpenCV could not write {path}")
    return path


def _load_image(image):
    if isinstance(image, (str, os.PathLike)):
        path = os.fspath(image)
        im = cv2.imread(path, cv2.IMREAD_COLOR)
        if im is None:
            raise ValueError(f"image {path!r} does not exist or cannot be read as an image")
        return im, os.path.basename(path)
    if isinstance(image, np.ndarray):
        im = image
        if im.ndim == 2:
            im = cv2.cvtColor(im, cv2.COLOR_GRAY2BGR)
        if im.ndim != 3 or im.shape[2] != 3:
            raise ValueError(f"an image array must be (H, W, 3) BGR, got shape {image.shape}")
        if im.dtype != np.uint8:
            im = np.clip(im, 0, 255).astype(np.uint8)
        return im, ARRAY_IMAGE_NAME
    raise ValueError(f"image must be a path or a numpy array, got {type(image).__name__}")


def _palette(color):
    palette = get_color_map(256)
    if color is None:
        return palette
    values = np.asarray(color)
    if values.ndim == 2 and values.shape[1] == 3:
        values = values.reshape(-1)
    if (values.ndim != 1 or values.size == 0 or values.size % 3 or values.size > 768
            or not np.issubdtype(values.dtype, np.number) or values.min() < 0 or values.max() > 255):
        raise ValueError("color must list B, G, R values in [0, 255] for classes 0, 1, ... "
                         f"(flat, length a multiple of 3, or as triples), got {color!r}")
    palette = palette.copy()
    palette[:values.size // 3] = values.reshape(-1, 3).astype(np.uint8)
    return palette


def _with_legend(picture, class_ids, palette, labels):
    names = [_ascii(labels[i]) if labels is not None and i < len(labels) else f"class {i}"
             for i in class_ids]
    font, scale, thickness = cv2.FONT_HERSHEY_SIMPLEX, 0.45, 1
    text_width = max(cv2.getTextSize(n, font, scale, thickness)[0][0] for n in names)
    width = _LEGEND_SWATCH + text_width + 20
    height = max(picture.shape[0], _LEGEND_ROW * len(names) + 6)
    canvas = np.full((height, picture.shape[1] + width, 3), 255, dtype=np.uint8)
    canvas[:picture.shape[0], :picture.shape[1]] = picture
    x0 = picture.shape[1] + 6
    for row, (class_id, name) in enumerate(zip(class_ids, names)):
        y0 = 6 + row * _LEGEND_ROW
        swatch = tuple(int(v) for v in palette[class_id])
        cv2.rectangle(canvas, (x0, y0), (x0 + _LEGEND_SWATCH, y0 + _LEGEND_SWATCH), swatch, -1)
        cv2.rectangle(canvas, (x0, y0), (x0 + _LEGEND_SWATCH, y0 + _LEGEND_SWATCH), (0, 0, 0), 1)
        cv2.putText(canvas, name, (x0 + _LEGEND_SWATCH + 6, y0 + _LEGEND_SWATCH - 3), font, scale,
                    (0, 0, 0), thickness, cv2.LINE_AA)
    return canvas


def _ascii(text):
    return "".join(c if 32 <= ord(c) < 127 else "?" for c in str(text))
