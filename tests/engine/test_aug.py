"""Test-time augmentation (paddlex_seg.aug): flips, scales and sliding windows in
predict and evaluate; the window batch bound; aug=None unchanged; clear errors."""
import copy
import logging
import os

import numpy as np
import paddle
import pytest

import paddlex_seg as seg
from paddlex_seg import transforms as T
from paddlex_seg.aug import AUG_KEYS, TestTimeAug, augmented_scores, window_origins
from paddlex_seg.engine.evaluate import evaluate_net
from paddlex_seg.engine.infer import forward_scores, restore_tensor_to_input, same_shape_runs
from paddlex_seg.engine.metrics import confusion_matrix

NUM_CLASSES = 3


def pixelwise_run(batch):
    """A fake network whose scores at a pixel depend on that pixel only (softmax of its
    first channels): windows, padding and flips must then change nothing."""
    logits = batch[:, :NUM_CLASSES] * 3.0
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def random_chw(h, w, seed=0):
    return np.random.RandomState(seed).randn(3, h, w).astype("float32")


def image(h, w, seed=0):
    return np.random.RandomState(seed).randint(0, 256, (h, w, 3)).astype("uint8")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """HRNet_W18_Small_V1 trained 8 epochs on 32 synthetic 64 px images (~10 s); 32
    validation images. Measured mIoU: plain 0.792, scales 0.75/1/1.25 0.804, flip 0.791
    (in 6 other seed/epoch/data settings multi-scale was +0.003 … +0.016 above plain)."""
    paddle.seed(0)
    np.random.seed(0)
    root = str(tmp_path_factory.mktemp("aug_data"))
    d = seg.make_synthetic_dataset(root, num_train=32, num_val=32, image_size=(64, 64),
                                   num_classes=NUM_CLASSES)
    train_ds = seg.SegDataset(d.root, d.train_list, d.label_list, shuffle=True, num_workers=0,
                              transforms=T.Compose([T.RandomHorizontalFlip(), T.Normalize()]))
    eval_ds = seg.SegDataset(d.root, d.val_list, d.label_list, num_workers=0,
                             transforms=T.Compose([T.Normalize()]))
    model = seg.HRNet(num_classes=NUM_CLASSES, width="18_Small_V1")
    log = logging.getLogger("paddlex_seg")
    level = log.level
    log.setLevel(logging.WARNING)  # no per-step lines
    try:
        model.train(num_epochs=8, train_dataset=train_ds, eval_dataset=eval_ds, train_batch_size=4,
                    learning_rate=0.05, pretrain_weights=None, save_interval_epochs=8,
                    save_dir=str(tmp_path_factory.mktemp("aug_out")), use_vdl=False)
    finally:
        log.setLevel(level)
    with open(d.val_list) as f, open(os.path.join(d.root, "val4.txt"), "w") as out:
        out.writelines(f.readlines()[:4])
    few = seg.SegDataset(d.root, os.path.join(d.root, "val4.txt"), d.label_list, num_workers=0,
                         transforms=T.Compose([T.Normalize()]))
    return model, eval_ds, few


# === The options object ===

@pytest.mark.parametrize("kwargs, key", [
    (dict(sliding_window=(32, 32, 0, 20)), "sliding_window"),
    (dict(sliding_window=(32, 32, 20, -1)), "sliding_window"),
    (dict(sliding_window=(32, 32, 40, 20)), "sliding_window"),     # stride larger than the window
    (dict(sliding_window=(0, 32, 1, 1)), "sliding_window"),
    (dict(sliding_window=(32, 32, 20)), "sliding_window"),
    (dict(sliding_window=(32.0, 32, 20, 20)), "sliding_window"),
    (dict(sliding_window="32,32,20,20"), "sliding_window"),
    (dict(scales=[]), "scales"),
    (dict(scales=[1.0, 0.0]), "scales"),
    (dict(scales=[-0.5]), "scales"),
    (dict(scales=["1.0"]), "scales"),
    (dict(scales=[float("nan")]), "scales"),
    (dict(flip_horizontal="yes"), "flip_horizontal"),
    (dict(flip_vertical=1), "flip_vertical"),
    (dict(window_batch_size=0), "window_batch_size"),
    (dict(window_batch_size=True), "window_batch_size"),
])
def test_bad_values_name_the_key(kwargs, key):
    with pytest.raises(ValueError, match=key) as info:
        TestTimeAug(**kwargs)
    assert repr(next(iter(kwargs.values())))[:6] in str(info.value)  # the value received
    with pytest.raises(ValueError, match=key):
        TestTimeAug.from_value(kwargs)


def test_unknown_keys_and_types_are_refused():
    with pytest.raises(ValueError, match="'flip'.*flip_horizontal"):
        TestTimeAug.from_value({"flip": True})
    with pytest.raises(ValueError, match="aug must be None, a dict or a TestTimeAug"):
        TestTimeAug.from_value([True])


def test_from_value_to_dict_round_trip():
    assert TestTimeAug.from_value(None) is None
    aug = TestTimeAug(flip_horizontal=True, scales=[0.75, 1, 1.25], sliding_window=[32, 32, 20, 20])
    assert TestTimeAug.from_value(aug) is aug
    as_dict = aug.to_dict()
    assert list(as_dict) == list(AUG_KEYS)
    assert as_dict["scales"] == [0.75, 1.0, 1.25] and as_dict["sliding_window"] == [32, 32, 20, 20]
    assert TestTimeAug.from_value(as_dict) == aug
    assert aug.num_views == 6 and not aug.keeps_input_size
    assert TestTimeAug(flip_horizontal=True, flip_vertical=True).flips() == [
        (False, False), (True, False), (False, True), (True, True)]
    assert TestTimeAug(scales=1.0).scales == (1.0,)


# === The core, with a fake network ===

@pytest.mark.parametrize("size, window", [
    ((53, 70), (32, 32, 20, 20)),     # odd size, overlapping windows
    ((64, 64), (64, 64, 16, 16)),     # one window
    ((20, 25), (32, 32, 16, 16)),     # smaller than the window: padded, cropped back
    ((40, 100), (16, 48, 16, 48)),    # stride = window: no overlap
])
def test_windows_padding_and_flips_are_undone_exactly(size, window):
    chw = random_chw(*size)
    plain = pixelwise_run(chw[None])[0]
    aug = TestTimeAug(flip_horizontal=True, flip_vertical=True, sliding_window=window)
    out = augmented_scores(pixelwise_run, chw, aug)
    assert out.shape == (NUM_CLASSES,) + size and out.dtype == np.float32
    np.testing.assert_allclose(out, plain, atol=1e-6)


def test_window_origins_cover_every_pixel_inside_the_image():
    for height, width, window in [(53, 70, (32, 32, 20, 20)), (1024, 2048, (512, 512, 341, 341)),
                                  (32, 32, (32, 32, 5, 5)), (100, 33, (7, 33, 7, 1))]:
        cover = np.zeros((height, width), int)
        for y, x in window_origins(height, width, window):
            assert 0 <= y <= height - window[0] and 0 <= x <= width - window[1]
            cover[y:y + window[0], x:x + window[1]] += 1
        assert cover.min() >= 1
    # 53 x 70, windows 32 every 20: the last row and column end at the border (21, 38).
    assert window_origins(53, 70, (32, 32, 20, 20)) == [
        (0, 0), (0, 20), (0, 38), (20, 0), (20, 20), (20, 38), (21, 0), (21, 20), (21, 38)]


def test_overlapping_windows_are_averaged():
    # A fake network that answers each window with its own constant: a pixel covered by
    # two windows gets the mean of their constants.
    calls = []

    def run(batch):
        out = np.zeros((len(batch), 2) + batch.shape[2:], "float32")
        for k in range(len(batch)):
            calls.append(len(calls))
            out[k, 0] = len(calls)
            out[k, 1] = 1 - len(calls)
        return out

    out = augmented_scores(run, np.zeros((3, 10, 30), "float32"),
                           TestTimeAug(sliding_window=(10, 20, 10, 10), window_batch_size=1))
    assert calls == [0, 1]                  # windows at x = 0 and x = 10
    np.testing.assert_array_equal(out[0, :, :10], 1)
    np.testing.assert_array_equal(out[0, :, 10:20], 1.5)
    np.testing.assert_array_equal(out[0, :, 20:], 2)


def test_a_2048x1024_image_never_sends_more_than_one_window_batch():
    """The memory bound: a 2048 x 1024 (w x h) image with 512 x 512 windows (stride 384)
    has 3 x 5 = 15 windows; the network sees at most window_batch_size of them at once."""
    seen = []

    def run(batch):
        seen.append(batch.shape)
        return np.full((len(batch), 2) + batch.shape[2:], 0.5, "float32")

    chw = np.zeros((3, 1024, 2048), "float32")
    for batch_size in (1, 4):
        seen.clear()
        aug = TestTimeAug(sliding_window=(512, 512, 384, 384), window_batch_size=batch_size)
        out = augmented_scores(run, chw, aug)
        assert out.shape == (2, 1024, 2048)
        assert sum(shape[0] for shape in seen) == 15
        assert max(shape[0] for shape in seen) == batch_size
        assert all(shape[1:] == (3, 512, 512) for shape in seen)
    seen.clear()
    augmented_scores(run, chw, TestTimeAug(sliding_window=(512, 512, 384, 384), flip_horizontal=True,
                                           scales=[0.5, 1.0]))
    assert max(shape[0] for shape in seen) == 4 and all(s[1:] == (3, 512, 512) for s in seen)


def test_multi_scale_views_come_back_at_the_image_size():
    chw = random_chw(53, 70)
    sizes = []

    def run(batch):
        sizes.append(batch.shape[2:])
        return pixelwise_run(batch)

    out = augmented_scores(run, chw, {"scales": [0.5, 1.0, 1.5]})
    assert sizes == [(27, 35), (53, 70), (80, 105)]
    assert out.shape == (NUM_CLASSES, 53, 70)
    np.testing.assert_allclose(out.sum(axis=0), 1.0, atol=1e-5)  # still probabilities


def test_a_wrong_run_output_is_a_clear_error():
    with pytest.raises(ValueError, match="run returned scores of shape"):
        augmented_scores(lambda b: b[:, :, :5], random_chw(16, 16), TestTimeAug())


# === predict and evaluate on a trained model ===

def raw_samples(dataset):
    raw = copy.copy(dataset)
    raw.transforms = None  # images and labels as read
    return raw


def old_predict(model, images, transforms):
    """predict as it was before test-time augmentation existed."""
    samples = [transforms({"image": im, "trans_info": []}) for im in images]
    results = [None] * len(samples)
    model.net.eval()
    for indices, batch in same_shape_runs([s["image"] for s in samples]):
        scores = forward_scores(model.net, batch)
        for j, i in enumerate(indices):
            restored = restore_tensor_to_input(scores[j:j + 1], samples[i]["trans_info"])[0]
            results[i] = restored.transpose([1, 2, 0]).numpy()
    return results


def test_aug_none_is_bit_identical_to_the_previous_code(trained):
    model, eval_ds, _ = trained
    transforms = T.Compose([T.Resize(48), T.Normalize()])
    images = [image(64, 64, 1), image(53, 70, 2), image(64, 64, 3)]
    expected = old_predict(model, images, transforms)
    for result, score_map in zip(model.predict(images, transforms=transforms), expected):
        np.testing.assert_array_equal(result["score_map"], score_map)
        np.testing.assert_array_equal(result["label_map"], score_map.argmax(axis=2))
    # evaluate: the confusion matrix of the old loop (batches of 4), summed by hand.
    cm = np.zeros((NUM_CLASSES, NUM_CLASSES), np.int64)
    raw = [raw_samples(eval_ds).read_sample(i) for i in range(len(eval_ds))]
    for start in range(0, len(raw), 4):
        chunk = raw[start:start + 4]
        for (im, label), score_map in zip(chunk, old_predict(model, [im for im, _ in chunk],
                                                            eval_ds.transforms)):
            cm += confusion_matrix(label, score_map.argmax(axis=2), NUM_CLASSES)
    _, details = model.evaluate(eval_ds, batch_size=4, return_details=True)
    assert details["confusion_matrix"] == cm.tolist()


def test_a_window_as_large_as_the_image_equals_plain_prediction(trained):
    model = trained[0]
    im = image(64, 64, 5)
    plain = model.predict(im)
    windowed = model.predict(im, aug={"sliding_window": (64, 64, 32, 32)})
    np.testing.assert_array_equal(windowed["score_map"], plain["score_map"])
    np.testing.assert_array_equal(windowed["label_map"], plain["label_map"])


def test_flip_of_a_symmetric_input_gives_the_same_map(trained):
    model = trained[0]
    half = image(64, 32, 6)
    symmetric = np.concatenate([half, half[:, ::-1]], axis=1)      # left-right mirror image
    plain = model.predict(symmetric)["score_map"]
    flipped = model.predict(symmetric, aug={"flip_horizontal": True})
    # The mirrored view IS the input, so the result is the mean of the map and its mirror:
    np.testing.assert_allclose(flipped["score_map"], (plain + plain[:, ::-1]) / 2, atol=1e-6)
    np.testing.assert_allclose(flipped["score_map"], flipped["score_map"][:, ::-1], atol=1e-6)
    np.testing.assert_array_equal(flipped["label_map"], flipped["label_map"][:, ::-1])
    assert (flipped["label_map"] == model.predict(symmetric)["label_map"]).mean() > 0.98
    upright = np.concatenate([half[:32], half[:32][::-1]], axis=0)  # top-bottom mirror image
    vflip = model.predict(upright, aug={"flip_vertical": True})["label_map"]
    np.testing.assert_array_equal(vflip, vflip[::-1])


def test_odd_sizes_come_back_at_their_size(trained):
    model = trained[0]
    aug = {"sliding_window": (32, 32, 20, 20), "scales": [0.75, 1.0], "flip_horizontal": True}
    for transforms in (None, T.Compose([T.Resize(48), T.Normalize()])):
        results = model.predict([image(53, 70, 7), image(20, 25, 8)], transforms=transforms, aug=aug)
        assert [r["label_map"].shape for r in results] == [(53, 70), (20, 25)]
        assert [r["score_map"].shape for r in results] == [(53, 70, 3), (20, 25, 3)]
        assert results[0]["label_map"].dtype == np.uint8
        np.testing.assert_allclose(results[0]["score_map"].sum(axis=2), 1.0, atol=1e-5)


def test_multi_scale_is_not_worse_than_plain(trained):
    model, eval_ds, _ = trained
    plain = model.evaluate(eval_ds)["miou"]
    multi = model.evaluate(eval_ds, aug={"scales": [0.75, 1.0, 1.25]})["miou"]
    print(f"mIoU plain {plain:.4f}, scales 0.75/1/1.25 {multi:.4f}")
    assert plain > 0.6, plain  # the model did learn
    assert multi >= plain, (multi, plain)


def test_evaluate_net_with_windows_agrees_with_predict(trained):
    model, _, eval_ds = trained
    aug = TestTimeAug(sliding_window=(48, 48, 16, 16), window_batch_size=3)
    metrics, cm = evaluate_net(model.net, eval_ds, NUM_CLASSES, eval_ds.transforms, aug=aug)
    expected = np.zeros_like(cm)
    for i in range(len(eval_ds)):
        im, label = raw_samples(eval_ds).read_sample(i)
        pred = model.predict(im, transforms=eval_ds.transforms, aug=aug)["label_map"]
        expected += confusion_matrix(label, pred, NUM_CLASSES)
    np.testing.assert_array_equal(cm, expected)


def test_bad_aug_in_predict_and_evaluate(trained):
    model, _, eval_ds = trained
    with pytest.raises(ValueError, match="sliding_window"):
        model.predict(image(32, 32), aug={"sliding_window": (16, 16, 0, 8)})
    with pytest.raises(ValueError, match="scales"):
        model.evaluate(eval_ds, aug={"scales": []})
