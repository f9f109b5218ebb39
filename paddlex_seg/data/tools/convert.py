"""convert: LabelMe, COCO, VOC or plain masks -> a PaddleX SEG data set.

Output in ``save_dir``: ``JPEGImages/`` (copies of the images), ``Annotations/<name>.png``
(palette PNGs whose pixel values are class ids, 255 = ignore), ``labels.txt`` (class 0 first)
and ``file_list.txt`` (every pair); with ``val_value > 0`` also train/val/test lists
(:func:`split_dataset`). The inputs are never modified.

Sources:

* ``labelme``: ``input_dir`` holds LabelMe ``.json`` files. The image is found from the JSON's
  ``imagePath`` (relative to the JSON), else a file of the same name in ``input_dir``, else the
  embedded ``imageData``. Shapes are drawn with OpenCV in pixel coordinates (rounded to
  integers): ``polygon`` filled, ``rectangle`` filled between its two corners (inclusive),
  ``circle`` filled (centre, a point on the rim; the pixels within the rounded radius),
  ``line`` and ``linestrip`` as 1-pixel lines widened by a ``line_width`` disc (default 3: a
  horizontal line covers its row and the rows above and below), ``point`` as a filled disc of
  radius ``point_radius`` (default 2: the pixels with dx² + dy² <= 4, 13 of them). Classes: ``_background_`` is 0, then the label names in sorted order, or the
  order of ``label_list``.
* ``coco``: ``annotation_file`` is a COCO instances JSON, images in ``input_dir``. Polygons and
  RLE (compressed string counts, or uncompressed lists) are decoded with pycocotools.
  Categories sorted by id become classes 1..K after ``background``. Crowd annotations are
  drawn with their class.
* ``voc``: ``input_dir`` holds ``JPEGImages/`` and ``SegmentationClass/`` (``label_dir``);
  palette PNG indices are the class ids, 255 (the border) stays 255. Classes: ``label_list``,
  else the 21 VOC names when no index exceeds 20.
* ``mask``: ``input_dir`` holds ``JPEGImages/`` and ``Annotations/`` (``label_dir``) of
  gray, palette or colour masks (palette PNGs count as gray: their indices). All masks are
  read first; gray masks with only 0 and 255 become 0/1; gray values that are all below the
  length of ``label_list`` (or 255) are kept as class ids; other gray values (255 apart,
  which stays the ignore value) and RGB colours are numbered in sorted order (0 / black
  first). The mapping is returned as
  ``value_map``.

Ambiguous input is an error naming the file and the shape: a label missing from
``label_list``, instances of different classes overlapping (``overlap='error'``; 'last' lets
later shapes win, 'first' earlier ones), an image without shapes (``empty='error'``;
'background' writes an all-0 mask, 'skip' leaves the image out), a shape outside the image
(``outside='error'``; 'clip' draws the part inside), malformed JSON.
"""
import base64
import binascii
import io
import json
import os
import shutil

import cv2
import numpy as np
from PIL import Image

from ..._zlib_first import check_png_writes
from ..dataset import SegDataError
from ._files import (IGNORE, IMAGE_EXTS, find_files, match_pairs, read_names, rel,
                     write_index_png, write_lines)

__all__ = ['convert', 'SOURCES', 'VOC_CLASSES']

SOURCES = ('labelme', 'coco', 'voc', 'mask')
VOC_CLASSES = ('background', 'aeroplane', 'bicycle', 'bird', 'boat', 'bottle', 'bus', 'car', 'cat',
               'chair', 'cow', 'diningtable', 'dog', 'horse', 'motorbike', 'person', 'pottedplant',
               'sheep', 'sofa', 'train', 'tvmonitor')
LABELME_BACKGROUND = '_background_'
_SHAPE_TYPES = ('polygon', 'rectangle', 'circle', 'line', 'linestrip', 'point')


def convert(source, input_dir=None, save_dir=None, annotation_file=None, label_list=None,
            label_dir=None, image_dir=None, overlap='error', empty='error', outside='error', line_width=3,
            point_radius=2, val_value=0.0, test_value=0.0, seed=0):
    """Converts annotations into palette index PNGs, labels.txt and file lists.

    Args:
        source (str): 'labelme', 'coco', 'voc' or 'mask'.
        input_dir (str): LabelMe JSON folder; COCO image folder; VOC or mask data set root.
        save_dir (str): output folder (must differ from ``input_dir``).
        annotation_file (str): the COCO JSON (``coco`` only).
        label_list (str|list[str]|None): class names, class 0 first; a name missing from it
            is an error. None derives the classes (see the module docstring).
        label_dir (str|None): VOC / mask label sub-folder (default 'SegmentationClass' /
            'Annotations').
        image_dir (str|None): LabelMe only: another folder to look for the images in.
        overlap, empty, outside (str): policies, see the module docstring.
        line_width (int), point_radius (int): LabelMe line stroke width and point disc radius.
        val_value, test_value (float), seed (int): when val_value > 0, also split the result.

    Returns:
        dict: 'save_dir', 'labels' (names), 'num_images', 'file_list', 'skipped' (names of
        images left out with empty='skip'), 'value_map' (mask source), 'split' (or None).
    """
    if source not in SOURCES:
        raise SegDataError(f'source must be one of {", ".join(SOURCES)}, got {source!r}')
    for name, value, allowed in (('overlap', overlap, ('error', 'last', 'first')),
                                 ('empty', empty, ('error', 'background', 'skip')),
                                 ('outside', outside, ('error', 'clip'))):
        if value not in allowed:
            raise SegDataError(f'{name} must be one of {", ".join(allowed)}, got {value!r}')
    for name, value in (('line_width', line_width), ('point_radius', point_radius)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise SegDataError(f'{name} must be an int >= 1, got {value!r}')
    if input_dir is None or not os.path.isdir(input_dir):
        raise SegDataError(f'input_dir {input_dir!r} is not a folder')
    if save_dir is None:
        raise SegDataError('save_dir is required')
    input_dir, save_dir = os.path.abspath(input_dir), os.path.abspath(save_dir)
    if input_dir == save_dir:
        raise SegDataError(f'save_dir must differ from input_dir ({input_dir}); inputs are never '
                           'overwritten')
    names = read_names(label_list) if label_list is not None else None
    opts = dict(image_dir=image_dir, overlap=overlap, empty=empty, outside=outside, line_width=line_width,
                point_radius=point_radius)
    value_map = None
    if source == 'labelme':
        names, samples = _labelme(input_dir, names, opts)
    elif source == 'coco':
        if annotation_file is None:
            raise SegDataError('source coco needs annotation_file (the instances JSON)')
        names, samples = _coco(annotation_file, input_dir, names, opts)
    elif source == 'voc':
        names, samples = _voc(input_dir, label_dir or 'SegmentationClass', names)
    else:
        names, samples, value_map = _mask(input_dir, label_dir or 'Annotations', names)

    lines, skipped = [], []
    for stem, image_path, label in samples:  # label None: skipped (empty='skip')
        if label is None:
            skipped.append(stem)
            continue
        ext = '.png' if isinstance(image_path, bytes) else os.path.splitext(image_path)[1]
        image_out = os.path.join(save_dir, 'JPEGImages', stem + ext)
        os.makedirs(os.path.dirname(image_out), exist_ok=True)
        if isinstance(image_path, bytes):  # LabelMe imageData
            with open(image_out, 'wb') as f:
                f.write(image_path)
        else:
            shutil.copyfile(image_path, image_out)
        label_out = write_index_png(os.path.join(save_dir, 'Annotations', stem + '.png'), label)
        lines.append(f'{rel(image_out, save_dir)} {rel(label_out, save_dir)}')
    if not lines:
        raise SegDataError(f'no image to write from {input_dir} (all skipped as empty)')
    write_lines(os.path.join(save_dir, 'labels.txt'), names)
    file_list = write_lines(os.path.join(save_dir, 'file_list.txt'), lines)
    split = None
    if val_value or test_value:
        from .split import split_dataset
        split = split_dataset(save_dir, val_value, test_value, seed)
    return {'save_dir': save_dir, 'labels': list(names), 'num_images': len(lines),
            'file_list': file_list, 'skipped': skipped, 'value_map': value_map, 'split': split}


# --- painting with overlap checks ---------------------------------------------------------
class _Canvas:
    """An HW label; each shape is painted through ``add`` with the overlap policy."""

    def __init__(self, height, width, where, overlap):
        self.label = np.zeros((height, width), np.uint8)
        self.owner = np.full((height, width), -1, np.int32)  # which shape set the pixel
        self.shapes = []
        self.where, self.overlap = where, overlap

    def add(self, region, class_id, desc):
        region = region.astype(bool)
        taken = region & (self.owner >= 0)
        clash = taken & (self.label != class_id)
        if clash.any():
            if self.overlap == 'error':
                y, x = np.argwhere(clash)[0]
                other = self.shapes[self.owner[y, x]]
                raise SegDataError(
                    f'{self.where}: {desc} overlaps {other} ({int(clash.sum())} pixels, first at '
                    f'x={x}, y={y}), and they have different classes; pass overlap="last" (later '
                    'shapes win) or overlap="first", or fix the annotation')
            if self.overlap == 'first':
                region = region & (self.owner < 0)
        self.label[region] = class_id
        self.owner[region] = len(self.shapes)
        self.shapes.append(desc)


def _read_json(path):
    try:
        with open(path, encoding='utf-8-sig') as f:
            return json.load(f)
    except json.JSONDecodeError as error:
        raise SegDataError(f'{path} is not valid JSON: {error}') from error
    except (OSError, UnicodeDecodeError) as error:
        raise SegDataError(f'{path} cannot be read: {error}') from error


def _image_size(path):
    try:
        with Image.open(path) as image:
            return image.height, image.width
    except Exception as error:
        raise SegDataError(f'image {path} cannot be read: {type(error).__name__}: {error}') from error


def _class_of(name, names, where, desc):
    if name not in names:
        raise SegDataError(f'{where}: {desc} has label {name!r}, which is not in the label list '
                           f'({", ".join(names)})')
    return names.index(name)


def _empty(where, empty, height, width):
    if empty == 'error':
        raise SegDataError(f'{where}: no shapes (an empty image); pass empty="background" for an '
                           'all-background mask or empty="skip" to leave it out')
    return None if empty == 'skip' else np.zeros((height, width), np.uint8)


# --- LabelMe ------------------------------------------------------------------------------
def _labelme(input_dir, names, opts):
    paths = sorted(find_files(input_dir, ('.json',), 'LabelMe JSON').items())
    if not paths:
        raise SegDataError(f'no LabelMe .json file in {input_dir}')
    docs = []
    for stem, path in paths:
        doc = _read_json(path)
        if not isinstance(doc, dict) or not isinstance(doc.get('shapes'), list):
            raise SegDataError(f'{path}: not a LabelMe file (no "shapes" list)')
        for index, shape in enumerate(doc['shapes']):
            if not isinstance(shape, dict) or not isinstance(shape.get('label'), str):
                raise SegDataError(f'{path}: shape {index} has no "label" string')
        docs.append((stem, path, doc))
    if names is None:
        found = sorted({s['label'] for _, _, d in docs for s in d['shapes']} - {LABELME_BACKGROUND})
        names = [LABELME_BACKGROUND] + found
    samples = []
    for stem, path, doc in docs:
        image, height, width = _labelme_image(doc, path, input_dir, stem, opts)
        if not doc['shapes']:
            samples.append((stem, image, _empty(path, opts['empty'], height, width)))
            continue
        canvas = _Canvas(height, width, path, opts['overlap'])
        for index, shape in enumerate(doc['shapes']):
            kind = shape.get('shape_type') or 'polygon'
            desc = f'shape {index} ({kind} {shape["label"]!r})'
            class_id = _class_of(shape['label'], names, path, desc)
            region = _draw_shape(shape, kind, height, width, path, desc, opts)
            canvas.add(region, class_id, desc)
        samples.append((stem, image, canvas.label))
    return names, samples


def _labelme_image(doc, path, input_dir, stem, opts):
    """(image path or bytes, height, width) of a LabelMe file."""
    candidates = []
    if isinstance(doc.get('imagePath'), str) and doc['imagePath']:
        candidates.append(os.path.join(os.path.dirname(path), doc['imagePath'].replace('\\', '/')))
    folders = [input_dir] + ([opts['image_dir']] if opts['image_dir'] else [])
    if opts['image_dir'] and isinstance(doc.get('imagePath'), str) and doc['imagePath']:
        candidates.append(os.path.join(opts['image_dir'],
                                       os.path.basename(doc['imagePath'].replace('\\', '/'))))
    candidates += [os.path.join(f, stem + ext) for f in folders for ext in IMAGE_EXTS]
    image = next((c for c in candidates if os.path.isfile(c)), None)
    if image is not None:
        height, width = _image_size(image)
    elif doc.get('imageData'):
        try:
            image = base64.b64decode(doc['imageData'], validate=False)
            with Image.open(io.BytesIO(image)) as decoded:
                height, width = decoded.height, decoded.width
                fmt = (decoded.format or 'PNG').lower()
        except (binascii.Error, OSError, ValueError) as error:
            raise SegDataError(f'{path}: imageData cannot be decoded: {error}') from error
        if fmt != 'png':  # keep the bytes, but give them the right extension via a temp name
            image = _reencode_png(image)
    else:
        raise SegDataError(f'{path}: image not found (imagePath {doc.get("imagePath")!r}, looked '
                           f'for {candidates[0]}) and no imageData')
    h, w = doc.get('imageHeight'), doc.get('imageWidth')
    if (h is not None and h != height) or (w is not None and w != width):
        raise SegDataError(f'{path}: imageHeight x imageWidth = {h} x {w} but the image is '
                           f'{height} x {width}')
    return image, height, width


def _reencode_png(data):
    check_png_writes("(a LabelMe imageData re-encoded as PNG)")
    with Image.open(io.BytesIO(data)) as image:
        out = io.BytesIO()
        image.save(out, format='PNG')  # not a label: no palette check needed for RGB data
        return out.getvalue()


def _draw_shape(shape, kind, height, width, path, desc, opts):
    points = shape.get('points')
    try:
        pts = np.asarray(points, dtype=np.float64)
    except (TypeError, ValueError):
        pts = np.zeros((0,))
    need = {'polygon': 3, 'rectangle': 2, 'circle': 2, 'line': 2, 'linestrip': 2, 'point': 1}
    if kind not in _SHAPE_TYPES:
        raise SegDataError(f'{path}: {desc} has shape_type {kind!r}; supported: '
                           f'{", ".join(_SHAPE_TYPES)}')
    if pts.ndim != 2 or pts.shape[1] != 2 or len(pts) < need[kind] or not np.isfinite(pts).all():
        raise SegDataError(f'{path}: {desc} needs at least {need[kind]} [x, y] points, got '
                           f'{points!r}')
    if kind in ('circle', 'line') and len(pts) != 2:
        raise SegDataError(f'{path}: {desc} needs exactly 2 points, got {len(pts)}')
    outside = (pts[:, 0] < 0) | (pts[:, 0] > width) | (pts[:, 1] < 0) | (pts[:, 1] > height)
    if kind == 'circle':
        radius = float(np.hypot(*(pts[1] - pts[0])))
        cx, cy = pts[0]
        outside = np.array([cx - radius < 0 or cy - radius < 0 or
                            cx + radius > width or cy + radius > height])
    if outside.any() and opts['outside'] == 'error':
        raise SegDataError(f'{path}: {desc} lies partly outside the {width}x{height} image '
                           f'(points {pts.tolist()}); pass outside="clip" to keep the inside part')
    ipts = np.round(pts).astype(np.int32)
    region = np.zeros((height, width), np.uint8)
    if kind == 'polygon':
        cv2.fillPoly(region, [ipts.reshape(-1, 1, 2)], 1)
    elif kind == 'rectangle':
        # Two opposite corners (LabelMe), or all four (some other tools): their bounding box.
        (x1, y1), (x2, y2) = ipts.min(axis=0), ipts.max(axis=0)
        cv2.rectangle(region, (int(x1), int(y1)), (int(x2), int(y2)), 1, thickness=-1)
    elif kind == 'circle':
        cv2.circle(region, (int(ipts[0][0]), int(ipts[0][1])), int(round(radius)), 1, thickness=-1)
    elif kind in ('line', 'linestrip'):
        # A 1-pixel line widened by a line_width x line_width disc: an axis-aligned line is
        # exactly line_width pixels wide (OpenCV's own thick lines come out wider).
        cv2.polylines(region, [ipts.reshape(-1, 1, 2)], False, 1, thickness=1)
        if opts['line_width'] > 1:
            size = opts['line_width'] if opts['line_width'] % 2 else opts['line_width'] + 1
            disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))
            region = cv2.dilate(region, disc)
    else:
        cv2.circle(region, (int(ipts[0][0]), int(ipts[0][1])), opts['point_radius'], 1, thickness=-1)
    return region


# --- COCO ---------------------------------------------------------------------------------
def _coco(annotation_file, input_dir, names, opts):
    try:
        from pycocotools import mask as coco_mask
    except ImportError as error:
        raise ImportError('convert --source coco needs pycocotools: pip install pycocotools '
                          '(or pip install "paddlex_seg[data]")') from error
    doc = _read_json(annotation_file)
    where = annotation_file
    for key in ('images', 'annotations', 'categories'):
        if not isinstance(doc, dict) or not isinstance(doc.get(key), list):
            raise SegDataError(f'{where}: not a COCO instances file (no "{key}" list)')
    categories = sorted(doc['categories'], key=lambda c: c.get('id', 0))
    cat_names = [str(c.get('name')) for c in categories]
    if len(set(cat_names)) != len(cat_names):
        dup = next(n for n in cat_names if cat_names.count(n) > 1)
        raise SegDataError(f'{where}: category name {dup!r} is used by two category ids')
    if names is None:
        names = ['background'] + cat_names
    cat_class = {}
    for cat, name in zip(categories, cat_names):
        cat_class[cat.get('id')] = _class_of(name, names, where, f'category {cat.get("id")}')
    by_image = {}
    for ann in doc['annotations']:
        by_image.setdefault(ann.get('image_id'), []).append(ann)
    samples = []
    for info in doc['images']:
        file_name = str(info.get('file_name', ''))
        image_path = os.path.join(input_dir, file_name)
        if not os.path.isfile(image_path):
            raise SegDataError(f'{where}: image id {info.get("id")} file {file_name!r} not found '
                               f'in {input_dir}')
        height, width = _image_size(image_path)
        if (info.get('height'), info.get('width')) not in ((height, width), (None, None)):
            raise SegDataError(f'{where}: image {file_name} is listed as {info.get("height")} x '
                               f'{info.get("width")} but the file is {height} x {width}')
        stem = os.path.splitext(file_name.replace('\\', '/'))[0]
        anns = by_image.get(info.get('id'), [])
        img_where = f'{where}, image {file_name}'
        if not anns:
            samples.append((stem, image_path, _empty(img_where, opts['empty'], height, width)))
            continue
        canvas = _Canvas(height, width, img_where, opts['overlap'])
        for ann in anns:
            desc = f'annotation id {ann.get("id")}'
            if ann.get('category_id') not in cat_class:
                raise SegDataError(f'{img_where}: {desc} has category_id {ann.get("category_id")!r}'
                                   ', which is not in "categories"')
            desc += f' ({names[cat_class[ann["category_id"]]]!r})'
            region = _coco_region(ann.get('segmentation'), height, width, img_where, desc, opts,
                                  coco_mask)
            canvas.add(region, cat_class[ann['category_id']], desc)
        samples.append((stem, image_path, canvas.label))
    return names, samples


def _coco_region(segm, height, width, where, desc, opts, coco_mask):
    if isinstance(segm, list):  # polygons [[x1, y1, x2, y2, ...], ...]
        if not segm or not all(isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0 and
                               all(isinstance(v, (int, float)) for v in p) for p in segm):
            raise SegDataError(f'{where}: {desc} has a malformed polygon segmentation (each '
                               f'polygon needs >= 3 x, y pairs): {str(segm)[:80]}')
        coords = np.concatenate([np.asarray(p, float) for p in segm]).reshape(-1, 2)
        out = ((coords[:, 0] < 0) | (coords[:, 0] > width) |
               (coords[:, 1] < 0) | (coords[:, 1] > height))
        if out.any() and opts['outside'] == 'error':
            x, y = coords[np.argmax(out)]
            raise SegDataError(f'{where}: {desc} has a polygon point ({x}, {y}) outside the '
                               f'{width}x{height} image; pass outside="clip" to keep the inside')
        rles = coco_mask.frPyObjects(segm, height, width)
        return coco_mask.decode(coco_mask.merge(rles))
    if isinstance(segm, dict) and 'counts' in segm and 'size' in segm:
        if list(segm['size']) != [height, width]:
            raise SegDataError(f'{where}: {desc} has an RLE of size {segm["size"]} (h, w) but the '
                               f'image is {height} x {width}')
        counts = segm['counts']
        try:
            if isinstance(counts, list):  # uncompressed
                if sum(counts) != height * width:
                    raise SegDataError(f'{where}: {desc} has uncompressed RLE counts summing to '
                                       f'{sum(counts)}, not {height} x {width} = {height * width}')
                rle = coco_mask.frPyObjects(segm, height, width)
            else:
                rle = {'size': [height, width],
                       'counts': counts.encode('ascii') if isinstance(counts, str) else counts}
            return coco_mask.decode(rle)
        except SegDataError:
            raise
        except Exception as error:
            raise SegDataError(f'{where}: {desc} has an RLE that cannot be decoded: '
                               f'{type(error).__name__}: {error}') from error
    raise SegDataError(f'{where}: {desc} has no usable segmentation (polygon list or RLE dict), '
                       f'got {str(segm)[:80]}')


# --- VOC and plain masks ------------------------------------------------------------------
def _voc(input_dir, label_dir, names):
    pairs = match_pairs(os.path.join(input_dir, 'JPEGImages'), os.path.join(input_dir, label_dir))
    labels, top = [], 0
    for stem, image_path, label_path in pairs:
        with Image.open(label_path) as image:
            if image.mode not in ('P', 'L'):
                raise SegDataError(f'VOC label {label_path} is a {image.mode} image, not a palette '
                                   'PNG; use --source mask for colour masks')
            label = np.array(image, dtype=np.uint8)
        _check_sizes(image_path, label_path, label)
        ids = label[label != IGNORE]
        top = max(top, int(ids.max()) if ids.size else 0)
        labels.append((stem, image_path, label, label_path))
    if names is None:
        names = list(VOC_CLASSES) if top < len(VOC_CLASSES) else [f'class_{i}' for i in range(top + 1)]
    for _, _, label, label_path in labels:
        bad = np.unique(label[(label >= len(names)) & (label != IGNORE)])
        if bad.size:
            raise SegDataError(f'VOC label {label_path} holds class ids {bad.tolist()}, outside the '
                               f'{len(names)} classes of the label list')
    return names, [(s, i, lab) for s, i, lab, _ in labels]


def _mask(input_dir, label_dir, names):
    pairs = match_pairs(os.path.join(input_dir, 'JPEGImages'), os.path.join(input_dir, label_dir),
                        label_exts=('.png', '.bmp', '.tif', '.tiff'))
    raw = []
    for stem, image_path, label_path in pairs:
        with Image.open(label_path) as image:
            mode = image.mode  # 'P' (e.g. EISeg's pseudo-colour PNGs): the indices, as gray
            if mode in ('RGBA', 'LA'):
                image = image.convert('RGB' if mode != 'LA' else 'L')
            array = np.array(image)
        if array.ndim == 3:
            array = array[..., :3]
            if (array == array[..., :1]).all():
                array = array[..., 0]
        _check_sizes(image_path, label_path, array)
        raw.append((stem, image_path, label_path, array))
    gray = [a for *_, a in raw if a.ndim == 2]
    colour = [a for *_, a in raw if a.ndim == 3]
    if gray and colour:
        path = next(p for *_, p, a in raw if a.ndim == 3)
        raise SegDataError(f'masks in {label_dir} mix gray and colour images (e.g. {path} is colour)')
    if gray:
        values = sorted(set(np.unique(np.concatenate([a.ravel() for a in gray])).tolist()))
        keys = values
        if set(values) <= {0, 255}:
            value_map = {0: 0, 255: 1}
        elif names is not None and all(v < len(names) or v == IGNORE for v in values):
            value_map = {v: v for v in values}  # already class ids of the label list
        else:  # 255 stays the ignore value
            value_map = {v: i for i, v in enumerate(v for v in values if v != IGNORE)}
            if IGNORE in values:
                value_map[IGNORE] = IGNORE
    else:
        keys = sorted({tuple(c) for a in colour for c in np.unique(a.reshape(-1, 3), axis=0).tolist()})
        value_map = {k: i for i, k in enumerate(keys)}
    if len(value_map) > 255:
        raise SegDataError(f'masks in {label_dir} hold {len(value_map)} distinct values; too many '
                           'to be classes')
    count = max([i for i in value_map.values() if i != IGNORE] + [0]) + 1
    if names is None:
        names = ['background', 'foreground'] if gray and set(keys) <= {0, 255} else (
            [f'class_{i}' for i in range(count)])
    elif len(names) < count:
        raise SegDataError(f'the masks hold {count} distinct values {list(value_map)} but the label '
                           f'list names {len(names)} classes')
    samples = []
    for stem, image_path, _, array in raw:
        out = np.zeros(array.shape[:2], np.uint8)
        if array.ndim == 2:
            lut = np.zeros(256, np.uint8)
            for value, index in value_map.items():
                lut[value] = index
            out = lut[array]
        else:
            for colour_key, index in value_map.items():
                out[(array == colour_key).all(axis=-1)] = index
        samples.append((stem, image_path, out))
    return names, samples, {str(k): v for k, v in value_map.items()}


def _check_sizes(image_path, label_path, label):
    height, width = _image_size(image_path)
    if label.shape[:2] != (height, width):
        raise SegDataError(f'label {label_path} is {label.shape[0]} x {label.shape[1]} but image '
                           f'{image_path} is {height} x {width}')
