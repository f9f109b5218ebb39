"""Data transforms for semantic segmentation, in the style of PaddleX 2.x ``paddlex.transforms``.

Operator names, argument names and defaults follow PaddleX 2.x; the few places where
they differ are stated in the operator's docstring. Everything runs on OpenCV and NumPy.

Conventions
    * A sample is a dict: ``'image'`` (required) is an HWC ``uint8`` or ``float32`` array
      in BGR order, as ``cv2.imread`` returns it; ``'label'`` (optional, absent when
      predicting) is an (H, W) integer array of class ids, 255 meaning "ignore".
      An operator is called as ``op(sample)`` and returns the sample.
    * Every two-element size in this module is ``(height, width)``, as in PaddleX 2.x
      (PaddleSeg writes ``(width, height)``).
    * Labels are always resized with nearest-neighbour interpolation and padded with
      ``label_padding_value`` (255 by default), so no new class id ever appears.
    * :class:`Compose` converts BGR to RGB first (``to_rgb=True``, because PaddleSeg's
      published weights were trained on RGB input), runs the operators in order and
      returns the image as CHW ``float32``.
    * Deterministic geometric operators (the ``Resize*`` family, :class:`Padding`,
      :class:`CenterCrop`) append a record to ``sample['trans_info']`` describing the
      size before they acted; :func:`restore_to_input` walks those records backwards to
      bring a prediction back to the input image's size. Random augmentations are
      meant for training only and leave no record.
    * Every operator checks its arguments when it is built (``ValueError`` naming the
      argument and the value) and can describe itself with ``to_config()``;
      :func:`build_transforms` rebuilds a :class:`Compose` from ``Compose.to_config()``.
    * Randomness comes from ``np.random`` only, so ``np.random.seed`` makes runs repeat.

Example:
    >>> import paddlex_seg.data.transforms as T
    >>> train_tf = T.Compose([T.Resize(512), T.RandomHorizontalFlip(), T.Normalize()])
    >>> out = train_tf({'image': cv2.imread('a.jpg'), 'label': cv2.imread('a.png', 0)})
    >>> out['image'].shape, out['label'].shape     # (3, 512, 512), (512, 512)
"""
import inspect
import math
import numbers

import cv2
import numpy as np

__all__ = [
    "Transform", "Compose", "build_transforms",
    "Resize", "RandomResize", "ResizeByShort", "RandomResizeByShort", "ResizeByLong",
    "Padding", "CenterCrop",
    "ResizeStepScaling", "RandomPaddingCrop", "RandomCrop", "RandomScaleAspect",
    "RandomHorizontalFlip", "RandomVerticalFlip", "RandomRotate", "RandomBlur",
    "RandomDistort", "Normalize",
    "restore_to_input", "restore_tensor_to_input",
]

IGNORE_INDEX = 255
_INTERPOLATIONS = {
    "NEAREST": cv2.INTER_NEAREST,
    "LINEAR": cv2.INTER_LINEAR,
    "CUBIC": cv2.INTER_CUBIC,
    "AREA": cv2.INTER_AREA,
    "LANCZOS4": cv2.INTER_LANCZOS4,
}
# OpenCV silently turns int64 arrays into int32; other dtypes go through a cast.
_CV_DTYPES = frozenset(np.dtype(t) for t in (
    np.uint8, np.int8, np.uint16, np.int16, np.int32, np.float32, np.float64))
_DEFAULT_PAD = (127.5, 127.5, 127.5)


# ---------------------------------------------------------------------------------------
# Base class, Compose and serialisation
# ---------------------------------------------------------------------------------------
class Transform:
    """Base class of every operator.

    A subclass stores each constructor argument, already validated and normalised,
    under the argument's own name; that is what :meth:`to_config` reports.
    """

    def __call__(self, sample):
        raise NotImplementedError

    def to_config(self):
        """Return ``(class name, {constructor argument: value})`` with YAML-safe values."""
        names = [p for p in inspect.signature(type(self).__init__).parameters if p != "self"]
        return type(self).__name__, {n: _plain(getattr(self, n)) for n in names}

    def __repr__(self):
        name, args = self.to_config()
        return f"{name}({', '.join(f'{k}={v!r}' for k, v in args.items())})"


class Compose(Transform):
    """Run a list of operators on a sample and hand back a network-ready image.

    Steps: check the sample, start an empty ``sample['trans_info']``, convert BGR to
    RGB when ``to_rgb`` (3-channel images only), apply the operators in order, then
    transpose the image to CHW ``float32``. The label keeps its dtype.
    The caller's dict is not modified (a shallow copy is transformed).

    Args:
        transforms (list[Transform]): the operators, applied in order.
        to_rgb (bool, optional): convert the BGR input to RGB before the first
            operator. PaddleSeg's published weights expect RGB, and ``Normalize``'s
            mean/std are then in RGB order. Default: True.

    Returns (from ``__call__``):
        dict: the sample with ``'image'`` (C, H, W) float32, ``'label'`` (H, W) when
        given, and ``'trans_info'`` (list of records for :func:`restore_to_input`).
    """

    def __init__(self, transforms, to_rgb=True):
        if not isinstance(transforms, (list, tuple)) or len(transforms) == 0:
            raise ValueError(
                f"transforms must be a non-empty list of operators, got {transforms!r}")
        for i, op in enumerate(transforms):
            if not isinstance(op, Transform) or isinstance(op, Compose):
                raise ValueError(
                    f"transforms[{i}] must be an operator of paddlex_seg.data.transforms "
                    f"(a Transform subclass, not Compose), got {op!r}")
        self.transforms = list(transforms)
        self.to_rgb = _check_bool("to_rgb", to_rgb)

    def __call__(self, sample):
        sample = _checked_copy(sample)
        sample["trans_info"] = []
        if self.to_rgb and sample["image"].shape[2] == 3:
            sample["image"] = cv2.cvtColor(sample["image"], cv2.COLOR_BGR2RGB)
        for op in self.transforms:
            sample = op(sample)
        # One copy does both the HWC -> CHW transpose and the cast.
        sample["image"] = np.ascontiguousarray(sample["image"].transpose(2, 0, 1), dtype=np.float32)
        return sample

    def to_config(self):
        """Return a YAML-safe list: ``['Compose', {'to_rgb': ...}]`` then one
        ``[name, args]`` entry per operator. :func:`build_transforms` reverses it."""
        return [["Compose", {"to_rgb": self.to_rgb}]] + [list(op.to_config()) for op in self.transforms]

    def __repr__(self):
        inner = ", ".join(repr(op) for op in self.transforms)
        return f"Compose([{inner}], to_rgb={self.to_rgb})"


def build_transforms(config_list):
    """Rebuild a :class:`Compose` from the list returned by ``Compose.to_config()``.

    Args:
        config_list (list): entries ``[name, args]`` (or ``{name: args}``). An optional
            first entry ``['Compose', {'to_rgb': bool}]`` sets Compose's own argument.

    Returns:
        Compose: the same pipeline; deterministic operators give identical outputs.
    """
    if not isinstance(config_list, (list, tuple)) or len(config_list) == 0:
        raise ValueError(f"config_list must be a non-empty list, got {config_list!r}")
    entries = [_parse_config_entry(i, e) for i, e in enumerate(config_list)]
    compose_args = {}
    if entries[0][0] == "Compose":
        compose_args = entries.pop(0)[1]
        unknown = set(compose_args) - {"to_rgb"}
        if unknown:
            raise ValueError(f"config_list[0]: Compose takes only 'to_rgb', got {sorted(unknown)}")
    ops = []
    for name, args in entries:
        cls = _OPERATORS.get(name)
        if cls is None:
            raise ValueError(
                f"config_list names an unknown transform {name!r}; known: {sorted(_OPERATORS)}")
        try:
            ops.append(cls(**args))
        except TypeError as err:  # an unexpected keyword in a hand-edited model.yml
            raise ValueError(f"config_list entry {name!r} has bad arguments {args!r}: {err}") from None
    return Compose(ops, **compose_args)


# ---------------------------------------------------------------------------------------
# Deterministic geometry (recorded in trans_info)
# ---------------------------------------------------------------------------------------
class Resize(Transform):
    """Resize image and label to a fixed size.

    Records ``('resize', (h, w))`` (the size before resizing) in ``trans_info``.

    Args:
        target_size (int | list[int], optional): int for a square, or ``[height, width]``
            (PaddleX 2.x order). Default: 512 (PaddleX 2.x has no default).
        interp (str, optional): one of 'NEAREST', 'LINEAR', 'CUBIC', 'AREA', 'LANCZOS4',
            or 'RANDOM' to draw one per call. The label always uses nearest.
            Default: 'LINEAR'.
        keep_ratio (bool, optional): scale both sides by the same factor, the largest
            that keeps the result inside ``target_size``. Default: False.
    """

    def __init__(self, target_size=512, interp="LINEAR", keep_ratio=False):
        self.target_size = _check_size("target_size", target_size)
        self.interp = _check_interp(interp)
        self.keep_ratio = _check_bool("keep_ratio", keep_ratio)

    def __call__(self, sample):
        th, tw = _as_hw(self.target_size)
        if self.keep_ratio:
            h, w = sample["image"].shape[:2]
            scale = min(th / h, tw / w)
            th, tw = _scaled(h, scale), _scaled(w, scale)
        return _resize_sample(sample, (th, tw), self.interp, record=True)


class RandomResize(Transform):
    """Resize to a size drawn uniformly from ``target_sizes``.

    Records ``('resize', (h, w))`` like :class:`Resize`.

    Args:
        target_sizes (list): candidate sizes, each an int or ``[height, width]``.
        interp (str, optional): as in :class:`Resize`. Default: 'LINEAR'.
    """

    def __init__(self, target_sizes, interp="LINEAR"):
        self.target_sizes = _check_size_list("target_sizes", target_sizes)
        self.interp = _check_interp(interp)

    def __call__(self, sample):
        size = self.target_sizes[np.random.randint(len(self.target_sizes))]
        return _resize_sample(sample, _as_hw(size), self.interp, record=True)


class ResizeByShort(Transform):
    """Resize so that the short side becomes ``short_size``, keeping the aspect ratio.

    If ``max_size > 0`` and the long side would exceed it, the long side is set to
    ``max_size`` instead. Records ``('resize', (h, w))``.

    Args:
        short_size (int, optional): target length of the short side. Default: 256.
        max_size (int, optional): upper bound of the long side; -1 for none. Default: -1.
        interp (str, optional): as in :class:`Resize`. Default: 'LINEAR'.
    """

    def __init__(self, short_size=256, max_size=-1, interp="LINEAR"):
        self.short_size = _check_int("short_size", short_size, minimum=1)
        self.max_size = _check_max_size(max_size)
        self.interp = _check_interp(interp)

    def __call__(self, sample):
        h, w = sample["image"].shape[:2]
        size = _short_side_target(h, w, self.short_size, self.max_size)
        return _resize_sample(sample, size, self.interp, record=True)


class RandomResizeByShort(Transform):
    """:class:`ResizeByShort` with the short side drawn uniformly from ``short_sizes``.

    Args:
        short_sizes (list[int]): candidate short-side lengths.
        max_size (int, optional): upper bound of the long side; -1 for none. Default: -1.
        interp (str, optional): as in :class:`Resize`. Default: 'LINEAR'.
    """

    def __init__(self, short_sizes, max_size=-1, interp="LINEAR"):
        if not isinstance(short_sizes, (list, tuple)) or len(short_sizes) == 0:
            raise ValueError(f"short_sizes must be a non-empty list of positive ints, got {short_sizes!r}")
        self.short_sizes = [_check_int(f"short_sizes[{i}]", s, minimum=1) for i, s in enumerate(short_sizes)]
        self.max_size = _check_max_size(max_size)
        self.interp = _check_interp(interp)

    def __call__(self, sample):
        short = self.short_sizes[np.random.randint(len(self.short_sizes))]
        h, w = sample["image"].shape[:2]
        return _resize_sample(sample, _short_side_target(h, w, short, self.max_size),
                              self.interp, record=True)


class ResizeByLong(Transform):
    """Resize so that the long side becomes ``long_size``, keeping the aspect ratio.

    Records ``('resize', (h, w))``.

    Args:
        long_size (int, optional): target length of the long side. Default: 256.
        interp (str, optional): as in :class:`Resize`. Default: 'LINEAR'.
    """

    def __init__(self, long_size=256, interp="LINEAR"):
        self.long_size = _check_int("long_size", long_size, minimum=1)
        self.interp = _check_interp(interp)

    def __call__(self, sample):
        h, w = sample["image"].shape[:2]
        scale = self.long_size / max(h, w)
        return _resize_sample(sample, (_scaled(h, scale), _scaled(w, scale)), self.interp, record=True)


class Padding(Transform):
    """Pad image and label to ``target_size``, or up to a multiple of ``size_divisor``.

    Records ``('padding', (h, w), (top, left))``: the size before padding and where the
    original sits inside the padded result. The image keeps its dtype, so a uint8 image
    padded with 127.5 holds 128.

    Args:
        target_size (int | list[int] | None, optional): int for a square,
            ``[height, width]``, or None to round each side up to a multiple of
            ``size_divisor``. An image larger than it is an error. Default: None.
        pad_mode (int, optional): where the padding goes: 0 right and bottom, 1 evenly
            on all sides, 2 left and top, -1 at ``offsets``. Default: 0.
        offsets (list[int] | None, optional): ``[left, top]`` padding; required when
            ``pad_mode`` is -1 and ignored otherwise. Default: None.
        im_padding_value (float | list[float], optional): image fill, one value or one
            per channel. Default: (127.5, 127.5, 127.5).
        label_padding_value (int, optional): label fill. Default: 255.
        size_divisor (int, optional): used when ``target_size`` is None. Default: 32.
    """

    def __init__(self, target_size=None, pad_mode=0, offsets=None,
                 im_padding_value=_DEFAULT_PAD, label_padding_value=IGNORE_INDEX, size_divisor=32):
        self.target_size = None if target_size is None else _check_size("target_size", target_size)
        if not _is_int(pad_mode) or pad_mode not in (-1, 0, 1, 2):
            raise ValueError(f"pad_mode must be one of -1, 0, 1, 2, got {pad_mode!r}")
        self.pad_mode = pad_mode
        if pad_mode == -1:
            if not (isinstance(offsets, (list, tuple)) and len(offsets) == 2):
                raise ValueError(f"offsets must be [left, top] when pad_mode is -1, got {offsets!r}")
            offsets = [_check_int(f"offsets[{i}]", v, minimum=0) for i, v in enumerate(offsets)]
        elif offsets is not None:
            offsets = [_check_int(f"offsets[{i}]", v, minimum=0) for i, v in enumerate(offsets)]
        self.offsets = offsets
        self.im_padding_value = _check_fill("im_padding_value", im_padding_value)
        self.label_padding_value = _check_label_fill(label_padding_value)
        self.size_divisor = _check_int("size_divisor", size_divisor, minimum=1)

    def __call__(self, sample):
        h, w = sample["image"].shape[:2]
        left, top = self.offsets if self.pad_mode == -1 else (0, 0)
        if self.target_size is None:
            th = _round_up(h + top, self.size_divisor)
            tw = _round_up(w + left, self.size_divisor)
        else:
            th, tw = _as_hw(self.target_size)
        if self.pad_mode == 1:
            top, left = (th - h) // 2, (tw - w) // 2
        elif self.pad_mode == 2:
            top, left = th - h, tw - w
        if top < 0 or left < 0 or top + h > th or left + w > tw:
            raise ValueError(
                f"Padding: an image of (height, width) = ({h}, {w}) placed at (top, left) = "
                f"({top}, {left}) does not fit target_size ({th}, {tw})")
        sample.setdefault("trans_info", []).append(("padding", (h, w), (top, left)))
        if (th, tw) == (h, w):
            return sample
        borders = (top, th - h - top, left, tw - w - left)
        sample["image"] = _pad(sample["image"], borders, self.im_padding_value)
        if sample.get("label") is not None:
            sample["label"] = _pad(sample["label"], borders, self.label_padding_value)
        return sample


class CenterCrop(Transform):
    """Crop the centre ``crop_size`` window of image and label.

    Records ``('crop', (h, w), (top, left))``; :func:`restore_to_input` pads the cut
    border back (255 for label maps, 0 for scores). The image must be at least as large
    as the crop.

    Args:
        crop_size (int | list[int], optional): int for a square or ``[height, width]``
            (PaddleX 2.x takes an int only). Default: 224.
    """

    def __init__(self, crop_size=224):
        self.crop_size = _check_size("crop_size", crop_size)

    def __call__(self, sample):
        h, w = sample["image"].shape[:2]
        ch, cw = _as_hw(self.crop_size)
        if ch > h or cw > w:
            raise ValueError(
                f"CenterCrop: crop_size ({ch}, {cw}) is larger than the image ({h}, {w}); "
                "put a Padding or Resize before it")
        top, left = (h - ch) // 2, (w - cw) // 2
        sample.setdefault("trans_info", []).append(("crop", (h, w), (top, left)))
        return _crop_sample(sample, top, left, ch, cw)


# ---------------------------------------------------------------------------------------
# Training-time augmentation (random, no trans_info record)
# ---------------------------------------------------------------------------------------
class ResizeStepScaling(Transform):
    """Scale image and label by a random factor from a stepped range.

    The factor is drawn uniformly from ``min_scale_factor, min + step, ..., max``;
    with ``scale_step_size`` 0 it is continuous in ``[min, max]``.

    Args:
        min_scale_factor (float, optional): smallest factor. Default: 0.75.
        max_scale_factor (float, optional): largest factor. Default: 1.25.
        scale_step_size (float, optional): step between factors. Default: 0.25.
    """

    def __init__(self, min_scale_factor=0.75, max_scale_factor=1.25, scale_step_size=0.25):
        self.min_scale_factor = _check_number("min_scale_factor", min_scale_factor, low=0, low_open=True)
        self.max_scale_factor = _check_number("max_scale_factor", max_scale_factor, low=0, low_open=True)
        if max_scale_factor < min_scale_factor:
            raise ValueError(
                f"max_scale_factor ({max_scale_factor!r}) must not be below "
                f"min_scale_factor ({min_scale_factor!r})")
        self.scale_step_size = _check_number("scale_step_size", scale_step_size, low=0)

    def __call__(self, sample):
        lo, hi, step = self.min_scale_factor, self.max_scale_factor, self.scale_step_size
        if lo == hi:
            factor = lo
        elif step == 0:
            factor = np.random.uniform(lo, hi)
        else:
            n = int((hi - lo) / step + 1)
            factor = lo + (hi - lo) * np.random.randint(n) / max(n - 1, 1)
        h, w = sample["image"].shape[:2]
        return _resize_sample(sample, (_scaled(h, factor), _scaled(w, factor)), "LINEAR", record=False)


class RandomPaddingCrop(Transform):
    """Crop a random ``crop_size`` window, padding right/bottom when the image is smaller.

    Args:
        crop_size (int | list[int], optional): int for a square or ``[height, width]``
            (note: PaddleSeg's RandomPaddingCrop takes ``(width, height)``). Default: 512.
        im_padding_value (float | list[float], optional): image fill.
            Default: (127.5, 127.5, 127.5).
        label_padding_value (int, optional): label fill. Default: 255.
    """

    def __init__(self, crop_size=512, im_padding_value=_DEFAULT_PAD, label_padding_value=IGNORE_INDEX):
        self.crop_size = _check_size("crop_size", crop_size)
        self.im_padding_value = _check_fill("im_padding_value", im_padding_value)
        self.label_padding_value = _check_label_fill(label_padding_value)

    def __call__(self, sample):
        h, w = sample["image"].shape[:2]
        ch, cw = _as_hw(self.crop_size)
        # Cropping before padding gives the same windows as pad-then-crop, with less copying.
        top = np.random.randint(max(h - ch, 0) + 1)
        left = np.random.randint(max(w - cw, 0) + 1)
        sample = _crop_sample(sample, top, left, ch, cw)
        ph, pw = sample["image"].shape[:2]
        if (ph, pw) != (ch, cw):
            borders = (0, ch - ph, 0, cw - pw)
            sample["image"] = _pad(sample["image"], borders, self.im_padding_value)
            if sample.get("label") is not None:
                sample["label"] = _pad(sample["label"], borders, self.label_padding_value)
        return sample


class RandomCrop(Transform):
    """Crop a random window of random scale and aspect ratio, optionally resized.

    This is the segmentation path of PaddleX 2.x's RandomCrop. A side scale ``s`` is
    drawn from ``scaling`` and a width/height stretch ``r`` from ``aspect_ratio``
    (narrowed so the window fits); the window is ``h * s / sqrt(r)`` by
    ``w * s * sqrt(r)`` at a random position. The detection-only arguments of
    PaddleX 2.x (thresholds, num_attempts, allow_no_crop, cover_all_box) are not taken.
    For a fixed-size crop that pads small images use :class:`RandomPaddingCrop`.

    Args:
        crop_size (int | list[int] | None, optional): resize the window to this size
            (int or ``[height, width]``); None keeps the window's size. Default: None.
        aspect_ratio (list[float], optional): ``[min, max]`` of ``r``. Default: [0.5, 2.0].
        scaling (list[float], optional): ``[min, max]`` of ``s``, within (0, 1].
            Default: [0.3, 1.0].
    """

    def __init__(self, crop_size=None, aspect_ratio=(0.5, 2.0), scaling=(0.3, 1.0)):
        self.crop_size = None if crop_size is None else _check_size("crop_size", crop_size)
        self.aspect_ratio = _check_range("aspect_ratio", aspect_ratio, low=0, high=None)
        self.scaling = _check_range("scaling", scaling, low=0, high=1)

    def __call__(self, sample):
        h, w = sample["image"].shape[:2]
        top, left, ch, cw = _random_window(h, w, self.scaling, self.aspect_ratio)
        sample = _crop_sample(sample, top, left, ch, cw)
        if self.crop_size is not None:
            sample = _resize_sample(sample, _as_hw(self.crop_size), "LINEAR", record=False)
        return sample


class RandomScaleAspect(Transform):
    """Crop a random window by area and aspect ratio, then resize back to the input size.

    The window covers a fraction in ``[min_scale, 1]`` of the area, stretched by a
    width/height factor in ``[aspect_ratio, 1 / aspect_ratio]``.

    Args:
        min_scale (float, optional): smallest area fraction, in [0, 1]; 0 disables the
            operator. Default: 0.5.
        aspect_ratio (float, optional): stretch bound, >= 0; 0 disables the operator.
            Default: 0.33.
    """

    def __init__(self, min_scale=0.5, aspect_ratio=0.33):
        self.min_scale = _check_number("min_scale", min_scale, low=0, high=1)
        self.aspect_ratio = _check_number("aspect_ratio", aspect_ratio, low=0)

    def __call__(self, sample):
        if self.min_scale == 0 or self.aspect_ratio == 0:
            return sample
        h, w = sample["image"].shape[:2]
        bounds = sorted((self.aspect_ratio, 1.0 / self.aspect_ratio))
        top, left, ch, cw = _random_window(h, w, (math.sqrt(self.min_scale), 1.0), bounds)
        if (ch, cw) == (h, w):
            return sample
        sample = _crop_sample(sample, top, left, ch, cw)
        return _resize_sample(sample, (h, w), "LINEAR", record=False)


class _RandomFlip(Transform):
    """Flip image and label together about ``_axis`` (OpenCV's flip code)."""
    _axis = None

    def __init__(self, prob=0.5):
        self.prob = _check_prob("prob", prob)

    def __call__(self, sample):
        if np.random.random() < self.prob:
            _flip_sample(sample, self._axis)
        return sample


class RandomHorizontalFlip(_RandomFlip):
    """Flip image and label left-right with probability ``prob``.

    Args:
        prob (float, optional): flip probability. Default: 0.5.
    """
    _axis = 1  # around the vertical axis


class RandomVerticalFlip(_RandomFlip):
    """Flip image and label upside down with probability ``prob``.

    Args:
        prob (float, optional): flip probability. Default: 0.5.
    """
    _axis = 0  # around the horizontal axis


class RandomRotate(Transform):
    """Rotate by a random angle in ``[-max_rotation, max_rotation]`` degrees.

    The canvas grows to hold the whole rotated image (as in PaddleSeg's RandomRotation,
    which PaddleX 2.x lacks); the corners are filled with the padding values.

    Args:
        max_rotation (float, optional): largest angle in degrees, in [0, 180].
            Default: 15.
        im_padding_value (float | list[float], optional): image fill.
            Default: (127.5, 127.5, 127.5).
        label_padding_value (int, optional): label fill. Default: 255.
    """

    def __init__(self, max_rotation=15, im_padding_value=_DEFAULT_PAD, label_padding_value=IGNORE_INDEX):
        self.max_rotation = _check_number("max_rotation", max_rotation, low=0, high=180)
        self.im_padding_value = _check_fill("im_padding_value", im_padding_value)
        self.label_padding_value = _check_label_fill(label_padding_value)

    def __call__(self, sample):
        if self.max_rotation == 0:
            return sample
        angle = np.random.uniform(-self.max_rotation, self.max_rotation)
        h, w = sample["image"].shape[:2]
        matrix = cv2.getRotationMatrix2D((w / 2.0, h / 2.0), angle, 1.0)
        cos, sin = abs(matrix[0, 0]), abs(matrix[0, 1])
        new_w, new_h = int(h * sin + w * cos), int(h * cos + w * sin)
        matrix[0, 2] += new_w / 2.0 - w / 2.0
        matrix[1, 2] += new_h / 2.0 - h / 2.0
        sample["image"] = _warp(sample["image"], matrix, (new_h, new_w), cv2.INTER_LINEAR,
                                self.im_padding_value)
        if sample.get("label") is not None:
            sample["label"] = _warp(sample["label"], matrix, (new_h, new_w), cv2.INTER_NEAREST,
                                    self.label_padding_value)
        return sample


class RandomBlur(Transform):
    """Gaussian-blur the image with probability ``prob`` (kernel 3, 5, 7 or 9, random).

    Args:
        prob (float, optional): blur probability. Default: 0.1.
    """

    def __init__(self, prob=0.1):
        self.prob = _check_prob("prob", prob)

    def __call__(self, sample):
        if np.random.random() < self.prob:
            k = 3 + 2 * np.random.randint(4)
            sample["image"] = _keep_channels(
                cv2.GaussianBlur(sample["image"], (k, k), 0), sample["image"])
        return sample


class RandomDistort(Transform):
    """Randomly change brightness, contrast, saturation and hue.

    Each change is applied with its own probability, with a factor drawn uniformly
    from ``[1 - range, 1 + range]`` (hue: a shift in ``[-hue_range, hue_range]``
    degrees). Brightness multiplies the pixels; contrast blends with the mean grey
    level; saturation blends with the grey image; hue rotates the HSV hue. uint8 images
    stay uint8 (look-up tables, saturating); float images are not clipped. Saturation
    and hue need 3 channels and are skipped otherwise. The grey weights assume RGB
    (Compose's default order).

    Args:
        brightness_range (float, optional): in [0, 1]. Default: 0.5.
        brightness_prob (float, optional): Default: 0.5.
        contrast_range (float, optional): in [0, 1]. Default: 0.5.
        contrast_prob (float, optional): Default: 0.5.
        saturation_range (float, optional): in [0, 1]. Default: 0.5.
        saturation_prob (float, optional): Default: 0.5.
        hue_range (float, optional): degrees, in [0, 360]. Default: 18.
        hue_prob (float, optional): Default: 0.5.
        random_apply (bool, optional): True: pick ``count`` of the four changes in a
            random order; False: brightness, then contrast first or last (even odds)
            around saturation and hue. Default: True.
        count (int, optional): how many changes ``random_apply`` picks, 1..4. Default: 4.
        shuffle_channel (bool, optional): also permute the channels with probability
            0.5. Default: False.
    """

    def __init__(self, brightness_range=0.5, brightness_prob=0.5, contrast_range=0.5,
                 contrast_prob=0.5, saturation_range=0.5, saturation_prob=0.5, hue_range=18,
                 hue_prob=0.5, random_apply=True, count=4, shuffle_channel=False):
        self.brightness_range = _check_number("brightness_range", brightness_range, low=0, high=1)
        self.brightness_prob = _check_prob("brightness_prob", brightness_prob)
        self.contrast_range = _check_number("contrast_range", contrast_range, low=0, high=1)
        self.contrast_prob = _check_prob("contrast_prob", contrast_prob)
        self.saturation_range = _check_number("saturation_range", saturation_range, low=0, high=1)
        self.saturation_prob = _check_prob("saturation_prob", saturation_prob)
        self.hue_range = _check_number("hue_range", hue_range, low=0, high=360)
        self.hue_prob = _check_prob("hue_prob", hue_prob)
        self.random_apply = _check_bool("random_apply", random_apply)
        self.count = _check_int("count", count, minimum=1, maximum=4)
        self.shuffle_channel = _check_bool("shuffle_channel", shuffle_channel)

    def __call__(self, sample):
        # (change, probability, range) in PaddleX's fixed order
        changes = [(_brightness, self.brightness_prob, self.brightness_range),
                   (_contrast, self.contrast_prob, self.contrast_range),
                   (_saturation, self.saturation_prob, self.saturation_range),
                   (_hue, self.hue_prob, self.hue_range)]
        if self.random_apply:
            order = np.random.permutation(4)[:self.count]
        else:
            order = [0, 1, 2, 3] if np.random.randint(2) else [0, 2, 3, 1]
        image = sample["image"]
        for i in order:
            change, prob, spread = changes[i]
            if np.random.random() < prob:
                image = change(image, spread)
        if self.shuffle_channel and np.random.randint(2):
            image = image[..., np.random.permutation(image.shape[2])]
        sample["image"] = image
        return sample


# ---------------------------------------------------------------------------------------
# Pixel values
# ---------------------------------------------------------------------------------------
class Normalize(Transform):
    """Scale to [0, 1] by ``min_val``/``max_val`` (when ``is_scale``), then standardise.

    ``image = ((image - min_val) / (max_val - min_val) - mean) / std``, per channel; with
    ``is_scale`` False, ``image = (image - mean) / std``. Output is float32. uint8
    images go through one per-channel look-up table.

    The mean/std defaults are 0.5, the values PaddleSeg's published weights were
    trained with (PaddleX 2.x defaults to ImageNet's mean/std; PaddleX 2.x segmentation
    tutorials pass 0.5 explicitly).

    Args:
        mean (list[float], optional): per-channel mean. Default: [0.5, 0.5, 0.5].
        std (list[float], optional): per-channel std, no zeros. Default: [0.5, 0.5, 0.5].
        min_val (list[float], optional): per-channel minimum. Default: [0, 0, 0].
        max_val (list[float], optional): per-channel maximum. Default: [255, 255, 255].
        is_scale (bool, optional): apply the min/max scaling. Default: True.
    """

    def __init__(self, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), min_val=(0, 0, 0),
                 max_val=(255.0, 255.0, 255.0), is_scale=True):
        self.mean = _check_floats("mean", mean)
        self.std = _check_floats("std", std)
        self.min_val = _check_floats("min_val", min_val)
        self.max_val = _check_floats("max_val", max_val)
        self.is_scale = _check_bool("is_scale", is_scale)
        for name in ("std", "min_val", "max_val"):
            if len(getattr(self, name)) != len(self.mean):
                raise ValueError(
                    f"{name} must have as many values as mean ({len(self.mean)}), "
                    f"got {getattr(self, name)!r}")
        if 0 in self.std:
            raise ValueError(f"std must not contain 0, got {self.std!r}")
        span = np.subtract(self.max_val, self.min_val)
        if self.is_scale and np.any(span == 0):
            raise ValueError(
                f"max_val - min_val must not be 0 in any channel, got max_val={self.max_val!r}, "
                f"min_val={self.min_val!r}")
        # The whole formula as image * gain + bias, computed in float64.
        std = np.asarray(self.std)
        if self.is_scale:
            gain = 1.0 / (span * std)
            bias = -(np.asarray(self.min_val) / span + np.asarray(self.mean)) / std
        else:
            gain, bias = 1.0 / std, -np.asarray(self.mean) / std
        self._gain, self._bias = gain.astype(np.float32), bias.astype(np.float32)
        self._lut = (np.arange(256.0)[:, None] * gain + bias).astype(np.float32)[None]

    def __call__(self, sample):
        image = sample["image"]
        if image.shape[2] != len(self.mean):
            raise ValueError(
                f"Normalize: mean has {len(self.mean)} values but the image has "
                f"{image.shape[2]} channels")
        if image.dtype == np.uint8:
            out = _keep_channels(cv2.LUT(image, self._lut), image)
        else:
            out = np.multiply(image, self._gain, dtype=np.float32)
            out += self._bias
        sample["image"] = out
        return sample


_OPERATORS = {cls.__name__: cls for cls in (
    Resize, RandomResize, ResizeByShort, RandomResizeByShort, ResizeByLong, Padding,
    CenterCrop, ResizeStepScaling, RandomPaddingCrop, RandomCrop, RandomScaleAspect,
    RandomHorizontalFlip, RandomVerticalFlip, RandomRotate, RandomBlur, RandomDistort,
    Normalize)}


# ---------------------------------------------------------------------------------------
# Undoing geometry for prediction
# ---------------------------------------------------------------------------------------
def restore_to_input(pred, trans_info, interp=None, fill_value=None):
    """Bring a prediction back to the input image's size by undoing ``trans_info``.

    The records are walked from last to first: ``'resize'`` resizes back, ``'padding'``
    cuts the padding away, ``'crop'`` pads the cut border back with ``fill_value``.

    Args:
        pred (np.ndarray): a label map (H, W), a score map (H, W, C), or a batch of score
            maps (N, C, H, W) sharing one ``trans_info``.
        trans_info (list): ``sample['trans_info']`` from :class:`Compose`.
        interp (str | None, optional): 'nearest' or 'bilinear'; None picks nearest for
            integer/bool maps and bilinear for floating maps. Default: None.
        fill_value (number | None, optional): fill for regions a crop removed; None means
            255 with nearest and 0 with bilinear. Default: None.

    Returns:
        np.ndarray: the map at the input size, same layout; same dtype, except that
        bilinear resizing of a non-float map gives float32.
    """
    pred = np.asarray(pred)
    if pred.ndim not in (2, 3, 4):
        raise ValueError(f"pred must be (H, W), (H, W, C) or (N, C, H, W), got shape {pred.shape}")
    if interp is None:
        interp = "nearest" if pred.dtype.kind in "biu" else "bilinear"
    if interp not in ("nearest", "bilinear"):
        raise ValueError(f"interp must be 'nearest', 'bilinear' or None, got {interp!r}")
    if fill_value is None:
        fill_value = IGNORE_INDEX if interp == "nearest" else 0
    h_axis = 2 if pred.ndim == 4 else 0
    for kind, (h, w), top, left in _walk_back(trans_info):
        if kind == "resize":
            pred = _resize_map(pred, (h, w), interp, h_axis)
        elif kind == "padding":
            pred = _slice_hw(pred, h_axis, top, left, h, w)
        else:
            pred = _unslice_hw(pred, h_axis, (h, w), top, left, fill_value)
    return pred


def restore_tensor_to_input(logits, trans_info, mode="bilinear", fill_value=0.0):
    """:func:`restore_to_input` for a paddle tensor (N, C, H, W) of floats.

    Args:
        logits (paddle.Tensor): float tensor (N, C, H, W).
        trans_info (list): ``sample['trans_info']`` from :class:`Compose`.
        mode (str, optional): 'bilinear' or 'nearest'. Default: 'bilinear'.
        fill_value (float, optional): fill for regions a crop removed. Default: 0.

    Returns:
        paddle.Tensor: (N, C, h, w) at the input size.
    """
    import paddle.nn.functional as F  # only the predictor needs paddle here

    if mode not in ("bilinear", "nearest"):
        raise ValueError(f"mode must be 'bilinear' or 'nearest', got {mode!r}")
    if len(logits.shape) != 4:
        raise ValueError(f"logits must be (N, C, H, W), got shape {list(logits.shape)}")
    for kind, (h, w), top, left in _walk_back(trans_info):
        if kind == "resize":
            logits = F.interpolate(logits, size=[h, w], mode=mode, align_corners=False)
        elif kind == "padding":
            logits = logits[:, :, top:top + h, left:left + w]
        else:
            cur_h, cur_w = logits.shape[2:]
            logits = F.pad(logits, [left, w - cur_w - left, top, h - cur_h - top], value=fill_value)
    return logits


# ---------------------------------------------------------------------------------------
# Helpers: argument checks
# ---------------------------------------------------------------------------------------
def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _check_int(name, value, minimum=None, maximum=None):
    if (not _is_int(value) or (minimum is not None and value < minimum)
            or (maximum is not None and value > maximum)):
        bounds = f" in [{minimum}, {maximum}]" if maximum is not None else (
            f" >= {minimum}" if minimum is not None else "")
        raise ValueError(f"{name} must be an int{bounds}, got {value!r}")
    return int(value)


def _check_number(name, value, low=None, high=None, low_open=False):
    ok = _is_real(value) and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value <= high
    if not ok:
        lo = "" if low is None else (f" > {low}" if low_open else f" >= {low}")
        hi = "" if high is None else f" <= {high}"
        raise ValueError(f"{name} must be a number{lo}{' and' if lo and hi else ''}{hi}, got {value!r}")
    return float(value)


def _check_prob(name, value):
    return _check_number(name, value, low=0, high=1)


def _check_bool(name, value):
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def _check_interp(interp):
    if interp != "RANDOM" and interp not in _INTERPOLATIONS:
        raise ValueError(f"interp must be one of {list(_INTERPOLATIONS) + ['RANDOM']}, got {interp!r}")
    return interp


def _check_size(name, value):
    """int stays an int (a square); a pair becomes [height, width]."""
    if _is_int(value) and value > 0:
        return int(value)
    if (isinstance(value, (list, tuple)) and len(value) == 2
            and all(_is_int(v) and v > 0 for v in value)):
        return [int(v) for v in value]
    raise ValueError(f"{name} must be a positive int or [height, width] of positive ints, got {value!r}")


def _check_size_list(name, values):
    if not isinstance(values, (list, tuple)) or len(values) == 0:
        raise ValueError(f"{name} must be a non-empty list of sizes, got {values!r}")
    return [_check_size(f"{name}[{i}]", v) for i, v in enumerate(values)]


def _check_max_size(value):
    if not _is_int(value) or (value != -1 and value <= 0):
        raise ValueError(f"max_size must be -1 (no limit) or a positive int, got {value!r}")
    return int(value)


def _check_range(name, value, low, high):
    """A [min, max] pair with low < min <= max (<= high)."""
    ok = (isinstance(value, (list, tuple)) and len(value) == 2
          and all(_is_real(v) and math.isfinite(v) for v in value))
    ok = ok and low < value[0] <= value[1] and (high is None or value[1] <= high)
    if not ok:
        upper = f" <= {high}" if high is not None else ""
        raise ValueError(f"{name} must be [min, max] with {low} < min <= max{upper}, got {value!r}")
    return [float(v) for v in value]


def _check_floats(name, value):
    if (not isinstance(value, (list, tuple, np.ndarray)) or len(value) == 0
            or not all(_is_real(v) and math.isfinite(v) for v in value)):
        raise ValueError(f"{name} must be a non-empty list of numbers, got {value!r}")
    return [float(v) for v in value]


def _check_fill(name, value):
    """One value for every channel, or one per channel; returned as a list."""
    if _is_real(value):
        value = [value]
    return _check_floats(name, value)


def _check_label_fill(value):
    return _check_int("label_padding_value", value, minimum=0, maximum=255)


def _plain(value):
    """Make a value YAML-safe: tuples become lists, numpy scalars become Python numbers."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _parse_config_entry(i, entry):
    if isinstance(entry, dict) and len(entry) == 1:
        entry = next(iter(entry.items()))
    if (isinstance(entry, (list, tuple)) and len(entry) == 2 and isinstance(entry[0], str)
            and isinstance(entry[1], dict)):
        return entry[0], dict(entry[1])
    raise ValueError(f"config_list[{i}] must be [name, {{argument: value}}], got {entry!r}")


def _checked_copy(sample):
    if not isinstance(sample, dict) or not isinstance(sample.get("image"), np.ndarray):
        raise ValueError("sample must be a dict with an 'image' numpy array (H, W, C); "
                         f"got {type(sample).__name__} with keys "
                         f"{sorted(sample) if isinstance(sample, dict) else None}")
    image = sample["image"]
    if image.ndim != 3 or min(image.shape) == 0:
        raise ValueError(f"sample['image'] must be a non-empty (H, W, C) array, got shape {image.shape}")
    label = sample.get("label")
    if label is not None:
        if not isinstance(label, np.ndarray) or label.ndim != 2 or label.shape != image.shape[:2]:
            raise ValueError(
                f"sample['label'] must be an (H, W) array matching the image {image.shape[:2]}, "
                f"got {getattr(label, 'shape', type(label).__name__)}")
    return dict(sample)


# ---------------------------------------------------------------------------------------
# Helpers: geometry
# ---------------------------------------------------------------------------------------
def _as_hw(size):
    return (size, size) if isinstance(size, int) else (size[0], size[1])


def _scaled(length, scale):
    return max(1, int(round(length * scale)))


def _round_up(length, divisor):
    return -(-length // divisor) * divisor


def _short_side_target(h, w, short_size, max_size):
    scale = short_size / min(h, w)
    if 0 < max_size < round(scale * max(h, w)):
        scale = max_size / max(h, w)
    return _scaled(h, scale), _scaled(w, scale)


def _pick_interp(name):
    if name == "RANDOM":
        return list(_INTERPOLATIONS.values())[np.random.randint(len(_INTERPOLATIONS))]
    return _INTERPOLATIONS[name]


def _keep_channels(out, like):
    # OpenCV drops a trailing channel axis of length 1.
    return out[:, :, None] if like.ndim == 3 and out.ndim == 2 else out


def _on_label(fn, label):
    if label.dtype in _CV_DTYPES:
        return fn(label)
    return fn(label.astype(np.int32)).astype(label.dtype)


def _resize_sample(sample, size, interp, record):
    image = sample["image"]
    h, w = image.shape[:2]
    if record:
        sample.setdefault("trans_info", []).append(("resize", (h, w)))
    if (h, w) == tuple(size):
        return sample
    dsize = (size[1], size[0])
    sample["image"] = _keep_channels(cv2.resize(image, dsize, interpolation=_pick_interp(interp)), image)
    label = sample.get("label")
    if label is not None:
        sample["label"] = _on_label(
            lambda a: cv2.resize(a, dsize, interpolation=cv2.INTER_NEAREST), label)
    return sample


def _crop_sample(sample, top, left, ch, cw):
    sample["image"] = sample["image"][top:top + ch, left:left + cw]
    if sample.get("label") is not None:
        sample["label"] = sample["label"][top:top + ch, left:left + cw]
    return sample


def _flip_sample(sample, code):
    sample["image"] = _keep_channels(cv2.flip(sample["image"], code), sample["image"])
    if sample.get("label") is not None:
        sample["label"] = _on_label(lambda a: cv2.flip(a, code), sample["label"])


def _random_window(h, w, side_range, stretch_range):
    """(top, left, height, width) of a random window inside an h x w image."""
    s = np.random.uniform(*side_range)
    lo, hi = max(stretch_range[0], s * s), min(stretch_range[1], 1.0 / (s * s))
    r = np.random.uniform(min(lo, hi), max(lo, hi))
    ch = min(h, max(1, int(h * s / math.sqrt(r))))
    cw = min(w, max(1, int(w * s * math.sqrt(r))))
    return np.random.randint(h - ch + 1), np.random.randint(w - cw + 1), ch, cw


def _fill_for(values, arr, name="im_padding_value"):
    """Per-channel fill values for ``arr`` (a single value repeats)."""
    channels = 1 if arr.ndim == 2 else arr.shape[2]
    if isinstance(values, numbers.Real):
        return [values] * channels
    if len(values) == 1:
        return list(values) * channels
    if len(values) != channels:
        raise ValueError(f"{name} has {len(values)} values but the image has {channels} channels")
    return list(values)


def _pad(arr, borders, values):
    top, bottom, left, right = borders
    fill = _fill_for(values, arr)
    if arr.ndim == 3 and arr.shape[2] > 4:  # OpenCV takes at most four fill values
        out = np.empty((arr.shape[0] + top + bottom, arr.shape[1] + left + right, arr.shape[2]), arr.dtype)
        out[...] = np.asarray(fill, dtype=arr.dtype)
        out[top:top + arr.shape[0], left:left + arr.shape[1]] = arr
        return out
    value = fill[0] if arr.ndim == 2 else fill
    return _keep_channels(_on_label(
        lambda a: cv2.copyMakeBorder(a, top, bottom, left, right, cv2.BORDER_CONSTANT, value=value),
        arr), arr)


def _warp(arr, matrix, size, flags, values):
    fill = _fill_for(values, arr)
    dsize = (size[1], size[0])
    if arr.ndim == 3 and arr.shape[2] > 4:
        parts = [_warp(arr[:, :, i:i + 4], matrix, size, flags, fill[i:i + 4])
                 for i in range(0, arr.shape[2], 4)]
        return np.concatenate(parts, axis=2)
    value = fill[0] if arr.ndim == 2 else fill
    return _keep_channels(_on_label(
        lambda a: cv2.warpAffine(a, matrix, dsize, flags=flags, borderMode=cv2.BORDER_CONSTANT,
                                 borderValue=value), arr), arr)


def _walk_back(trans_info):
    """Yield (kind, (h, w), top, left) from the last record to the first."""
    if not isinstance(trans_info, (list, tuple)):
        raise ValueError(f"trans_info must be a list of records, got {trans_info!r}")
    for record in reversed(trans_info):
        kind = record[0] if isinstance(record, (list, tuple)) and record else None
        if kind not in ("resize", "padding", "crop"):
            raise ValueError(f"trans_info holds an unknown record {record!r}")
        h, w = record[1]
        top, left = record[2] if len(record) > 2 else (0, 0)
        yield kind, (int(h), int(w)), int(top), int(left)


def _resize_map(pred, size, interp, h_axis):
    src_h, src_w = pred.shape[h_axis:h_axis + 2]
    h, w = size
    if (src_h, src_w) == (h, w):
        return pred
    if interp == "nearest":
        # Same source pixel as cv2.INTER_NEAREST: floor(dst * src / dst_size).
        rows = np.minimum((np.arange(h) * (src_h / h)).astype(np.int64), src_h - 1)
        cols = np.minimum((np.arange(w) * (src_w / w)).astype(np.int64), src_w - 1)
        index = (rows[:, None], cols[None, :])
        return pred[index] if h_axis == 0 else pred[(slice(None), slice(None)) + index]
    work = pred if pred.dtype in (np.float32, np.float64) else pred.astype(np.float32)
    if h_axis == 2:  # (N, C, H, W) -> (H, W, N*C) for OpenCV, and back
        n, c = pred.shape[:2]
        hwc = np.ascontiguousarray(work.reshape(n * c, src_h, src_w).transpose(1, 2, 0))
        return _resize_hwc(hwc, size).transpose(2, 0, 1).reshape(n, c, h, w)
    return _resize_hwc(work, size)


def _resize_hwc(arr, size):
    dsize = (size[1], size[0])
    if arr.ndim == 2:
        return cv2.resize(arr, dsize, interpolation=cv2.INTER_LINEAR)
    # cv2.resize handles at most 512 channels at once.
    parts = [_keep_channels(cv2.resize(np.ascontiguousarray(arr[:, :, i:i + 512]), dsize,
                                       interpolation=cv2.INTER_LINEAR), arr)
             for i in range(0, arr.shape[2], 512)]
    return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=2)


def _slice_hw(pred, h_axis, top, left, h, w):
    index = (slice(top, top + h), slice(left, left + w))
    return pred[index] if h_axis == 0 else pred[(slice(None), slice(None)) + index]


def _unslice_hw(pred, h_axis, size, top, left, fill_value):
    shape = list(pred.shape)
    cur_h, cur_w = shape[h_axis:h_axis + 2]
    shape[h_axis:h_axis + 2] = size
    out = np.full(shape, fill_value, dtype=pred.dtype)
    index = (slice(top, top + cur_h), slice(left, left + cur_w))
    out[index if h_axis == 0 else (slice(None), slice(None)) + index] = pred
    return out


# ---------------------------------------------------------------------------------------
# Helpers: colour changes for RandomDistort (uint8 through look-up tables)
# ---------------------------------------------------------------------------------------
_GREY_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R BT.601, R, G, B


def _apply_affine(image, gain, offset):
    """image * gain + offset; uint8 saturates through a table, floats are left unclipped."""
    if image.dtype == np.uint8:
        table = np.clip(np.arange(256.0) * gain + offset + 0.5, 0, 255).astype(np.uint8)
        return _keep_channels(cv2.LUT(image, table), image)
    return image.astype(np.float32) * gain + offset


def _brightness(image, spread):
    return _apply_affine(image, np.random.uniform(1 - spread, 1 + spread), 0.0)


def _contrast(image, spread):
    factor = np.random.uniform(1 - spread, 1 + spread)
    channels = image.shape[2]
    means = cv2.mean(image)[:channels] if channels <= 4 else image.reshape(-1, channels).mean(axis=0)
    grey = float(np.dot(_GREY_WEIGHTS, means)) if channels == 3 else float(np.mean(means))
    return _apply_affine(image, factor, grey * (1 - factor))


def _saturation(image, spread):
    factor = np.random.uniform(1 - spread, 1 + spread)
    if image.shape[2] != 3:
        return image
    work = image if image.dtype in (np.uint8, np.float32) else image.astype(np.float32)
    grey = cv2.cvtColor(cv2.cvtColor(work, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
    return cv2.addWeighted(work, factor, grey, 1 - factor, 0)


def _hue(image, spread):
    shift = np.random.uniform(-spread, spread)  # degrees
    if image.shape[2] != 3:
        return image
    if image.dtype == np.uint8:
        # OpenCV stores 8-bit hue in 2-degree units, 0..179.
        table = np.tile(np.arange(256, dtype=np.uint8)[:, None], (1, 3))
        table[:180, 0] = (np.arange(180) + int(round(shift / 2))) % 180
        hsv = cv2.LUT(cv2.cvtColor(image, cv2.COLOR_RGB2HSV), table[None])
        return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    hsv = cv2.cvtColor(image.astype(np.float32, copy=False), cv2.COLOR_RGB2HSV)
    hsv[:, :, 0] = (hsv[:, :, 0] + shift) % 360.0
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
