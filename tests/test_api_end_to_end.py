"""The user API end to end on CPU: train → checkpoints → evaluate → predict →
save / load_model, for every model class, on tiny synthetic data; the errors a user
meets on the way; and one small model that must actually learn (mIoU >= 0.85)."""
import os
import shutil
import time

import cv2
import numpy as np
import paddle
import paddle.nn.functional as F
import pytest
import yaml

import paddlex_seg as seg
from paddlex_seg import transforms as T
from paddlex_seg.engine.metrics import metrics_from_confusion

NUM_CLASSES = 3
CHECKPOINT_FILES = {"model.pdparams", "model.pdopt", "model.yml"}
METRIC_KEYS = {"miou", "category_iou", "oacc", "category_acc", "kappa", "category_F1-score"}


def eval_transforms():
    # Resizing in the eval transforms: predictions and metrics must still come back at
    # the original (64 x 64, or any other) size.
    return T.Compose([T.Resize(48), T.Normalize()])


def train_transforms():
    return T.Compose([T.RandomHorizontalFlip(), T.Normalize()])


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = seg.make_synthetic_dataset(str(tmp_path_factory.mktemp("data")), num_train=8,
                                   num_val=4, image_size=(64, 64), num_classes=NUM_CLASSES)
    with open(d.train_list) as f, open(os.path.join(d.root, "train2.txt"), "w") as out:
        out.writelines(f.readlines()[:2])
    with open(d.val_list) as f, open(os.path.join(d.root, "val2.txt"), "w") as out:
        out.writelines(f.readlines()[:2])
    return d


def datasets(d, train_list=None, val_list=None, num_workers=0):
    train_ds = seg.SegDataset(d.root, train_list or d.train_list, d.label_list,
                              transforms=train_transforms(), shuffle=True, num_workers=num_workers)
    eval_ds = seg.SegDataset(d.root, val_list or d.val_list, d.label_list,
                             transforms=eval_transforms(), num_workers=num_workers)
    return train_ds, eval_ds


# name -> (constructor kwargs, train kwargs, data set options). DeepLabV3P on
# ResNet50_vd is the slow one: one step of batch 2 at output stride 16.
RUNS = {
    "UNet": ({}, dict(num_epochs=2, train_batch_size=4), {}),
    "FastSCNN": ({}, dict(num_epochs=2, train_batch_size=4), dict(num_workers="auto")),
    "BiSeNetV2": ({}, dict(num_epochs=2, train_batch_size=4), {}),
    "HRNet": (dict(width=18), dict(num_epochs=2, train_batch_size=4), {}),
    "DeepLabV3P": (dict(backbone="ResNet50_vd", output_stride=16),
                   dict(num_epochs=1, train_batch_size=2),
                   dict(train_list="train2.txt", val_list="val2.txt")),
}


@pytest.fixture(scope="module", params=list(RUNS))
def trained(request, data, tmp_path_factory):
    name = request.param
    model_kwargs, train_kwargs, data_kwargs = RUNS[name]
    paddle.seed(0)
    np.random.seed(0)
    train_ds, eval_ds = datasets(data, **data_kwargs)
    model = getattr(seg, name)(num_classes=NUM_CLASSES, **model_kwargs)
    save_dir = str(tmp_path_factory.mktemp(name))
    state = model.train(train_dataset=train_ds, eval_dataset=eval_ds, pretrain_weights=None,
                        save_dir=save_dir, use_vdl=False, **train_kwargs)
    return model, save_dir, state, eval_ds, train_kwargs["num_epochs"]


def val_image_paths(d, count=2):
    with open(d.val_list) as f:
        return [os.path.join(d.root, line.split()[0]) for line in f.readlines()[:count]]


def labelled_pixels(dataset):
    total = 0
    for _, label_path in dataset.samples:
        label = cv2.imread(label_path, cv2.IMREAD_UNCHANGED)
        total += int((label != 255).sum())
    return total


def plain(obj):
    return yaml.safe_load(yaml.safe_dump(obj))  # tuples -> lists, as in model.yml


# --- train -------------------------------------------------------------------------

def test_train_writes_epoch_and_best_model_directories(trained, data):
    model, save_dir, state, _, epochs = trained
    expected_dirs = {f"epoch_{e}" for e in range(1, epochs + 1)} | {"best_model"}
    assert set(os.listdir(save_dir)) == expected_dirs, "no temporary or extra directories left"
    for sub in expected_dirs:
        assert set(os.listdir(os.path.join(save_dir, sub))) == CHECKPOINT_FILES
    assert state.epoch == epochs
    assert 1 <= state.best_model_epoch <= epochs
    assert model.best_model_epoch == state.best_model_epoch
    with open(os.path.join(save_dir, "best_model", "model.yml"), encoding="utf-8") as f:
        text = f.read()
    assert "!!python" not in text
    info = yaml.safe_load(text)
    assert info["Model"] == type(model).__name__
    assert info["_init_params"] == plain(model.init_params)
    assert info["labels"] == ["background", "circle", "rectangle"] == model.labels
    assert info["Transforms"] == plain(eval_transforms().to_config())
    assert info["best_model_epoch"] == state.best_model_epoch
    assert info["metrics"]["miou"] == pytest.approx(state.best_accuracy)
    last = yaml.safe_load(open(os.path.join(save_dir, f"epoch_{epochs}", "model.yml")))
    assert last["train_state"]["epoch"] == epochs
    assert last["train_state"]["global_step"] == state.global_step
    # The eval transforms are the model's own copy, not the data set's object.
    assert model.eval_transforms is not None and model.eval_transforms.to_config() == \
        eval_transforms().to_config()


# --- evaluate ------------------------------------------------------------------------

def test_evaluate_returns_paddlex_metrics(trained):
    model, _, state, eval_ds, _ = trained
    metrics = model.evaluate(eval_ds)
    assert set(metrics) == METRIC_KEYS
    for key in ("miou", "oacc", "kappa"):
        assert isinstance(metrics[key], float)
    for key in ("category_iou", "category_acc", "category_F1-score"):
        assert isinstance(metrics[key], list) and len(metrics[key]) == NUM_CLASSES
        assert all(isinstance(v, float) and 0.0 <= v <= 1.0 for v in metrics[key])
    assert 0.0 <= metrics["miou"] <= 1.0 and 0.0 <= metrics["oacc"] <= 1.0
    assert -1.0 <= metrics["kappa"] <= 1.0
    assert metrics["miou"] == pytest.approx(np.mean(metrics["category_iou"]))
    # The final weights were evaluated in the last epoch's checkpoint.
    last_epoch = yaml.safe_load(open(os.path.join(trained[1], f"epoch_{state.epoch}", "model.yml")))
    assert metrics["miou"] == pytest.approx(last_epoch["metrics"]["miou"], abs=1e-6)


def test_evaluate_details_count_labelled_pixels_at_original_size(trained):
    model, _, _, eval_ds, _ = trained
    metrics, details = model.evaluate(eval_ds, batch_size=2, return_details=True)
    assert set(details) == {"confusion_matrix"}
    cm = details["confusion_matrix"]
    assert len(cm) == NUM_CLASSES and all(len(row) == NUM_CLASSES for row in cm)
    assert all(isinstance(v, int) and v >= 0 for row in cm for v in row)
    # Images are 64 x 64; the net saw 48 x 48.
    assert sum(map(sum, cm)) == labelled_pixels(eval_ds) == len(eval_ds) * 64 * 64
    recomputed = metrics_from_confusion(np.array(cm))
    for key in ("miou", "oacc", "kappa"):
        assert metrics[key] == pytest.approx(recomputed[key])
    # Batched evaluation counts (almost) the same pixels as one image at a time.
    single = model.evaluate(eval_ds, batch_size=1)
    assert metrics["oacc"] == pytest.approx(single["oacc"], abs=1e-3)


# --- predict -----------------------------------------------------------------------

def check_result(result, shape):
    assert set(result) == {"label_map", "score_map"}
    label_map, score_map = result["label_map"], result["score_map"]
    assert label_map.shape == shape
    assert score_map.shape == shape + (NUM_CLASSES,)
    assert score_map.dtype == np.float32
    np.testing.assert_allclose(score_map.sum(axis=2), 1.0, atol=1e-5)
    assert score_map.min() >= 0.0
    np.testing.assert_array_equal(label_map, score_map.argmax(axis=2))
    assert label_map.max() < NUM_CLASSES


def test_predict_path_array_and_list_at_input_size(trained, data):
    model = trained[0]
    path = val_image_paths(data, 1)[0]
    image = cv2.imread(path)
    odd = cv2.resize(image, (70, 53))  # 53 x 70: the transforms resize it to 48 x 48

    from_path = model.predict(path)
    from_array = model.predict(image)
    check_result(from_path, (64, 64))
    check_result(from_array, (64, 64))
    np.testing.assert_array_equal(from_path["score_map"], from_array["score_map"])

    results = model.predict([path, odd, image])
    assert isinstance(results, list) and len(results) == 3
    check_result(results[0], (64, 64))
    check_result(results[1], (53, 70))
    np.testing.assert_allclose(results[0]["score_map"], from_path["score_map"], atol=1e-5)
    np.testing.assert_allclose(results[2]["score_map"], from_path["score_map"], atol=1e-5)
    np.testing.assert_allclose(results[1]["score_map"], model.predict(odd)["score_map"], atol=1e-5)

    # Without resizing transforms the net runs on the odd size itself.
    check_result(model.predict(odd, transforms=T.Compose([T.Normalize()])), (53, 70))
    # A single-channel array is read as grey.
    check_result(model.predict(cv2.cvtColor(odd, cv2.COLOR_BGR2GRAY)), (53, 70))


def test_predict_score_map_is_the_resized_softmax(data):
    """predict = softmax of the net's main logit on the transformed image, bilinearly
    resized back to the input size."""
    model = seg.FastSCNN(num_classes=NUM_CLASSES)
    model.eval_transforms = eval_transforms()
    image = cv2.resize(cv2.imread(val_image_paths(data, 1)[0]), (70, 53))
    x = eval_transforms()({"image": image})["image"]
    model.net.eval()
    with paddle.no_grad():
        scores = F.softmax(model.net(paddle.to_tensor(x[None]))[0], axis=1)
        expected = F.interpolate(scores, size=[53, 70], mode="bilinear", align_corners=False)
    result = model.predict(image)
    np.testing.assert_allclose(result["score_map"], expected[0].numpy().transpose(1, 2, 0),
                               atol=1e-6)


def test_predict_without_any_transforms_is_a_clear_error():
    model = seg.FastSCNN(num_classes=NUM_CLASSES)
    image = np.zeros((32, 32, 3), np.uint8)
    with pytest.raises(ValueError, match="transforms"):
        model.predict(image)
    with pytest.raises(ValueError, match="img_file"):
        model.predict([], transforms=eval_transforms())
    with pytest.raises(ValueError, match="HWC"):
        model.predict(np.zeros((32, 32, 4), np.uint8), transforms=eval_transforms())


BAD_ARRAYS = [  # (array, what the error must say)
    (np.zeros((32, 32, 3), np.complex128), "img_file: an image array must hold real numbers (uint8 BGR, "
                                           "or another integer or float type), got dtype complex128 (complex numbers)"),
    (np.empty((32, 32, 3), object), "got dtype object (Python objects)"),
    (np.zeros((32, 32, 3), bool), "got dtype bool (booleans)"),
    (np.array([["a", "b"]]), "got dtype <U1 (text)"),
    (np.zeros((32, 32, 4), np.uint8), "img_file: an image array must be HWC with 3 channels (BGR) or HW "
                                      "grayscale, got shape (32, 32, 4) (BGRA? drop the alpha channel"),
    (np.zeros((32, 32, 2), np.uint8), "got shape (32, 32, 2)"),
    (np.zeros((1, 32, 32, 3), np.uint8), "got shape (1, 32, 32, 3)"),
    (np.zeros(32, np.uint8), "got shape (32,)"),
    (np.zeros((0, 32, 3), np.uint8), "img_file: the image array is empty, shape (0, 32, 3)"),
    (np.full((32, 32, 3), np.nan, np.float32), "img_file: the image array holds NaN or infinite values"),
]


@pytest.mark.parametrize("array, message", BAD_ARRAYS, ids=lambda v: getattr(v, "dtype", None) and
                         f"{v.dtype}-{'x'.join(map(str, v.shape))}")
def test_predict_bad_array_names_the_argument(array, message):
    model = seg.FastSCNN(num_classes=NUM_CLASSES)
    with pytest.raises(ValueError) as error:
        model.predict(array, transforms=eval_transforms())
    assert message in str(error.value)
    good = np.zeros((32, 32, 3), np.uint8)
    with pytest.raises(ValueError, match=r"^img_file\[1\]: "):
        model.predict([good, array], transforms=eval_transforms())


@pytest.mark.parametrize("dtype", [np.float64, np.int64, np.uint16, np.float16])
def test_predict_takes_any_real_array_like_uint8(dtype):
    """Real arrays of other types hold the same pixel values: same prediction as uint8."""
    model = seg.FastSCNN(num_classes=NUM_CLASSES)
    image = np.random.RandomState(0).randint(0, 256, (32, 32, 3)).astype(np.uint8)
    expected = model.predict(image, transforms=eval_transforms())
    result = model.predict(image.astype(dtype), transforms=eval_transforms())
    np.testing.assert_array_equal(result["label_map"], expected["label_map"])
    np.testing.assert_allclose(result["score_map"], expected["score_map"], atol=1e-5)
    gray = model.predict(image[:, :, :1], transforms=eval_transforms())  # HW1 is grayscale
    assert gray["label_map"].shape == (32, 32)


# --- save / load_model ----------------------------------------------------------------

def test_save_and_load_model_round_trip(trained, data, tmp_path):
    model, save_dir, _, _, epochs = trained
    images = [cv2.imread(p) for p in val_image_paths(data, 2)] + [
        np.random.RandomState(0).randint(0, 256, (53, 70, 3)).astype(np.uint8)]
    before = model.predict(images)

    path = model.save(str(tmp_path / "saved"))
    assert set(os.listdir(path)) == {"model.pdparams", "model.yml"}
    with open(os.path.join(path, "model.yml"), encoding="utf-8") as f:
        info = yaml.safe_load(f)
    assert info["Model"] == type(model).__name__

    loaded = seg.load_model(path)
    assert type(loaded) is type(model)
    assert plain(loaded.init_params) == plain(model.init_params)
    assert loaded.labels == model.labels
    assert loaded.eval_transforms.to_config() == model.eval_transforms.to_config()
    assert loaded.best_model_epoch == model.best_model_epoch
    for a, b in zip(loaded.predict(images), before):
        np.testing.assert_array_equal(a["score_map"], b["score_map"])
        np.testing.assert_array_equal(a["label_map"], b["label_map"])

    # The last epoch's checkpoint holds the final weights.
    from_checkpoint = seg.load_model(os.path.join(save_dir, f"epoch_{epochs}"))
    np.testing.assert_array_equal(from_checkpoint.predict(images[0])["score_map"],
                                  before[0]["score_map"])


def test_round_trip_keeps_a_mixed_loss_and_constructor_arguments(tmp_path):
    model = seg.UNet(num_classes=4, use_mixed_loss=[("CrossEntropyLoss", 0.6), ("DiceLoss", 0.4)],
                     use_deconv=True)
    model.labels = ["a", "b", "c", "d"]
    # UNet's transposed convolutions need sides divisible by 16 (as in PaddleSeg).
    model.eval_transforms = T.Compose([T.Resize([48, 64]), T.Normalize(mean=[0.4, 0.5, 0.6])])
    image = np.random.RandomState(1).randint(0, 256, (45, 61, 3)).astype(np.uint8)
    loaded = seg.load_model(model.save(str(tmp_path / "m")))
    assert type(loaded) is seg.UNet and loaded.use_deconv is True and loaded.num_classes == 4
    assert [type(l).__name__ for l in loaded.loss.loss.losses] == ["CrossEntropyLoss", "DiceLoss"]
    assert list(loaded.loss.loss.coefs) == [0.6, 0.4]
    assert loaded.labels == model.labels
    assert loaded.eval_transforms.to_config() == model.eval_transforms.to_config()
    np.testing.assert_array_equal(loaded.predict(image)["score_map"], model.predict(image)["score_map"])
    assert loaded.model_info() == model.model_info()


@pytest.fixture
def saved_dir(tmp_path):
    model = seg.BiSeNetV2(num_classes=NUM_CLASSES)
    return model.save(str(tmp_path / "ok"))


def test_load_model_missing_or_incomplete_directory(tmp_path):
    missing = str(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="nowhere.*does not exist"):
        seg.load_model(missing)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match=f"{empty}.*model.yml"):
        seg.load_model(str(empty))


@pytest.mark.parametrize("damage", ["garbage", "truncated", "missing"])
def test_load_model_corrupt_weights_name_the_file(saved_dir, damage):
    params = os.path.join(saved_dir, "model.pdparams")
    if damage == "garbage":
        with open(params, "wb") as f:
            f.write(b"this is not a paddle checkpoint" * 10)
    elif damage == "truncated":
        with open(params, "rb") as f:
            content = f.read()
        with open(params, "wb") as f:
            f.write(content[:len(content) // 2])
    else:
        os.remove(params)
    with pytest.raises(ValueError, match=r"model\.pdparams") as info:
        seg.load_model(saved_dir)
    assert saved_dir in str(info.value)


def test_load_model_bad_model_yml_names_the_file(saved_dir):
    yml = os.path.join(saved_dir, "model.yml")
    with open(yml, "w") as f:
        f.write("Model: [unclosed\n")
    with pytest.raises(ValueError, match="model.yml") as info:
        seg.load_model(saved_dir)
    assert saved_dir in str(info.value)
    with open(yml, "w") as f:
        yaml.safe_dump({"Model": "MaskRCNN"}, f)
    with pytest.raises(ValueError, match="MaskRCNN"):
        seg.load_model(saved_dir)


# --- data errors through the API -------------------------------------------------------

def test_label_list_size_disagreeing_with_num_classes(data, tmp_path):
    train_ds, eval_ds = datasets(data)
    model = seg.FastSCNN(num_classes=NUM_CLASSES + 1)
    save_dir = tmp_path / "out"
    with pytest.raises(ValueError, match="label list") as info:
        model.train(num_epochs=1, train_dataset=train_ds, eval_dataset=eval_ds,
                    pretrain_weights=None, save_dir=str(save_dir), use_vdl=False)
    assert data.label_list in str(info.value) and "num_classes=4" in str(info.value)
    assert not save_dir.exists(), "nothing is trained or written"


@pytest.fixture
def bad_label_data(data, tmp_path):
    """A copy of the data set where one val label and one train label hold class 7."""
    root = tmp_path / "bad"
    shutil.copytree(data.root, root)
    bad = []
    for split in ("val", "train"):
        with open(root / f"{split}.txt") as f:
            label_rel = f.readlines()[1].split()[1]
        label = cv2.imread(str(root / label_rel), cv2.IMREAD_UNCHANGED)
        label[5:9, 5:9] = 7
        cv2.imwrite(str(root / label_rel), label)
        bad.append(str(root / label_rel))
    return str(root), bad


def test_evaluate_and_train_name_the_label_file_out_of_range(bad_label_data):
    root, (bad_val, bad_train) = bad_label_data
    eval_ds = seg.SegDataset(root, "val.txt", "labels.txt", transforms=eval_transforms(),
                             num_workers=0)
    model = seg.FastSCNN(num_classes=NUM_CLASSES)
    with pytest.raises(ValueError, match="7") as info:
        model.evaluate(eval_ds)
    assert bad_val in str(info.value)
    train_ds = seg.SegDataset(root, "train.txt", "labels.txt", transforms=train_transforms(),
                              num_workers=0)
    with pytest.raises(ValueError, match="7") as info:
        model.train(num_epochs=1, train_dataset=train_ds, train_batch_size=4,
                    pretrain_weights=None, save_dir=os.path.join(root, "out"), use_vdl=False)
    assert bad_train in str(info.value)


# --- it learns ------------------------------------------------------------------------

def test_unet_converges_on_synthetic_shapes(tmp_path):
    """UNet, 32 images of 64 x 64 with 3 classes, 3 epochs of batch 4 (24 steps) with the
    default Momentum + polynomial decay at lr 0.05: measured final mIoU 0.92-0.94 over
    seeds 0-2, in ~25 s of CPU time."""
    paddle.seed(0)
    np.random.seed(0)
    d = seg.make_synthetic_dataset(str(tmp_path / "data"), num_train=32, num_val=8,
                                   image_size=(64, 64), num_classes=3, seed=0)
    train_ds = seg.SegDataset(d.root, d.train_list, d.label_list, transforms=train_transforms(),
                              shuffle=True, num_workers=0)
    eval_ds = seg.SegDataset(d.root, d.val_list, d.label_list,
                             transforms=T.Compose([T.Normalize()]), num_workers=0)
    model = seg.UNet(num_classes=3)
    start = time.time()
    state = model.train(num_epochs=3, train_dataset=train_ds, eval_dataset=eval_ds,
                        train_batch_size=4, learning_rate=0.05, save_interval_epochs=3,
                        pretrain_weights=None, save_dir=str(tmp_path / "out"), use_vdl=False)
    metrics = model.evaluate(eval_ds)
    print(f"UNet convergence: mIoU {metrics['miou']:.4f} in {time.time() - start:.1f} s")
    assert metrics["miou"] >= 0.85, metrics
    assert state.best_model_epoch == 3
    assert metrics["miou"] == pytest.approx(state.best_accuracy)
    assert min(metrics["category_iou"]) >= 0.7, metrics["category_iou"]
