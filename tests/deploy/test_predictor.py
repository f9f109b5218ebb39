"""paddlex_seg.deploy.Predictor: inputs, timings, clear errors, and a training-free import."""
import ast
import logging
import os
import shutil
import subprocess
import sys

import cv2
import numpy as np
import paddle
import pytest
import yaml

import paddlex_seg as seg
from paddlex_seg import compat
from oracle import randomize_batch_norm_stats
from paddlex_seg import transforms as T
from paddlex_seg.deploy import InferenceModelError, Predictor
from paddlex_seg.deploy import predictor as predictor_module

# What predictor.py may import from paddlex_seg: the transforms, the image reader, and
# the package logger (logging only) and test-time augmentation (NumPy + OpenCV only).
# No engine, models, segmenter or slim.
ALLOWED_PACKAGE_IMPORTS = {"paddlex_seg.data.transforms", "paddlex_seg.data.dataset",
                           "paddlex_seg.log", "paddlex_seg.aug", "paddlex_seg.compat",
                           "paddlex_seg.deploy.backends"}
TRAINING_MODULES = ("paddlex_seg.engine", "paddlex_seg.segmenter", "paddlex_seg.slim",
                    "paddlex_seg.models", "paddlex_seg.checkpoint", "paddlex_seg.weights")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    paddle.seed(0)
    model = seg.UNet(num_classes=3)
    randomize_batch_norm_stats(model.net, seed=1)
    model.net.eval()
    model.labels = ["a", "b", "c"]
    model.eval_transforms = T.Compose([T.Normalize()])
    root = tmp_path_factory.mktemp("predictor")
    model.export(str(root / "infer"))
    model.save(str(root / "saved"))
    return model, str(root / "infer"), str(root / "saved")


@pytest.fixture(scope="module")
def predictor(exported):
    return Predictor(exported[1], mkl_thread_num=2)


def image(h=32, w=32, seed=0):
    return np.random.RandomState(seed).randint(0, 256, (h, w, 3)).astype("uint8")


# === No training code on the deployment path ===

def test_predictor_module_imports_only_transforms_and_reader():
    tree = ast.parse(open(predictor_module.__file__, encoding="utf-8").read())
    package_imports = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:  # relative: resolve against paddlex_seg.deploy
                module = ".".join(["paddlex_seg", "deploy"][:2 - (node.level - 1)] + [module]).rstrip(".")
            if module in ("paddlex_seg", "paddlex_seg.deploy"):  # from .. import compat
                package_imports.update(f"{module}.{a.name}" for a in node.names)
            elif module.startswith("paddlex_seg"):
                package_imports.add(module)
                if module == "paddlex_seg.data.dataset":
                    assert [a.name for a in node.names] == ["read_input_image"]
        elif isinstance(node, ast.Import):
            package_imports.update(a.name for a in node.names if a.name.startswith("paddlex_seg"))
    assert package_imports, "the parser found no package import at all"
    assert package_imports <= ALLOWED_PACKAGE_IMPORTS, package_imports - ALLOWED_PACKAGE_IMPORTS


def test_importing_and_running_the_predictor_loads_no_training_code(exported):
    # A fresh interpreter: import the predictor, run an exported model, list modules.
    code = (
        "import sys, numpy as np\n"
        "from paddlex_seg.deploy.predictor import Predictor\n"
        f"p = Predictor({exported[1]!r})\n"
        "r = p.predict(np.zeros((32, 32, 3), np.uint8))\n"
        "assert r['label_map'].shape == (32, 32)\n"
        "print('\\n'.join(m for m in sys.modules if m.startswith('paddlex_seg')))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    loaded = set(out.stdout.split())
    assert "paddlex_seg.deploy.predictor" in loaded
    training = sorted(m for m in loaded if m.startswith(TRAINING_MODULES))
    assert not training, f"deployment imported training code: {training}"


# === Inputs and outputs ===

def test_path_array_gray_and_list_inputs(exported, predictor, tmp_path):
    model = exported[0]
    colour = image(40, 48, seed=1)
    path = str(tmp_path / "a.png")
    cv2.imwrite(path, colour)
    from_path, from_array = predictor.predict(path), predictor.predict(colour)
    np.testing.assert_array_equal(from_path["score_map"], from_array["score_map"])
    assert from_array["label_map"].shape == (40, 48) and from_array["score_map"].shape == (40, 48, 3)
    gray = colour[:, :, 0]
    np.testing.assert_array_equal(predictor.predict(gray)["label_map"],
                                  predictor.predict(np.dstack([gray] * 3))["label_map"])
    results = predictor.predict([path, colour, image(32, 32)])
    assert isinstance(results, list) and len(results) == 3
    np.testing.assert_array_equal(results[0]["label_map"], from_path["label_map"])
    expected = model.predict([path, colour, image(32, 32)])
    for got, want in zip(results, expected):
        np.testing.assert_array_equal(got["label_map"], want["label_map"])
        assert np.abs(got["score_map"] - want["score_map"]).max() <= 1e-4


def test_resize_and_padding_are_undone(exported):
    """Transforms that resize and pad: the result comes back at the input size and equals
    model.predict with the same transforms."""
    model, infer_dir, _ = exported
    predictor = Predictor(infer_dir, use_mkl=False)
    transforms = T.Compose([T.ResizeByLong(48), T.Padding(target_size=[48, 48]), T.Normalize()])
    im = image(30, 50, seed=3)
    got, want = predictor.predict(im, transforms=transforms), model.predict(im, transforms=transforms)
    assert got["label_map"].shape == (30, 50)
    np.testing.assert_array_equal(got["label_map"], want["label_map"])
    assert np.abs(got["score_map"] - want["score_map"]).max() <= 1e-4


@pytest.mark.parametrize("bad, words", [
    (12, "img_file must be a path or a numpy array, got int"), (np.zeros((8, 8, 4), np.uint8), "3 channels"), ([], "empty"),
    ("/no/such/image.png", "image.png"),
])
def test_bad_images_are_clear_errors(predictor, bad, words):
    with pytest.raises(ValueError, match=words):
        predictor.predict(bad)


def test_bad_predict_arguments(predictor):
    with pytest.raises(ValueError, match="repeats must be an int >= 1"):
        predictor.predict(image(), repeats=0)
    with pytest.raises(ValueError, match="warmup_iters"):
        predictor.predict(image(), warmup_iters=-1)
    with pytest.raises(ValueError, match="transforms must be"):
        predictor.predict(image(), transforms=[T.Normalize()])


# === Timings ===

def test_timings_are_recorded_and_logged(predictor):
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("paddlex_seg")
    logger.addHandler(handler)
    try:
        predictor.predict([image(), image(seed=1)], warmup_iters=1, repeats=3)
    finally:
        logger.removeHandler(handler)
    timings = predictor.get_timings()
    assert timings["images"] == 2 and timings["repeats"] == 3
    for stage in ("preprocess", "inference", "postprocess"):
        assert timings[stage] > 0
    assert timings["inference"] > timings["postprocess"]
    lines = [r.getMessage() for r in records if "Predictor" in r.getMessage()]
    assert len(lines) == 1 and "inference" in lines[0] and "preprocess" in lines[0], lines


# === Clear errors for bad model directories and arguments ===

def copy_export(exported, tmp_path):
    target = tmp_path / "copy"
    shutil.copytree(exported[1], target)
    return target


def test_missing_directory(tmp_path):
    with pytest.raises(InferenceModelError, match="does not exist"):
        Predictor(str(tmp_path / "nope"))


def test_directory_without_model_yml(tmp_path):
    with pytest.raises(InferenceModelError, match="no model.yml"):
        Predictor(str(tmp_path))


def test_training_checkpoint_is_not_an_exported_model(exported):
    with pytest.raises(InferenceModelError, match="not an exported model: export it first"):
        Predictor(exported[2])


def test_missing_params_file(exported, tmp_path):
    target = copy_export(exported, tmp_path)
    os.remove(target / "model.pdiparams")
    with pytest.raises(InferenceModelError, match=r"model.pdiparams is missing"):
        Predictor(str(target))


@pytest.mark.parametrize("name", ["model" + compat.PROGRAM_SUFFIXES[0], "model.pdiparams"])
def test_truncated_files(exported, tmp_path, name):
    target = copy_export(exported, tmp_path)
    data = (target / name).read_bytes()
    (target / name).write_bytes(data[:len(data) // 3])
    with pytest.raises(InferenceModelError, match="corrupt or incomplete"):
        Predictor(str(target))


def test_invalid_model_yml(exported, tmp_path):
    target = copy_export(exported, tmp_path)
    (target / "model.yml").write_text("Model: [unclosed\n")
    with pytest.raises(InferenceModelError, match="not valid YAML"):
        Predictor(str(target))


@pytest.mark.parametrize("edit, words", [
    (lambda info: info.pop("Export"), "no 'Export' entry"),
    (lambda info: info.update(Transforms=[["NoSuchOp", {}]]), "Transforms cannot be rebuilt"),
])
def test_model_yml_that_paddlex_seg_did_not_write(exported, tmp_path, edit, words):
    target = copy_export(exported, tmp_path)
    info = yaml.safe_load((target / "model.yml").read_text())
    edit(info)
    (target / "model.yml").write_text(yaml.safe_dump(info))
    with pytest.raises(InferenceModelError, match=words):
        Predictor(str(target))


@pytest.mark.parametrize("kwargs, words", [
    ({"trt_precision_mode": "fp64"}, "trt_precision_mode"),
    ({"use_trt": True}, "use_trt=True needs use_gpu=True"),
    ({"mkl_thread_num": 0}, "mkl_thread_num"),
    ({"use_mkl": "yes"}, "use_mkl"),
])
def test_bad_predictor_arguments(exported, kwargs, words):
    with pytest.raises(ValueError, match=words):
        Predictor(exported[1], **kwargs)


@pytest.mark.skipif(paddle.device.is_compiled_with_cuda(), reason="needs a CPU-only Paddle")
def test_gpu_on_a_cpu_build_is_a_clear_error(exported):
    with pytest.raises(ValueError, match="without CUDA"):
        Predictor(exported[1], use_gpu=True)
