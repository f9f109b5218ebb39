"""Helpers shared by the data tools: finding pairs, reading masks, writing PNGs and lists."""
import os

import numpy as np
from PIL import Image

from ..._zlib_first import check_png_writes
from ..dataset import SegDataError

IMAGE_EXTS = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp')
LABEL_EXTS = ('.png',)
IGNORE = 255


def find_files(folder, exts, what):
    """Maps a stem (path relative to ``folder`` without extension, '/'-separated) to its file."""
    if not os.path.isdir(folder):
        raise SegDataError(f'{what} folder {folder} not found')
    found = {}
    for root, _, names in os.walk(folder):
        for name in sorted(names):
            if not name.lower().endswith(exts):
                continue
            path = os.path.join(root, name)
            stem = os.path.splitext(os.path.relpath(path, folder))[0].replace(os.sep, '/')
            if stem in found:
                raise SegDataError(f'two {what} files share the name {stem!r}: {found[stem]} and {path}')
            found[stem] = path
    return found


def match_pairs(image_dir, label_dir, label_exts=LABEL_EXTS):
    """Sorted (stem, image path, label path) of the images and labels of the same stem.

    Raises SegDataError naming the unmatched files (up to 5 of each).
    """
    images = find_files(image_dir, IMAGE_EXTS, 'image')
    labels = find_files(label_dir, label_exts, 'label')
    problems = []
    for kind, mine, other, folder in (('image', images, labels, label_dir),
                                      ('label', labels, images, image_dir)):
        missing = sorted(set(mine) - set(other))
        if missing:
            shown = ', '.join(os.path.basename(mine[s]) for s in missing[:5])
            more = f' and {len(missing) - 5} more' if len(missing) > 5 else ''
            problems.append(f'{len(missing)} {kind} file(s) without a counterpart of the same name '
                            f'in {folder}: {shown}{more}')
    if problems:
        raise SegDataError('; '.join(problems))
    if not images:
        raise SegDataError(f'no images ({", ".join(IMAGE_EXTS)}) found in {image_dir}')
    return [(stem, images[stem], labels[stem]) for stem in sorted(images)]


def palette(num=256):
    """An RGB palette: class 0 black, classes 1.. distinct colours (bits of the index spread
    over the three channels, high bits first), 255 (ignore) white."""
    table = np.zeros((num, 3), np.uint8)
    for index in range(1, num):
        value, r, g, b = index, 0, 0, 0
        for shift in range(7, -1, -1):
            r |= (value & 1) << shift
            g |= ((value >> 1) & 1) << shift
            b |= ((value >> 2) & 1) << shift
            value >>= 3
        table[index] = (r, g, b)
    table[IGNORE] = (255, 255, 255)
    return table.reshape(-1).tolist()


def write_index_png(path, label):
    """Writes an HW uint8 array of class ids as a palette ('P') PNG."""
    label = np.asarray(label)
    if label.ndim != 2 or label.dtype != np.uint8:
        raise ValueError(f'{path}: a label must be an HW uint8 array, got {label.dtype} {label.shape}')
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    check_png_writes(path)
    image = Image.fromarray(label, mode='P') if _pil_takes_mode() else Image.fromarray(label).convert('P')
    image.putpalette(palette())
    image.save(path)
    return path


def _pil_takes_mode():
    try:
        Image.fromarray(np.zeros((1, 1), np.uint8), mode='P')
        return True
    except (TypeError, ValueError):
        return False


def write_lines(path, lines):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, 'w', encoding='utf-8') as f:
        f.writelines(f'{line}\n' for line in lines)
    return path


def read_names(label_list):
    """Class names from a labels.txt path or a list; duplicates and blanks are errors."""
    where = 'label_list'
    if isinstance(label_list, (str, os.PathLike)):
        where = os.fspath(label_list)
        try:
            with open(where, encoding='utf-8-sig') as f:
                names = [line.strip() for line in f if line.strip()]
        except OSError as error:
            raise SegDataError(f'label list {where} cannot be read: {error}') from error
    else:
        names = [str(name).strip() for name in label_list]
    if not names or any(not name for name in names):
        raise SegDataError(f'{where}: class names must be non-empty, got {names!r}')
    seen = {}
    for index, name in enumerate(names):
        if name in seen:
            raise SegDataError(f'{where}: class name {name!r} appears twice (class {seen[name]} '
                               f'and class {index}); each class needs its own name')
        seen[name] = index
    if len(names) > 255:
        raise SegDataError(f'{where}: {len(names)} classes; at most 255 fit uint8 labels '
                           '(255 is the ignore value)')
    return names


def rel(path, start):
    return os.path.relpath(path, start).replace(os.sep, '/')
