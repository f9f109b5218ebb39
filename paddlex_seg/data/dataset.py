"""SegDataset: a PaddleX-style segmentation data set read from file lists.

A data set is a folder plus a text file of ``image_path [label_path]`` lines
(paths relative to the folder, or absolute) and, optionally, a label list with
one class name per line. Everything that can be checked without decoding
pixels is checked when the data set is built, and the error names the list
file and the line: missing files, malformed lines, colour-mask labels, 16-bit
images, image/label size mismatches (read from the file headers).

Errors while reading a sample, and how they reach the training loop
------------------------------------------------------------------
Measured with Paddle 2.6.2 (CPU, Linux) on this project's machine:

* An exception raised by ``Dataset.__getitem__`` never reaches the caller of
  ``paddle.io.DataLoader``. With ``num_workers=0`` the loop hangs forever
  (the feeding thread dies, the main thread waits on its queue). With
  ``num_workers=2`` the worker prints the traceback to stderr and the caller
  gets ``SystemError: (Fatal) Blocking queue is killed because the data
  reader raises an exception``, with nothing about the file (in a few runs,
  by a race between the loader's threads, the worker's exception came
  through instead, as text; not something to rely on).
* An exception raised by a ``collate_fn`` behaves the same way (the collate
  function runs in the feeding thread or in the worker process, not in the
  caller's thread).
* A batch may carry plain Python strings: the loader keeps non-array fields in
  the batch's structure and hands them to the caller unchanged, with 0 and 2
  workers alike.
* A batch that holds no array at all silently ends the epoch (the loop just
  stops, no error), so an error batch must carry at least one array.

The design follows from that. ``SegDataset.read_sample`` raises a
:class:`SegDataError` naming the file. ``SegDataset.__getitem__``, which the
loader calls, never raises for a bad sample: it returns a
:class:`SampleError` marker instead. :func:`collate` (pass it as the
loader's ``collate_fn``) never raises either: a batch with a marker, or
samples that cannot be stacked, becomes an *error batch*
``[uint8 array of shape (1,), ERROR_TAG, message]``. In the caller's
process, :func:`unpack_batch` turns an error batch into a raised
``SegDataError`` carrying the message, with 0 or any number of workers::

    loader = paddle.io.DataLoader(dataset, batch_size=4, collate_fn=collate,
                                  num_workers=dataset.num_workers)
    for batch in loader:
        images, labels = unpack_batch(batch)  # SegDataError on a bad file

An engine that forgets ``unpack_batch`` still fails loudly: an error batch has
three fields, so ``images, labels = batch`` raises.

Decisions
---------
* Images are decoded with OpenCV from the file's bytes (so non-ASCII paths
  work) as BGR uint8; grayscale images become 3-channel, an alpha channel is
  dropped, and the JPEG EXIF orientation is applied (as ``cv2.imread`` does).
* 16-bit images are refused rather than shifted down to 8 bits: OpenCV's
  silent conversion keeps the top 8 bits, which turns 10- or 12-bit data
  nearly black. Convert them to 8 bits with the scaling that suits the data.
* OpenCV decodes a truncated JPEG with only a warning on stderr, so every
  JPEG and PNG is checked for its end (the JPEG EOI marker, the PNG IEND
  chunk) before decoding.
* Labels are read with PIL: for 'P' (palette) PNGs that gives the class
  indices, where OpenCV would give the palette colour's luminance. Modes
  'L', 'P', '1' and 'I;16'/'I' (values 0..255) are accepted; colour masks
  ('RGB', 'RGBA', ...) are refused.
* Label values must be below the number of classes, or 255 (ignored), once
  that number is known (from the label list, or from ``set_num_classes``).
* Labels stay uint8 from the file to the batch (a class id is at most 254,
  and 255 is the ignore value); the training step casts them to int64. An
  int64 label batch would be 8 times larger to build, stack and send from the
  loader's workers than the uint8 one.
* ``num_workers='auto'`` is ``min(8, cpus // 2)`` on Linux (1 on a 2-core
  machine), where ``cpus`` is the number of CPUs this process may use, and 0
  elsewhere (Paddle's worker processes rely on ``fork``).
* Header checks cost one ``PIL.Image.open`` per file (no pixel decoding),
  about 0.1 ms per sample on local disk.
"""
import io
import os
import platform
import traceback

import cv2
import numpy as np
import paddle
from PIL import Image

__all__ = [
    'SegDataset', 'SegDataError', 'SampleError', 'collate', 'unpack_batch',
    'read_image', 'read_label', 'resolve_num_workers', 'ERROR_TAG',
    'IGNORE_INDEX'
]

IGNORE_INDEX = 255
# Marks an error batch; a string survives the DataLoader's queue untouched.
ERROR_TAG = '__paddlex_seg_sample_error__'
# Label modes whose pixel values are class ids.
_LABEL_MODES = ('L', 'P', '1', 'I', 'I;16', 'I;16L', 'I;16B', 'I;16N')
_WIDE_MODES = ('I', 'I;16', 'I;16L', 'I;16B', 'I;16N', 'F')
_JPEG_MAGIC = b'\xff\xd8'
_PNG_MAGIC = b'\x89PNG\r\n\x1a\n'
_JPEG_END = b'\xff\xd9'  # the EOI marker
_PNG_END = b'IEND\xaeB`\x82'  # the IEND chunk's type and CRC
# EXIF orientations 5..8 rotate by 90 degrees, swapping width and height.
_EXIF_ORIENTATION = 0x0112


class SegDataError(ValueError):
    """A data set file or argument is unusable; the message names it."""


class SampleError:
    """What ``SegDataset.__getitem__`` returns for a sample it cannot read.

    The DataLoader would swallow an exception, so the failure travels as
    this value to :func:`collate`, which turns it into an error batch.

    Args:
        index (int): Index of the sample in the data set.
        message (str): What went wrong, naming the file.
    """

    def __init__(self, index, message):
        self.index = index
        self.message = message

    def __repr__(self):
        return f'SampleError(index={self.index}, message={self.message!r})'


class SegDataset(paddle.io.Dataset):
    """A semantic segmentation data set described by PaddleX file lists.

    Args:
        data_dir (str): Folder the paths in ``file_list`` are relative to.
        file_list (str): Text file of ``image_path label_path`` lines (the
            label may be left out on every line, for prediction). Fields are
            separated by whitespace, so paths cannot contain spaces; blank
            lines and lines starting with '#' are skipped. Looked up as given
            (relative to the current directory), then inside ``data_dir``.
        label_list (str, optional): Text file with one class name per line,
            looked up like ``file_list``. Default: None.
        transforms (callable, optional): Called with ``{'image': HWC BGR
            uint8, 'label': HW uint8}`` (no 'label' key without labels);
            must return a dict whose 'image' is CHW. Default: None.
        num_workers (int | str): DataLoader worker processes, or 'auto'
            (``min(8, cpus // 2)`` on Linux, 0 elsewhere). Default: 'auto'.
        shuffle (bool): Whether the training loop should shuffle this data
            set. Default: False.

    Attributes:
        samples (list[tuple[str, str | None]]): Absolute (image, label) paths.
        labels (list[str]): Class names from ``label_list``; [] without one.
        num_classes (int | None): Known number of classes: ``len(labels)``,
            or what ``set_num_classes`` recorded; None when unknown.
        num_samples (int): Number of samples.

    ``dataset[i]`` returns ``(image, label)``: with transforms, image is CHW
    float32; without, the arrays as read (HWC BGR uint8 image). The label is
    an HW uint8 array of class ids (255 = ignore), or None when the file list
    has no labels. A sample that cannot be read comes back as a
    :class:`SampleError`; use ``read_sample(i)`` to get the exception instead,
    and :func:`collate` / :func:`unpack_batch` with a DataLoader (see the
    module docstring).
    """

    def __init__(self,
                 data_dir,
                 file_list,
                 label_list=None,
                 transforms=None,
                 num_workers='auto',
                 shuffle=False):
        super().__init__()
        if transforms is not None and not callable(transforms):
            raise SegDataError(
                f'transforms must be callable (e.g. transforms.Compose) or '
                f'None, got {type(transforms).__name__}: {transforms!r}')
        if not isinstance(shuffle, bool):
            raise SegDataError(
                f'shuffle must be True or False, got {shuffle!r}')
        self.num_workers = resolve_num_workers(num_workers)
        self.data_dir = _existing_dir(data_dir)
        self.file_list = _find_list_file(file_list, self.data_dir,
                                         'file_list')
        self.label_list = None
        self.labels = []
        if label_list is not None:
            self.label_list = _find_list_file(label_list, self.data_dir,
                                              'label_list')
            self.labels = _read_label_list(self.label_list)
        self.transforms = transforms
        self.shuffle = shuffle
        self.samples = _read_file_list(self.file_list, self.data_dir)
        self.num_samples = len(self.samples)
        self.num_classes = len(self.labels) or None

    def __len__(self):
        return self.num_samples

    def __getitem__(self, index):
        if not -self.num_samples <= index < self.num_samples:
            raise IndexError(
                f'index {index} out of range for {self.num_samples} samples')
        try:
            return self.read_sample(index)
        except Exception as error:  # anything: the DataLoader would hide it
            message = str(error)
            cause = error.__cause__
            if not isinstance(error, SegDataError):
                message = (f'sample {index} (image {self.samples[index][0]}):'
                           f' {type(error).__name__}: {error}')
                cause = error
            if cause is not None and not isinstance(cause,
                                                    (SegDataError, OSError)):
                # An unexpected failure (e.g. a bug in a transform): keep the
                # worker's traceback, it cannot be seen any other way.
                message += '\nTraceback where it happened:\n' + ''.join(
                    traceback.format_exception(cause)).rstrip()
            return SampleError(index, message)

    def read_sample(self, index):
        """Reads, checks and transforms one sample.

        Args:
            index (int): Sample index.

        Returns:
            tuple: ``(image, label)`` as described in the class docstring.

        Raises:
            SegDataError: The image or label cannot be read, does not match,
                holds class ids out of range, or the transforms failed; the
                message names the file(s).
        """
        image_path, label_path = self.samples[index]
        try:
            image = read_image(image_path)
            label = None
            if label_path is not None:
                label = read_label(label_path)
                _check_same_size(image, label, image_path, label_path)
                if self.num_classes is not None:
                    _check_label_values(label, self.num_classes, label_path)
        except SegDataError:
            raise
        except Exception as error:
            raise SegDataError(
                f'cannot read sample {index} (image {image_path}, label '
                f'{label_path}): {type(error).__name__}: {error}') from error
        if self.transforms is None:
            if label is not None and not label.flags.writeable:
                label = label.copy()  # PIL's array view is read-only
            return image, label
        return self._apply_transforms(index, image, label)

    @staticmethod
    def collate_fn(samples):
        """The DataLoader ``collate_fn`` for this data set: :func:`collate`."""
        return collate(samples)

    def set_num_classes(self, num_classes):
        """Records the model's number of classes, used to check label values.

        Args:
            num_classes (int): Number of classes of the model.

        Raises:
            ValueError: ``num_classes`` is not an int in 1..255, or disagrees
                with the label list.
        """
        self.check_num_classes(num_classes)
        self.num_classes = num_classes

    def check_num_classes(self, num_classes):
        """Checks that the model's number of classes fits this data set.

        Only checks; ``set_num_classes`` also records it.

        Args:
            num_classes (int): Number of classes of the model.

        Raises:
            ValueError: ``num_classes`` is not an int in 1..255 (labels are
                uint8 and 255 is the ignore value), or the label list has a
                different number of classes.
        """
        if (isinstance(num_classes, bool) or
                not isinstance(num_classes, (int, np.integer)) or
                not 1 <= num_classes <= 255):
            raise SegDataError(
                f'num_classes must be an int in 1..255 (labels are uint8, '
                f'255 means ignore), got {num_classes!r}')
        if self.labels and len(self.labels) != num_classes:
            raise SegDataError(
                f'the model has num_classes={num_classes} but the label list '
                f'{self.label_list} names {len(self.labels)} classes '
                f'({", ".join(self.labels)}); build the model with '
                f'num_classes=len(dataset.labels)')

    def _apply_transforms(self, index, image, label):
        sample = {'image': image}
        if label is not None:
            sample['label'] = label
        where = f'sample {index} (image {self.samples[index][0]})'
        try:
            out = self.transforms(sample)
        except Exception as error:
            raise SegDataError(
                f'transforms failed on {where}: {type(error).__name__}: '
                f'{error}') from error
        if not isinstance(out, dict) or 'image' not in out:
            raise SegDataError(
                f'transforms must return a dict with an "image" key; on '
                f'{where} they returned {type(out).__name__}')
        image = np.asarray(out['image'], dtype=np.float32)
        if label is None:
            return image, None
        if 'label' not in out:
            raise SegDataError(
                f'transforms dropped the "label" key on {where}')
        return image, _as_uint8_label(out['label'], where)


def collate(samples):
    """Stacks ``(image, label)`` samples into a batch; never raises.

    Pass it as the DataLoader's ``collate_fn`` and read batches with
    :func:`unpack_batch`.

    Args:
        samples (list): Items returned by ``SegDataset.__getitem__``.

    Returns:
        list: ``[images, labels]`` (``[images]`` when samples have no label),
        or an error batch ``[np.zeros(1, uint8), ERROR_TAG, message]`` when a
        sample is a :class:`SampleError` or the samples cannot be stacked.
    """
    errors = [s for s in samples if isinstance(s, SampleError)]
    if errors:
        return _error_batch('\n'.join(e.message for e in errors))
    try:
        images = np.stack([s[0] for s in samples])
        labels = [s[1] for s in samples]
        if all(label is None for label in labels):
            return [images]
        return [images, np.stack(labels)]
    except Exception as error:
        shapes = sorted({(tuple(np.shape(s[0])), tuple(np.shape(s[1])))
                         for s in samples})
        return _error_batch(
            f'cannot stack the samples of a batch into one array '
            f'({type(error).__name__}: {error}); (image, label) shapes in '
            f'this batch: {shapes}. Resize or crop every sample to one size '
            f'in the transforms, or use batch_size=1.')


def raise_for_error_batch(batch):
    """Raises the ``SegDataError`` an error batch made by :func:`collate` carries.

    Any other batch is left alone, whatever its fields.
    """
    if len(batch) == 3 and isinstance(batch[1], str) and batch[1] == ERROR_TAG:
        raise SegDataError(batch[2])


def unpack_batch(batch):
    """Returns ``(images, labels)`` from a batch made by :func:`collate`.

    Args:
        batch (list): What the DataLoader yielded.

    Returns:
        tuple: ``(images, labels)``; labels is None for a data set without
        labels.

    Raises:
        SegDataError: The batch is an error batch; the message is the one
            written where the sample was read, naming the file.
    """
    raise_for_error_batch(batch)
    if len(batch) == 1:
        return batch[0], None
    if len(batch) != 2:
        raise SegDataError(
            f'expected a batch made by paddlex_seg.data.collate ([images, '
            f'labels]), got {len(batch)} fields; pass '
            f'collate_fn=collate to the DataLoader')
    return batch[0], batch[1]


def read_image(path):
    """Reads an image file as an HWC BGR uint8 array.

    Args:
        path (str): Image file.

    Returns:
        np.ndarray: (H, W, 3) uint8, BGR, EXIF orientation applied.

    Raises:
        SegDataError: The file is missing, truncated, not decodable, or has
            16 bits per channel.
    """
    data = _read_bytes(path, 'image')
    _check_complete(data, path, 'image')
    try:
        image = cv2.imdecode(data, cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH)
    except cv2.error:
        image = None
    if image is None:
        raise SegDataError(
            f'image {path} cannot be decoded by OpenCV: it is corrupt or not '
            f'an image format OpenCV reads')
    if image.dtype != np.uint8:
        raise SegDataError(_wide_image_message(path, str(image.dtype)))
    return image


_DTYPE_KINDS = {"b": "booleans", "c": "complex numbers", "O": "Python objects", "U": "text",
                "S": "bytes", "M": "dates", "m": "time spans", "V": "raw records"}


def read_input_image(image, name="img_file"):
    """An image for prediction: a path (read as BGR) or an HWC BGR array (grayscale HW or
    HW1 arrays are expanded to 3 channels). Shared by ``predict`` and the deploy Predictor.

    Arrays must hold real numbers: uint8, uint16 and float32 pass as they are, other integer
    and float types become float32. ``name`` is the argument named in errors."""
    if isinstance(image, np.ndarray):
        kind = image.dtype.kind
        if kind not in "uif":
            raise ValueError(f"{name}: an image array must hold real numbers (uint8 BGR, or another "
                             f"integer or float type), got dtype {image.dtype} "
                             f"({_DTYPE_KINDS.get(kind, 'not numbers')})")
        if image.ndim == 3 and image.shape[2] == 1:
            image = image[:, :, 0]
        if image.ndim == 2:
            image = np.repeat(image[:, :, None], 3, axis=2)
        if image.ndim != 3 or image.shape[2] != 3:
            hint = (" (BGRA? drop the alpha channel: image[:, :, :3])"
                    if image.ndim == 3 and image.shape[2] == 4 else "")
            raise ValueError(f"{name}: an image array must be HWC with 3 channels (BGR) or HW "
                             f"grayscale, got shape {image.shape}{hint}")
        if image.shape[0] == 0 or image.shape[1] == 0:
            raise ValueError(f"{name}: the image array is empty, shape {image.shape}")
        if kind == "f" and not np.isfinite(image).all():
            raise ValueError(f"{name}: the image array holds NaN or infinite values")
        if image.dtype not in (np.uint8, np.uint16, np.float32):
            image = image.astype(np.float32)  # what OpenCV's colour conversions take
        return image
    if isinstance(image, (str, os.PathLike)):
        return read_image(os.fspath(image))
    raise ValueError(f"{name} must be a path or a numpy array, got {type(image).__name__}")


def read_label(path):
    """Reads a label file as an HW uint8 array of class ids.

    Args:
        path (str): Label image: single-channel ('L', '1', 'I;16', 'I') or
            palette ('P') PNG whose pixel values are class ids.

    Returns:
        np.ndarray: (H, W) uint8 class ids (255 = ignore).

    Raises:
        SegDataError: The file is missing, truncated, a colour mask, or has
            values above 255.
    """
    data = _read_bytes(path, 'label')
    _check_complete(data, path, 'label')
    try:
        with Image.open(io.BytesIO(data)) as image:
            _check_label_mode(image.mode, path)
            label = np.asarray(image)
    except SegDataError:
        raise
    except Exception as error:
        raise SegDataError(f'label {path} cannot be read: '
                           f'{type(error).__name__}: {error}') from error
    if label.dtype == np.uint8:
        return label
    if label.dtype == np.bool_:
        return label.astype(np.uint8)
    if label.size and (label.min() < 0 or label.max() > 255):
        raise SegDataError(
            f'label {path} holds values from {label.min()} to {label.max()}; '
            f'class ids must be 0..254, and 255 for ignored pixels')
    return label.astype(np.uint8)


def resolve_num_workers(num_workers):
    """Turns ``num_workers`` ('auto' or an int >= 0) into an int.

    Args:
        num_workers (int | str): A number of worker processes, or 'auto'.

    Returns:
        int: ``num_workers`` itself, or for 'auto' ``min(8, cpus // 2)`` on
        Linux and 0 on other systems.
    """
    if num_workers == 'auto':
        if platform.system() != 'Linux':
            return 0
        if hasattr(os, 'sched_getaffinity'):
            cpus = len(os.sched_getaffinity(0))
        else:
            cpus = os.cpu_count() or 1
        return min(8, cpus // 2)
    if (isinstance(num_workers, bool) or
            not isinstance(num_workers, (int, np.integer)) or num_workers < 0):
        raise SegDataError(
            f"num_workers must be 'auto' or an int >= 0, got {num_workers!r}")
    return int(num_workers)


# --- batches ----------------------------------------------------------------


def _error_batch(message):
    # The uint8 array is there because a batch without any array silently
    # ends the DataLoader's epoch.
    return [np.zeros([1], np.uint8), ERROR_TAG, message]


# --- file lists -------------------------------------------------------------


def _existing_dir(data_dir):
    if not isinstance(data_dir, (str, os.PathLike)):
        raise SegDataError(
            f'data_dir must be a path, got {type(data_dir).__name__}')
    path = os.path.abspath(os.fspath(data_dir))
    if not os.path.isdir(path):
        raise SegDataError(f'data_dir {data_dir!r} is not a directory '
                           f'(looked for {path})')
    return path


def _find_list_file(name, data_dir, argument):
    """Finds a list file as given (relative to the cwd), then in data_dir."""
    if not isinstance(name, (str, os.PathLike)):
        raise SegDataError(
            f'{argument} must be a path, got {type(name).__name__}: {name!r}')
    name = os.fspath(name)
    tried = [os.path.abspath(name)]
    if not os.path.isabs(name):
        tried.append(os.path.join(data_dir, name))
    for path in tried:
        if os.path.isfile(path):
            return path
    raise SegDataError(f'{argument} {name!r} not found; looked for '
                       f'{" and ".join(tried)}')


def _read_lines(path):
    """Yields (line number, stripped text) of a UTF-8 list file."""
    try:
        # utf-8-sig: lists saved by Windows editors start with a BOM.
        with open(path, encoding='utf-8-sig') as f:
            lines = f.read().splitlines()
    except UnicodeDecodeError as error:
        raise SegDataError(f'{path} is not UTF-8 text: {error}') from error
    for number, line in enumerate(lines, start=1):
        yield number, line.strip()


def _read_label_list(path):
    numbered = [(number, line) for number, line in _read_lines(path) if line]
    if not numbered:
        raise SegDataError(f'label list {path} names no class')
    lines_of = {}
    for number, name in numbered:
        lines_of.setdefault(name, []).append(number)
    repeated = [(name, numbers) for name, numbers in lines_of.items() if len(numbers) > 1]
    if repeated:
        details = '; '.join(f'{name!r} on lines {", ".join(map(str, numbers))}'
                            for name, numbers in repeated)
        raise SegDataError(f'label list {path} names a class more than once: {details}; '
                           f'each class id needs its own name')
    return [name for _, name in numbered]


def _read_file_list(path, data_dir):
    samples = []
    first_line = None  # line number of the first sample, for mixed lists
    for number, line in _read_lines(path):
        if not line or line.startswith('#'):
            continue
        where = f'{path}, line {number}'
        fields = line.split()
        if len(fields) > 2:
            raise SegDataError(
                f'{where}: expected "image_path [label_path]" separated by '
                f'whitespace, got {len(fields)} fields: {line!r}. Paths '
                f'cannot contain spaces; rename those files.')
        image = _resolve(fields[0], data_dir, f'{where}: image')
        label = None
        if len(fields) == 2:
            label = _resolve(fields[1], data_dir, f'{where}: label')
        if first_line is None:
            first_line = number
        elif (label is None) != (samples[0][1] is None):
            raise SegDataError(
                f'{where}: has {"a label" if label else "no label"} but line '
                f'{first_line} has {"one" if samples[0][1] else "none"}; '
                f'either every line names a label or none does')
        _check_headers(image, label, where)
        samples.append((image, label))
    if not samples:
        raise SegDataError(f'file list {path} has no samples (only blank or '
                           f'comment lines)')
    return samples


def _resolve(name, data_dir, what):
    path = os.path.join(data_dir, name)  # an absolute name stays as it is
    if os.path.isfile(path):
        return path
    if '\\' in name:  # a list written on Windows
        alternative = os.path.join(data_dir, name.replace('\\', '/'))
        if os.path.isfile(alternative):
            return alternative
    raise SegDataError(f'{what} file {path} not found')


def _check_headers(image_path, label_path, where):
    """Checks what file headers tell, without decoding pixels."""
    image_size = None
    try:
        with Image.open(image_path) as image:
            if image.mode in _WIDE_MODES:
                raise SegDataError(
                    f'{where}: ' + _wide_image_message(image_path, image.mode))
            width, height = image.size
            if image.format == 'JPEG':
                orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
            else:
                # getexif() would decode a whole PNG to find a late eXIf
                # chunk; without an early one, OpenCV applies no rotation.
                orientation = None if 'exif' in image.info else 1
            if orientation in (5, 6, 7, 8):
                width, height = height, width
            if orientation is not None:
                image_size = (width, height)
    except SegDataError:
        raise
    except Exception:
        # PIL cannot parse it; OpenCV may, and will say so when it is read.
        pass
    if label_path is None:
        return
    try:
        with Image.open(label_path) as label:
            _check_label_mode(label.mode, label_path, where)
            label_size = label.size
    except SegDataError:
        raise
    except Exception as error:
        raise SegDataError(f'{where}: label {label_path} is not an image PIL '
                           f'can read ({error})') from error
    if image_size is not None and image_size != label_size:
        raise SegDataError(
            f'{where}: image {image_path} is {image_size[0]}x{image_size[1]} '
            f'(width x height) but label {label_path} is '
            f'{label_size[0]}x{label_size[1]}')


# --- pixels -----------------------------------------------------------------


def _read_bytes(path, what):
    try:
        # np.fromfile + imdecode, because cv2.imread fails on non-ASCII paths
        # on some platforms.
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as error:
        raise SegDataError(
            f'{what} {path} cannot be read: {error.strerror or error}'
        ) from error
    if data.size == 0:
        raise SegDataError(f'{what} {path} is an empty file')
    return data


def _check_complete(data, path, what):
    """Raises if a JPEG or PNG file ends before its last marker/chunk."""
    head = data[:8].tobytes()
    # The usual file ends with its end marker: look at the last bytes only, and
    # copy the whole file into bytes for a walk through its structure otherwise.
    if head.startswith(_JPEG_MAGIC):
        tail = data[-64:].tobytes().rstrip(b'\x00')
        complete = (tail.endswith(_JPEG_END) or
                    _jpeg_is_complete(data.tobytes()))
        kind = 'JPEG'
    elif head == _PNG_MAGIC:
        complete = (data[-8:].tobytes() == _PNG_END or
                    _png_is_complete(data.tobytes()))
        kind = 'PNG'
    else:
        return
    if not complete:
        raise SegDataError(
            f'{what} {path} is truncated or corrupt: the {kind} data ends '
            f'before its end marker ({len(data)} bytes on disk); re-copy or '
            f're-export the file')


def _jpeg_is_complete(data):
    """True if the JPEG's marker structure reaches the EOI marker (FFD9)."""
    # Fast path: the file ends with EOI (trailing zero padding allowed).
    if data.rstrip(b'\x00').endswith(_JPEG_END):
        return True
    # Some cameras append data after EOI: walk the markers to find it.
    size = len(data)
    pos = 2
    while pos + 1 < size:
        if data[pos] != 0xFF:
            return False
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0xD9:
            return True
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:  # no length field
            pos += 2
            continue
        if pos + 4 > size:
            return False
        pos += 2 + int.from_bytes(data[pos + 2:pos + 4], 'big')
        if marker == 0xDA:
            pos = _skip_entropy_data(data, pos)
    return False


def _skip_entropy_data(data, pos):
    """Position of the first marker after entropy-coded scan data."""
    size = len(data)
    while True:
        pos = data.find(b'\xff', pos)
        if pos < 0 or pos + 1 >= size:
            return size
        following = data[pos + 1]
        # FF00 is an escaped data byte and FFD0..FFD7 restart markers: both
        # belong to the scan.
        if following == 0x00 or 0xD0 <= following <= 0xD7:
            pos += 2
        else:
            return pos


def _png_is_complete(data):
    """True if the PNG's chunk structure reaches the IEND chunk."""
    if data.endswith(_PNG_END):
        return True
    pos = len(_PNG_MAGIC)
    while pos + 8 <= len(data):
        length = int.from_bytes(data[pos:pos + 4], 'big')
        if data[pos + 4:pos + 8] == b'IEND':
            return True
        pos += 12 + length  # length, type, data, CRC
    return False


def _check_label_mode(mode, path, where=None):
    if mode in _LABEL_MODES:
        return
    prefix = f'{where}: ' if where else ''
    raise SegDataError(
        f'{prefix}label {path} has PIL mode {mode!r}; a label must be a '
        f'single-channel image of class ids (mode L, or I;16) or a palette '
        f'PNG (mode P) whose indices are the class ids, not a colour mask. '
        f'Convert colour masks to class ids first.')


def _wide_image_message(path, depth):
    return (f'image {path} has more than 8 bits per channel ({depth}); '
            f'convert it to 8-bit with the scaling that suits the data '
            f'(OpenCV would keep only the top 8 bits)')


def _check_same_size(image, label, image_path, label_path):
    if image.shape[:2] != label.shape:
        raise SegDataError(
            f'image {image_path} is {image.shape[1]}x{image.shape[0]} '
            f'(width x height) but label {label_path} is '
            f'{label.shape[1]}x{label.shape[0]}')


def _as_uint8_label(label, where):
    """The transformed label as uint8; other dtypes (custom transforms) are checked."""
    label = np.asarray(label)
    if label.dtype == np.uint8:
        return label
    if label.dtype == np.bool_:
        return label.astype(np.uint8)
    if not np.issubdtype(label.dtype, np.number):
        raise SegDataError(f'transforms returned a label of dtype {label.dtype} '
                           f'on {where}; a label holds integer class ids')
    if label.size and (label.min() < 0 or label.max() > IGNORE_INDEX):
        raise SegDataError(
            f'transforms returned label values from {label.min()} to '
            f'{label.max()} on {where}; class ids must be 0..254, and 255 '
            f'for ignored pixels')
    return label.astype(np.uint8)


def _check_label_values(label, num_classes, path):
    """Raises if a uint8 label holds ids num_classes..254 (255 is allowed)."""
    if num_classes >= IGNORE_INDEX or not label.size or label.max() < num_classes:
        return
    # With ignored pixels, still no histogram: subtracting num_classes (mod
    # 256) sends the bad ids num_classes..254 to 0..254-num_classes, and the
    # good ones (ids below num_classes, and 255) to 255-num_classes and above.
    shifted = label - np.uint8(num_classes)
    if shifted.min() >= IGNORE_INDEX - num_classes:
        return
    counts = np.bincount(label.ravel(), minlength=256)
    counts[IGNORE_INDEX] = 0
    bad = np.nonzero(counts[num_classes:])[0] + num_classes
    if bad.size:
        shown = ', '.join(str(v) for v in bad[:10])
        more = f' and {bad.size - 10} more' if bad.size > 10 else ''
        raise SegDataError(
            f'label {path} holds class ids {shown}{more}; with '
            f'{num_classes} classes a label pixel must be 0..{num_classes - 1}'
            f', or 255 to be ignored')
