"""Losses: hand-computed values, ignore handling, gradients, PaddleSeg parity, build_loss."""
import math

import numpy as np
import paddle
import pytest
import yaml

from oracle import Paddle2Promotion, require_paddleseg
from paddlex_seg.models.losses import (
    LOSS_NAMES, CrossEntropyLoss, DiceLoss, LovaszSoftmaxLoss, MixedLoss, MultiLogitLoss,
    build_loss)

IGNORE = 255


def t(array, dtype="float32"):
    return paddle.to_tensor(np.asarray(array).astype(dtype))


def random_case(n=2, c=4, h=8, w=8, ignore_frac=0.2, seed=0, scale=3.0):
    rng = np.random.RandomState(seed)
    logit = rng.randn(n, c, h, w).astype("float32") * scale
    label = rng.randint(0, c, (n, h, w))
    label[rng.rand(n, h, w) < ignore_frac] = IGNORE
    return t(logit), t(label, "int64")


def confident(label, c, margin=40.0):
    """Logits that put (numerically) all probability on ``label`` (ignored -> class 0)."""
    label = np.where(np.asarray(label) == IGNORE, 0, np.asarray(label))
    onehot = np.eye(c, dtype="float32")[label]              # N, H, W, C
    return t(onehot.transpose(0, 3, 1, 2) * margin - margin / 2)


ALL_LOSSES = {
    "ce": lambda: CrossEntropyLoss(),
    "ce_weighted": lambda: CrossEntropyLoss(weight=[0.5, 2.0, 1.0, 3.0]),
    "dice": lambda: DiceLoss(),
    "dice_smooth0": lambda: DiceLoss(smooth=0.0),
    "lovasz": lambda: LovaszSoftmaxLoss(),
    "lovasz_all": lambda: LovaszSoftmaxLoss(classes="all"),
    "mixed": lambda: build_loss(True),
}


# ---------------------------------------------------------------- reference (NumPy) ---

def lovasz_reference(prob, label, classes="present"):
    """Lovász-Softmax from the paper (Berman et al. 2018, eq. 8-9 and Alg. 1), per class.

    prob: (P, C) probabilities of the non-ignored pixels, label: (P,) class ids.
    """
    losses = []
    for c in range(prob.shape[1]):
        fg = (label == c).astype(np.float64)
        if classes == "present" and fg.sum() == 0:
            continue
        err = np.abs(fg - prob[:, c].astype(np.float64))
        order = np.argsort(-err, kind="stable")
        err, fg = err[order], fg[order]
        # Jaccard loss of the set of the first i pixels (in error order) counted as wrong
        jac = []
        for i in range(1, len(err) + 1):
            inter = fg.sum() - fg[:i].sum()
            union = fg.sum() + (1 - fg[:i]).sum()
            jac.append(1.0 - inter / union)
        jac = np.array(jac)
        grad = np.concatenate([jac[:1], np.diff(jac)])
        losses.append(float(err @ grad))
    return float(np.mean(losses))


def softmax_np(logit):
    e = np.exp(logit - logit.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def flat_valid(logit, label):
    """(P, C) probabilities and (P,) labels of the non-ignored pixels, whole batch."""
    prob = softmax_np(logit.numpy()).transpose(0, 2, 3, 1).reshape(-1, logit.shape[1])
    lab = label.numpy().reshape(-1)
    keep = lab != IGNORE
    return prob[keep], lab[keep]


# ------------------------------------------------------------------- hand values ---

@pytest.mark.parametrize("name", ["ce", "ce_weighted", "dice", "lovasz", "lovasz_all", "mixed"])
def test_perfect_prediction_is_near_zero(name):
    _, label = random_case(c=4, seed=1)
    loss = ALL_LOSSES[name]()(confident(label.numpy(), 4), label)
    assert loss.shape == []
    assert abs(float(loss)) < 1e-5, float(loss)


@pytest.mark.parametrize("c", [2, 3, 5])
def test_uniform_logits_give_log_c(c):
    _, label = random_case(c=c, seed=2)
    logit = paddle.zeros([2, c, 8, 8])
    assert float(CrossEntropyLoss()(logit, label)) == pytest.approx(math.log(c), rel=1e-6)
    # every pixel costs log(C), so any class weighting leaves the mean at log(C)
    weighted = CrossEntropyLoss(weight=list(np.arange(1, c + 1) * 0.7))
    assert float(weighted(logit, label)) == pytest.approx(math.log(c), rel=1e-6)


def test_class_weighted_cross_entropy_by_hand():
    # 2x2 image, 2 classes; per pixel (logit0, logit1) and label:
    #   (0, 0)     label 0: p0 = 1/2 -> ce = ln 2
    #   (0, ln 3)  label 1: p1 = 3/4 -> ce = ln(4/3)
    #   (ln 3, 0)  label 1: p1 = 1/4 -> ce = ln 4
    #   (5, -5)    ignored
    l3 = math.log(3.0)
    logit = t([[[[0, 0], [l3, 5]], [[0, l3], [0, -5]]]])
    label = t([[[0, 1], [1, IGNORE]]], "int64")
    # weight [1, 3]: (1*ln2 + 3*ln(4/3) + 3*ln4) / (1 + 3 + 3)
    expected = (math.log(2) + 3 * math.log(4 / 3) + 3 * math.log(4)) / 7
    assert float(CrossEntropyLoss(weight=[1, 3])(logit, label)) == pytest.approx(expected, rel=1e-6)
    unweighted = (math.log(2) + math.log(4 / 3) + math.log(4)) / 3
    assert float(CrossEntropyLoss()(logit, label)) == pytest.approx(unweighted, rel=1e-6)
    # normalised by the weights' sum: scaling them changes nothing
    assert float(CrossEntropyLoss(weight=[10, 30])(logit, label)) == pytest.approx(expected, rel=1e-6)


def test_lovasz_by_hand():
    # 3 pixels, 2 classes, p1 = [0.8, 0.4, 0.3], labels [1, 0, 1] (+ one ignored pixel).
    # class 1: errors sorted 0.7(fg) 0.4(bg) 0.2(fg); Jaccard after each: 1/2, 2/3, 1
    #          -> 0.7*1/2 + 0.4*1/6 + 0.2*1/3 = 29/60
    # class 0: errors sorted 0.7(bg) 0.4(fg) 0.2(bg); Jaccard after each: 1/2, 1, 1
    #          -> 0.7*1/2 + 0.4*1/2 + 0.2*0 = 33/60
    p1 = np.array([0.8, 0.4, 0.3, 0.9])
    z = np.log(p1 / (1 - p1))                      # softmax([0, z]) = [1 - p1, p1]
    logit = t(np.stack([np.zeros(4), z])[None, :, None, :])
    label = t([[[1, 0, 1, IGNORE]]], "int64")
    assert float(LovaszSoftmaxLoss()(logit, label)) == pytest.approx(31 / 60, abs=1e-6)
    assert lovasz_reference(*flat_valid(logit, label)) == pytest.approx(31 / 60, abs=1e-6)


def test_lovasz_on_hard_predictions_is_one_minus_iou():
    # The Lovász extension is tight on {0,1} errors: it equals the Jaccard loss there.
    rng = np.random.RandomState(3)
    label = rng.randint(0, 3, (2, 6, 6))
    label[rng.rand(2, 6, 6) < 0.2] = IGNORE
    pred = rng.randint(0, 3, (2, 6, 6))
    valid = label != IGNORE
    ious = [np.sum((pred == c) & (label == c) & valid) / np.sum(((pred == c) | (label == c)) & valid)
            for c in range(3) if np.any((label == c) & valid)]
    loss = LovaszSoftmaxLoss()(confident(pred, 3), t(label, "int64"))
    assert float(loss) == pytest.approx(1 - np.mean(ious), abs=1e-5)


@pytest.mark.parametrize("classes", ["present", "all"])
def test_lovasz_matches_numpy_reference(classes):
    logit, label = random_case(n=2, c=4, h=5, w=6, seed=4)
    label = paddle.where(label == 3, paddle.full_like(label, 1), label)   # class 3 absent
    ours = float(LovaszSoftmaxLoss(classes=classes)(logit, label))
    assert ours == pytest.approx(lovasz_reference(*flat_valid(logit, label), classes), abs=1e-5)


def test_lovasz_all_counts_absent_class_by_its_largest_probability():
    logit, label = random_case(n=1, c=3, h=4, w=4, ignore_frac=0.0, seed=5)
    label = paddle.where(label == 2, paddle.zeros_like(label), label)
    present = float(LovaszSoftmaxLoss()(logit, label))
    every = float(LovaszSoftmaxLoss(classes="all")(logit, label))
    max_p2 = softmax_np(logit.numpy())[:, 2].max()
    assert every == pytest.approx((2 * present + max_p2) / 3, abs=1e-6)


def test_lovasz_pools_the_whole_batch():
    logit, label = random_case(n=2, c=3, h=4, w=4, seed=6)
    batch = float(LovaszSoftmaxLoss()(logit, label))
    side_by_side = float(LovaszSoftmaxLoss()(paddle.concat([logit[0:1], logit[1:2]], axis=3),
                                             paddle.concat([label[0:1], label[1:2]], axis=2)))
    per_image = np.mean([float(LovaszSoftmaxLoss()(logit[i:i + 1], label[i:i + 1])) for i in (0, 1)])
    assert batch == pytest.approx(side_by_side, abs=1e-6)
    assert abs(batch - per_image) > 1e-3       # so the test can tell the two apart


def test_dice_by_hand():
    # 2 pixels, uniform logits (p = 1/2), labels [0, 1]; each class:
    # overlap 1/2, sum(p) + sum(g) = 2 -> smooth 1: (1 + 1) / (2 + 1) = 2/3; smooth 0: 1/2
    logit = paddle.zeros([1, 2, 1, 3])
    label = t([[[0, 1, IGNORE]]], "int64")
    assert float(DiceLoss()(logit, label)) == pytest.approx(1 / 3, abs=1e-6)
    assert float(DiceLoss(smooth=0)(logit, label)) == pytest.approx(1 / 2, abs=1e-6)


def test_dice_is_per_image_then_averaged():
    logit, label = random_case(n=2, c=3, h=4, w=4, seed=7)
    batch = float(DiceLoss()(logit, label))
    per_image = np.mean([float(DiceLoss()(logit[i:i + 1], label[i:i + 1])) for i in (0, 1)])
    assert batch == pytest.approx(per_image, abs=1e-6)


# ---------------------------------------------------------------------- ignoring ---

@pytest.mark.parametrize("name", sorted(ALL_LOSSES))
def test_ignored_pixels_do_not_count(name):
    logit, label = random_case(n=1, c=4, h=5, w=5, ignore_frac=0.3, seed=8)
    keep = label.numpy().reshape(-1) != IGNORE
    # the same pixels without the ignored ones, as a 1 x P image
    only_valid = t(logit.numpy().reshape(1, 4, -1)[:, :, keep][:, :, None, :])
    compact = t(label.numpy().reshape(1, -1)[:, keep][:, None, :], "int64")
    loss = ALL_LOSSES[name]()
    full = float(loss(logit, label))
    assert full == pytest.approx(float(loss(only_valid, compact)), abs=1e-6)
    # whatever the network says at ignored pixels changes neither value nor gradient there
    noisy = logit.numpy().copy()
    noisy[:, :, label.numpy()[0] == IGNORE] = 100.0
    noisy = t(noisy)
    noisy.stop_gradient = False
    value = loss(noisy, label)
    value.backward()
    assert float(value) == pytest.approx(full, abs=1e-6)
    assert np.all(noisy.grad.numpy()[:, :, label.numpy()[0] == IGNORE] == 0)


@pytest.mark.parametrize("name", sorted(ALL_LOSSES))
def test_all_ignored_gives_zero_and_finite_gradient(name):
    logit, _ = random_case(seed=9)
    logit.stop_gradient = False
    value = ALL_LOSSES[name]()(logit, paddle.full([2, 8, 8], IGNORE, dtype="int64"))
    value.backward()
    assert value.shape == [] and float(value) == 0.0
    assert np.all(logit.grad.numpy() == 0)


@pytest.mark.parametrize("name", sorted(ALL_LOSSES))
def test_gradients_are_finite_and_nonzero(name):
    logit, label = random_case(seed=10)
    logit.stop_gradient = False
    value = ALL_LOSSES[name]()(logit, label.unsqueeze(1))     # (N, 1, H, W) labels work too
    value.backward()
    grad = logit.grad.numpy()
    assert value.shape == [] and np.isfinite(float(value))
    assert np.all(np.isfinite(grad)) and np.abs(grad).max() > 0


# ----------------------------------------------------------------- PaddleSeg parity ---

def paddleseg_pairs(ps):
    weight = [0.5, 2.0, 1.0, 3.0]
    return [
        ("CrossEntropyLoss", CrossEntropyLoss(), Paddle2Promotion(ps.CrossEntropyLoss())),
        ("CrossEntropyLoss(weight)", CrossEntropyLoss(weight=weight),
         Paddle2Promotion(ps.CrossEntropyLoss(weight=weight))),
        ("DiceLoss", DiceLoss(), ps.DiceLoss()),
        ("DiceLoss(smooth=0.5)", DiceLoss(smooth=0.5), ps.DiceLoss(smooth=0.5)),
        ("LovaszSoftmaxLoss", LovaszSoftmaxLoss(), ps.LovaszSoftmaxLoss()),
        ("LovaszSoftmaxLoss(all)", LovaszSoftmaxLoss(classes="all"), ps.LovaszSoftmaxLoss(classes="all")),
    ]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_same_values_as_paddleseg(seed):
    ps = require_paddleseg()
    logit, label = random_case(n=2, c=4, h=16, w=16, seed=seed)
    if seed == 2:                        # a class missing from the batch
        label = paddle.where(label == 2, paddle.full_like(label, IGNORE), label)
    diffs = {}
    for name, ours, theirs in paddleseg_pairs(ps):
        a = float(ours(logit, label))
        b = float(theirs(logit, label.clone()))    # PaddleSeg's DiceLoss edits labels in place
        diffs[name] = abs(a - b)
    assert max(diffs.values()) <= 1e-5, diffs


def test_same_gradients_as_paddleseg():
    ps = require_paddleseg()
    logit, label = random_case(n=2, c=4, h=8, w=8, seed=11)
    for name, ours, theirs in paddleseg_pairs(ps):
        grads = []
        for loss in (ours, theirs):
            x = logit.clone()
            x.stop_gradient = False
            loss(x, label.clone()).backward()
            grads.append(x.grad.numpy())
        assert np.abs(grads[0] - grads[1]).max() <= 1e-6, name


def test_mixed_matches_paddleseg_mixed_loss_sum():
    ps = require_paddleseg()
    logit, label = random_case(seed=12)
    theirs = Paddle2Promotion(ps.MixedLoss([ps.CrossEntropyLoss(), ps.LovaszSoftmaxLoss()], [0.8, 0.2]))
    assert float(build_loss(True)(logit, label)) == pytest.approx(
        float(sum(theirs(logit, label))), abs=1e-5)


# ------------------------------------------------------------------ input errors ---

def test_weight_length_checked_at_forward():
    logit, label = random_case(c=4)
    with pytest.raises(ValueError, match=r"weight has 3 entries .*C=4"):
        CrossEntropyLoss(weight=[1.0, 1.0, 1.0])(logit, label)


@pytest.mark.parametrize("make, match", [
    (lambda: CrossEntropyLoss(weight=[1, -1]), "weight"),
    (lambda: CrossEntropyLoss(weight=[0, 0]), "not all 0"),
    (lambda: CrossEntropyLoss(weight="heavy"), "weight"),
    (lambda: CrossEntropyLoss(ignore_index=2.5), "ignore_index"),
    (lambda: DiceLoss(smooth=-1), "smooth"),
    (lambda: LovaszSoftmaxLoss(classes="some"), "'present' or 'all'"),
])
def test_constructor_arguments_are_checked(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize("logit_shape, label, match", [
    ([2, 4, 8, 8], np.full((2, 8, 7), 0), r"label shape \[2, 8, 7\] does not match"),
    ([2, 4, 8], np.full((2, 8), 0), r"\(N, C, H, W\)"),
    ([1, 4, 2, 2], np.array([[[0, 4], [1, IGNORE]]]), r"label values \[4\] .*\[0, 4\)"),
    ([1, 4, 2, 2], np.array([[[0, -1], [1, 2]]]), r"label values \[-1\]"),
])
@pytest.mark.parametrize("loss_cls", [CrossEntropyLoss, DiceLoss, LovaszSoftmaxLoss])
def test_bad_inputs_raise_clear_errors(loss_cls, logit_shape, label, match):
    with pytest.raises(ValueError, match=match):
        loss_cls()(paddle.zeros(logit_shape), t(label, "int64"))


def test_float_labels_are_rejected():
    with pytest.raises(ValueError, match="integer"):
        DiceLoss()(paddle.zeros([1, 2, 2, 2]), paddle.zeros([1, 2, 2]))


# ------------------------------------------------------------ mixing, multi logits ---

def test_mixed_loss_is_weighted_sum():
    logit, label = random_case(seed=13)
    mixed = MixedLoss([CrossEntropyLoss(), DiceLoss(), LovaszSoftmaxLoss()], [0.5, 0.3, 0.2])
    expected = (0.5 * float(CrossEntropyLoss()(logit, label)) + 0.3 * float(DiceLoss()(logit, label))
                + 0.2 * float(LovaszSoftmaxLoss()(logit, label)))
    value = mixed(logit, label)
    assert value.shape == [] and float(value) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("losses, coefs, match", [
    ([], [], "losses"),
    (["CrossEntropyLoss"], [1.0], "losses"),
    ([CrossEntropyLoss()], [1.0, 2.0], "1 losses but 2 coefs"),
    ([CrossEntropyLoss()], [0], "positive"),
])
def test_mixed_loss_arguments_are_checked(losses, coefs, match):
    with pytest.raises(ValueError, match=match):
        MixedLoss(losses, coefs)


def test_multi_logit_loss_bisenetv2_and_fastscnn():
    _, label = random_case(seed=14)
    logits = [random_case(seed=s)[0] for s in range(20, 25)]
    ce = CrossEntropyLoss()
    parts = [float(ce(x, label)) for x in logits]
    assert float(MultiLogitLoss(ce, [1] * 5)(logits, label)) == pytest.approx(sum(parts), rel=1e-6)
    fast = MultiLogitLoss(ce, [1.0, 0.4])
    assert float(fast(logits[:2], label)) == pytest.approx(parts[0] + 0.4 * parts[1], rel=1e-6)
    # eval mode: only the main logit comes back, with its coefficient
    assert float(fast(logits[:1], label)) == pytest.approx(parts[0], rel=1e-6)
    assert float(fast(logits[0], label)) == pytest.approx(parts[0], rel=1e-6)
    with pytest.raises(ValueError, match=r"1 to 2 logits .*got 3"):
        fast(logits[:3], label)
    with pytest.raises(ValueError, match="got 0"):
        fast([], label)
    with pytest.raises(ValueError, match="coefs"):
        MultiLogitLoss(ce, [])


# ----------------------------------------------------------------------- build_loss ---

def test_build_loss_defaults():
    logit, label = random_case(seed=15)
    assert type(build_loss(False)) is CrossEntropyLoss
    mixed = build_loss(True)
    assert [type(x) for x in mixed.losses] == [CrossEntropyLoss, LovaszSoftmaxLoss]
    assert mixed.coefs == (0.8, 0.2)
    expected = 0.8 * float(CrossEntropyLoss()(logit, label)) + 0.2 * float(LovaszSoftmaxLoss()(logit, label))
    assert float(mixed(logit, label)) == pytest.approx(expected, rel=1e-6)


def test_build_loss_from_list():
    assert type(build_loss([("DiceLoss", 1)])) is DiceLoss
    mix = build_loss([("CrossEntropyLoss", 0.6), ("DiceLoss", 0.3), ("LovaszSoftmaxLoss", 0.1)])
    assert [type(x) for x in mix.losses] == [CrossEntropyLoss, DiceLoss, LovaszSoftmaxLoss]
    assert mix.coefs == (0.6, 0.3, 0.1)
    single = build_loss([("LovaszSoftmaxLoss", 2)])
    assert type(single) is MixedLoss and single.coefs == (2.0,)
    # what model.yml gives back after a YAML round trip: pairs become lists
    spec = yaml.safe_load(yaml.safe_dump([("CrossEntropyLoss", 0.8), ("DiceLoss", 0.2)]))
    assert build_loss(spec).coefs == (0.8, 0.2)


@pytest.mark.parametrize("value, bad", [
    ([("FocalLoss", 1.0)], "use_mixed_loss[0] = ('FocalLoss', 1.0) is invalid: unknown loss name 'FocalLoss'"),
    ([("DiceLoss", 0.5), "LovaszSoftmaxLoss"],
     "use_mixed_loss[1] = 'LovaszSoftmaxLoss' is invalid: not a (name, weight) pair"),
    ([("DiceLoss", 0.5, 1)], "use_mixed_loss[0] = ('DiceLoss', 0.5, 1) is invalid: not a (name, weight) pair"),
    ([("DiceLoss", 0)], "weight 0 is not a positive number"),
    ([("DiceLoss", -0.5)], "weight -0.5 is not a positive number"),
    ([("DiceLoss", "1")], "weight '1' is not a positive number"),
    ([("DiceLoss", True)], "weight True is not a positive number"),
    ([("DiceLoss", float("nan"))], "weight nan is not a positive number"),
    ([("dice", 1.0)], "unknown loss name 'dice'"),
    ([], "got []"),
    ("CrossEntropyLoss", "got 'CrossEntropyLoss'"),
    (None, "got None"),
    (1, "got 1"),
    ({"DiceLoss": 1.0}, "got {'DiceLoss': 1.0}"),
])
def test_build_loss_errors_name_entry_and_allowed_names(value, bad):
    with pytest.raises(ValueError) as info:
        build_loss(value)
    message = str(info.value)
    assert bad in message
    assert str(list(LOSS_NAMES)) in message
    assert list(LOSS_NAMES) == ["CrossEntropyLoss", "DiceLoss", "LovaszSoftmaxLoss"]
