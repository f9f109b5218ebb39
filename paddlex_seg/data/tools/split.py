"""split_dataset: PaddleX SEG layout (JPEGImages/ + Annotations/) -> train/val/test file lists.

Images and labels are matched by name (path below their folder without the extension;
sub-folders are kept). The sorted pairs are shuffled with ``numpy.random.RandomState(seed)``,
so the same folder and seed always give the same lists. ``round(n * val_value)`` samples go to
val and ``round(n * test_value)`` to test (at least one each when the fraction is > 0), the
rest to train. Lines are ``JPEGImages/a.jpg Annotations/a.png``, relative to ``dataset_dir``.

An existing ``labels.txt`` in ``dataset_dir`` is kept (and checked: no duplicate names, every
mask value below its length or 255). Without one, it is written with one line per class id
0..max found in the masks (255 = ignore excluded), named ``class_0``, ``class_1``, ...
"""
import numbers
import os

import numpy as np
from PIL import Image

from ..dataset import SegDataError
from ._files import IGNORE, match_pairs, read_names, rel, write_lines

__all__ = ['split_dataset']


def split_dataset(dataset_dir, val_value=0.2, test_value=0.0, seed=0, image_dir='JPEGImages',
                  label_dir='Annotations', label_list='labels.txt'):
    """Writes train_list.txt, val_list.txt, test_list.txt (if test_value > 0) and labels.txt.

    Args:
        dataset_dir (str): the data set folder; lists and labels.txt are written there.
        val_value (float): fraction of samples for validation, in [0, 1).
        test_value (float): fraction for testing, in [0, 1); val + test < 1.
        seed (int): shuffling seed.
        image_dir, label_dir (str): sub-folders of images and of label PNGs.
        label_list (str): name of the class list inside ``dataset_dir``.

    Returns:
        dict: 'train', 'val', 'test' (paths, test None when not written), 'labels' (path),
        'num_train', 'num_val', 'num_test', 'label_written' (False when labels.txt was kept).

    Raises:
        SegDataError: a bad fraction, a missing folder, unmatched files (named), no image,
            a colour mask, a mask value outside labels.txt.
    """
    for name, value in (('val_value', val_value), ('test_value', test_value)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value < 1:
            raise SegDataError(f'{name} must be a number in [0, 1), got {value!r}')
    if val_value + test_value >= 1:
        raise SegDataError(f'val_value + test_value must be below 1 (something must be left to '
                           f'train on), got {val_value} + {test_value}')
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise SegDataError(f'seed must be an int, got {seed!r}')
    dataset_dir = os.path.abspath(os.fspath(dataset_dir))
    pairs = match_pairs(os.path.join(dataset_dir, image_dir), os.path.join(dataset_dir, label_dir))
    n = len(pairs)
    n_val = _count(n, val_value)
    n_test = _count(n, test_value)
    if n - n_val - n_test < 1:
        raise SegDataError(f'{n} sample(s) in {dataset_dir} cannot be split into val_value='
                           f'{val_value} and test_value={test_value} with at least one training sample')

    labels_path = os.path.join(dataset_dir, label_list)
    names = read_names(labels_path) if os.path.isfile(labels_path) else None
    max_id = _check_masks(pairs, names, labels_path)
    written = names is None
    if written:
        write_lines(labels_path, [f'class_{i}' for i in range(max(max_id, 1) + 1)])

    order = np.random.RandomState(seed).permutation(n)
    lines = [f'{rel(pairs[i][1], dataset_dir)} {rel(pairs[i][2], dataset_dir)}' for i in order]
    val, test, train = lines[:n_val], lines[n_val:n_val + n_test], lines[n_val + n_test:]
    out = {'train': write_lines(os.path.join(dataset_dir, 'train_list.txt'), train),
           'val': write_lines(os.path.join(dataset_dir, 'val_list.txt'), val),
           'test': None, 'labels': labels_path, 'num_train': len(train), 'num_val': len(val),
           'num_test': len(test), 'label_written': written}
    if test_value > 0:
        out['test'] = write_lines(os.path.join(dataset_dir, 'test_list.txt'), test)
    return out


def _count(n, fraction):
    return 0 if fraction == 0 else max(1, int(round(n * fraction)))


def _check_masks(pairs, names, labels_path):
    """The largest class id in the masks; errors for colour masks and ids outside labels.txt."""
    max_id = 0
    for _, _, label_path in pairs:
        try:
            with Image.open(label_path) as image:
                mode = image.mode
                values = np.unique(np.asarray(image)) if mode in ('L', 'P', '1') else None
        except Exception as error:
            raise SegDataError(f'label {label_path} cannot be read: {type(error).__name__}: '
                               f'{error}') from error
        if values is None:
            raise SegDataError(f'label {label_path} is a {mode} image, not a single-channel or '
                               'palette PNG of class ids; convert it with `paddlex_seg convert '
                               '--source mask` or `paddlex_seg check_dataset --fix`')
        ids = [int(v) for v in values if v != IGNORE]
        if ids:
            max_id = max(max_id, max(ids))
            if names is not None and max(ids) >= len(names):
                raise SegDataError(f'label {label_path} holds class id {max(ids)} but '
                                   f'{labels_path} names {len(names)} classes')
    return max_id
