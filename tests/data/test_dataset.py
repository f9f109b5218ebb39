"""SegDataset: file lists, checks with clear errors, the DataLoader path."""
import os
import pickle
import subprocess
import sys
import textwrap

import cv2
import numpy as np
import paddle
import pytest
from PIL import Image

from paddlex_seg.data.dataset import (ERROR_TAG, SampleError, SegDataError,
                                      SegDataset, _check_label_values, collate,
                                      read_image, read_label,
                                      resolve_num_workers, unpack_batch)
from paddlex_seg.data.synthetic import make_synthetic_dataset

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


@pytest.fixture
def synth(tmp_path):
    return make_synthetic_dataset(tmp_path / 'set', num_train=6, num_val=2,
                                  image_size=(32, 40), num_classes=3)


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip('\n'), encoding='utf-8')
    return str(path)


def save_image(path, height=8, width=10, value=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    if value is not None:
        image[:] = value
    ok, data = cv2.imencode(path.suffix, image)
    assert ok
    data.tofile(str(path))
    return image


def save_label(path, array, mode='L'):
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.asarray(array, np.uint8)
    image = Image.frombytes(mode, array.shape[::-1], array.tobytes())
    if mode == 'P':
        image.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] + [0] * 759)
    image.save(str(path))


def small_set(tmp_path, label=None, mode='L', name='a'):
    """One 8x10 JPEG and its label under tmp_path/d; returns data_dir."""
    save_image(tmp_path / 'd' / f'{name}.jpg')
    if label is None:
        label = np.zeros((8, 10), np.uint8)
        label[2:5, 3:7] = 1
        label[6:, :2] = 2
    save_label(tmp_path / 'd' / f'{name}.png', label, mode)
    write(tmp_path / 'd' / 'list.txt', f'{name}.jpg {name}.png\n')
    return str(tmp_path / 'd')


def add_channel_first(sample):
    """A stand-in for transforms.Compose: HWC uint8 -> CHW float32."""
    out = dict(sample)
    out['image'] = sample['image'].transpose(2, 0, 1).astype(np.float32)
    return out


# --- construction -----------------------------------------------------------


def test_reads_synthetic_set_and_attributes(synth):
    ds = SegDataset(synth.root, synth.train_list, synth.label_list)
    assert len(ds) == ds.num_samples == 6
    assert ds.labels == ['background', 'circle', 'rectangle']
    assert ds.num_classes == 3
    assert ds.transforms is None and ds.shuffle is False
    assert isinstance(ds.num_workers, int) and ds.num_workers >= 0
    for image_path, label_path in ds.samples:
        assert os.path.isabs(image_path) and os.path.isfile(image_path)
        assert os.path.isabs(label_path) and os.path.isfile(label_path)
    image, label = ds[0]
    assert image.shape == (32, 40, 3) and image.dtype == np.uint8
    # uint8 from file to batch; the training step casts to int64.
    assert label.shape == (32, 40) and label.dtype == np.uint8
    assert set(np.unique(label)) <= {0, 1, 2}
    label[0, 0] = 1  # a sample handed out is the caller's own array


def test_transforms_receive_dict_and_output_is_chw_float(synth):
    seen = []

    def transforms(sample):
        seen.append((sample['image'].dtype, sample['label'].dtype))
        return add_channel_first(sample)

    ds = SegDataset(synth.root, synth.train_list, transforms=transforms)
    image, label = ds[1]
    assert seen == [(np.uint8, np.uint8)]
    assert image.shape == (3, 32, 40) and image.dtype == np.float32
    assert label.shape == (32, 40) and label.dtype == np.uint8


@pytest.mark.parametrize('dtype', [np.int32, np.int64, np.uint16, np.float32, np.bool_])
def test_labels_from_custom_transforms_become_uint8(synth, dtype):
    def transforms(sample):
        out = add_channel_first(sample)
        out['label'] = (sample['label'] > 0 if dtype is np.bool_
                        else sample['label'].astype(dtype))
        return out

    reference = SegDataset(synth.root, synth.train_list)[2][1]
    _, label = SegDataset(synth.root, synth.train_list, transforms=transforms)[2]
    assert label.dtype == np.uint8
    expected = reference > 0 if dtype is np.bool_ else reference
    np.testing.assert_array_equal(label, expected)


@pytest.mark.parametrize('value', [-1, 256, 1000])
def test_custom_transform_label_out_of_uint8_range_refused(synth, value):
    def transforms(sample):
        out = add_channel_first(sample)
        out['label'] = sample['label'].astype(np.int64)
        out['label'][0, 0] = value
        return out

    ds = SegDataset(synth.root, synth.train_list, transforms=transforms)
    image, label = SegDataset(synth.root, synth.train_list)[1]
    returned = transforms({'image': image, 'label': label})['label']
    with pytest.raises(SegDataError) as info:
        ds.read_sample(1)
    assert info.match(rf'label values from {returned.min()} to {returned.max()} on '
                      r'sample 1 \(image .*train_0001')
    assert info.match('0..254, and 255 for ignored')


def test_list_paths_relative_to_cwd_or_data_dir(synth, tmp_path, monkeypatch):
    monkeypatch.chdir(synth.root)
    by_cwd = SegDataset(synth.root, 'train.txt', 'labels.txt')
    monkeypatch.chdir(tmp_path)  # train.txt is not here: found in data_dir
    by_data_dir = SegDataset('set', 'train.txt', 'labels.txt')
    by_cwd_prefix = SegDataset('set', 'set/train.txt', 'set/labels.txt')
    assert by_cwd.samples == by_data_dir.samples == by_cwd_prefix.samples
    assert by_data_dir.labels == by_cwd.labels


def test_comments_blank_lines_absolute_paths_and_no_labels(tmp_path):
    data_dir = small_set(tmp_path)
    absolute = os.path.join(data_dir, 'a.jpg')
    path = write(tmp_path / 'list2.txt', f"""
        # a comment

        {absolute}
        a.jpg
    """)
    ds = SegDataset(data_dir, path)
    assert ds.samples == [(absolute, None), (absolute, None)]
    image, label = ds[0]
    assert image.shape == (8, 10, 3) and label is None


def test_unicode_paths(tmp_path):
    save_image(tmp_path / 'données' / '图像.jpg')
    save_label(tmp_path / 'données' / '标注.png', np.ones((8, 10)))
    write(tmp_path / 'données' / 'liste.txt', '图像.jpg 标注.png\n')
    ds = SegDataset(str(tmp_path / 'données'), 'liste.txt')
    image, label = ds.read_sample(0)
    assert image.shape == (8, 10, 3) and int(label.max()) == 1


def test_missing_file_list_and_label_list(synth):
    with pytest.raises(SegDataError, match='file_list .*nope.txt.* not found'):
        SegDataset(synth.root, 'nope.txt')
    with pytest.raises(SegDataError,
                       match='label_list .*nolabels.txt.* not found'):
        SegDataset(synth.root, synth.train_list, 'nolabels.txt')
    with pytest.raises(SegDataError, match='data_dir'):
        SegDataset(os.path.join(synth.root, 'missing'), synth.train_list)


@pytest.mark.parametrize('content, expected', [
    ('a.jpg a.png\na.jpg a.png extra\n', 'line 2: expected .* got 3 fields'),
    ('a.jpg a.png\n\nb.jpg a.png\n', 'line 3: image file .*b.jpg not found'),
    ('# c\na.jpg b.png\n', 'line 2: label file .*b.png not found'),
    ('a.jpg a.png\na.jpg\n', 'line 2: has no label but line 1 has one'),
    ('a.jpg\na.jpg a.png\n', 'line 2: has a label but line 1 has none'),
])
def test_bad_lines_name_file_and_line(tmp_path, content, expected):
    data_dir = small_set(tmp_path)
    path = write(tmp_path / 'd' / 'bad.txt', content)
    with pytest.raises(SegDataError) as info:
        SegDataset(data_dir, path)
    assert 'bad.txt' in str(info.value)
    assert info.match(expected)


def test_spaces_in_paths_are_explained(tmp_path):
    data_dir = small_set(tmp_path)
    path = write(tmp_path / 'd' / 'bad.txt', 'my image.jpg a.png\n')
    with pytest.raises(SegDataError, match='cannot contain spaces'):
        SegDataset(data_dir, path)


def test_empty_list_and_empty_label_list(tmp_path):
    data_dir = small_set(tmp_path)
    path = write(tmp_path / 'd' / 'empty.txt', '# only a comment\n\n')
    with pytest.raises(SegDataError, match='empty.txt has no samples'):
        SegDataset(data_dir, path)
    labels = write(tmp_path / 'd' / 'labels.txt', '\n')
    with pytest.raises(SegDataError, match='labels.txt names no class'):
        SegDataset(data_dir, 'list.txt', labels)


def test_label_list_naming_a_class_twice_is_refused(tmp_path):
    data_dir = small_set(tmp_path)
    labels = write(tmp_path / 'd' / 'labels.txt', 'background\nroad\ncar\nroad\ncar\ncar\n')
    with pytest.raises(SegDataError) as error:
        SegDataset(data_dir, 'list.txt', labels)
    assert str(error.value).startswith(f'label list {labels} names a class more than once: '
                                       f"'road' on lines 2, 4; 'car' on lines 3, 5, 6")
    # Names differing only in case or inner spaces are different names.
    fine = write(tmp_path / 'd' / 'fine.txt', 'background\nRoad\nroad\nroad side\n')
    assert SegDataset(data_dir, 'list.txt', fine).labels == ['background', 'Road', 'road', 'road side']


def test_argument_validation(synth):
    with pytest.raises(SegDataError, match='transforms must be callable'):
        SegDataset(synth.root, synth.train_list, transforms=[1, 2])
    with pytest.raises(SegDataError, match="num_workers must be 'auto'"):
        SegDataset(synth.root, synth.train_list, num_workers=-1)
    with pytest.raises(SegDataError, match='shuffle must be True or False'):
        SegDataset(synth.root, synth.train_list, shuffle='yes')
    assert resolve_num_workers(3) == 3
    cpus = len(os.sched_getaffinity(0))
    assert resolve_num_workers('auto') == min(8, cpus // 2)


def test_size_mismatch_found_at_construction(tmp_path):
    data_dir = small_set(tmp_path, label=np.zeros((9, 10)))
    with pytest.raises(SegDataError) as info:
        SegDataset(data_dir, 'list.txt')
    assert info.match(r'list.txt, line 1: image .*a.jpg is 10x8 .*a.png is '
                      r'10x9')


def test_exif_rotated_jpeg_matches_label_of_rotated_size(tmp_path):
    # OpenCV applies EXIF orientation; the size check must do the same.
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees: a stored 10x8 image shows as 8x10
    (tmp_path / 'd').mkdir()
    Image.fromarray(np.zeros((8, 10, 3), np.uint8)).save(
        tmp_path / 'd' / 'r.jpg', exif=exif)
    save_label(tmp_path / 'd' / 'r.png', np.zeros((10, 8)))
    write(tmp_path / 'd' / 'list.txt', 'r.jpg r.png\n')
    image, label = SegDataset(str(tmp_path / 'd'), 'list.txt').read_sample(0)
    assert image.shape == (10, 8, 3) and label.shape == (10, 8)


# --- labels -----------------------------------------------------------------


@pytest.mark.parametrize('mode', ['L', 'P'])
def test_grayscale_and_palette_labels_read_as_indices(tmp_path, mode):
    values = np.zeros((8, 10), np.uint8)
    values[1, 1], values[2, 2], values[3, 3] = 1, 2, 255
    data_dir = small_set(tmp_path, label=values, mode=mode)
    assert Image.open(os.path.join(data_dir, 'a.png')).mode == mode
    if mode == 'P':  # what OpenCV would have given: the palette's luminance
        wrong = cv2.imread(os.path.join(data_dir, 'a.png'),
                           cv2.IMREAD_GRAYSCALE)
        assert wrong[1, 1] != 1
    _, label = SegDataset(data_dir, 'list.txt').read_sample(0)
    np.testing.assert_array_equal(label, values)


def test_16_bit_label_accepted_when_values_fit(tmp_path):
    values = np.zeros((8, 10), np.uint16)
    values[0, 0] = 2
    Image.fromarray(values).save(tmp_path / 'l16.png')
    assert Image.open(tmp_path / 'l16.png').mode.startswith('I')
    label = read_label(str(tmp_path / 'l16.png'))
    assert label.dtype == np.uint8 and label[0, 0] == 2
    values[0, 0] = 300
    Image.fromarray(values).save(tmp_path / 'l16.png')
    with pytest.raises(SegDataError, match='l16.png holds values .* 300'):
        read_label(str(tmp_path / 'l16.png'))


def test_rgb_label_refused(tmp_path):
    data_dir = small_set(tmp_path)
    rgb = np.zeros((8, 10, 3), np.uint8)
    rgb[2:4, 2:4] = (128, 0, 0)
    Image.fromarray(rgb).save(os.path.join(data_dir, 'a.png'))
    with pytest.raises(SegDataError) as info:
        SegDataset(data_dir, 'list.txt')
    assert info.match(r"list.txt, line 1: label .*a.png has PIL mode 'RGB'")
    assert info.match('single-channel .* palette PNG')
    with pytest.raises(SegDataError, match="a.png has PIL mode 'RGB'"):
        read_label(os.path.join(data_dir, 'a.png'))


def test_out_of_range_label_values_named(tmp_path):
    values = np.zeros((8, 10), np.uint8)
    values[0, :3] = (1, 7, 9)
    values[1, 0] = 255  # ignore: allowed
    data_dir = small_set(tmp_path, label=values)
    labels = write(tmp_path / 'd' / 'labels.txt', 'bg\nfg\n')
    ds = SegDataset(data_dir, 'list.txt', labels)
    with pytest.raises(SegDataError) as info:
        ds.read_sample(0)
    assert info.match(r'a.png holds class ids 7, 9; with 2 classes a label '
                      r'pixel must be 0..1, or 255')
    marker = ds[0]
    assert isinstance(marker, SampleError) and 'a.png' in marker.message


@pytest.mark.parametrize('num_classes', [1, 2, 3, 19, 128, 254, 255])
def test_label_value_check_agrees_with_definition(num_classes):
    """Every uint8 value against each number of classes: bad iff num_classes <= v <= 254."""
    for value in range(256):
        label = np.array([[0, value]], np.uint8)
        bad = num_classes <= value <= 254
        if bad:
            with pytest.raises(SegDataError, match=f'holds class ids {value};'):
                _check_label_values(label, num_classes, 'x.png')
        else:
            _check_label_values(label, num_classes, 'x.png')
    _check_label_values(np.zeros((0, 0), np.uint8), num_classes, 'x.png')


def test_num_classes_from_engine(tmp_path):
    values = np.zeros((8, 10), np.uint8)
    values[0, 0] = 3
    data_dir = small_set(tmp_path, label=values)
    ds = SegDataset(data_dir, 'list.txt')
    assert ds.num_classes is None and ds.labels == []
    ds.read_sample(0)  # unknown number of classes: not checked
    ds.check_num_classes(4)  # only checks
    assert ds.num_classes is None
    ds.set_num_classes(3)
    with pytest.raises(SegDataError, match='holds class ids 3; with 3'):
        ds.read_sample(0)
    with pytest.raises(ValueError, match='num_classes must be an int'):
        ds.set_num_classes(0)


def test_check_num_classes_against_label_list(synth):
    ds = SegDataset(synth.root, synth.train_list, synth.label_list)
    ds.check_num_classes(3)
    with pytest.raises(ValueError) as info:
        ds.check_num_classes(5)
    assert info.match(r'num_classes=5 .*labels.txt names 3 classes')


# --- images -----------------------------------------------------------------


def test_grayscale_image_becomes_bgr(tmp_path):
    gray = np.arange(80, dtype=np.uint8).reshape(8, 10)
    cv2.imwrite(str(tmp_path / 'g.png'), gray)
    image = read_image(str(tmp_path / 'g.png'))
    assert image.shape == (8, 10, 3)
    np.testing.assert_array_equal(image[..., 0], gray)
    np.testing.assert_array_equal(image[..., 2], gray)


def test_16_bit_image_refused(tmp_path):
    data_dir = small_set(tmp_path)
    cv2.imwrite(os.path.join(data_dir, 'a16.png'),
                np.full((8, 10), 4000, np.uint16))
    with pytest.raises(SegDataError, match='a16.png has more than 8 bits'):
        read_image(os.path.join(data_dir, 'a16.png'))
    path = write(tmp_path / 'd' / 'l16.txt', 'a16.png a.png\n')
    with pytest.raises(SegDataError, match='l16.txt, line 1: image .*a16.png'):
        SegDataset(data_dir, path)


@pytest.mark.parametrize('suffix', ['.jpg', '.png'])
def test_truncated_image_detected(tmp_path, suffix):
    save_image(tmp_path / f'x{suffix}', 64, 64)
    data = (tmp_path / f'x{suffix}').read_bytes()
    (tmp_path / f'x{suffix}').write_bytes(data[:len(data) * 2 // 3])
    if suffix == '.jpg':  # OpenCV alone would not complain
        assert cv2.imread(str(tmp_path / 'x.jpg')) is not None
    with pytest.raises(SegDataError, match=f'x{suffix} is truncated'):
        read_image(str(tmp_path / f'x{suffix}'))


@pytest.mark.parametrize('suffix', ['.jpg', '.png'])
def test_end_check_with_trailing_bytes(tmp_path, suffix):
    """Past the quick look at the last bytes, the file's structure is walked."""
    expected = save_image(tmp_path / f'x{suffix}', 16, 16, value=90)
    complete = (tmp_path / f'x{suffix}').read_bytes()
    for trailer in (b'\x00' * 100, b'\xd9' + b'\x00' * 70):
        (tmp_path / f'x{suffix}').write_bytes(complete + trailer)
        image = read_image(str(tmp_path / f'x{suffix}'))
        assert np.abs(image.astype(int) - expected).max() <= 2
    # Cut inside the image data, then padded with zeros: still truncated.
    (tmp_path / f'x{suffix}').write_bytes(complete[:len(complete) // 2] + b'\x00' * 100)
    with pytest.raises(SegDataError, match=f'x{suffix} is truncated'):
        read_image(str(tmp_path / f'x{suffix}'))


def test_jpeg_with_data_after_end_marker_accepted(tmp_path):
    expected = save_image(tmp_path / 'x.jpg', 16, 16, value=90)
    with open(tmp_path / 'x.jpg', 'ab') as f:
        f.write(b'trailing camera data \xff\xd8 more')
    image = read_image(str(tmp_path / 'x.jpg'))
    assert np.abs(image.astype(int) - expected).max() <= 2


def test_truncated_label_detected(tmp_path):
    data_dir = small_set(tmp_path)
    path = os.path.join(data_dir, 'a.png')
    data = open(path, 'rb').read()
    open(path, 'wb').write(data[:-20])
    ds = SegDataset(data_dir, 'list.txt')  # the header is still readable
    with pytest.raises(SegDataError, match='label .*a.png is truncated'):
        ds.read_sample(0)


def test_transform_error_names_image_and_keeps_traceback(synth):
    def broken(sample):
        raise KeyError('missing_key')

    ds = SegDataset(synth.root, synth.train_list, transforms=broken)
    with pytest.raises(SegDataError, match=r'transforms failed on sample 2 '
                       r'\(image .*train_0002.jpg\): KeyError'):
        ds.read_sample(2)
    marker = ds[2]
    assert 'Traceback where it happened' in marker.message
    assert 'broken' in marker.message


def test_index_out_of_range_and_pickle(synth):
    ds = SegDataset(synth.root, synth.train_list, synth.label_list)
    with pytest.raises(IndexError):
        ds[len(ds)]
    clone = pickle.loads(pickle.dumps(ds))
    assert clone.samples == ds.samples and clone.labels == ds.labels
    np.testing.assert_array_equal(clone[3][1], ds[3][1])


# --- batches ----------------------------------------------------------------


def test_collate_and_unpack():
    good = [(np.zeros((3, 4, 4), np.float32), np.zeros((4, 4), np.uint8))] * 2
    images, labels = unpack_batch(collate(good))
    assert images.shape == (2, 3, 4, 4) and labels.shape == (2, 4, 4)
    assert labels.dtype == np.uint8
    images, labels = unpack_batch(collate([(np.zeros((3, 4, 4)), None)]))
    assert images.shape == (1, 3, 4, 4) and labels is None
    batch = collate([good[0], SampleError(5, 'image /x/bad.jpg is broken')])
    assert batch[1] == ERROR_TAG
    with pytest.raises(SegDataError, match='/x/bad.jpg is broken'):
        unpack_batch(batch)
    mixed = [good[0], (np.zeros((3, 5, 4)), np.zeros((5, 4)))]
    with pytest.raises(SegDataError, match='cannot stack .*batch_size=1'):
        unpack_batch(collate(mixed))


@pytest.mark.parametrize('num_workers', [0, 2])
def test_dataloader_iterates_good_set(synth, num_workers):
    ds = SegDataset(synth.root, synth.train_list, synth.label_list,
                    transforms=add_channel_first, num_workers=num_workers)
    loader = paddle.io.DataLoader(ds, batch_size=4, shuffle=False,
                                  num_workers=ds.num_workers,
                                  collate_fn=SegDataset.collate_fn)
    sizes = []
    for batch in loader:
        images, labels = unpack_batch(batch)
        assert images.dtype == paddle.float32 and labels.dtype == paddle.uint8
        assert tuple(images.shape[1:]) == (3, 32, 40)
        sizes.append(images.shape[0])
    assert sizes == [4, 2]
    np.testing.assert_array_equal(labels[1].numpy(), ds[5][1])


CORRUPT_SCRIPT = """
import sys
import paddle
from paddlex_seg.data.dataset import SegDataError, SegDataset, unpack_batch
from paddlex_seg.data.synthetic import make_synthetic_dataset
root, num_workers = sys.argv[1], int(sys.argv[2])
synth = make_synthetic_dataset(root, num_train=8, num_val=0,
                               image_size=(24, 24))
ds = SegDataset(synth.root, synth.train_list, synth.label_list)
bad = ds.samples[4][0]
data = open(bad, 'rb').read()
open(bad, 'wb').write(data[:len(data) // 2])  # broken after construction
loader = paddle.io.DataLoader(ds, batch_size=2, num_workers=num_workers,
                              collate_fn=ds.collate_fn)
batches = 0
try:
    for batch in loader:
        unpack_batch(batch)
        batches += 1
except SegDataError as error:
    print('CAUGHT after', batches, 'batches:', error)
"""


@pytest.mark.parametrize('num_workers', [0, 2])
def test_corrupt_image_under_dataloader_reaches_caller(tmp_path, num_workers):
    # A subprocess with a timeout: a hang must fail the test, not CI.
    script = tmp_path / 'run.py'
    script.write_text(CORRUPT_SCRIPT)
    env = dict(os.environ, PYTHONPATH=REPO)
    result = subprocess.run(
        [sys.executable, str(script), str(tmp_path / 'set'), str(num_workers)],
        capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'CAUGHT after 2 batches:' in result.stdout, (result.stdout,
                                                        result.stderr[-3000:])
    assert 'train_0004.jpg is truncated' in result.stdout
    assert 'Blocking queue is killed' not in result.stdout + result.stderr
