"""Segmentation metrics from a confusion matrix.

Conventions follow PaddleSeg so that published figures are comparable: a class whose
union (label ∪ prediction) is empty has IoU 0 and still counts in the mean;
``category_acc`` is per-class precision (correct / predicted as that class).
"""
import numpy as np

IGNORE_INDEX = 255


def confusion_matrix(label, pred, num_classes, ignore_index=IGNORE_INDEX):
    """Counts ``cm[true, predicted]`` over the pixels whose label is not ignored.

    Args:
        label (np.ndarray): integer class ids, any shape.
        pred (np.ndarray): integer predictions, same shape as ``label``.
        num_classes (int): number of classes C; the result is C x C int64.
        ignore_index (int): label value to skip.
    """
    label = np.asarray(label).reshape(-1).astype(np.int64)
    pred = np.asarray(pred).reshape(-1).astype(np.int64)
    if label.shape != pred.shape:
        raise ValueError(f"label and prediction differ in size: {label.size} vs {pred.size}")
    keep = label != ignore_index
    label, pred = label[keep], pred[keep]
    if label.size and (label.max() >= num_classes or label.min() < 0):
        bad = np.unique(label[(label >= num_classes) | (label < 0)])
        raise ValueError(f"label values {bad.tolist()} are outside [0, {num_classes}) and not {ignore_index}")
    # An out-of-range prediction would silently land in another cell of the matrix.
    if pred.size and (pred.max() >= num_classes or pred.min() < 0):
        bad = np.unique(pred[(pred >= num_classes) | (pred < 0)])
        raise ValueError(f"predicted values {bad.tolist()} are outside [0, {num_classes}); "
                         f"does the network output num_classes={num_classes} channels?")
    return np.bincount(label * num_classes + pred, minlength=num_classes ** 2).reshape(
        num_classes, num_classes).astype(np.int64)


def _safe_divide(num, den):
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


def metrics_from_confusion(cm):
    """miou, category_iou, oacc, category_acc, kappa and category_F1-score from ``cm``."""
    cm = np.asarray(cm, dtype=np.float64)
    correct = np.diag(cm)
    label_area = cm.sum(axis=1)
    pred_area = cm.sum(axis=0)
    total = cm.sum()
    iou = _safe_divide(correct, label_area + pred_area - correct)
    precision = _safe_divide(correct, pred_area)
    recall = _safe_divide(correct, label_area)
    f1 = _safe_divide(2 * precision * recall, precision + recall)
    oacc = float(correct.sum() / total) if total else 0.0
    expected = float((label_area * pred_area).sum() / total ** 2) if total else 0.0
    kappa = (oacc - expected) / (1 - expected) if expected < 1 else 0.0
    return {
        "miou": float(iou.mean()),
        "category_iou": iou.tolist(),
        "oacc": oacc,
        "category_acc": precision.tolist(),
        "kappa": float(kappa),
        "category_F1-score": f1.tolist(),
    }
