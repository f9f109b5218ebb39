"""Data tools (paddlex_seg.data.tools and their CLI forms) on small files the tests make."""
import hashlib
import json
import os

import cv2
import numpy as np
import pytest
from PIL import Image

import paddlex_seg as seg
from paddlex_seg.cli import main
from paddlex_seg.data.dataset import SegDataError
from paddlex_seg.data.tools import check_dataset, convert, split_dataset

H, W = 40, 40


# === helpers ===

def _image(path, h=H, w=W, value=120):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    cv2.imwrite(str(path), np.full((h, w, 3), value, np.uint8))
    return path


def _png(path, array, mode=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    image = Image.fromarray(np.asarray(array, np.uint8))
    if mode == 'P':
        image = image.convert('P') if image.mode != 'L' else Image.fromarray(np.asarray(array, np.uint8)).convert('P')
        image.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0] + [0] * (252 * 3 - 12) + [224, 224, 192] * 4)
    image.save(path)
    return path


def _p_png(path, indices):
    """A palette PNG whose pixel values are exactly ``indices``."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    image = Image.new('P', (indices.shape[1], indices.shape[0]))
    image.putdata(indices.astype(np.uint8).ravel().tolist())
    image.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] + [64, 64, 64] * 253)
    image.save(path)
    return path


def _label(path):
    return np.array(Image.open(path))


def _labelme(folder, name, shapes, h=H, w=W):
    _image(os.path.join(folder, name + '.jpg'), h, w)
    path = os.path.join(folder, name + '.json')
    with open(path, 'w') as f:
        json.dump({'version': '5.2.1', 'shapes': shapes, 'imagePath': name + '.jpg',
                   'imageHeight': h, 'imageWidth': w, 'imageData': None}, f)
    return path


def _shape(label, kind, points):
    return {'label': label, 'points': points, 'shape_type': kind, 'group_id': None, 'flags': {}}


EVERY_SHAPE = [
    _shape('a', 'polygon', [[2, 2], [8, 2], [8, 8], [2, 8]]),
    _shape('b', 'rectangle', [[16, 6], [12, 2]]),
    _shape('a', 'circle', [[25, 5], [25, 8]]),
    _shape('c', 'line', [[2, 20], [20, 20]]),
    _shape('c', 'linestrip', [[2, 30], [10, 30], [10, 38]]),
    _shape('b', 'point', [[30, 30]]),
]


def _md5(path):
    with open(path, 'rb') as f:
        return hashlib.md5(f.read()).hexdigest()


# === LabelMe ===

def test_labelme_every_shape_kind_exact_pixels(tmp_path):
    src = tmp_path / 'lm'
    _labelme(str(src), 'one', EVERY_SHAPE)
    out = convert('labelme', str(src), str(tmp_path / 'out'))
    assert out['labels'] == ['_background_', 'a', 'b', 'c']
    assert (tmp_path / 'out' / 'labels.txt').read_text().split() == out['labels']
    assert (tmp_path / 'out' / 'file_list.txt').read_text() == 'JPEGImages/one.jpg Annotations/one.png\n'
    png = tmp_path / 'out' / 'Annotations' / 'one.png'
    assert Image.open(png).mode == 'P'
    lab = _label(png)
    assert lab.shape == (H, W) and lab.dtype == np.uint8
    expected = np.zeros((H, W), np.uint8)
    expected[2:9, 2:9] = 1                      # polygon, borders included
    expected[2:7, 12:17] = 2                    # rectangle between its corners, inclusive
    yy, xx = np.mgrid[:H, :W]
    expected[(xx - 25) ** 2 + (yy - 5) ** 2 <= 9] = 1   # circle of radius 3
    expected[19:22, 2:21] = 3                   # line: 3 pixels wide
    expected[20, 1] = expected[20, 21] = 3      # ... with rounded ends
    expected[29:32, 2:11] = 3                   # linestrip: horizontal leg
    expected[30:39, 9:12] = 3                   # vertical leg
    expected[30, 1] = expected[39, 10] = 3
    expected[(xx - 30) ** 2 + (yy - 30) ** 2 <= 4] = 2  # point: disc of radius 2
    np.testing.assert_array_equal(lab, expected)
    assert int((lab == 2).sum()) == 25 + 13
    # The image is copied unchanged.
    assert _md5(tmp_path / 'out' / 'JPEGImages' / 'one.jpg') == _md5(src / 'one.jpg')


def test_labelme_line_width_and_point_radius_options(tmp_path):
    src = tmp_path / 'lm'
    _labelme(str(src), 'x', [_shape('c', 'line', [[5, 20], [30, 20]]), _shape('p', 'point', [[10, 5]])])
    convert('labelme', str(src), str(tmp_path / 'out'), line_width=5, point_radius=1)
    lab = _label(tmp_path / 'out' / 'Annotations' / 'x.png')
    assert sorted(set(np.nonzero(lab[:, 15] == 1)[0])) == [18, 19, 20, 21, 22]
    assert int((lab == 2).sum()) == 5  # radius 1: the centre and its 4 neighbours


def test_labelme_image_from_imagedata(tmp_path):
    import base64
    import io
    src = tmp_path / 'lm'
    os.makedirs(src)
    buf = io.BytesIO()
    Image.new('RGB', (20, 10), (9, 9, 9)).save(buf, format='PNG')
    with open(src / 'emb.json', 'w') as f:
        json.dump({'shapes': [_shape('a', 'rectangle', [[0, 0], [4, 4]])], 'imagePath': 'gone.png',
                   'imageData': base64.b64encode(buf.getvalue()).decode()}, f)
    convert('labelme', str(src), str(tmp_path / 'out'))
    image = np.array(Image.open(tmp_path / 'out' / 'JPEGImages' / 'emb.png'))
    assert image.shape == (10, 20, 3) and (image == 9).all()
    assert int((_label(tmp_path / 'out' / 'Annotations' / 'emb.png') == 1).sum()) == 25


def test_labelme_label_list_order_and_unknown_label(tmp_path):
    src = tmp_path / 'lm'
    path = _labelme(str(src), 'one', EVERY_SHAPE)
    out = convert('labelme', str(src), str(tmp_path / 'ok'), label_list=['_background_', 'c', 'b', 'a'])
    lab = _label(tmp_path / 'ok' / 'Annotations' / 'one.png')
    assert out['labels'] == ['_background_', 'c', 'b', 'a'] and lab[5, 5] == 3 and lab[20, 10] == 1
    with pytest.raises(SegDataError) as info:
        convert('labelme', str(src), str(tmp_path / 'bad'), label_list=['_background_', 'a', 'b'])
    message = str(info.value)
    assert path in message and "shape 3 (line 'c')" in message and "label 'c'" in message


def test_label_list_with_a_duplicate_name_is_refused(tmp_path):
    src = tmp_path / 'lm'
    _labelme(str(src), 'one', EVERY_SHAPE)
    names = tmp_path / 'labels.txt'
    names.write_text('_background_\na\nb\na\n')
    with pytest.raises(SegDataError, match=r"labels.txt: class name 'a' appears twice \(class 1 and class 3\)"):
        convert('labelme', str(src), str(tmp_path / 'out'), label_list=str(names))


def test_labelme_overlap_policies(tmp_path):
    src = tmp_path / 'lm'
    path = _labelme(str(src), 'ov', [_shape('a', 'rectangle', [[0, 0], [9, 9]]),
                                     _shape('b', 'rectangle', [[5, 5], [14, 14]]),
                                     _shape('a', 'rectangle', [[0, 0], [3, 3]])])  # same class: fine
    with pytest.raises(SegDataError) as info:
        convert('labelme', str(src), str(tmp_path / 'e'))
    message = str(info.value)
    assert path in message and "shape 1 (rectangle 'b') overlaps shape 0 (rectangle 'a')" in message
    assert '25 pixels' in message and 'overlap="last"' in message
    convert('labelme', str(src), str(tmp_path / 'last'), overlap='last')
    convert('labelme', str(src), str(tmp_path / 'first'), overlap='first')
    last = _label(tmp_path / 'last' / 'Annotations' / 'ov.png')
    first = _label(tmp_path / 'first' / 'Annotations' / 'ov.png')
    assert last[7, 7] == 2 and first[7, 7] == 1 and last[12, 12] == first[12, 12] == 2
    assert last[2, 2] == first[2, 2] == 1


def test_labelme_empty_image_policies(tmp_path):
    src = tmp_path / 'lm'
    _labelme(str(src), 'full', [_shape('a', 'point', [[5, 5]])])
    path = _labelme(str(src), 'none', [])
    with pytest.raises(SegDataError, match='no shapes') as info:
        convert('labelme', str(src), str(tmp_path / 'e'))
    assert path in str(info.value)
    out = convert('labelme', str(src), str(tmp_path / 'bg'), empty='background')
    assert out['num_images'] == 2 and not _label(tmp_path / 'bg' / 'Annotations' / 'none.png').any()
    out = convert('labelme', str(src), str(tmp_path / 'skip'), empty='skip')
    assert out['skipped'] == ['none'] and out['num_images'] == 1
    assert not (tmp_path / 'skip' / 'Annotations' / 'none.png').exists()
    assert (tmp_path / 'skip' / 'file_list.txt').read_text().count('\n') == 1


def test_labelme_shape_outside_the_image(tmp_path):
    src = tmp_path / 'lm'
    path = _labelme(str(src), 'out', [_shape('a', 'polygon', [[30, 30], [50, 30], [30, 39]])])
    with pytest.raises(SegDataError, match='outside the 40x40 image') as info:
        convert('labelme', str(src), str(tmp_path / 'e'))
    assert path in str(info.value) and "shape 0 (polygon 'a')" in str(info.value)
    convert('labelme', str(src), str(tmp_path / 'clip'), outside='clip')
    lab = _label(tmp_path / 'clip' / 'Annotations' / 'out.png')
    assert lab[30, 39] == 1 and lab[38, 31] == 1 and lab[20, 20] == 0


@pytest.mark.parametrize('text, words', [
    ('{"shapes": [', 'is not valid JSON'),
    ('[1, 2]', 'not a LabelMe file'),
    ('{"shapes": [{"points": [[1, 1]]}]}', 'shape 0 has no "label"'),
    ('{"shapes": [{"label": "a", "shape_type": "polygon", "points": [[1, 1], [2, 2]]}]}',
     'needs at least 3 [x, y] points'),
    ('{"shapes": [{"label": "a", "shape_type": "mask", "points": [[1, 1], [2, 2]]}]}',
     "shape_type 'mask'"),
])
def test_labelme_malformed_files(tmp_path, text, words):
    src = tmp_path / 'lm'
    _image(str(src / 'bad.jpg'))
    (src / 'bad.json').write_text(text)
    with pytest.raises(SegDataError) as info:
        convert('labelme', str(src), str(tmp_path / 'out'))
    assert str(src / 'bad.json') in str(info.value) and words in str(info.value)


# === COCO ===

def _uncompressed_rle(mask):
    """COCO's uncompressed RLE, written here from its definition: run lengths of the
    column-major pixels, starting with a run of 0s."""
    flat = mask.ravel(order='F')
    counts, current, run = [], 0, 0
    for value in flat:
        if value != current:
            counts.append(run)
            current, run = value, 0
        run += 1
    counts.append(run)
    return {'size': list(mask.shape), 'counts': counts}


def _coco_files(tmp_path, extra_annotations=(), images=None):
    from pycocotools import mask as coco_mask
    pics = tmp_path / 'pics'
    _image(str(pics / 'p1.jpg'), 20, 30)
    _image(str(pics / 'sub' / 'p2.png'), 20, 30)
    dog = np.zeros((20, 30), np.uint8)
    dog[12:18, 15:25] = 1
    compressed = coco_mask.encode(np.asfortranarray(dog))
    compressed['counts'] = compressed['counts'].decode('ascii')
    cat = np.zeros((20, 30), np.uint8)
    cat[0:5, 0:3] = 1
    doc = {
        'images': images or [{'id': 1, 'file_name': 'p1.jpg', 'height': 20, 'width': 30},
                             {'id': 2, 'file_name': 'sub/p2.png', 'height': 20, 'width': 30}],
        'categories': [{'id': 7, 'name': 'dog'}, {'id': 3, 'name': 'cat'}],
        'annotations': [
            {'id': 10, 'image_id': 1, 'category_id': 3, 'iscrowd': 0,
             'segmentation': [[2, 2, 10, 2, 10, 10, 2, 10]]},
            {'id': 11, 'image_id': 1, 'category_id': 7, 'iscrowd': 0, 'segmentation': compressed},
            {'id': 12, 'image_id': 2, 'category_id': 3, 'iscrowd': 1,
             'segmentation': _uncompressed_rle(cat)},
        ] + list(extra_annotations)}
    ann = tmp_path / 'instances.json'
    ann.write_text(json.dumps(doc))
    return pics, ann, dog, cat


def test_coco_polygon_and_rle(tmp_path):
    pics, ann, dog, cat = _coco_files(tmp_path)
    out = convert('coco', str(pics), str(tmp_path / 'out'), annotation_file=str(ann))
    assert out['labels'] == ['background', 'cat', 'dog']  # categories sorted by id
    one = _label(tmp_path / 'out' / 'Annotations' / 'p1.png')
    two = _label(tmp_path / 'out' / 'Annotations' / 'sub' / 'p2.png')
    assert one.shape == (20, 30)
    # Polygon (2,2)-(10,10): an 8 x 8 area in COCO's pixel convention.
    assert int((one == 1).sum()) == 64 and (one[3:10, 3:10] == 1).all() and one[11, 11] == 0
    np.testing.assert_array_equal(one == 2, dog.astype(bool))      # compressed RLE
    np.testing.assert_array_equal(two, cat)                          # uncompressed RLE (crowd)
    assert (tmp_path / 'out' / 'JPEGImages' / 'sub' / 'p2.png').is_file()


def test_coco_errors_name_file_and_annotation(tmp_path):
    overlap = {'id': 13, 'image_id': 1, 'category_id': 7, 'segmentation': [[4, 4, 8, 4, 8, 8, 4, 8]]}
    pics, ann, _, _ = _coco_files(tmp_path, [overlap])
    with pytest.raises(SegDataError) as info:
        convert('coco', str(pics), str(tmp_path / 'o'), annotation_file=str(ann))
    assert f'{ann}, image p1.jpg' in str(info.value)
    assert "annotation id 13 ('dog') overlaps annotation id 10 ('cat')" in str(info.value)

    unknown = {'id': 14, 'image_id': 2, 'category_id': 99, 'segmentation': [[1, 1, 3, 1, 3, 3]]}
    pics, ann, _, _ = _coco_files(tmp_path, [unknown])
    with pytest.raises(SegDataError, match="annotation id 14 has category_id 99"):
        convert('coco', str(pics), str(tmp_path / 'u'), annotation_file=str(ann))

    outside = {'id': 15, 'image_id': 2, 'category_id': 7, 'segmentation': [[20, 10, 35, 10, 20, 19]]}
    pics, ann, _, _ = _coco_files(tmp_path, [outside])
    with pytest.raises(SegDataError, match=r"image sub/p2.png: annotation id 15 \('dog'\) has a polygon point \(35.0, 10.0\) outside"):
        convert('coco', str(pics), str(tmp_path / 'x'), annotation_file=str(ann))

    images = [{'id': 1, 'file_name': 'p1.jpg', 'height': 20, 'width': 30},
              {'id': 2, 'file_name': 'sub/p2.png', 'height': 20, 'width': 30},
              {'id': 3, 'file_name': 'p1.jpg', 'height': 20, 'width': 30}]
    pics, ann, _, _ = _coco_files(tmp_path, images=images)
    with pytest.raises(SegDataError, match='image p1.jpg: no shapes'):
        convert('coco', str(pics), str(tmp_path / 'm'), annotation_file=str(ann))

    bad_rle = {'id': 16, 'image_id': 2, 'category_id': 7, 'segmentation': {'size': [20, 30], 'counts': [5, 5]}}
    pics, ann, _, _ = _coco_files(tmp_path, [bad_rle])
    with pytest.raises(SegDataError, match=r'annotation id 16 .* counts summing to 10, not 20 x 30'):
        convert('coco', str(pics), str(tmp_path / 'r'), annotation_file=str(ann))

    ann.write_text('{"images": []')
    with pytest.raises(SegDataError, match=f'{ann} is not valid JSON'):
        convert('coco', str(pics), str(tmp_path / 'j'), annotation_file=str(ann))


# === VOC and masks ===

def test_voc_palette_indices_and_border(tmp_path):
    root = tmp_path / 'voc'
    indices = np.zeros((H, W), np.uint8)
    indices[5:15, 5:15] = 15
    indices[4, 4:16] = 255  # border: ignore
    indices[20:30, 20:30] = 2
    _image(str(root / 'JPEGImages' / '2007_000001.jpg'))
    _p_png(str(root / 'SegmentationClass' / '2007_000001.png'), indices)
    out = convert('voc', str(root), str(tmp_path / 'out'))
    assert out['labels'][15] == 'person' and len(out['labels']) == 21
    np.testing.assert_array_equal(_label(tmp_path / 'out' / 'Annotations' / '2007_000001.png'), indices)
    with pytest.raises(SegDataError, match=r'2007_000001.png holds class ids \[15\]'):
        convert('voc', str(root), str(tmp_path / 'bad'), label_list=['background', 'a', 'b'])


def test_mask_source_binary_and_colour(tmp_path):
    root = tmp_path / 'masks'
    binary = np.zeros((H, W), np.uint8)
    binary[10:20, 10:20] = 255
    _image(str(root / 'JPEGImages' / 'm.jpg'))
    _png(str(root / 'Annotations' / 'm.png'), binary)
    out = convert('mask', str(root), str(tmp_path / 'out'))
    assert out['labels'] == ['background', 'foreground'] and out['value_map'] == {'0': 0, '255': 1}
    np.testing.assert_array_equal(_label(tmp_path / 'out' / 'Annotations' / 'm.png'), binary // 255)

    colour = np.zeros((H, W, 3), np.uint8)
    colour[0:5] = (0, 0, 255)
    colour[30:] = (255, 0, 0)
    root2 = tmp_path / 'rgb'
    _image(str(root2 / 'JPEGImages' / 'c.jpg'))
    os.makedirs(root2 / 'Annotations')
    Image.fromarray(colour).save(root2 / 'Annotations' / 'c.png')
    out = convert('mask', str(root2), str(tmp_path / 'out2'))
    lab = _label(tmp_path / 'out2' / 'Annotations' / 'c.png')
    assert out['value_map'] == {'(0, 0, 0)': 0, '(0, 0, 255)': 1, '(255, 0, 0)': 2}
    assert lab[0, 0] == 1 and lab[35, 0] == 2 and lab[20, 0] == 0


def test_convert_argument_errors(tmp_path):
    with pytest.raises(SegDataError, match="source must be one of labelme, coco, voc, mask, got 'yolo'"):
        convert('yolo', str(tmp_path), str(tmp_path / 'o'))
    with pytest.raises(SegDataError, match='save_dir must differ from input_dir'):
        convert('voc', str(tmp_path), str(tmp_path))
    with pytest.raises(SegDataError, match="overlap must be one of error, last, first, got 'max'"):
        convert('voc', str(tmp_path), str(tmp_path / 'o'), overlap='max')


# === split_dataset ===

def _seg_folder(root, n=10, classes=3):
    for i in range(n):
        _image(str(root / 'JPEGImages' / f'{i:02d}.jpg'), 16, 16)
        _png(str(root / 'Annotations' / f'{i:02d}.png'), np.full((16, 16), i % classes, np.uint8))


def _lines(path):
    return open(path).read().splitlines()


def test_split_fractions_reproducible_and_labels(tmp_path):
    root = tmp_path / 'd'
    _seg_folder(root)
    out = split_dataset(str(root), val_value=0.2, test_value=0.1, seed=3)
    train, val, test = (_lines(out[k]) for k in ('train', 'val', 'test'))
    assert (len(train), len(val), len(test)) == (7, 2, 1)
    assert sorted(train + val + test) == [f'JPEGImages/{i:02d}.jpg Annotations/{i:02d}.png' for i in range(10)]
    assert _lines(root / 'labels.txt') == ['class_0', 'class_1', 'class_2'] and out['label_written']
    again = split_dataset(str(root), val_value=0.2, test_value=0.1, seed=3)
    assert [_lines(again[k]) for k in ('train', 'val', 'test')] == [train, val, test]
    other = split_dataset(str(root), val_value=0.2, test_value=0.1, seed=4)
    assert _lines(other['train']) != train
    ds = seg.SegDataset(str(root), 'train_list.txt', 'labels.txt')
    assert ds.num_samples == 7 and ds.read_sample(0)[1].shape == (16, 16)


def test_split_keeps_labels_txt_and_skips_test_list(tmp_path):
    root = tmp_path / 'd'
    _seg_folder(root, n=4)
    (root / 'labels.txt').write_text('bg\ncat\ndog\n')
    out = split_dataset(str(root), val_value=0.25)
    assert out['test'] is None and not (root / 'test_list.txt').exists()
    assert (root / 'labels.txt').read_text() == 'bg\ncat\ndog\n' and not out['label_written']
    (root / 'labels.txt').write_text('bg\ncat\n')
    with pytest.raises(SegDataError, match=r'02.png holds class id 2 but .*labels.txt names 2 classes'):
        split_dataset(str(root))


def test_split_errors(tmp_path):
    root = tmp_path / 'd'
    _seg_folder(root, n=3)
    for bad in (1.0, -0.1, 'x', True):
        with pytest.raises(SegDataError, match=f'val_value must be a number in \\[0, 1\\), got {bad!r}'):
            split_dataset(str(root), val_value=bad)
    with pytest.raises(SegDataError, match='val_value \\+ test_value must be below 1'):
        split_dataset(str(root), val_value=0.5, test_value=0.5)
    with pytest.raises(SegDataError, match='at least one training sample'):
        split_dataset(str(root), val_value=0.5, test_value=0.4)
    _image(str(root / 'JPEGImages' / 'lonely.jpg'), 16, 16)
    with pytest.raises(SegDataError, match='1 image file.* without a counterpart .*Annotations: lonely.jpg'):
        split_dataset(str(root))
    os.remove(root / 'JPEGImages' / 'lonely.jpg')
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(root / 'Annotations' / '00.png')
    with pytest.raises(SegDataError, match='00.png is a RGB image'):
        split_dataset(str(root))
    with pytest.raises(SegDataError, match='image folder .*nowhere/JPEGImages not found'):
        split_dataset(str(tmp_path / 'nowhere'))


# === check_dataset ===

@pytest.fixture
def messy(tmp_path):
    """8x8 samples: good, 0/255, RGB colour, size mismatch, out of range, truncated image,
    missing label, palette; and one malformed line."""
    root = tmp_path / 'messy'
    rows = []

    def sample(name, label=None, image_size=(8, 8)):
        _image(str(root / 'img' / f'{name}.jpg'), *image_size)
        if label is not None:
            label(str(root / 'lab' / f'{name}.png'))
        rows.append(f'img/{name}.jpg lab/{name}.png')

    good = np.zeros((8, 8), np.uint8)
    good[:2] = 1                                                       # 16 ones
    sample('a', lambda p: _png(p, good))
    binary = np.zeros((8, 8), np.uint8)
    binary[0, :] = 255                                                 # 8 -> ones
    sample('b', lambda p: _png(p, binary))
    colour = np.zeros((8, 8, 3), np.uint8)
    colour[7, :4] = (255, 0, 0)                                        # 4 -> ones

    def rgb(p):
        os.makedirs(os.path.dirname(p), exist_ok=True)
        Image.fromarray(colour).save(p)
    sample('c', rgb)
    sample('d', lambda p: _png(p, np.zeros((4, 4), np.uint8)))        # 16 zeros, wrong size
    oor = np.zeros((8, 8), np.uint8)
    oor[0, :4] = 5
    sample('e', lambda p: _png(p, oor))                                # 60 zeros, 4 out of range
    sample('f', lambda p: _png(p, good))
    with open(root / 'img' / 'f.jpg', 'r+b') as f:                   # truncate the JPEG
        data = f.read()
        f.seek(0)
        f.truncate()
        f.write(data[:len(data) // 2])
    sample('g')                                                        # label missing
    pal = np.zeros((8, 8), np.uint8)
    pal[3, :] = 1
    pal[4, :2] = 1                                                     # 10 ones
    sample('h', lambda p: _p_png(p, pal))
    rows.insert(3, 'img/a.jpg lab/a.png extra')
    (root / 'list.txt').write_text('\n'.join(rows) + '\n')
    (root / 'labels.txt').write_text('bg\nfg\n')
    return root


def test_check_dataset_report(messy, tmp_path):
    before = {p: _md5(p) for p in messy.rglob('*') if p.is_file()}
    report = check_dataset(str(messy), 'list.txt', label_list='labels.txt',
                           save_dir=str(tmp_path / 'rep'), progress=False)
    codes = {os.path.basename(f['label'] or f'line{f["line"]}'): [p['code'] for p in f['problems']]
             for f in report.files}
    assert codes == {'a.png': [], 'b.png': ['binary_0_255'], 'c.png': ['rgb_mask'],
                     'line4': ['malformed_line'], 'd.png': ['size_mismatch'],
                     'e.png': ['out_of_range'], 'f.png': ['bad_image'], 'g.png': ['bad_label'],
                     'h.png': []}
    messages = {p['code']: p['message'] for _, p in report.problems}
    assert str(messy / 'lab' / 'd.png') in messages['size_mismatch'] and '4 x 4' in messages['size_mismatch']
    assert 'values [5]' in messages['out_of_range'] and str(messy / 'lab' / 'e.png') in messages['out_of_range']
    assert 'f.jpg' in messages['bad_image'] and 'truncated' in messages['bad_image']
    assert 'g.png' in messages['bad_label'] and 'list.txt, line 4' in messages['malformed_line']
    assert 'palette PNG' in report.files[-1]['notes'][0]
    assert report.num_classes == 2 and report.color_map == {'0,0,0': 0, '255,0,0': 1}
    # Histogram: ones 16 (a) + 8 (b fixed) + 4 (c mapped) + 16 (f: its label is fine) + 10 (h);
    # zeros: the rest of a, b, c, f, h (64 each), d (16) and e (60).
    assert report.histogram == [48 + 56 + 60 + 16 + 60 + 48 + 54, 54]
    assert report.out_of_range_pixels == 4 and report.ignored_pixels == 0
    freq = np.array([342 / (64 * 5 + 16 + 60), 54 / (64 * 5)])
    np.testing.assert_allclose(report.class_weights, np.median(freq) / freq, rtol=1e-5)
    assert report.weight_method == 'median_frequency'
    table = report.table()
    assert '  0  bg' in table and '342' in table and 'fg' in table
    png = Image.open(report.plot)
    assert png.format == 'PNG' and png.size[0] > 100
    assert json.load(open(report.report_json))['histogram'] == report.histogram
    assert report.fixed_file_list is None and len(report.unfixed) == 7
    assert {p: _md5(p) for p in messy.rglob('*') if p.is_file()} == before

    inverse = check_dataset(str(messy), 'list.txt', num_classes=2, method='inverse_frequency',
                            save_dir=str(tmp_path / 'inv'), plot=False, progress=False)
    np.testing.assert_allclose(inverse.class_weights, [396 / (2 * 342), 396 / (2 * 54)], rtol=1e-5)


def test_check_dataset_fix_writes_new_files_only(messy, tmp_path):
    before = {p: _md5(p) for p in messy.rglob('*') if p.is_file()}
    out = tmp_path / 'fixed'
    report = check_dataset(str(messy), 'list.txt', label_list='labels.txt', fix=True,
                           save_dir=str(out), progress=False)
    assert {p: _md5(p) for p in messy.rglob('*') if p.is_file()} == before
    expected_b = np.zeros((8, 8), np.uint8)
    expected_b[0, :] = 1
    np.testing.assert_array_equal(_label(out / 'lab' / 'b.png'), expected_b)
    expected_c = np.zeros((8, 8), np.uint8)
    expected_c[7, :4] = 1
    np.testing.assert_array_equal(_label(out / 'lab' / 'c.png'), expected_c)
    assert (_label(out / 'lab' / 'h.png') == np.array(Image.open(messy / 'lab' / 'h.png'))).all()
    assert not (out / 'lab' / 'e.png').exists() and not (out / 'lab' / 'a.png').exists()
    lines = _lines(report.fixed_file_list)
    assert lines[0] == '../messy/img/a.jpg ../messy/lab/a.png'
    assert lines[1] == '../messy/img/b.jpg lab/b.png'
    assert (out / 'labels.txt').read_text() == 'bg\nfg\n'
    assert [p['code'] for _, p in report.unfixed] == [
        'malformed_line', 'size_mismatch', 'out_of_range', 'bad_image', 'bad_label']
    # The fixed samples load in SegDataset.
    (out / 'good.txt').write_text('\n'.join(lines[i] for i in (0, 1, 2, 7)) + '\n')
    ds = seg.SegDataset(str(out), 'good.txt', 'labels.txt')
    ds.set_num_classes(2)
    assert [int(ds.read_sample(i)[1].sum()) for i in range(4)] == [16, 8, 4, 10]
    again = check_dataset(str(out), 'good.txt', label_list='labels.txt', progress=False, plot=False)
    assert again.ok


def test_check_dataset_errors(messy, tmp_path):
    with pytest.raises(SegDataError, match="file_list 'nope.txt' not found"):
        check_dataset(str(messy), 'nope.txt')
    with pytest.raises(SegDataError, match='num_classes=3 but the label list names 2 classes'):
        check_dataset(str(messy), 'list.txt', num_classes=3, label_list='labels.txt')
    with pytest.raises(SegDataError, match='save_dir must differ from dataset_dir'):
        check_dataset(str(messy), 'list.txt', fix=True, save_dir=str(messy))


# === class_weights in train ===

def test_train_takes_class_weights_from_check_dataset(tmp_path):
    src = tmp_path / 'lm'
    for i in range(4):
        _labelme(str(src), f's{i}', [_shape('a', 'rectangle', [[4 + i, 4], [30, 30]]),
                                     _shape('b', 'point', [[50, 50]])], h=64, w=64)
    convert('labelme', str(src), str(tmp_path / 'ds'), val_value=0.25)
    report = check_dataset(str(tmp_path / 'ds'), 'train_list.txt', label_list='labels.txt',
                           progress=False, plot=False)
    assert report.ok and len(report.class_weights) == 3 and report.class_weights[2] > report.class_weights[0]
    from paddlex_seg import transforms as T
    ds = seg.SegDataset(str(tmp_path / 'ds'), 'train_list.txt', 'labels.txt',
                        T.Compose([T.Normalize()]), num_workers=0)
    model = seg.UNet(num_classes=3)
    with pytest.raises(ValueError, match='class_weights must be a list of 3 weights'):
        model.train(num_epochs=1, train_dataset=ds, class_weights=[1.0, 2.0], pretrain_weights=None)
    model.train(num_epochs=1, train_dataset=ds, train_batch_size=3, pretrain_weights=None,
                save_dir=str(tmp_path / 'out'), use_vdl=False, class_weights=report.class_weights)
    assert model.loss.loss.weight == tuple(report.class_weights)
    assert (tmp_path / 'out' / 'epoch_1').is_dir()
    dice = seg.UNet(num_classes=3, use_mixed_loss=[('DiceLoss', 1.0)])
    with pytest.raises(ValueError, match='class_weights needs a CrossEntropyLoss'):
        dice.train(num_epochs=1, train_dataset=ds, class_weights=[1, 1, 1], pretrain_weights=None)
    mixed = seg.UNet(num_classes=3, use_mixed_loss=True)
    mixed.train(num_epochs=1, train_dataset=ds, train_batch_size=3, pretrain_weights=None,
                save_dir=str(tmp_path / 'mixed'), use_vdl=False, class_weights=[0.5, 1, 2])
    assert mixed.loss.loss.losses[0].weight == (0.5, 1.0, 2.0)


# === command line ===

def test_cli_paddlex_spellings_and_check_status(tmp_path, capsys):
    src = tmp_path / 'lm'
    for i in range(5):
        _labelme(str(src / 'ann'), f's{i}', EVERY_SHAPE)
    os.makedirs(src / 'pics')
    for i in range(5):
        os.replace(src / 'ann' / f's{i}.jpg', src / 'pics' / f's{i}.jpg')
    out = tmp_path / 'seg'
    assert main(['--data_conversion', '--source', 'labelme', '--to', 'SEG', '--pics', str(src / 'pics'),
                 '--annotations', str(src / 'ann'), '--save_dir', str(out)]) == 0
    assert '5 images, 4 classes (_background_, a, b, c)' in capsys.readouterr().out
    assert len(_lines(out / 'file_list.txt')) == 5
    assert main(['--split_dataset', '--format', 'SEG', '--dataset_dir', str(out),
                 '--val_value', '0.2', '--test_value', '0.2']) == 0
    assert '3 train, 1 val, 1 test' in capsys.readouterr().out
    assert main(['split_dataset', '--dataset_dir', str(out), '--val_value', '1.5']) == 1
    assert 'paddlex_seg split_dataset: error: val_value must be a number' in capsys.readouterr().err
    assert main(['--split_dataset', '--format', 'COCO', '--dataset_dir', str(out)]) == 1
    assert 'segmentation data only' in capsys.readouterr().err
    assert main(['check_dataset', '--dataset_dir', str(out), '--file_list', 'train_list.txt',
                 '--label_list', 'labels.txt', '--no_progress']) == 0
    printed = capsys.readouterr().out
    assert 'class_weights: [' in printed and '_background_' in printed
    assert (out / 'check_dataset' / 'class_histogram.png').is_file()
    assert main(['convert', '--source', 'labelme', '--input_dir', str(src / 'ann'),
                 '--save_dir', str(tmp_path / 'x'), '--label_list', str(out / 'labels.txt'),
                 '--overlap', 'last']) == 1  # images not found: they moved to pics/
    assert 'image not found' in capsys.readouterr().err


def test_cli_check_dataset_exit_status_and_fix(messy, tmp_path, capsys):
    assert main(['check_dataset', '--dataset_dir', str(messy), '--file_list', 'list.txt',
                 '--label_list', 'labels.txt', '--no_progress', '--save_dir', str(tmp_path / 'r')]) == 1
    captured = capsys.readouterr()
    assert 'binary_0_255' in captured.out and '7 problem(s) will break training' in captured.err
    assert main(['check_dataset', '--dataset_dir', str(messy), '--file_list', 'list.txt',
                 '--label_list', 'labels.txt', '--no_progress', '--fix', '--save_dir', str(tmp_path / 'f')]) == 1
    captured = capsys.readouterr()
    assert '(fixed)' in captured.out and '5 problem(s) will break training' in captured.err
    assert (tmp_path / 'f' / 'lab' / 'b.png').is_file() and (tmp_path / 'f' / 'list.txt').is_file()


def test_cli_convert_coco_with_paddlex_option_names(tmp_path, capsys):
    pics, ann, dog, _ = _coco_files(tmp_path)
    out = tmp_path / 'c'
    assert main(['convert', '--source', 'coco', '--pics', str(pics), '--annotations', str(ann),
                 '--save_dir', str(out), '--val_value', '0.5']) == 0
    assert '2 images, 3 classes (background, cat, dog)' in capsys.readouterr().out
    assert len(_lines(out / 'train_list.txt')) == 1 and len(_lines(out / 'val_list.txt')) == 1
    np.testing.assert_array_equal(_label(out / 'Annotations' / 'p1.png') == 2, dog.astype(bool))
    assert main(['convert', '--source', 'coco', '--pics', str(pics), '--save_dir', str(out)]) == 1
    assert 'source coco needs annotation_file' in capsys.readouterr().err


def test_labelme_old_files_and_windows_image_paths(tmp_path):
    src = tmp_path / 'lm'
    _image(str(tmp_path / 'imgs' / 'w.jpg'))
    os.makedirs(src)
    with open(src / 'w.json', 'w') as f:  # shape_type null (LabelMe 3), a Windows imagePath
        json.dump({'shapes': [{'label': 'a', 'shape_type': None, 'points': [[0, 0], [9, 0], [9, 9], [0, 9]]},
                              {'label': 'a', 'shape_type': 'circle', 'points': [[35, 35], [30, 38]]}],
                   'imagePath': '..\\imgs\\w.jpg', 'imageData': None}, f)
    convert('labelme', str(src), str(tmp_path / 'out'), outside='clip')
    lab = _label(tmp_path / 'out' / 'Annotations' / 'w.png')
    assert int((lab[:10, :10] == 1).sum()) == 100 and lab[39, 35] == 1
    with pytest.raises(SegDataError, match=r"shape 1 \(circle 'a'\) lies partly outside the 40x40 image"):
        convert('labelme', str(src), str(tmp_path / 'strict'))


def test_mask_source_keeps_ids_of_the_label_list_and_palette_indices(tmp_path):
    root = tmp_path / 'masks'
    ids = np.zeros((H, W), np.uint8)
    ids[:10] = 2
    ids[10:12] = 255
    _image(str(root / 'JPEGImages' / 'e.jpg'))
    _p_png(str(root / 'Annotations' / 'e.png'), ids)  # palette PNG, no class 1 in it
    out = convert('mask', str(root), str(tmp_path / 'kept'), label_list=['bg', 'road', 'car'])
    np.testing.assert_array_equal(_label(tmp_path / 'kept' / 'Annotations' / 'e.png'), ids)
    assert out['labels'] == ['bg', 'road', 'car']
    out = convert('mask', str(root), str(tmp_path / 'renumbered'))
    assert out['value_map'] == {'0': 0, '2': 1, '255': 255} and out['labels'] == ['class_0', 'class_1']
    renumbered = ids.copy()
    renumbered[ids == 2] = 1
    np.testing.assert_array_equal(_label(tmp_path / 'renumbered' / 'Annotations' / 'e.png'), renumbered)


def test_labelme_rectangle_with_four_corners(tmp_path):
    src = tmp_path / 'lm'
    _labelme(str(src), 'r', [_shape('a', 'rectangle', [[3, 4], [9, 4], [9, 12], [3, 12]])])
    convert('labelme', str(src), str(tmp_path / 'out'))
    lab = _label(tmp_path / 'out' / 'Annotations' / 'r.png')
    assert int(lab.sum()) == 7 * 9 and (lab[4:13, 3:10] == 1).all()


def test_check_dataset_truncated_and_corrupt_labels_and_progress_bar(tmp_path, capsys):
    root = tmp_path / 'd'
    _image(str(root / 'a.jpg'), 8, 8)
    _png(str(root / 'a.png'), np.zeros((8, 8), np.uint8))
    data = (root / 'a.png').read_bytes()
    (root / 'cut.png').write_bytes(data[:len(data) - 20])
    (root / 'junk.png').write_bytes(b'\x89PNG\r\n\x1a\n' + b'\x00' * 40 + b'IEND\xaeB`\x82')
    (root / 'list.txt').write_text('a.jpg a.png\na.jpg cut.png\na.jpg junk.png\n')
    report = check_dataset(str(root), 'list.txt', num_classes=2, save_dir=str(tmp_path / 'r'),
                           plot=False)
    assert [[p['code'] for p in f['problems']] for f in report.files] == [[], ['bad_label'], ['bad_label']]
    assert 'cut.png' in report.files[1]['problems'][0]['message']
    assert 'truncated' in report.files[1]['problems'][0]['message']
    assert 'junk.png cannot be read' in report.files[2]['problems'][0]['message']
    assert 'check_dataset: 100%' in capsys.readouterr().err and report.histogram == [64, 0]
