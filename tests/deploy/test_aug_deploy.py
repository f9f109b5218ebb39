"""Test-time augmentation on the deployment path: recorded in model.yml by export,
applied (or overridden) by deploy.Predictor, and the command-line options."""
import ast
import json
import logging
import os
import shutil
from types import SimpleNamespace

import cv2
import numpy as np
import paddle
import pytest
import yaml

import paddlex_seg as seg
from paddlex_seg import aug as aug_module
from paddlex_seg import transforms as T
from paddlex_seg.aug import TestTimeAug
from paddlex_seg.cli import build_parser, main
from paddlex_seg.deploy import InferenceModelError, Predictor, export_inference_model

AUG = TestTimeAug(flip_horizontal=True, scales=[0.75, 1.0], sliding_window=(32, 32, 20, 20))
# Exported vs in-process scores: the same network, restored to the input size by
# cv2 (Predictor) instead of paddle (model.predict).
SCORE_TOL = 1e-4


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A briefly trained HRNet_W18_Small_V1 (an untrained one predicts an almost uniform
    map, which would make every comparison trivial), exported with AUG, and saved."""
    paddle.seed(0)
    np.random.seed(0)
    root = tmp_path_factory.mktemp("aug_deploy")
    d = seg.make_synthetic_dataset(str(root / "data"), num_train=16, num_val=6,
                                   image_size=(64, 64), num_classes=3)
    train_ds = seg.SegDataset(d.root, d.train_list, d.label_list, shuffle=True, num_workers=0,
                              transforms=T.Compose([T.RandomHorizontalFlip(), T.Normalize()]))
    model = seg.HRNet(num_classes=3, width="18_Small_V1")
    log = logging.getLogger("paddlex_seg")
    level = log.level
    log.setLevel(logging.WARNING)  # no per-step lines
    try:
        model.train(num_epochs=6, train_dataset=train_ds, train_batch_size=4, learning_rate=0.05,
                    pretrain_weights=None, save_interval_epochs=6, save_dir=str(root / "out"),
                    use_vdl=False)
    finally:
        log.setLevel(level)
    model.net.eval()
    model.eval_transforms = T.Compose([T.Resize(48), T.Normalize()])
    model.export(str(root / "infer_aug"), aug=AUG.to_dict())
    model.save(str(root / "saved"))
    # Validation pictures with shapes on them (some have none), at odd sizes.
    val = [cv2.imread(image, cv2.IMREAD_COLOR) for image, label in
           seg.SegDataset(d.root, d.val_list).samples if len(np.unique(cv2.imread(label, 0))) > 1]
    images = [cv2.resize(val[1], (70, 53)), val[2], cv2.resize(val[2], (56, 40))]
    return SimpleNamespace(model=model, infer=str(root / "infer_aug"), saved=str(root / "saved"),
                           images=images)


@pytest.fixture(scope="module")
def predictor(exported):
    return Predictor(exported.infer, mkl_thread_num=2)


def assert_same_prediction(got, expected):
    assert got["label_map"].shape == expected["label_map"].shape
    np.testing.assert_allclose(got["score_map"], expected["score_map"], atol=SCORE_TOL)
    # Labels can differ only where two classes are within the score tolerance.
    top2 = np.sort(expected["score_map"], axis=2)[:, :, -2:]
    clear = top2[:, :, 1] - top2[:, :, 0] > 2 * SCORE_TOL
    np.testing.assert_array_equal(got["label_map"][clear], expected["label_map"][clear])


# === model.yml and the Predictor ===

def test_export_records_aug_and_the_predictor_applies_it(exported, predictor):
    model, infer = exported.model, exported.infer
    with open(os.path.join(infer, "model.yml")) as f:
        assert yaml.safe_load(f)["Export"]["aug"] == AUG.to_dict()
    assert predictor.aug == AUG
    for im in exported.images[:2]:
        got, expected = predictor.predict(im), model.predict(im, aug=AUG)
        assert got["label_map"].shape == im.shape[:2] and got["label_map"].dtype == np.uint8
        assert len(np.unique(expected["label_map"])) > 1  # not a trivial map
        assert_same_prediction(got, expected)
        print(f"exported vs in-process, {im.shape[:2]}: max score difference "
              f"{np.abs(got['score_map'] - expected['score_map']).max():.2e}, labels equal "
              f"{(got['label_map'] == expected['label_map']).mean():.4%}")
    # The augmented result really differs from the plain one.
    im = exported.images[0]
    assert np.abs(predictor.predict(im)["score_map"] - model.predict(im)["score_map"]).max() > 1e-3


def test_predict_can_override_or_turn_off_the_recorded_aug(exported, predictor):
    model = exported.model
    im = exported.images[2]
    assert_same_prediction(predictor.predict(im, aug=False), model.predict(im))
    other = {"flip_vertical": True, "sliding_window": [24, 24, 12, 12], "window_batch_size": 2}
    assert_same_prediction(predictor.predict(im, aug=other), model.predict(im, aug=other))
    results = predictor.predict([im, exported.images[0]], repeats=2)
    assert [r["label_map"].shape for r in results] == [(40, 56), (53, 70)]
    assert predictor.timings["images"] == 2 and predictor.timings["inference"] > 0
    with pytest.raises(ValueError, match="scales"):
        predictor.predict(im, aug={"scales": []})


class OneConv(paddle.nn.Layer):
    """A network in one convolution: quick to export."""

    def __init__(self):
        super().__init__()
        self.conv = paddle.nn.Conv2D(3, 2, 1)

    def forward(self, x):
        return [self.conv(x)]


class TinyModel:
    """Just what export needs: a .net and eval transforms."""
    status = "Normal"

    def __init__(self):
        self.net = OneConv()
        self.eval_transforms = T.Compose([T.Normalize()])


def test_export_without_aug_records_none(tmp_path):
    export_inference_model(TinyModel(), str(tmp_path / "plain"))
    with open(tmp_path / "plain" / "model.yml") as f:
        assert yaml.safe_load(f)["Export"]["aug"] is None
    predictor = Predictor(str(tmp_path / "plain"))
    assert predictor.aug is None
    assert predictor.predict(np.zeros((8, 8, 3), np.uint8))["label_map"].shape == (8, 8)


def test_fixed_input_shape_allows_flips_only(exported, tmp_path):
    model = exported.model
    with pytest.raises(ValueError, match="fixed_input_shape"):
        model.export(str(tmp_path / "bad"), fixed_input_shape=[48, 48], aug={"scales": [0.5, 1.0]})
    with pytest.raises(ValueError, match="fixed_input_shape"):
        model.export(str(tmp_path / "bad"), fixed_input_shape=[48, 48],
                     aug={"sliding_window": (32, 32, 16, 16)})
    assert not os.path.exists(tmp_path / "bad" / "model.yml")
    flips = {"flip_horizontal": True, "flip_vertical": True}
    # A fixed batch of 2: the predictor pads each single view to a batch of 2.
    model.export(str(tmp_path / "fixed"), fixed_input_shape=[2, 3, 48, 48], aug=flips)
    fixed = Predictor(str(tmp_path / "fixed"))
    im = exported.images[0]
    assert_same_prediction(fixed.predict(im), model.predict(im, aug=flips))
    with pytest.raises(ValueError, match="free input size"):
        fixed.predict(im, aug={"scales": [0.75, 1.0]})


def test_a_bad_aug_in_model_yml_is_a_clear_error(exported, tmp_path):
    copy = str(tmp_path / "copy")
    shutil.copytree(exported.infer, copy)
    yml = os.path.join(copy, "model.yml")
    with open(yml) as f:
        info = yaml.safe_load(f)
    info["Export"]["aug"]["sliding_window"] = [32, 32, 0, 20]
    with open(yml, "w") as f:
        yaml.safe_dump(info, f)
    with pytest.raises(InferenceModelError, match="sliding_window"):
        Predictor(copy)


def test_aug_module_needs_only_numpy_and_opencv():
    tree = ast.parse(open(aug_module.__file__, encoding="utf-8").read())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module}
    assert imported <= {"cv2", "numpy", "math", "numbers"}, imported
    assert not any(isinstance(node, ast.ImportFrom) and node.level for node in ast.walk(tree))


# === The command line ===

def run(capsys, *argv):
    try:
        status = main([str(a) for a in argv])
    except SystemExit as exit_:
        status = exit_.code
    out = capsys.readouterr()
    return status, out.out, out.err


def test_cli_options_parse_into_a_test_time_aug():
    from paddlex_seg.cli import _aug_from_args
    for command, required in (("predict", ["--model_dir", "m", "--image", "a.png"]),
                              ("evaluate", ["--model_dir", "m", "--dataset_dir", "d", "--file_list", "f"]),
                              ("export", ["--model_dir", "m", "--save_dir", "s"])):
        args = build_parser().parse_args([command] + required + [
            "--flip_horizontal", "--flip_vertical", "--scales", "0.75", "1.0", "1.25",
            "--sliding_window", "512", "512", "384", "384", "--window_batch_size", "2"])
        assert _aug_from_args(args) == TestTimeAug(
            flip_horizontal=True, flip_vertical=True, scales=[0.75, 1.0, 1.25],
            sliding_window=(512, 512, 384, 384), window_batch_size=2)
        assert _aug_from_args(build_parser().parse_args([command] + required)) is None


def test_cli_predict_evaluate_export_with_aug(capsys, exported, tmp_path):
    saved = exported.saved
    path = str(tmp_path / "a.png")
    cv2.imwrite(path, exported.images[0])
    options = ["--flip_horizontal", "--scales", "0.75", "1.0", "--sliding_window", "32", "32", "20", "20"]

    status, out, err = run(capsys, "predict", "--model_dir", saved, "--image", path,
                           "--save_dir", tmp_path / "vis", "--save_label", *options)
    assert status == 0, err
    label = cv2.imread(str(tmp_path / "vis" / "label_a.png"), 0)
    loaded = seg.load_model(saved)
    np.testing.assert_array_equal(label, loaded.predict(path, aug=AUG)["label_map"])

    status, out, err = run(capsys, "export", "--model_dir", saved, "--save_dir", tmp_path / "infer",
                           *options)
    assert status == 0, err
    assert Predictor(str(tmp_path / "infer")).aug == AUG
    status, out, err = run(capsys, "predict", "--model_dir", tmp_path / "infer", "--image", path,
                           "--save_dir", tmp_path / "vis2", "--save_label")
    assert status == 0, err
    exported_label = cv2.imread(str(tmp_path / "vis2" / "label_a.png"), 0)
    assert (exported_label == label).mean() > 0.999
    status, out, err = run(capsys, "predict", "--model_dir", tmp_path / "infer", "--image", path,
                           "--save_dir", tmp_path / "vis3", "--save_label", "--no_aug")
    assert status == 0, err
    plain = cv2.imread(str(tmp_path / "vis3" / "label_a.png"), 0)
    assert (plain == loaded.predict(path)["label_map"]).mean() > 0.999

    d = seg.make_synthetic_dataset(str(tmp_path / "data"), num_train=1, num_val=2,
                                   image_size=(64, 64), num_classes=3)
    status, out, err = run(capsys, "evaluate", "--model_dir", saved, "--dataset_dir", d.root,
                           "--file_list", d.val_list, *options)
    assert status == 0, err
    metrics = json.loads(out[out.index("{"):])["metrics"]
    ds = seg.SegDataset(d.root, d.val_list, transforms=loaded.eval_transforms)
    assert metrics["miou"] == pytest.approx(loaded.evaluate(ds, aug=AUG)["miou"])


@pytest.mark.parametrize("extra, words", [
    (["--sliding_window", "32", "32", "0", "20"], "sliding_window"),
    (["--scales", "0"], "scales"),
    (["--window_batch_size", "0"], "window_batch_size"),
    (["--no_aug", "--flip_horizontal"], "--no_aug"),
])
def test_cli_bad_aug_options_exit_1_naming_the_option(capsys, exported, tmp_path, extra, words):
    path = str(tmp_path / "a.png")
    cv2.imwrite(path, exported.images[1])
    status, out, err = run(capsys, "predict", "--model_dir", exported.saved, "--image", path,
                           "--save_dir", tmp_path / "vis", *extra)
    assert status == 1 and words in err, err
    assert len(err.strip().splitlines()) == 1


def test_cli_export_refuses_scales_with_a_fixed_shape(capsys, exported, tmp_path):
    status, _, err = run(capsys, "export", "--model_dir", exported.saved, "--save_dir", tmp_path / "x",
                         "--fixed_input_shape", "[48,48]", "--scales", "0.5", "1")
    assert status == 1 and "fixed_input_shape" in err, err
