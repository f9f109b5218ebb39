"""Segmentation losses: cross-entropy, Dice, Lovász-Softmax, and their weighted mixes.

Lovász-Softmax: M. Berman, A. Rannen Triki, M. B. Blaschko, "The Lovász-Softmax loss:
A tractable surrogate for the optimization of the intersection-over-union measure in
neural networks", CVPR 2018 (arXiv:1705.08790).

Shared conventions of every loss here:

- ``logit`` is a float tensor of shape (N, C, H, W); it is cast to float32 first, so
  AMP training never sums probabilities in float16, and every loss is float32.
- ``label`` is an integer tensor of shape (N, H, W) (a (N, 1, H, W) label is accepted
  too) whose values are class ids in [0, C) or ``ignore_index``; anything else raises
  ValueError instead of indexing out of range.
- ``forward`` returns a 0-d tensor. Ignored pixels contribute neither value nor
  gradient; when every pixel is ignored the loss is 0 (never NaN).

``build_loss`` turns the ``use_mixed_loss`` argument of the model classes into a loss,
and ``MultiLogitLoss`` applies it to the list of logits a network returns.
"""
import math
import numbers

import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

__all__ = [
    "CrossEntropyLoss", "DiceLoss", "LovaszSoftmaxLoss", "MixedLoss", "MultiLogitLoss",
    "build_loss", "LOSS_NAMES",
]

# Names accepted in a ``use_mixed_loss`` list, in the order the PaddleX docs give them.
LOSS_NAMES = ("CrossEntropyLoss", "DiceLoss", "LovaszSoftmaxLoss")


class CrossEntropyLoss(nn.Layer):
    """Softmax cross-entropy averaged over the pixels that are not ignored.

    Without ``weight`` the result is the plain mean of ``-log softmax(logit)[label]``
    over non-ignored pixels. With ``weight`` each pixel's term is multiplied by the
    weight of its true class and the sum is divided by the sum of those same weights
    (``sum_i w[y_i] * ce_i / sum_i w[y_i]`` over non-ignored pixels ``i``), which is how
    ``paddle.nn.functional.cross_entropy(..., weight=w, reduction='mean')`` and
    PaddleSeg's ``CrossEntropyLoss`` normalise it. Scaling all weights by a constant
    therefore does not change the loss.

    Args:
        weight (list[float] | tuple[float] | None): One non-negative weight per class,
            not all zero. Its length is checked against C when the loss is called.
            Default: None (every class weighs 1).
        ignore_index (int): Label value of pixels to leave out. Default: 255.

    Returns (forward):
        paddle.Tensor: 0-d float32 tensor.
    """

    def __init__(self, weight=None, ignore_index=255):
        super().__init__()
        self.ignore_index = _check_ignore_index(ignore_index)
        self.weight = None if weight is None else _check_class_weight(weight)

    def forward(self, logit, label):
        logit, label, valid = _prepare(logit, label, self.ignore_index, "CrossEntropyLoss")
        log_prob = F.log_softmax(logit, axis=1)
        nll = -paddle.take_along_axis(log_prob, label.unsqueeze(1), axis=1).squeeze(1)
        pixel_weight = valid * self._weight_per_pixel(label, logit.shape[1])
        # Dividing by at least a tiny positive number keeps an all-ignored batch at 0/eps = 0.
        return (nll * pixel_weight).sum() / paddle.clip(pixel_weight.sum(), min=1e-12)

    def _weight_per_pixel(self, label, num_classes):
        if self.weight is None:
            return paddle.ones(label.shape, dtype="float32")
        if len(self.weight) != num_classes:
            raise ValueError(
                f"CrossEntropyLoss: weight has {len(self.weight)} entries {list(self.weight)} "
                f"but the logits have C={num_classes} classes; give one weight per class.")
        table = paddle.to_tensor(self.weight, dtype="float32")
        return paddle.gather(table, label.flatten()).reshape(label.shape)


class DiceLoss(nn.Layer):
    """Soft Dice loss: 1 minus the mean soft Dice coefficient.

    For each image n and class c, with softmax probabilities ``p`` and one-hot labels
    ``g`` restricted to the non-ignored pixels of that image::

        dice[n, c] = (2 * sum(p * g) + smooth) / (sum(p) + sum(g) + smooth)

    and the loss is ``1 - mean over (n, c) of dice[n, c]``, i.e. Dice is computed per
    image and averaged over images and classes, as PaddleSeg's ``DiceLoss`` does. A
    (n, c) pair with nothing in it (possible only with ``smooth=0``) counts as a
    perfect match (dice 1) rather than 0/0.

    Args:
        ignore_index (int): Label value of pixels to leave out. Default: 255.
        smooth (float): Added to numerator and denominator; keeps classes absent
            from an image from dominating the loss. Must be >= 0. Default: 1.0.

    Returns (forward):
        paddle.Tensor: 0-d float32 tensor.
    """

    def __init__(self, ignore_index=255, smooth=1.0):
        super().__init__()
        self.ignore_index = _check_ignore_index(ignore_index)
        if isinstance(smooth, bool) or not isinstance(smooth, numbers.Real) \
                or not math.isfinite(smooth) or smooth < 0:
            raise ValueError(f"DiceLoss: smooth must be a finite number >= 0, got {smooth!r}")
        self.smooth = float(smooth)

    def forward(self, logit, label):
        logit, label, valid = _prepare(logit, label, self.ignore_index, "DiceLoss")
        valid = valid.unsqueeze(1)
        prob = F.softmax(logit, axis=1) * valid
        truth = F.one_hot(label, logit.shape[1]).transpose([0, 3, 1, 2]) * valid
        overlap = (prob * truth).sum(axis=[2, 3])
        total = (prob + truth).sum(axis=[2, 3])
        return 1.0 - _safe_ratio(2.0 * overlap + self.smooth, total + self.smooth).mean()


class LovaszSoftmaxLoss(nn.Layer):
    """Lovász-Softmax loss (Berman et al., CVPR 2018), a convex surrogate of 1 - IoU.

    The softmax probabilities of all non-ignored pixels of the whole batch are pooled
    together (one IoU per class over the batch, as PaddleSeg does, not one per image).
    For each class c, the pixel errors ``|[y == c] - p_c|`` are sorted in decreasing
    order and dotted with the increments of the Jaccard loss along that order
    (Algorithm 1 of the paper); the per-class values are then averaged.

    Args:
        ignore_index (int): Label value of pixels to leave out. Default: 255.
        classes (str): 'present' averages over the classes that occur among the
            non-ignored labels of the batch; 'all' averages over all C classes (an
            absent class then costs its largest predicted probability).
            Default: 'present'.

    Returns (forward):
        paddle.Tensor: 0-d float32 tensor.
    """

    def __init__(self, ignore_index=255, classes="present"):
        super().__init__()
        self.ignore_index = _check_ignore_index(ignore_index)
        if classes not in ("present", "all"):
            raise ValueError(
                f"LovaszSoftmaxLoss: classes must be 'present' or 'all', got {classes!r}")
        self.classes = classes

    def forward(self, logit, label):
        logit, label, valid = _prepare(logit, label, self.ignore_index, "LovaszSoftmaxLoss")
        num_classes = logit.shape[1]
        prob = F.softmax(logit, axis=1).transpose([0, 2, 3, 1]).reshape([-1, num_classes])
        valid = valid.reshape([-1, 1])
        truth = F.one_hot(label.flatten(), num_classes) * valid
        per_class = _lovasz_per_class(paddle.abs(truth - prob), truth, valid)
        if self.classes == "all":
            return per_class.mean()
        present = (truth.sum(axis=0) > 0).astype("float32")
        return (per_class * present).sum() / paddle.clip(present.sum(), min=1.0)


class MixedLoss(nn.Layer):
    """Weighted sum of several losses: ``sum_k coefs[k] * losses[k](logit, label)``.

    Unlike PaddleSeg's ``MixedLoss`` (which returns the list of weighted terms), this
    returns their sum as one 0-d tensor.

    Args:
        losses (list[paddle.nn.Layer]): The losses, each called as ``loss(logit, label)``.
        coefs (list[float]): One positive weight per loss.

    Returns (forward):
        paddle.Tensor: 0-d tensor.
    """

    def __init__(self, losses, coefs):
        super().__init__()
        if not isinstance(losses, (list, tuple)) or not losses \
                or not all(isinstance(loss, nn.Layer) for loss in losses):
            raise ValueError(
                f"MixedLoss: losses must be a non-empty list of paddle.nn.Layer, got {losses!r}")
        self.coefs = _check_coefs(coefs, "MixedLoss")
        if len(self.coefs) != len(losses):
            raise ValueError(f"MixedLoss: got {len(losses)} losses but {len(self.coefs)} coefs "
                             f"{list(self.coefs)}; give one coef per loss")
        self.losses = nn.LayerList(losses)

    def forward(self, logit, label):
        return sum(coef * loss(logit, label) for coef, loss in zip(self.coefs, self.losses))


class MultiLogitLoss(nn.Layer):
    """Apply one loss to each logit a network returns and sum with weights.

    Networks return a list of logits: the main one first, then (in training mode only)
    auxiliary ones, e.g. BiSeNetV2 returns 5 (coefs ``[1] * 5``) and FastSCNN 2
    (coefs ``[1.0, 0.4]``). The result is ``sum_i coefs[i] * loss(logits[i], label)``.
    In eval mode a network returns fewer logits than there are coefs; then only the
    first ``len(logits)`` coefs are used (usually just the main logit's). More logits
    than coefs is an error.

    Args:
        loss (paddle.nn.Layer): The loss applied to every logit, e.g. from ``build_loss``.
        coefs (list[float]): One positive weight per logit the network can return.

    Returns (forward):
        paddle.Tensor: 0-d tensor. ``logits`` may be a list/tuple of (N, C, H, W)
        tensors or a single tensor (treated as a list of one).
    """

    def __init__(self, loss, coefs):
        super().__init__()
        if not isinstance(loss, nn.Layer):
            raise ValueError(f"MultiLogitLoss: loss must be a paddle.nn.Layer, got {loss!r}")
        self.loss = loss
        self.coefs = _check_coefs(coefs, "MultiLogitLoss")

    def forward(self, logits, label):
        if isinstance(logits, paddle.Tensor):
            logits = [logits]
        if not isinstance(logits, (list, tuple)) or not 1 <= len(logits) <= len(self.coefs):
            count = len(logits) if isinstance(logits, (list, tuple)) else type(logits).__name__
            raise ValueError(
                f"MultiLogitLoss: expected a list of 1 to {len(self.coefs)} logits (one per coef "
                f"{list(self.coefs)}), got {count}")
        return sum(coef * self.loss(logit, label) for coef, logit in zip(self.coefs, logits))


def build_loss(use_mixed_loss):
    """Turn a model's ``use_mixed_loss`` argument into a loss layer.

    Args:
        use_mixed_loss (bool | list[tuple[str, float]]): False gives
            ``CrossEntropyLoss()``; True gives 0.8 * CrossEntropyLoss + 0.2 *
            LovaszSoftmaxLoss; a non-empty list of (name, weight) pairs, names from
            ``LOSS_NAMES`` and weights positive numbers, gives that mix (each loss with
            its default arguments). A pair may also be a 2-item list, which is what a
            tuple becomes after a YAML round trip. A single pair with weight 1 returns
            the loss itself.

    Returns:
        paddle.nn.Layer: the loss, called as ``loss(logit, label)``.

    Raises:
        ValueError: for anything else, naming the offending entry and the allowed names.
    """
    if isinstance(use_mixed_loss, (bool, np.bool_)):
        if not use_mixed_loss:
            return CrossEntropyLoss()
        return MixedLoss([CrossEntropyLoss(), LovaszSoftmaxLoss()], [0.8, 0.2])
    if not isinstance(use_mixed_loss, (list, tuple)) or not use_mixed_loss:
        raise ValueError(
            f"use_mixed_loss must be True, False or a non-empty list of (name, weight) tuples "
            f"with names in {list(LOSS_NAMES)} and weights > 0, got {use_mixed_loss!r}")
    factories = dict(zip(LOSS_NAMES, (CrossEntropyLoss, DiceLoss, LovaszSoftmaxLoss)))
    losses, coefs = [], []
    for index, entry in enumerate(use_mixed_loss):
        problem = _mix_entry_problem(entry)
        if problem:
            raise ValueError(
                f"use_mixed_loss[{index}] = {entry!r} is invalid: {problem}. Each entry must be "
                f"a (name, weight) tuple with name in {list(LOSS_NAMES)} and weight > 0")
        losses.append(factories[entry[0]]())
        coefs.append(float(entry[1]))
    if len(losses) == 1 and coefs[0] == 1.0:
        return losses[0]
    return MixedLoss(losses, coefs)


def _mix_entry_problem(entry):
    """Why a ``use_mixed_loss`` entry is unusable, or '' when it is fine."""
    if not isinstance(entry, (tuple, list)) or len(entry) != 2:
        return "not a (name, weight) pair"
    name, weight = entry
    if name not in LOSS_NAMES:
        return f"unknown loss name {name!r}"
    if not _is_positive_number(weight):
        return f"weight {weight!r} is not a positive number"
    return ""


def _lovasz_per_class(errors, truth, valid):
    """Lovász extension of the Jaccard loss for every class column at once.

    ``errors`` and ``truth`` are (M, C) with zero rows for ignored pixels and ``valid``
    is (M, 1). Ignored pixels are sorted after all real ones (real errors are >= 0)
    and add nothing to intersection or union, so their Jaccard increment is exactly 0;
    this keeps shapes static instead of gathering the valid pixels.
    """
    sort_key = paddle.where(valid > 0, errors, paddle.full_like(errors, -1.0))
    order = paddle.argsort(sort_key, axis=0, descending=True)
    errors_sorted = paddle.take_along_axis(errors * valid, order, axis=0)
    truth_sorted = paddle.take_along_axis(truth, order, axis=0)
    valid_sorted = paddle.take_along_axis(valid.expand_as(errors), order, axis=0)
    # Counts are exact in float32 up to 2**24 pixels per batch.
    num_fg = truth.sum(axis=0, keepdim=True)
    intersection = num_fg - paddle.cumsum(truth_sorted, axis=0)
    union = num_fg + paddle.cumsum(valid_sorted - truth_sorted, axis=0)
    jaccard = 1.0 - intersection / paddle.clip(union, min=1.0)
    # Depends on labels and the sort order only, so gradients flow through the errors.
    increments = paddle.concat([jaccard[:1], jaccard[1:] - jaccard[:-1]], axis=0)
    return (errors_sorted * increments).sum(axis=0)


def _safe_ratio(numerator, denominator):
    """numerator / denominator, with 1 where the denominator is 0 (and no NaN gradient)."""
    nonzero = denominator > 0
    ratio = numerator / paddle.where(nonzero, denominator, paddle.ones_like(denominator))
    return paddle.where(nonzero, ratio, paddle.ones_like(ratio))


def _prepare(logit, label, ignore_index, who):
    """Check shapes and label values; return (float logit, label with ignored -> 0, valid mask)."""
    if not isinstance(logit, paddle.Tensor) or logit.ndim != 4:
        shape = list(logit.shape) if isinstance(logit, paddle.Tensor) else type(logit).__name__
        raise ValueError(f"{who}: logit must be a (N, C, H, W) tensor, got {shape}")
    if not isinstance(label, paddle.Tensor):
        raise ValueError(f"{who}: label must be a paddle.Tensor, got {type(label).__name__}")
    if label.ndim == 4 and label.shape[1] == 1:
        label = label.squeeze(1)
    n, num_classes, h, w = logit.shape
    if list(label.shape) != [n, h, w]:
        raise ValueError(f"{who}: label shape {list(label.shape)} does not match logit shape "
                         f"{list(logit.shape)}; expected {[n, h, w]} (or {[n, 1, h, w]})")
    if label.dtype not in (paddle.int64, paddle.int32, paddle.int16, paddle.int8, paddle.uint8):
        raise ValueError(f"{who}: label must be an integer tensor, got dtype {label.dtype}")
    if logit.dtype != paddle.float32:
        logit = logit.astype("float32")
    label = label.astype("int64")
    valid = label != ignore_index
    bad = paddle.logical_and(valid, paddle.logical_or(label < 0, label >= num_classes))
    if bad.any():
        found = sorted(set(np.unique(label.numpy()[bad.numpy()]).tolist()))
        raise ValueError(f"{who}: label values {found[:10]} are neither class ids in "
                         f"[0, {num_classes}) nor ignore_index={ignore_index}")
    label = paddle.where(valid, label, paddle.zeros_like(label))
    return logit, label, valid.astype("float32")


def _check_ignore_index(ignore_index):
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, numbers.Integral):
        raise ValueError(f"ignore_index must be an int, got {ignore_index!r}")
    return int(ignore_index)


def _check_class_weight(weight):
    if isinstance(weight, np.ndarray):
        weight = weight.tolist()
    if not isinstance(weight, (list, tuple)) or not weight or not all(
            _is_number(v) and v >= 0 for v in weight) or not any(v > 0 for v in weight):
        raise ValueError(f"CrossEntropyLoss: weight must be None or a list of one finite weight "
                         f">= 0 per class, not all 0, got {weight!r}")
    return tuple(float(v) for v in weight)


def _check_coefs(coefs, who):
    if not isinstance(coefs, (list, tuple)) or not coefs \
            or not all(_is_positive_number(c) for c in coefs):
        raise ValueError(f"{who}: coefs must be a non-empty list of positive numbers, got {coefs!r}")
    return tuple(float(c) for c in coefs)


def _is_number(value):
    return (not isinstance(value, (bool, np.bool_)) and isinstance(value, numbers.Real)
            and math.isfinite(value))


def _is_positive_number(value):
    return _is_number(value) and value > 0
