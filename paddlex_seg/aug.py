"""Test-time augmentation: flips, several scales and sliding windows at prediction time.

    aug = TestTimeAug(flip_horizontal=True, scales=(0.75, 1.0, 1.25))
    result = model.predict('photo.jpg', aug=aug)       # or aug={'flip_horizontal': True, ...}
    metrics = model.evaluate(eval_ds, aug=aug)
    model.export('output/infer', aug=aug)              # recorded in model.yml for the Predictor

Each *view* of an image (one scale, one flip) is predicted; its softmax scores are
flipped back, resized back to the image's size and averaged over all views. With
``sliding_window`` a view is predicted window by window; overlapping windows are
averaged, and a view smaller than the window is padded and its scores cropped back.

Memory: scores are accumulated in host (NumPy) memory. The network sees at most
``window_batch_size`` windows (each ``crop_h x crop_w``) per forward pass, whatever
the image size; without ``sliding_window`` it sees one whole view (batch 1) at a time.

This module needs only NumPy and OpenCV, so the deployment ``Predictor`` uses it
without any training code; the network is reached through a ``run`` function.
"""
import math
import numbers

import cv2
import numpy as np

__all__ = ["TestTimeAug", "augmented_scores", "window_origins", "AUG_KEYS"]

AUG_KEYS = ("flip_horizontal", "flip_vertical", "scales", "sliding_window", "window_batch_size")
# Windows per forward pass: 4 windows of 512x512 are a 12 MB float32 input batch.
DEFAULT_WINDOW_BATCH_SIZE = 4


class TestTimeAug:
    """What to average at prediction time. Build it from keywords or a dict.

    Args:
        flip_horizontal (bool): also predict the left-right mirror image. Default False.
        flip_vertical (bool): also predict the upside-down image. With both flips the
            image mirrored both ways is predicted as well (4 views). Default False.
        scales (sequence of float): resize factors applied to the transformed image
            (bilinear) before the network; each factor is one more set of views.
            Default (1.0,).
        sliding_window (sequence of 4 int | None): ``(crop_h, crop_w, stride_h, stride_w)``:
            predict each view in windows of ``crop_h x crop_w`` placed every ``stride``
            pixels (the last row and column of windows touch the border), averaging
            where windows overlap. Strides must not exceed the window, or pixels would
            be skipped. None predicts each view whole. Default None.
        window_batch_size (int): windows per forward pass, the bound on what the
            network holds at once. Default 4.

    Raises:
        ValueError: a bad value, naming the key and the value received.

    Example:
        >>> TestTimeAug.from_value({'flip_horizontal': True, 'scales': [0.75, 1.0]}).num_views
        4
    """
    __test__ = False  # not a pytest test class, despite its name

    def __init__(self, flip_horizontal=False, flip_vertical=False, scales=(1.0,),
                 sliding_window=None, window_batch_size=DEFAULT_WINDOW_BATCH_SIZE):
        self.flip_horizontal = _check_bool("flip_horizontal", flip_horizontal)
        self.flip_vertical = _check_bool("flip_vertical", flip_vertical)
        self.scales = _check_scales(scales)
        self.sliding_window = _check_window(sliding_window)
        if isinstance(window_batch_size, bool) or not isinstance(window_batch_size, numbers.Integral) \
                or window_batch_size < 1:
            raise ValueError(f"aug: window_batch_size must be an int >= 1, got {window_batch_size!r}")
        self.window_batch_size = int(window_batch_size)

    @classmethod
    def from_value(cls, value):
        """None → None (plain prediction); a dict → TestTimeAug(**dict); a TestTimeAug as is.

        Raises:
            ValueError: an unknown key (the allowed ones are listed) or another type.
        """
        if value is None or isinstance(value, cls):
            return value
        if isinstance(value, dict):
            unknown = [key for key in value if key not in AUG_KEYS]
            if unknown:
                raise ValueError(f"aug: unknown key {unknown[0]!r}; allowed keys: {', '.join(AUG_KEYS)}")
            return cls(**value)
        raise ValueError(f"aug must be None, a dict or a TestTimeAug, got {type(value).__name__} {value!r}")

    def to_dict(self):
        """Plain types only (for model.yml); ``TestTimeAug(**aug.to_dict()) == aug``."""
        return {"flip_horizontal": self.flip_horizontal, "flip_vertical": self.flip_vertical,
                "scales": list(self.scales),
                "sliding_window": None if self.sliding_window is None else list(self.sliding_window),
                "window_batch_size": self.window_batch_size}

    def flips(self):
        """The (horizontal, vertical) flip of each view at one scale, unflipped first."""
        views = [(False, False)]
        if self.flip_horizontal:
            views.append((True, False))
        if self.flip_vertical:
            views.append((False, True))
        if self.flip_horizontal and self.flip_vertical:
            views.append((True, True))
        return views

    @property
    def num_views(self):
        """How many views are averaged: scales x flips."""
        return len(self.scales) * len(self.flips())

    @property
    def keeps_input_size(self):
        """True when the network only ever sees the transformed image's own size (flips only)."""
        return self.sliding_window is None and all(s == 1.0 for s in self.scales)

    def __eq__(self, other):
        return isinstance(other, TestTimeAug) and self.to_dict() == other.to_dict()

    def __repr__(self):
        return "TestTimeAug(" + ", ".join(f"{k}={v!r}" for k, v in self.to_dict().items()) + ")"


def augmented_scores(run, image, aug):
    """Softmax scores of one image averaged over the views of ``aug``.

    Args:
        run (callable): ``run(batch)`` takes a float32 NCHW array and returns the
            network's softmax scores (N, C, H, W) as a NumPy array (or anything
            ``np.asarray`` reads). It receives at most ``aug.window_batch_size`` images.
        image (np.ndarray): one transformed image (3, H, W), as the eval transforms give.
        aug (TestTimeAug|dict): what to average.

    Returns:
        np.ndarray: float32 scores (C, H, W) at the image's own size.
    """
    aug = TestTimeAug.from_value(aug)
    if aug is None:
        raise ValueError("augmented_scores needs an aug, got None")
    image = np.asarray(image, dtype="float32")
    if image.ndim != 3:
        raise ValueError(f"image must be one CHW array, got shape {image.shape}")
    height, width = image.shape[1:]
    total = None
    for scale in aug.scales:
        size = (max(1, int(height * scale + 0.5)), max(1, int(width * scale + 0.5)))
        scaled = _resize_chw(image, size)
        for flip_h, flip_v in aug.flips():
            scores = _view_scores(run, _flip(scaled, flip_h, flip_v), aug)
            scores = _resize_chw(_flip(scores, flip_h, flip_v), (height, width))  # a flip undoes itself
            if total is None:
                total = scores.astype("float32", copy=True)
            else:
                total += scores
    if aug.num_views > 1:
        total /= aug.num_views
    return total


def window_origins(height, width, sliding_window):
    """Top-left corners (y, x) of the windows covering a height x width image.

    Windows start every stride; the last row and column are moved back to end at the
    border, so every pixel is covered and no window reaches outside. The image must be
    at least as large as the window (``augmented_scores`` pads smaller ones).
    """
    crop_h, crop_w, stride_h, stride_w = sliding_window
    if height < crop_h or width < crop_w:
        raise ValueError(f"a {height}x{width} image is smaller than the {crop_h}x{crop_w} window")
    rows = math.ceil((height - crop_h) / stride_h) + 1
    cols = math.ceil((width - crop_w) / stride_w) + 1
    return [(min(r * stride_h, height - crop_h), min(c * stride_w, width - crop_w))
            for r in range(rows) for c in range(cols)]


# --- helpers -----------------------------------------------------------------------------
def _view_scores(run, view, aug):
    """Scores (C, h, w) of one CHW view: whole, or blended from sliding windows."""
    if aug.sliding_window is None:
        return _checked(run(np.ascontiguousarray(view[None])), 1, view.shape[1:])[0]
    crop_h, crop_w = aug.sliding_window[:2]
    height, width = view.shape[1:]
    pad_h, pad_w = max(crop_h - height, 0), max(crop_w - width, 0)
    if pad_h or pad_w:  # zeros are the mean colour after Normalize
        view = np.pad(view, ((0, 0), (0, pad_h), (0, pad_w)))
    origins = window_origins(view.shape[1], view.shape[2], aug.sliding_window)
    total, count = None, np.zeros(view.shape[1:], dtype="float32")
    for start in range(0, len(origins), aug.window_batch_size):
        chunk = origins[start:start + aug.window_batch_size]
        batch = np.stack([view[:, y:y + crop_h, x:x + crop_w] for y, x in chunk])
        scores = _checked(run(batch), len(chunk), (crop_h, crop_w))
        if total is None:
            total = np.zeros((scores.shape[1],) + view.shape[1:], dtype="float32")
        for window, (y, x) in zip(scores, chunk):
            total[:, y:y + crop_h, x:x + crop_w] += window
            count[y:y + crop_h, x:x + crop_w] += 1
    return (total / count)[:, :height, :width]


def _checked(scores, count, size):
    scores = np.asarray(scores)
    if scores.ndim != 4 or scores.shape[0] != count or tuple(scores.shape[2:]) != tuple(size):
        raise ValueError(f"run returned scores of shape {scores.shape}, expected "
                         f"({count}, C, {size[0]}, {size[1]})")
    return scores


def _flip(chw, horizontal, vertical):
    if horizontal:
        chw = chw[:, :, ::-1]
    if vertical:
        chw = chw[:, ::-1, :]
    return chw


def _resize_chw(chw, size):
    """Bilinear resize of a CHW float array to (h, w); the same array when already that size."""
    if tuple(chw.shape[1:]) == tuple(size):
        return chw
    hwc = np.ascontiguousarray(chw.transpose(1, 2, 0))
    out = cv2.resize(hwc, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
    if out.ndim == 2:  # OpenCV drops a single channel
        out = out[:, :, None]
    return out.transpose(2, 0, 1)


def _check_bool(name, value):
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"aug: {name} must be True or False, got {value!r}")
    return bool(value)


def _check_scales(scales):
    if isinstance(scales, numbers.Real) and not isinstance(scales, bool):
        scales = (scales,)
    if not isinstance(scales, (list, tuple, np.ndarray)) or len(scales) == 0:
        raise ValueError(f"aug: scales must be a non-empty list of positive numbers "
                         f"(e.g. [0.75, 1.0, 1.25]), got {scales!r}")
    for scale in scales:
        if isinstance(scale, bool) or not isinstance(scale, numbers.Real) \
                or not math.isfinite(scale) or scale <= 0:
            raise ValueError(f"aug: scales must hold positive numbers, got {scale!r} in scales={scales!r}")
    return tuple(float(s) for s in scales)


def _check_window(window):
    if window is None:
        return None
    if not isinstance(window, (list, tuple)) or len(window) != 4 or not all(
            isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in window):
        raise ValueError(f"aug: sliding_window must be 4 ints (crop_h, crop_w, stride_h, stride_w) "
                         f"or None, got {window!r}")
    crop_h, crop_w, stride_h, stride_w = (int(v) for v in window)
    if crop_h < 1 or crop_w < 1:
        raise ValueError(f"aug: sliding_window crop sizes must be >= 1, got sliding_window={window!r}")
    if stride_h < 1 or stride_w < 1:
        raise ValueError(f"aug: sliding_window strides must be >= 1, got sliding_window={window!r}")
    if stride_h > crop_h or stride_w > crop_w:
        raise ValueError(f"aug: sliding_window strides must not exceed the window (pixels between "
                         f"windows would never be predicted), got sliding_window={window!r} "
                         f"(crop_h, crop_w, stride_h, stride_w)")
    return crop_h, crop_w, stride_h, stride_w
