"""Tests of paddlex_seg.data.transforms: shapes, label safety, padding, maths, undo, config."""
import cv2
import numpy as np
import pytest
import yaml

import paddlex_seg.data.transforms as T

LABEL_IDS = (0, 3, 7)  # gaps between ids: linear interpolation would invent 1, 2, 4, 5, 6


def make_sample(h=37, w=53, dtype=np.uint8, seed=0, label_dtype=np.uint8):
    """A smooth-ish BGR image and a blocky label with ids LABEL_IDS plus some 255."""
    rng = np.random.RandomState(seed)
    image = cv2.GaussianBlur(rng.randint(0, 256, (h, w, 3)).astype(np.uint8), (5, 5), 0)
    label = np.asarray(LABEL_IDS, dtype=label_dtype)[rng.randint(0, 3, (h, w))]
    label[:3, :3] = 255
    return {"image": image.astype(dtype), "label": label}


# Every operator, in a form that acts on a 37 x 53 sample (probabilities forced to 1).
ALL_OPS = {
    "Resize": lambda: T.Resize(64),
    "Resize_hw": lambda: T.Resize([40, 24]),
    "Resize_keep_ratio": lambda: T.Resize([40, 30], interp="CUBIC", keep_ratio=True),
    "Resize_random_interp": lambda: T.Resize(48, interp="RANDOM"),
    "RandomResize": lambda: T.RandomResize([32, [20, 40]]),
    "ResizeByShort": lambda: T.ResizeByShort(32, max_size=45),
    "RandomResizeByShort": lambda: T.RandomResizeByShort([20, 30]),
    "ResizeByLong": lambda: T.ResizeByLong(64),
    "Padding": lambda: T.Padding(),
    "Padding_center": lambda: T.Padding(64, pad_mode=1),
    "Padding_offsets": lambda: T.Padding([64, 80], pad_mode=-1, offsets=[3, 5]),
    "CenterCrop": lambda: T.CenterCrop(20),
    "ResizeStepScaling": lambda: T.ResizeStepScaling(0.5, 2.0, 0.25),
    "RandomPaddingCrop": lambda: T.RandomPaddingCrop(48),
    "RandomCrop": lambda: T.RandomCrop(32),
    "RandomScaleAspect": lambda: T.RandomScaleAspect(),
    "RandomHorizontalFlip": lambda: T.RandomHorizontalFlip(1.0),
    "RandomVerticalFlip": lambda: T.RandomVerticalFlip(1.0),
    "RandomRotate": lambda: T.RandomRotate(30),
    "RandomBlur": lambda: T.RandomBlur(1.0),
    "RandomDistort": lambda: T.RandomDistort(brightness_prob=1, contrast_prob=1, saturation_prob=1,
                                             hue_prob=1, shuffle_channel=True),
    "Normalize": lambda: T.Normalize(),
}
# Output (h, w) for a 37 x 53 input, where it is fixed.
EXPECTED_HW = {
    "Resize": (64, 64), "Resize_hw": (40, 24), "Resize_keep_ratio": (21, 30),
    "Resize_random_interp": (48, 48), "ResizeByShort": (31, 45), "ResizeByLong": (45, 64),
    "Padding": (64, 64), "Padding_center": (64, 64), "Padding_offsets": (64, 80),
    "CenterCrop": (20, 20), "RandomPaddingCrop": (48, 48), "RandomCrop": (32, 32),
    "RandomScaleAspect": (37, 53), "RandomHorizontalFlip": (37, 53), "RandomVerticalFlip": (37, 53),
    "RandomBlur": (37, 53), "RandomDistort": (37, 53), "Normalize": (37, 53),
}
PIXEL_OPS = {"RandomBlur", "RandomDistort", "Normalize"}


# ------------------------------------------------------------------ shapes, dtypes, labels
@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
@pytest.mark.parametrize("name", sorted(ALL_OPS))
def test_shapes_and_dtypes(name, dtype):
    sample = make_sample(dtype=dtype)
    out = ALL_OPS[name]()(sample)
    image, label = out["image"], out["label"]
    assert image.ndim == 3 and image.shape[2] == 3
    assert label.shape == image.shape[:2]
    assert label.dtype == np.uint8
    want = np.float32 if name == "Normalize" else dtype
    assert image.dtype == want, (name, image.dtype)
    if name in EXPECTED_HW:
        assert image.shape[:2] == EXPECTED_HW[name]


@pytest.mark.parametrize("label_dtype", [np.uint8, np.int32, np.int64])
@pytest.mark.parametrize("name", sorted(set(ALL_OPS) - PIXEL_OPS))
def test_geometric_ops_keep_label_ids(name, label_dtype):
    for seed in range(3):
        np.random.seed(seed)
        sample = make_sample(seed=seed, label_dtype=label_dtype)
        out = ALL_OPS[name]()(sample)
        assert out["label"].dtype == label_dtype
        assert set(np.unique(out["label"])) <= set(LABEL_IDS) | {255}, name


@pytest.mark.parametrize("name", sorted(PIXEL_OPS))
def test_pixel_ops_leave_label_alone(name):
    sample = make_sample()
    before = sample["label"].copy()
    out = ALL_OPS[name]()(sample)
    np.testing.assert_array_equal(out["label"], before)


def test_ops_work_without_label():
    for name, factory in ALL_OPS.items():
        sample = make_sample()
        del sample["label"]
        out = factory()(sample)
        assert "label" not in out and out["image"].ndim == 3, name


def test_label_resize_is_nearest():
    sample = make_sample()
    want = cv2.resize(sample["label"], (64, 48), interpolation=cv2.INTER_NEAREST)
    out = T.Resize([48, 64], interp="CUBIC")(sample)
    np.testing.assert_array_equal(out["label"], want)


def test_resize_sizes():
    img = {"image": np.zeros((30, 60, 3), np.uint8)}
    assert T.Resize([40, 50])(dict(img))["image"].shape[:2] == (40, 50)          # [h, w]
    assert T.Resize([40, 50], keep_ratio=True)(dict(img))["image"].shape[:2] == (25, 50)
    assert T.ResizeByShort(60)(dict(img))["image"].shape[:2] == (60, 120)
    assert T.ResizeByShort(60, max_size=100)(dict(img))["image"].shape[:2] == (50, 100)
    assert T.ResizeByLong(30)(dict(img))["image"].shape[:2] == (15, 30)


def test_resize_step_scaling_factors():
    seen = set()
    for seed in range(40):
        np.random.seed(seed)
        out = T.ResizeStepScaling(0.5, 1.5, 0.5)({"image": np.zeros((20, 40, 3), np.uint8)})
        seen.add(out["image"].shape[:2])
    assert seen == {(10, 20), (20, 40), (30, 60)}


def test_random_scale_aspect_and_crop_ranges():
    for seed in range(20):
        np.random.seed(seed)
        out = T.RandomCrop(scaling=[0.5, 0.5], aspect_ratio=[1.0, 1.0])(make_sample(40, 60))
        assert out["image"].shape[:2] == (20, 30)
    np.random.seed(0)
    assert T.RandomScaleAspect(min_scale=0)(make_sample())["image"].shape[:2] == (37, 53)


# ------------------------------------------------------------------ padding and flips
@pytest.mark.parametrize("dtype,fill", [(np.uint8, 128), (np.float32, 127.5)])
@pytest.mark.parametrize("pad_mode,offsets,top,left", [
    (0, None, 0, 0), (1, None, 13, 5), (2, None, 27, 11), (-1, [4, 6], 6, 4)])
def test_padding_values_and_placement(pad_mode, offsets, top, left, dtype, fill):
    sample = make_sample(dtype=dtype)
    image, label = sample["image"].copy(), sample["label"].copy()
    out = T.Padding([64, 64], pad_mode=pad_mode, offsets=offsets)(sample)
    inside = (slice(top, top + 37), slice(left, left + 53))
    np.testing.assert_array_equal(out["image"][inside], image)
    np.testing.assert_array_equal(out["label"][inside], label)
    mask = np.ones((64, 64), bool)
    mask[inside] = False
    assert np.all(out["image"][mask] == fill)
    assert np.all(out["label"][mask] == 255)
    assert out["trans_info"] == [("padding", (37, 53), (top, left))]


def test_padding_to_size_divisor_and_too_large():
    out = T.Padding(size_divisor=16)({"image": np.zeros((33, 48, 3), np.uint8)})
    assert out["image"].shape[:2] == (48, 48)
    with pytest.raises(ValueError, match="target_size"):
        T.Padding(32)({"image": np.zeros((33, 20, 3), np.uint8)})


def test_custom_padding_values_and_random_padding_crop():
    np.random.seed(0)
    out = T.RandomPaddingCrop([50, 60], im_padding_value=[1, 2, 3], label_padding_value=9)(
        make_sample(20, 30))
    assert out["image"].shape[:2] == (50, 60)
    assert out["image"][45, 55].tolist() == [1, 2, 3] and out["label"][45, 55] == 9
    np.testing.assert_array_equal(out["image"][:20, :30], make_sample(20, 30)["image"])


def test_random_rotate_fills_corners():
    np.random.seed(1)
    out = T.RandomRotate(45)(make_sample(40, 40))
    assert out["image"].shape[0] > 40
    assert out["label"][0, 0] == 255 and np.allclose(out["image"][0, 0], 128)


@pytest.mark.parametrize("op,axis", [(T.RandomHorizontalFlip, 1), (T.RandomVerticalFlip, 0)])
def test_flips_move_image_and_label_together(op, axis):
    sample = make_sample()
    sample["image"][:, :, 0] = sample["label"]  # the label painted into the image
    image, label = sample["image"].copy(), sample["label"].copy()
    out = op(prob=1.0)(sample)
    np.testing.assert_array_equal(out["image"], np.flip(image, axis))
    np.testing.assert_array_equal(out["label"], np.flip(label, axis))
    np.testing.assert_array_equal(out["image"][:, :, 0], out["label"])
    untouched = op(prob=0.0)(make_sample())
    np.testing.assert_array_equal(untouched["label"], label)


# ------------------------------------------------------------------ pixel values
def test_normalize_by_hand():
    image = np.array([[[0, 51, 255]]], np.uint8)
    out = T.Normalize()({"image": image})["image"]
    np.testing.assert_allclose(out[0, 0], [-1.0, 51 / 255 * 2 - 1, 1.0], atol=1e-6)
    assert out.dtype == np.float32

    op = T.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225],
                     min_val=[0, 10, 0], max_val=[255, 60, 100])
    want = [((0 - 0) / 255 - 0.485) / 0.229, ((51 - 10) / 50 - 0.456) / 0.224,
            ((255 - 0) / 100 - 0.406) / 0.225]
    np.testing.assert_allclose(op({"image": image})["image"][0, 0], want, rtol=1e-6)
    # the float path gives the same numbers as the uint8 look-up table
    np.testing.assert_allclose(op({"image": image.astype(np.float32)})["image"][0, 0], want, rtol=1e-6)

    raw = T.Normalize(mean=[100, 100, 100], std=[50, 50, 50], is_scale=False)
    np.testing.assert_allclose(raw({"image": image})["image"][0, 0], [-2.0, -0.98, 3.1], rtol=1e-6)


def test_random_distort_behaviour():
    sample = make_sample()
    image = sample["image"].copy()
    assert np.array_equal(T.RandomDistort(0.5, 0, 0.5, 0, 0.5, 0, 18, 0)(sample)["image"], image)
    # A grey image has no saturation or hue to change.
    grey = np.full((8, 8, 3), 90, np.uint8)
    for seed in range(5):
        np.random.seed(seed)
        out = T.RandomDistort(0.5, 0, 0.5, 0, 0.5, 1, 60, 1)({"image": grey.copy()})["image"]
        assert np.abs(out.astype(int) - 90).max() <= 1
    # Brightness scales the pixels, uint8 saturates. Fixed order draws: order, gate, factor.
    np.random.seed(3)
    np.random.randint(2), np.random.random()
    factor = np.random.uniform(0.5, 1.5)
    np.random.seed(3)
    out = T.RandomDistort(0.5, 1, 0, 0, 0, 0, 0, 0, random_apply=False)({"image": image.copy()})["image"]
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, np.clip(np.floor(image * factor + 0.5), 0, 255))
    out_f = T.RandomDistort(brightness_prob=1, contrast_prob=1, saturation_prob=1, hue_prob=1)(
        make_sample(dtype=np.float32))["image"]
    assert out_f.dtype == np.float32 and out_f.shape == (37, 53, 3)


# ------------------------------------------------------------------ Compose
def test_compose_output_and_rgb():
    image = np.zeros((10, 12, 3), np.uint8)
    image[..., 0], image[..., 1], image[..., 2] = 10, 20, 30  # B, G, R
    sample = {"image": image, "label": np.zeros((10, 12), np.uint8)}
    out = T.Compose([T.Resize([8, 6])])(sample)
    assert out["image"].shape == (3, 8, 6) and out["image"].dtype == np.float32
    assert out["image"].flags.c_contiguous
    assert out["image"][:, 0, 0].tolist() == [30, 20, 10]
    assert out["label"].shape == (8, 6)
    assert "trans_info" not in sample and sample["image"] is image  # caller's dict untouched
    bgr = T.Compose([T.Resize([8, 6])], to_rgb=False)(sample)
    assert bgr["image"][:, 0, 0].tolist() == [10, 20, 30]
    normed = T.Compose([T.Normalize()])(sample)["image"]
    np.testing.assert_allclose(normed[:, 0, 0], np.array([30, 20, 10]) / 127.5 - 1, atol=1e-6)


def test_compose_rejects_bad_samples():
    tf = T.Compose([T.Resize(8)])
    with pytest.raises(ValueError, match="label"):
        tf({"image": np.zeros((10, 12, 3), np.uint8), "label": np.zeros((10, 11), np.uint8)})
    with pytest.raises(ValueError, match="image"):
        tf({"image": np.zeros((10, 12), np.uint8)})
    with pytest.raises(ValueError, match="image"):
        tf({"label": np.zeros((10, 12), np.uint8)})


# ------------------------------------------------------------------ undoing geometry
EVAL_PIPELINES = {
    "resize": [T.Resize([64, 48])],
    "resize_keep_ratio": [T.Resize([64, 64], keep_ratio=True)],
    "by_short": [T.ResizeByShort(48, max_size=70)],
    "by_long": [T.ResizeByLong(96)],
    "padding": [T.Padding(64, pad_mode=1)],
    "padding_divisor": [T.Padding(size_divisor=32, pad_mode=2)],
    "center_crop": [T.CenterCrop([30, 40])],
    "combo": [T.ResizeByShort(50), T.Padding([64, 96], pad_mode=-1, offsets=[5, 2]),
              T.Resize(80), T.Padding(size_divisor=32), T.Normalize()],
}


@pytest.mark.parametrize("name", sorted(EVAL_PIPELINES))
def test_restore_to_input_shapes(name):
    sample = make_sample(37, 53)
    out = T.Compose(EVAL_PIPELINES[name])(sample)
    info = out["trans_info"]
    assert len(info) == sum(not isinstance(op, T.Normalize) for op in EVAL_PIPELINES[name])
    h, w = out["image"].shape[1:]
    label_map = T.restore_to_input(out["label"], info)
    assert label_map.shape == (37, 53) and label_map.dtype == np.uint8
    assert set(np.unique(label_map)) <= set(LABEL_IDS) | {255}
    hwc = T.restore_to_input(np.random.rand(h, w, 5).astype(np.float32), info)
    assert hwc.shape == (37, 53, 5) and hwc.dtype == np.float32
    nchw = T.restore_to_input(np.ones((2, 4, h, w), np.float32), info)
    assert nchw.shape == (2, 4, 37, 53)
    if name == "center_crop":
        assert np.all(nchw[:, :, 0] == 0) and np.all(label_map[0] == 255)
    else:
        np.testing.assert_allclose(nchw, 1.0, atol=1e-6)  # resizing a constant keeps it


def test_restore_is_exact_where_it_can_be():
    sample = make_sample(20, 30)
    label = sample["label"].copy()
    # padding only, and a 2x nearest upscale: both undo exactly
    for ops in ([T.Padding([40, 41], pad_mode=1)], [T.Resize([40, 60])],
                [T.Resize([40, 60]), T.Padding(64, pad_mode=2)]):
        out = T.Compose(ops)(dict(sample))
        np.testing.assert_array_equal(T.restore_to_input(out["label"], out["trans_info"]), label)
    # a crop puts the kept window back in place
    out = T.Compose([T.CenterCrop([10, 12])])(dict(sample))
    back = T.restore_to_input(out["label"], out["trans_info"])
    np.testing.assert_array_equal(back[5:15, 9:21], label[5:15, 9:21])


def test_restore_score_maps_match_opencv_per_channel():
    rng = np.random.RandomState(0)
    scores = rng.rand(2, 3, 16, 24).astype(np.float32)
    info = [("resize", (37, 53))]
    back = T.restore_to_input(scores, info)
    want = cv2.resize(scores[1, 2], (53, 37), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_allclose(back[1, 2], want, atol=1e-6)
    hwc = T.restore_to_input(scores[0].transpose(1, 2, 0), info)
    np.testing.assert_allclose(hwc[..., 2], back[0, 2], atol=1e-6)


def test_restore_tensor_matches_numpy():
    import paddle
    sample = make_sample(37, 53)
    out = T.Compose(EVAL_PIPELINES["combo"])(sample)
    h, w = out["image"].shape[1:]
    scores = np.random.RandomState(1).rand(1, 3, h, w).astype(np.float32)
    want = T.restore_to_input(scores, out["trans_info"])
    got = T.restore_tensor_to_input(paddle.to_tensor(scores), out["trans_info"]).numpy()
    assert got.shape == want.shape == (1, 3, 37, 53)
    np.testing.assert_allclose(got, want, atol=1e-4)
    crop = T.Compose([T.CenterCrop([30, 40])])(make_sample())
    got = T.restore_tensor_to_input(paddle.ones([1, 2, 30, 40]), crop["trans_info"]).numpy()
    assert got.shape == (1, 2, 37, 53) and got[0, 0, 0, 0] == 0 and got[0, 0, 20, 20] == 1


def test_restore_rejects_bad_input():
    with pytest.raises(ValueError, match="trans_info"):
        T.restore_to_input(np.zeros((4, 4)), [("rotate", (4, 4))])
    with pytest.raises(ValueError, match="pred"):
        T.restore_to_input(np.zeros(4), [])
    with pytest.raises(ValueError, match="interp"):
        T.restore_to_input(np.zeros((4, 4)), [], interp="cubic")


# ------------------------------------------------------------------ config round trip
def test_config_round_trip_gives_identical_outputs():
    tf = T.Compose(EVAL_PIPELINES["combo"] + [T.CenterCrop(32)], to_rgb=False)
    config = yaml.safe_load(yaml.safe_dump(tf.to_config()))  # as written to model.yml
    rebuilt = T.build_transforms(config)
    assert rebuilt.to_config() == tf.to_config()
    assert rebuilt.to_rgb is False
    a, b = tf(make_sample()), rebuilt(make_sample())
    np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["label"], b["label"])
    assert a["trans_info"] == b["trans_info"]


def test_config_round_trip_of_every_operator():
    tf = T.Compose([factory() for factory in ALL_OPS.values()])
    rebuilt = T.build_transforms(yaml.safe_load(yaml.safe_dump(tf.to_config())))
    assert rebuilt.to_config() == tf.to_config()
    for op in tf.transforms:
        name, args = op.to_config()
        assert name == type(op).__name__
        assert type(op)(**args).to_config() == (name, args)
    for op, twin in zip(tf.transforms, rebuilt.transforms):
        np.random.seed(5)
        a = op(make_sample())
        np.random.seed(5)
        b = twin(make_sample())
        np.testing.assert_array_equal(a["image"], b["image"])
        np.testing.assert_array_equal(a["label"], b["label"])


def test_build_transforms_rejects_bad_config():
    with pytest.raises(ValueError, match="unknown transform"):
        T.build_transforms([["Sharpen", {}]])
    with pytest.raises(ValueError, match="Resize"):
        T.build_transforms([["Resize", {"size": 3}]])
    with pytest.raises(ValueError, match="config_list"):
        T.build_transforms([])
    # PaddleX's model.yml style {name: args} is accepted too
    assert isinstance(T.build_transforms([{"Resize": {"target_size": 8}}]), T.Compose)


# ------------------------------------------------------------------ argument checks
BAD_ARGUMENTS = [
    (lambda: T.Compose([]), "transforms"),
    (lambda: T.Compose([lambda s: s]), "transforms"),
    (lambda: T.Compose([T.Resize()], to_rgb="yes"), "to_rgb"),
    (lambda: T.Resize(0), "target_size"),
    (lambda: T.Resize([1, 2, 3]), "target_size"),
    (lambda: T.Resize(512.0), "target_size"),
    (lambda: T.Resize(512, interp="BILINEAR"), "interp"),
    (lambda: T.Resize(512, keep_ratio=1), "keep_ratio"),
    (lambda: T.RandomResize([]), "target_sizes"),
    (lambda: T.RandomResize([32, -1]), "target_sizes"),
    (lambda: T.RandomResize([32], interp="x"), "interp"),
    (lambda: T.ResizeByShort(0), "short_size"),
    (lambda: T.ResizeByShort(256, max_size=0), "max_size"),
    (lambda: T.ResizeByShort(256, interp=None), "interp"),
    (lambda: T.RandomResizeByShort(256), "short_sizes"),
    (lambda: T.RandomResizeByShort([256, 0]), "short_sizes"),
    (lambda: T.RandomResizeByShort([256], max_size=-5), "max_size"),
    (lambda: T.ResizeByLong(-3), "long_size"),
    (lambda: T.ResizeByLong(256, interp="linear"), "interp"),
    (lambda: T.Padding(target_size=[0, 4]), "target_size"),
    (lambda: T.Padding(pad_mode=3), "pad_mode"),
    (lambda: T.Padding(pad_mode=-1), "offsets"),
    (lambda: T.Padding(pad_mode=-1, offsets=[1, -1]), "offsets"),
    (lambda: T.Padding(im_padding_value="grey"), "im_padding_value"),
    (lambda: T.Padding(label_padding_value=256), "label_padding_value"),
    (lambda: T.Padding(size_divisor=0), "size_divisor"),
    (lambda: T.CenterCrop(-1), "crop_size"),
    (lambda: T.ResizeStepScaling(0, 1.25), "min_scale_factor"),
    (lambda: T.ResizeStepScaling(0.75, 0.5), "max_scale_factor"),
    (lambda: T.ResizeStepScaling(0.75, 1.25, -0.1), "scale_step_size"),
    (lambda: T.RandomPaddingCrop(crop_size=(512,)), "crop_size"),
    (lambda: T.RandomPaddingCrop(im_padding_value=[1, "a", 2]), "im_padding_value"),
    (lambda: T.RandomPaddingCrop(label_padding_value=-1), "label_padding_value"),
    (lambda: T.RandomCrop(crop_size=0), "crop_size"),
    (lambda: T.RandomCrop(aspect_ratio=[2.0, 0.5]), "aspect_ratio"),
    (lambda: T.RandomCrop(scaling=[0.3, 1.5]), "scaling"),
    (lambda: T.RandomCrop(scaling=[0, 1]), "scaling"),
    (lambda: T.RandomScaleAspect(min_scale=1.5), "min_scale"),
    (lambda: T.RandomScaleAspect(aspect_ratio=-0.3), "aspect_ratio"),
    (lambda: T.RandomHorizontalFlip(prob=1.5), "prob"),
    (lambda: T.RandomVerticalFlip(prob=-0.1), "prob"),
    (lambda: T.RandomRotate(max_rotation=200), "max_rotation"),
    (lambda: T.RandomRotate(im_padding_value=None), "im_padding_value"),
    (lambda: T.RandomRotate(label_padding_value=1.5), "label_padding_value"),
    (lambda: T.RandomBlur(prob="0.1"), "prob"),
    (lambda: T.RandomDistort(brightness_range=1.5), "brightness_range"),
    (lambda: T.RandomDistort(brightness_prob=2), "brightness_prob"),
    (lambda: T.RandomDistort(contrast_range=-1), "contrast_range"),
    (lambda: T.RandomDistort(contrast_prob=None), "contrast_prob"),
    (lambda: T.RandomDistort(saturation_range=float("nan")), "saturation_range"),
    (lambda: T.RandomDistort(saturation_prob=-1), "saturation_prob"),
    (lambda: T.RandomDistort(hue_range=400), "hue_range"),
    (lambda: T.RandomDistort(hue_prob=1.1), "hue_prob"),
    (lambda: T.RandomDistort(random_apply=0), "random_apply"),
    (lambda: T.RandomDistort(count=5), "count"),
    (lambda: T.RandomDistort(shuffle_channel="no"), "shuffle_channel"),
    (lambda: T.Normalize(mean=[0.5, 0.5]), "std"),
    (lambda: T.Normalize(mean=0.5), "mean"),
    (lambda: T.Normalize(std=[0.5, 0, 0.5]), "std"),
    (lambda: T.Normalize(min_val=[0, 0, 0], max_val=[255, 0, 255]), "max_val"),
    (lambda: T.Normalize(min_val=[0, 0]), "min_val"),
    (lambda: T.Normalize(max_val="255"), "max_val"),
    (lambda: T.Normalize(is_scale=None), "is_scale"),
]


@pytest.mark.parametrize("factory,argument", BAD_ARGUMENTS, ids=[a for _, a in BAD_ARGUMENTS])
def test_bad_argument_names_itself(factory, argument):
    with pytest.raises(ValueError, match=argument):
        factory()


def test_bad_call_time_inputs():
    with pytest.raises(ValueError, match="crop_size"):
        T.CenterCrop(64)(make_sample())
    with pytest.raises(ValueError, match="mean"):
        T.Normalize()({"image": np.zeros((4, 4, 4), np.uint8)})
    with pytest.raises(ValueError, match="im_padding_value"):
        T.Padding(64)({"image": np.zeros((4, 4, 4), np.uint8)})


# ------------------------------------------------------------------ determinism
def test_same_seed_same_output():
    tf = T.Compose([T.RandomResizeByShort([40, 48, 56]), T.ResizeStepScaling(), T.RandomRotate(),
                    T.RandomScaleAspect(), T.RandomCrop(), T.RandomPaddingCrop(48),
                    T.RandomHorizontalFlip(), T.RandomVerticalFlip(), T.RandomBlur(0.5),
                    T.RandomDistort(shuffle_channel=True), T.Resize(48, interp="RANDOM"), T.Normalize()])
    runs = []
    for seed in (7, 7, 8):
        np.random.seed(seed)
        runs.append([tf(make_sample()) for _ in range(3)])
    for a, b in zip(runs[0], runs[1]):
        np.testing.assert_array_equal(a["image"], b["image"])
        np.testing.assert_array_equal(a["label"], b["label"])
    assert any(not np.array_equal(a["image"], c["image"]) for a, c in zip(runs[0], runs[2]))
