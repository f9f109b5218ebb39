"""Metrics: confusion_matrix, metrics_from_confusion and evaluate_net against numbers
worked out by hand (fractions in the comments), and against PaddleSeg's metric
functions as an oracle for the conventions (absent class = IoU 0 in the mean)."""
import os

import cv2
import numpy as np
import paddle
import pytest

from oracle import require_paddleseg
from paddlex_seg import transforms as T
from paddlex_seg.data.dataset import SegDataset
from paddlex_seg.engine.evaluate import evaluate_net
from paddlex_seg.engine.metrics import confusion_matrix, metrics_from_confusion

# cm[true, predicted]. Row sums (label areas) 6, 6, 8; column sums (predicted areas)
# 7, 5, 8; 20 pixels, 15 on the diagonal.
HAND_CM = np.array([[5, 1, 0],
                    [2, 3, 1],
                    [0, 1, 7]])
HAND_METRICS = {
    # IoU = tp / (row + col - tp): 5/(6+7-5), 3/(6+5-3), 7/(8+8-7)
    "category_iou": [5 / 8, 3 / 8, 7 / 9],
    "miou": 16 / 27,                         # (5/8 + 3/8 + 7/9) / 3
    "oacc": 15 / 20,
    "category_acc": [5 / 7, 3 / 5, 7 / 8],  # precision: tp / col
    # pe = (6*7 + 6*5 + 8*8) / 20^2 = 0.34; (0.75 - 0.34) / (1 - 0.34)
    "kappa": 41 / 66,
    "category_F1-score": [10 / 13, 6 / 11, 7 / 8],  # 2 tp / (row + col)
}


def assert_metrics_equal(metrics, expected):
    assert set(metrics) == {"miou", "category_iou", "oacc", "category_acc", "kappa",
                            "category_F1-score"}
    for key, value in expected.items():
        np.testing.assert_allclose(metrics[key], value, rtol=0, atol=1e-12, err_msg=key)


def pixels_for(cm, ignored=0, seed=0):
    """(label, pred) arrays whose confusion matrix is ``cm``, shuffled, plus ``ignored``
    pixels labelled 255 with arbitrary predictions."""
    labels, preds = [], []
    for t in range(cm.shape[0]):
        for p in range(cm.shape[1]):
            labels += [t] * int(cm[t, p])
            preds += [p] * int(cm[t, p])
    labels += [255] * ignored
    preds += list(np.random.RandomState(seed).randint(0, cm.shape[1], ignored))
    order = np.random.RandomState(seed + 1).permutation(len(labels))
    return np.array(labels, np.uint8)[order], np.array(preds, np.int64)[order]


# --- metrics_from_confusion -------------------------------------------------------

def test_metrics_from_hand_computed_confusion_matrix():
    metrics = metrics_from_confusion(HAND_CM)
    assert_metrics_equal(metrics, HAND_METRICS)
    assert isinstance(metrics["miou"], float) and isinstance(metrics["kappa"], float)
    assert isinstance(metrics["oacc"], float)
    for key in ("category_iou", "category_acc", "category_F1-score"):
        assert isinstance(metrics[key], list) and len(metrics[key]) == 3
        assert all(isinstance(v, float) for v in metrics[key])


def test_absent_class_has_iou_zero_and_counts_in_the_mean():
    cm = np.zeros((4, 4), np.int64)
    cm[:3, :3] = HAND_CM  # class 3: never labelled, never predicted
    metrics = metrics_from_confusion(cm)
    assert_metrics_equal(metrics, {
        "category_iou": HAND_METRICS["category_iou"] + [0.0],
        "miou": (16 / 9) / 4,  # the same IoU sum, divided by 4 classes
        "oacc": 0.75, "kappa": 41 / 66,
        "category_acc": HAND_METRICS["category_acc"] + [0.0],
        "category_F1-score": HAND_METRICS["category_F1-score"] + [0.0],
    })


def test_class_predicted_but_never_labelled_and_labelled_but_never_predicted():
    cm = np.array([[4, 2],   # class 0: 6 labelled, 4 right
                   [0, 0]])  # class 1: never labelled, predicted twice
    m = metrics_from_confusion(cm)
    assert_metrics_equal(m, {"category_iou": [4 / 6, 0.0], "miou": 1 / 3, "oacc": 4 / 6,
                             "category_acc": [1.0, 0.0], "kappa": 0.0,
                             "category_F1-score": [0.8, 0.0]})
    m = metrics_from_confusion(cm.T)  # class 1 labelled twice, never predicted
    assert_metrics_equal(m, {"category_iou": [4 / 6, 0.0], "category_acc": [4 / 6, 0.0]})


def test_empty_confusion_matrix_gives_zeros_not_nan():
    m = metrics_from_confusion(np.zeros((3, 3), np.int64))
    values = [m["miou"], m["oacc"], m["kappa"]] + m["category_iou"] + m["category_acc"]
    assert values == [0.0] * len(values)


def test_perfect_prediction():
    m = metrics_from_confusion(np.diag([3, 5, 2]))
    assert_metrics_equal(m, {"miou": 1.0, "oacc": 1.0, "kappa": 1.0,
                             "category_iou": [1.0] * 3, "category_F1-score": [1.0] * 3})


@pytest.mark.parametrize("cm", [HAND_CM, np.pad(HAND_CM, ((0, 1), (0, 1))),
                                np.random.RandomState(3).randint(0, 50, (5, 5))])
def test_same_conventions_as_paddleseg_metrics(cm):
    require_paddleseg()
    from paddleseg.utils import metrics as psm
    inter = paddle.to_tensor(np.diag(cm).astype("int64"))
    pred_area = paddle.to_tensor(cm.sum(axis=0).astype("int64"))
    label_area = paddle.to_tensor(cm.sum(axis=1).astype("int64"))
    class_iou, miou = psm.mean_iou(inter, pred_area, label_area)
    class_acc, oacc = psm.accuracy(inter, pred_area)
    kappa = psm.kappa(inter, pred_area, label_area)
    ours = metrics_from_confusion(cm)
    np.testing.assert_allclose(ours["category_iou"], class_iou, atol=1e-9)
    np.testing.assert_allclose(ours["category_acc"], class_acc, atol=1e-9)
    np.testing.assert_allclose([ours["miou"], ours["oacc"], ours["kappa"]],
                               [miou, oacc, kappa], atol=1e-9)


# --- confusion_matrix -------------------------------------------------------------

def test_confusion_matrix_counts_true_by_predicted_and_skips_255():
    label, pred = pixels_for(HAND_CM, ignored=4)
    assert label.size == 24
    cm = confusion_matrix(label.reshape(4, 6), pred.reshape(4, 6), 3)
    assert cm.dtype == np.int64 and cm.shape == (3, 3)
    np.testing.assert_array_equal(cm, HAND_CM)
    assert_metrics_equal(metrics_from_confusion(cm), HAND_METRICS)


def test_confusion_matrix_with_a_class_absent_from_label_and_prediction():
    label, pred = pixels_for(HAND_CM)
    cm = confusion_matrix(label, pred, 4)
    assert cm.shape == (4, 4) and cm[3].sum() == 0 and cm[:, 3].sum() == 0
    assert metrics_from_confusion(cm)["category_iou"][3] == 0.0


def test_confusion_matrix_other_ignore_index():
    label = np.array([0, 1, 2, 2])
    pred = np.array([0, 0, 1, 2])
    cm = confusion_matrix(label, pred, 3, ignore_index=2)
    np.testing.assert_array_equal(cm, [[1, 0, 0], [1, 0, 0], [0, 0, 0]])


@pytest.mark.parametrize("bad_label", [3, 7, 254, -1])
def test_confusion_matrix_rejects_labels_out_of_range(bad_label):
    label = np.array([0, 1, 2, bad_label, 255], np.int64)
    pred = np.zeros(5, np.int64)
    with pytest.raises(ValueError, match=rf"label values \[{bad_label}\]"):
        confusion_matrix(label, pred, 3)


@pytest.mark.parametrize("bad_pred", [3, -1])
def test_confusion_matrix_rejects_predictions_out_of_range(bad_pred):
    # Before this was checked, pred 3 with 3 classes was counted in the next row.
    with pytest.raises(ValueError, match="predicted values"):
        confusion_matrix(np.array([0, 1]), np.array([0, bad_pred]), 3)


def test_confusion_matrix_rejects_mismatched_sizes():
    with pytest.raises(ValueError, match="differ in size"):
        confusion_matrix(np.zeros((4, 4)), np.zeros((2, 2)), 2)


# --- evaluate_net -------------------------------------------------------------------

class FixedLogitsNet(paddle.nn.Layer):
    """Returns the same class layout for any input, at the input's size: left half
    class 1; right half class 2 on top, class 0 at the bottom."""

    def __init__(self):
        super().__init__()
        self.input_shapes = []  # test instrumentation

    def forward(self, x):
        n, _, h, w = x.shape
        self.input_shapes.append((n, h, w))
        cls = np.zeros((h, w), np.int64)
        cls[:h // 2, w // 2:] = 2
        cls[:, :w // 2] = 1
        logits = np.eye(3, dtype="float32")[cls].transpose(2, 0, 1) * 5.0
        return [paddle.to_tensor(np.repeat(logits[None], n, axis=0))]


# Label at original size 8 x 12 (H x W); the fake net predicts, after restoring to
# 8 x 12: cols 0-5 -> 1, rows 0-3 / cols 6-11 -> 2, rows 4-7 / cols 6-11 -> 0.
#   rows 0-3 labelled 2: 24 px predicted 1, 24 predicted 2
#   rows 4-6, cols 0-5 labelled 1, predicted 1: 18;  cols 6-11 labelled 0, predicted 0: 18
#   row 7 is 255 (ignored)
EVAL_CM = [[18, 0, 0], [0, 18, 0], [0, 24, 24]]
EVAL_METRICS = {
    "category_iou": [1.0, 3 / 7, 1 / 2],      # 18/18, 18/(18+42-18), 24/(48+24-24)
    "miou": 9 / 14,
    "oacc": 60 / 84,
    "category_acc": [1.0, 3 / 7, 1.0],
    "kappa": 39 / 67,  # pe = (18*18 + 18*42 + 48*24) / 84^2
    "category_F1-score": [1.0, 3 / 5, 2 / 3],
}


@pytest.fixture
def eval_dir(tmp_path):
    label = np.zeros((8, 12), np.uint8)
    label[:4] = 2
    label[4:, :6] = 1
    label[7] = 255
    image = np.random.RandomState(0).randint(0, 256, (8, 12, 3)).astype(np.uint8)
    lines = []
    for i in range(2):
        cv2.imwrite(str(tmp_path / f"im{i}.png"), image)
        cv2.imwrite(str(tmp_path / f"lab{i}.png"), label)
        lines.append(f"im{i}.png lab{i}.png\n")
    (tmp_path / "one.txt").write_text(lines[0])
    (tmp_path / "two.txt").write_text("".join(lines))
    return tmp_path


def test_evaluate_net_restores_predictions_to_label_size(eval_dir):
    ds = SegDataset(str(eval_dir), "one.txt", num_workers=0)
    net = FixedLogitsNet()
    net.train()
    # The net sees 16 x 24 (Resize doubles both sides); labels stay 8 x 12.
    transforms = T.Compose([T.Resize([16, 24]), T.Normalize()])
    metrics, cm = evaluate_net(net, ds, 3, transforms)
    assert net.input_shapes == [(1, 16, 24)]
    np.testing.assert_array_equal(cm, EVAL_CM)
    assert_metrics_equal(metrics, EVAL_METRICS)
    assert net.training, "evaluate_net puts the net back in training mode"


def test_evaluate_net_batches_and_sums_over_samples(eval_dir):
    ds = SegDataset(str(eval_dir), "two.txt", num_workers=0)
    net = FixedLogitsNet()
    net.eval()
    transforms = T.Compose([T.Resize([16, 24]), T.Normalize()])
    metrics, cm = evaluate_net(net, ds, 3, transforms, batch_size=2)
    assert net.input_shapes == [(2, 16, 24)]
    np.testing.assert_array_equal(cm, 2 * np.array(EVAL_CM))
    assert_metrics_equal(metrics, EVAL_METRICS)
    assert not net.training, "an eval-mode net stays in eval mode"


def test_evaluate_net_without_resize(eval_dir):
    ds = SegDataset(str(eval_dir), "one.txt", num_workers=0)
    metrics, cm = evaluate_net(FixedLogitsNet(), ds, 3, T.Compose([T.Normalize()]))
    np.testing.assert_array_equal(cm, EVAL_CM)


def test_evaluate_net_names_the_label_file_with_values_out_of_range(eval_dir):
    label = cv2.imread(str(eval_dir / "lab1.png"), cv2.IMREAD_GRAYSCALE)
    label[0, 0] = 5
    cv2.imwrite(str(eval_dir / "lab1.png"), label)
    (eval_dir / "labels.txt").write_text("a\nb\nc\n")
    ds = SegDataset(str(eval_dir), "two.txt", "labels.txt", num_workers=0)
    with pytest.raises(ValueError, match=r"lab1\.png.*5"):
        evaluate_net(FixedLogitsNet(), ds, 3, T.Compose([T.Normalize()]))
    # Without a label list the confusion matrix is the last line of defence.
    ds = SegDataset(str(eval_dir), "two.txt", num_workers=0)
    with pytest.raises(ValueError, match=r"label values \[5\]"):
        evaluate_net(FixedLogitsNet(), ds, 3, T.Compose([T.Normalize()]))
