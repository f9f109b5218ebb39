"""ONNX export (paddle2onnx) gives the Paddle program's outputs under onnxruntime, and
never changes the Python environment."""
import os
import subprocess
import sys

import numpy as np
import paddle
import pytest

from paddlex_seg import compat
import yaml

import paddlex_seg as seg
from oracle import randomize_batch_norm_stats
from paddlex_seg import transforms as T
from paddlex_seg.deploy import export_onnx

paddle2onnx = pytest.importorskip("paddle2onnx")
ort = pytest.importorskip("onnxruntime")

SCORE_TOL = 1e-4


def make_model(cls):
    paddle.seed(0)
    model = cls(num_classes=3)
    randomize_batch_norm_stats(model.net, seed=1)
    model.net.eval()
    model.eval_transforms = T.Compose([T.Normalize()])
    return model


def paddle_outputs(model_dir, x):
    config = paddle.inference.Config(compat.program_file(os.path.join(model_dir, "model")),
                                     os.path.join(model_dir, "model.pdiparams"))
    config.disable_gpu()
    config.disable_glog_info()
    predictor = paddle.inference.create_predictor(config)
    handle = predictor.get_input_handle(predictor.get_input_names()[0])
    handle.reshape(list(x.shape))
    handle.copy_from_cpu(x)
    predictor.run()
    return [predictor.get_output_handle(n).copy_to_cpu() for n in predictor.get_output_names()]


def onnx_outputs(model_dir, x):
    session = ort.InferenceSession(os.path.join(model_dir, "model.onnx"),
                                   providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["x"]
    return session.run(None, {"x": x})


def compare(model_dir, x):
    (p_label, p_score), (o_label, o_score) = paddle_outputs(model_dir, x), onnx_outputs(model_dir, x)
    assert o_label.shape == p_label.shape and o_score.shape == p_score.shape
    diff = float(np.abs(o_score - p_score).max())
    assert diff <= SCORE_TOL, diff
    np.testing.assert_array_equal(o_label, p_label)
    return diff


def pip_freeze():
    out = subprocess.run([sys.executable, "-m", "pip", "freeze", "--all"], capture_output=True,
                         text=True, timeout=120, check=True)
    return sorted(out.stdout.splitlines())


def test_unet_onnx_equals_paddle_and_leaves_the_environment_alone(tmp_path):
    model = make_model(seg.UNet)
    before = pip_freeze()
    model.export(str(tmp_path), onnx=True)
    assert pip_freeze() == before, "the ONNX export changed the installed packages"
    with open(tmp_path / "model.yml") as f:
        assert yaml.safe_load(f)["Export"]["onnx_file"] == "model.onnx"
    x = np.random.RandomState(0).uniform(-1, 1, (2, 3, 48, 64)).astype("float32")  # free shape
    diff = compare(str(tmp_path), x)
    print(f"UNet ONNX vs Paddle: max score difference {diff:.2e}")


def test_fastscnn_needs_a_fixed_shape_for_onnx(tmp_path):
    model = make_model(seg.FastSCNN)
    with pytest.raises(ValueError, match=r"fixed_input_shape=\[w, h\]"):
        model.export(str(tmp_path / "free"), onnx=True)
    assert not (tmp_path / "free" / "model.yml").exists()

    # Converting a free-shape export afterwards: paddle2onnx's own complaint becomes an error.
    model.export(str(tmp_path / "free"))
    with pytest.raises(RuntimeError, match="static input shape.*fixed_input_shape"):
        export_onnx(str(tmp_path / "free"))
    assert not (tmp_path / "free" / "model.onnx").exists()
    assert not [n for n in os.listdir(tmp_path / "free") if ".tmp-" in n]

    # Too small: the pyramid pooling's 6x6 bins would see a 2x2 map (onnxruntime dies of
    # SIGFPE on such a model), so the export refuses and names a size that works.
    with pytest.raises(ValueError, match=r"2x2 map, smaller than its 6x6 bins.*\[192, 192\]"):
        model.export(str(tmp_path / "small"), fixed_input_shape=[64, 48], onnx=True)

    model.export(str(tmp_path / "fixed"), fixed_input_shape=[224, 192], onnx=True)
    x = np.random.RandomState(1).uniform(-1, 1, (1, 3, 192, 224)).astype("float32")
    diff = compare(str(tmp_path / "fixed"), x)
    print(f"FastSCNN ONNX vs Paddle: max score difference {diff:.2e}")


def test_export_onnx_rejects_a_directory_without_a_program(tmp_path):
    with pytest.raises(ValueError, match="not an exported inference model"):
        export_onnx(str(tmp_path))
    with pytest.raises(ValueError, match="opset_version"):
        export_onnx(str(tmp_path), opset_version=3)
