"""The synthetic data set: format, determinism, speed, learnable content."""
import filecmp
import os
import time

import numpy as np
import pytest
from PIL import Image

from paddlex_seg.data.dataset import SegDataset, read_image, read_label
from paddlex_seg.data.synthetic import class_names, make_synthetic_dataset


def test_defaults_are_fast_and_in_paddlex_format(tmp_path):
    start = time.perf_counter()
    synth = make_synthetic_dataset(tmp_path / 'set')
    assert time.perf_counter() - start < 2.0
    assert synth.num_classes == 3
    with open(synth.label_list, encoding='utf-8') as f:
        assert f.read().splitlines() == ['background', 'circle', 'rectangle']
    for list_path, count in ((synth.train_list, 32), (synth.val_list, 8)):
        with open(list_path, encoding='utf-8') as f:
            lines = f.read().splitlines()
        assert len(lines) == count
        for line in lines:
            image_rel, label_rel = line.split()
            assert not os.path.isabs(image_rel)
            assert os.path.splitext(image_rel)[1] in ('.jpg', '.png')
            assert label_rel.endswith('.png')
            with Image.open(os.path.join(synth.root, label_rel)) as label:
                assert label.mode == 'L' and label.size == (96, 96)
    suffixes = {os.path.splitext(line.split()[0])[1]
                for line in open(synth.train_list)}
    assert suffixes == {'.jpg', '.png'}


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    kwargs = dict(num_train=4, num_val=2, image_size=(32, 48))
    a = make_synthetic_dataset(tmp_path / 'a', seed=3, **kwargs)
    b = make_synthetic_dataset(tmp_path / 'b', seed=3, **kwargs)
    c = make_synthetic_dataset(tmp_path / 'c', seed=4, **kwargs)
    names = [line.split() for line in open(a.train_list)]
    names += [line.split() for line in open(a.val_list)]
    files = [name for pair in names for name in pair]
    match, mismatch, errors = filecmp.cmpfiles(a.root, b.root, files,
                                               shallow=False)
    assert mismatch == [] and errors == [] and len(match) == 12
    _, mismatch, _ = filecmp.cmpfiles(a.root, c.root, files, shallow=False)
    assert len(mismatch) == 12
    # The val set does not depend on num_train.
    d = make_synthetic_dataset(tmp_path / 'd', seed=3, num_train=1,
                               num_val=2, image_size=(32, 48))
    val_files = [n for line in open(a.val_list) for n in line.split()]
    _, mismatch, _ = filecmp.cmpfiles(a.root, d.root, val_files,
                                      shallow=False)
    assert mismatch == []


def test_palette_labels_hold_class_ids(tmp_path):
    synth = make_synthetic_dataset(tmp_path / 'p', num_train=8, num_val=0,
                                   image_size=(48, 48), num_classes=5,
                                   palette_labels=True)
    ds = SegDataset(synth.root, synth.train_list, synth.label_list)
    assert ds.labels == class_names(5) == [
        'background', 'circle', 'rectangle', 'triangle', 'circle_2']
    seen = set()
    for image_path, label_path in ds.samples:
        assert Image.open(label_path).mode == 'P'
        seen |= set(np.unique(read_label(label_path)).tolist())
        assert read_image(image_path).shape == (48, 48, 3)
    assert seen == {0, 1, 2, 3, 4}


def test_classes_are_visible_in_the_images(tmp_path):
    # Learnable: pixels of each class have their own mean colour, far from
    # the background's and from each other's.
    synth = make_synthetic_dataset(tmp_path / 's', num_train=12, num_val=0,
                                   image_size=(64, 64), num_classes=4)
    ds = SegDataset(synth.root, synth.train_list, synth.label_list)
    pixels = {k: [] for k in range(4)}
    for index in range(len(ds)):
        image, label = ds.read_sample(index)
        for k in range(4):
            pixels[k].append(image[label == k].reshape(-1, 3))
    means = [np.concatenate(pixels[k]).mean(0) for k in range(4)]
    for k in range(4):
        for j in range(k):
            assert np.abs(means[k] - means[j]).max() > 40, (k, j, means)
    background = np.concatenate(pixels[0]).astype(np.float32)
    assert background.std(0).min() > 10  # textured, not a flat colour


@pytest.mark.parametrize('kwargs, match', [
    (dict(num_train=0), 'num_train must be an int >= 1, got 0'),
    (dict(num_classes=1), r'num_classes must be an int 2..255, got 1'),
    (dict(image_size=(8, 96)), 'image_size must be'),
    (dict(palette_labels=1), 'palette_labels must be True or False'),
])
def test_argument_validation(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_synthetic_dataset(tmp_path / 'x', **kwargs)
