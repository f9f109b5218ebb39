"""check_dataset: what in a file list will break training, class balance, and safe fixes.

Per sample it reports (``report.files[i]['problems']``, each ``{'code', 'message',
'fixable'}``): a malformed list line, a missing, truncated or corrupt image or label, an image
and label of different sizes, label values outside ``0..num_classes-1`` (255 = ignore is
allowed), 0/255 masks (255 would be ignored, so the foreground would never be learnt), RGB
masks, and 16-bit or other unusable modes. Palette ('P') PNGs are fine (their indices are the
class ids) and only noted.

``num_classes`` comes from the argument, else ``label_list``, else the largest value found
+ 1 (then out-of-range values cannot be detected, and the report says so).

The class pixel histogram counts every valid pixel (255 and out-of-range values apart) of the
labels as training would read them after the fixes; it is printed by :meth:`DatasetReport.table`
and drawn in ``save_dir/class_histogram.png``. Class weights are **median-frequency**
weights (Eigen & Fergus, ICCV 2015): ``freq_c = pixels of c / pixels of the images holding c``,
``w_c = median(freq) / freq_c``; a class with no pixel gets 0. ``method='inverse_frequency'``
gives ``w_c = total / (K * pixels of c)`` instead. Pass them as
``model.train(..., class_weights=report.class_weights)``.

``fix=True`` writes fixed copies into ``save_dir`` (never the originals): 0/255 → 0/1, RGB
masks → class ids (gray RGB: one channel; colour: ``colors[i]`` is class i, else the sorted
distinct colours of the whole data set, black first), palette PNGs → the same indices. The new
file list (same name as ``file_list``, in ``save_dir``, paths relative to it) points at the
original images and at the fixed labels (original labels where nothing needed fixing).
"""
import json
import os
import shutil

import numpy as np
from PIL import Image

from ..dataset import SegDataError, _check_complete, _read_bytes, read_image
from ._files import IGNORE, read_names, rel, write_index_png, write_lines

__all__ = ['check_dataset', 'DatasetReport', 'WEIGHT_METHODS']

WEIGHT_METHODS = ('median_frequency', 'inverse_frequency')
_INDEX_MODES = ('L', 'P', '1', 'I', 'I;16', 'I;16L', 'I;16B', 'I;16N')


class DatasetReport:
    """What :func:`check_dataset` found.

    Attributes:
        files (list[dict]): per sample 'line', 'image', 'label', 'problems' (list of
            {'code', 'message', 'fixable'}), 'notes', 'fixed_label' (path or None).
        num_classes (int), labels (list[str]): classes checked against.
        histogram (list[int]): valid pixels per class id.
        ignored_pixels (int), out_of_range_pixels (int).
        class_weights (list[float]), weight_method (str).
        color_map (dict|None): 'r,g,b' -> class id used for RGB masks.
        plot (str|None), report_json (str|None), fixed_file_list (str|None).
    """

    def __init__(self):
        self.files, self.labels, self.histogram, self.class_weights = [], [], [], []
        self.num_classes = None
        self.ignored_pixels = self.out_of_range_pixels = 0
        self.weight_method = None
        self.color_map = None
        self.plot = self.report_json = self.fixed_file_list = None
        self.notes = []

    @property
    def problems(self):
        """(file index, problem) of every problem found."""
        return [(i, p) for i, f in enumerate(self.files) for p in f['problems']]

    @property
    def unfixed(self):
        """Problems that still break training: all of them without a fix, else the unfixable."""
        return [(i, p) for i, p in self.problems
                if not (p['fixable'] and self.files[i]['fixed_label'])]

    @property
    def ok(self):
        return not self.problems

    def table(self):
        """The histogram and weights as a text table."""
        total = max(sum(self.histogram), 1)
        rows = [f'{"id":>3}  {"class":<20} {"pixels":>12} {"share":>7} {"weight":>8}']
        for i, count in enumerate(self.histogram):
            name = self.labels[i] if i < len(self.labels) else f'class_{i}'
            rows.append(f'{i:>3}  {name:<20} {count:>12} {100 * count / total:>6.2f}% '
                        f'{self.class_weights[i]:>8.4f}')
        rows.append(f'ignored (255): {self.ignored_pixels} pixels; out of range: '
                    f'{self.out_of_range_pixels} pixels; weights: {self.weight_method}')
        return '\n'.join(rows)

    def to_dict(self):
        return {k: getattr(self, k) for k in (
            'files', 'num_classes', 'labels', 'histogram', 'ignored_pixels', 'out_of_range_pixels',
            'class_weights', 'weight_method', 'color_map', 'plot', 'fixed_file_list', 'notes')}


def check_dataset(dataset_dir, file_list, num_classes=None, label_list=None, fix=False,
                  save_dir=None, method='median_frequency', colors=None, plot=True, progress=True):
    """Checks every sample of a file list; optionally writes fixed copies.

    Args:
        dataset_dir (str): folder the list's paths are relative to.
        file_list (str): the list (as given, or inside ``dataset_dir``).
        num_classes (int|None): number of classes; see the module docstring.
        label_list (str|list[str]|None): class names (a path, or inside ``dataset_dir``).
        fix (bool): write fixed labels and a new file list into ``save_dir``.
        save_dir (str|None): output folder of the plot, report.json and fixes (default
            ``<dataset_dir>/check_dataset``); must not be ``dataset_dir`` itself with fix.
        method (str): 'median_frequency' or 'inverse_frequency'.
        colors (list|None): RGB colour of each class, for colour masks.
        plot (bool): write class_histogram.png. progress (bool): show a tqdm bar.

    Returns:
        DatasetReport
    """
    from tqdm import tqdm

    if method not in WEIGHT_METHODS:
        raise SegDataError(f'method must be one of {", ".join(WEIGHT_METHODS)}, got {method!r}')
    dataset_dir = os.path.abspath(os.fspath(dataset_dir))
    if not os.path.isdir(dataset_dir):
        raise SegDataError(f'dataset_dir {dataset_dir} is not a folder')
    list_path = _find(file_list, dataset_dir, 'file_list')
    save_dir = os.path.abspath(save_dir or os.path.join(dataset_dir, 'check_dataset'))
    if fix and save_dir == dataset_dir:
        raise SegDataError('save_dir must differ from dataset_dir: --fix never overwrites originals')
    report = DatasetReport()
    if label_list is not None:
        path = label_list if isinstance(label_list, (list, tuple)) else _find(label_list, dataset_dir, 'label_list')
        report.labels = read_names(path)
    if num_classes is not None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or not 1 <= num_classes <= 255:
            raise SegDataError(f'num_classes must be an int in 1..255, got {num_classes!r}')
        if report.labels and len(report.labels) != num_classes:
            raise SegDataError(f'num_classes={num_classes} but the label list names '
                               f'{len(report.labels)} classes')
    known = num_classes or (len(report.labels) or None)
    color_table = {tuple(int(v) for v in c): i for i, c in enumerate(colors)} if colors else None

    entries = _read_list(list_path, dataset_dir)
    seen_colours = set()
    for entry in tqdm(entries, desc='check_dataset', unit='file', disable=not progress):
        _check_entry(entry, known)
        seen_colours.update(entry.pop('_colours', ()))
    if color_table is None and seen_colours:
        color_table = {c: i for i, c in enumerate(sorted(seen_colours))}
    if color_table is not None:
        report.color_map = {','.join(map(str, c)): i for c, i in color_table.items()}
    top = 0
    for entry in entries:  # histograms of colour masks need the colour table
        hist = entry.get('_hist')
        if hist is None and entry.get('_colour_counts'):
            hist = np.zeros(256, np.int64)
            for colour, count in entry['_colour_counts'].items():
                hist[color_table.get(colour, IGNORE)] += count
            entry['_hist'] = hist
        if hist is not None:
            used = np.nonzero(hist[:IGNORE])[0]
            top = max(top, int(used.max()) + 1 if used.size else 1)
    report.num_classes = known or max(top, 2)
    if known is None:
        report.notes.append(f'num_classes unknown (no num_classes, no label_list): assumed '
                            f'{report.num_classes} from the largest value; out-of-range values '
                            'cannot be detected')
    if known and color_table and max(color_table.values()) >= known:
        for entry in entries:
            for p in entry['problems']:
                if p['code'] == 'rgb_mask':
                    p['fixable'] = False
                    p['message'] += (f'; the data set has {len(color_table)} colours but '
                                     f'{known} classes, so they cannot be mapped safely')
    report.weight_method = method
    _histogram(report, entries)
    report.files = [{k: v for k, v in e.items() if not k.startswith('_')} for e in entries]
    os.makedirs(save_dir, exist_ok=True)
    if fix:
        _write_fixes(report, entries, dataset_dir, save_dir, list_path, color_table, label_list)
    if plot:
        report.plot = _plot(report, os.path.join(save_dir, 'class_histogram.png'))
    report.report_json = os.path.join(save_dir, 'report.json')
    with open(report.report_json, 'w', encoding='utf-8') as f:
        json.dump(report.to_dict(), f, indent=1)
    return report


def _find(name, dataset_dir, what):
    name = os.fspath(name)
    for path in (name, os.path.join(dataset_dir, name)):
        if os.path.isfile(path):
            return os.path.abspath(path)
    raise SegDataError(f'{what} {name!r} not found (looked in the current folder and in {dataset_dir})')


def _read_list(path, dataset_dir):
    entries = []
    with open(path, encoding='utf-8-sig') as f:
        for number, line in enumerate(f.read().splitlines(), start=1):
            fields = line.split()
            if not fields or fields[0].startswith('#'):
                continue
            entry = {'line': number, 'image': None, 'label': None, 'problems': [], 'notes': [],
                     'fixed_label': None}
            if len(fields) != 2:
                entry['problems'].append(_problem('malformed_line', f'{path}, line {number}: '
                                         f'expected "image_path label_path", got {line.strip()!r}'))
            else:
                entry['image'], entry['label'] = (os.path.join(dataset_dir, p) for p in fields)
            entries.append(entry)
    if not entries:
        raise SegDataError(f'file list {path} holds no sample')
    return entries


def _problem(code, message, fixable=False):
    return {'code': code, 'message': message, 'fixable': fixable}


def _check_entry(entry, known):
    if entry['image'] is None:
        return
    image_path, label_path = entry['image'], entry['label']
    add = entry['problems'].append
    size = None
    try:
        size = read_image(image_path).shape[:2]
    except Exception as error:  # SegDataError names the file; missing, truncated, corrupt, 16-bit
        add(_problem('bad_image', str(error)))
    try:
        data = _read_bytes(label_path, 'label')
        _check_complete(data, label_path, 'label')
        import io
        with Image.open(io.BytesIO(data)) as image:
            mode = image.mode
            image.load()
            if mode in ('RGBA', 'LA'):
                image = image.convert('RGB' if mode == 'RGBA' else 'L')
            array = np.array(image)
    except Exception as error:
        add(_problem('bad_label', str(error) if isinstance(error, SegDataError) else
                     f'label {label_path} cannot be read: {type(error).__name__}: {error}'))
        return
    if size is not None and array.shape[:2] != size:
        add(_problem('size_mismatch', f'label {label_path} is {array.shape[0]} x {array.shape[1]} '
                     f'but image {image_path} is {size[0]} x {size[1]}'))
    if array.ndim == 3:
        array = array[..., :3]
        if (array == array[..., :1]).all():
            add(_problem('rgb_gray', f'label {label_path} is an RGB image with equal channels; '
                         'training needs a single-channel PNG', fixable=True))
            entry['_fix'] = 'gray'
            array = array[..., 0]
        else:
            colours, counts = np.unique(array.reshape(-1, 3), axis=0, return_counts=True)
            colours = [tuple(int(v) for v in c) for c in colours]
            add(_problem('rgb_mask', f'label {label_path} is an RGB colour mask ({len(colours)} '
                         'colours); training needs class ids', fixable=True))
            entry['_fix'] = 'colour'
            entry['_colours'] = colours
            entry['_colour_counts'] = dict(zip(colours, counts.tolist()))
            return
    elif mode == 'P':
        entry['notes'].append(f'label {label_path} is a palette PNG: its indices are the class ids')
    elif mode not in _INDEX_MODES:
        add(_problem('bad_mode', f'label {label_path} has mode {mode}, not a class-id image'))
        return
    if array.dtype != np.uint8:
        if array.size and (array.min() < 0 or array.max() > 255):
            add(_problem('out_of_range', f'label {label_path} holds values {int(array.min())}..'
                         f'{int(array.max())}; class ids must be 0..254 (255 = ignore)'))
            return
        array = array.astype(np.uint8)
    values = set(np.unique(array).tolist())
    if values == {0, 255} and known in (None, 2):
        add(_problem('binary_0_255', f'label {label_path} holds only 0 and 255: 255 means ignore, '
                     'so its foreground would never be learnt; fix maps 255 to 1', fixable=True))
        entry['_fix'] = 'binary'
        array = (array == 255).astype(np.uint8)
    elif known is not None:
        bad = sorted(v for v in values if v >= known and v != IGNORE)
        if bad:
            add(_problem('out_of_range', f'label {label_path} holds values {bad[:10]} but there are '
                         f'{known} classes (ids 0..{known - 1}, 255 = ignore)'))
    entry['_hist'] = np.bincount(array.ravel(), minlength=256).astype(np.int64)
    if mode == 'P' and '_fix' not in entry:
        entry['_fix'] = 'palette'


def _histogram(report, entries):
    k = report.num_classes
    hist = np.zeros(k, np.int64)
    holding = np.zeros(k, np.int64)  # valid pixels of the images that hold each class
    for entry in entries:
        h = entry.get('_hist')
        if h is None:
            continue
        report.ignored_pixels += int(h[IGNORE])
        report.out_of_range_pixels += int(h[k:IGNORE].sum())
        valid = h[:k]
        hist += valid
        holding[valid > 0] += int(valid.sum())
    report.histogram = hist.tolist()
    present = hist > 0
    weights = np.zeros(k)
    if present.any():
        if report.weight_method == 'median_frequency':
            freq = hist[present] / holding[present]
            weights[present] = np.median(freq) / freq
        else:
            weights[present] = hist.sum() / (k * hist[present])
    report.class_weights = [round(float(w), 6) for w in weights]


def _write_fixes(report, entries, dataset_dir, save_dir, list_path, color_table, label_list):
    lines = []
    for entry, info in zip(entries, report.files):
        if entry['image'] is None:
            continue
        label_out = entry['label']
        fixable = info['problems'] and all(p['fixable'] for p in info['problems'])
        if entry.get('_fix') and (fixable or (entry['_fix'] == 'palette' and not info['problems'])):
            label_out = _fixed_path(entry['label'], dataset_dir, save_dir)
            write_index_png(label_out, _fixed_array(entry, color_table))
            info['fixed_label'] = label_out
        lines.append(f'{rel(entry["image"], save_dir)} {rel(label_out, save_dir)}')
    report.fixed_file_list = write_lines(os.path.join(save_dir, os.path.basename(list_path)), lines)
    if isinstance(label_list, (str, os.PathLike)):
        shutil.copyfile(_find(label_list, dataset_dir, 'label_list'), os.path.join(save_dir, 'labels.txt'))
    elif report.labels:
        write_lines(os.path.join(save_dir, 'labels.txt'), report.labels)


def _fixed_path(label_path, dataset_dir, save_dir):
    inside = os.path.abspath(label_path).startswith(dataset_dir + os.sep)
    name = os.path.relpath(label_path, dataset_dir) if inside else os.path.join(
        'Annotations', os.path.basename(label_path))
    return os.path.join(save_dir, os.path.splitext(name)[0] + '.png')


def _fixed_array(entry, color_table):
    with Image.open(entry['label']) as image:
        if image.mode in ('RGBA', 'P') and entry['_fix'] in ('gray', 'colour'):
            image = image.convert('RGB')
        array = np.array(image)
    if entry['_fix'] == 'gray':
        return array[..., 0].astype(np.uint8)
    if entry['_fix'] == 'colour':
        out = np.full(array.shape[:2], IGNORE, np.uint8)
        for colour, index in color_table.items():
            out[(array[..., :3] == colour).all(axis=-1)] = index
        return out
    if entry['_fix'] == 'binary':
        return (array == 255).astype(np.uint8)
    return array.astype(np.uint8)  # palette: the same indices


def _plot(report, path):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    from ..._zlib_first import check_png_writes
    names = [report.labels[i] if i < len(report.labels) else str(i)
             for i in range(len(report.histogram))]
    fig, ax = plt.subplots(figsize=(max(4, 0.6 * len(names) + 2), 3.2))
    ax.bar(range(len(names)), report.histogram, color='tab:blue')
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=45, ha='right')
    ax.set_ylabel('pixels')
    ax.set_title('class pixel histogram')
    fig.tight_layout()
    check_png_writes(path)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
