"""model.export writes an inference model whose predictions equal model.predict's.

Networks are untrained (random weights, randomised BatchNorm statistics): equality
does not need training. UNet on 64x64-ish images keeps exports at ~2 s each.
"""
import os

import numpy as np
import paddle
import pytest

from paddlex_seg import compat
import yaml

import paddlex_seg as seg
from oracle import randomize_batch_norm_stats
from paddlex_seg import transforms as T
from paddlex_seg.deploy import Predictor, parse_fixed_input_shape
from paddlex_seg.deploy.export import InferenceNet

SCORE_TOL = 1e-4
LABELS = ["background", "road", "car"]


def make_model(cls=seg.UNet, transforms=None, **kwargs):
    model = cls(num_classes=len(LABELS), **kwargs)
    randomize_batch_norm_stats(model.net, seed=1)
    model.net.eval()
    model.labels = list(LABELS)
    model.eval_transforms = transforms or T.Compose([T.Normalize()])
    return model


def images(*shapes, seed=0):
    rng = np.random.RandomState(seed)
    return [rng.randint(0, 256, shape + (3,)).astype("uint8") for shape in shapes]


def assert_same_labels(got, expected, expected_scores, tie=1e-5):
    """Identical label maps, except where the two best in-process scores are a numerical
    tie (closer than ``tie``): there float rounding may pick either class."""
    differ = got != expected
    if differ.any():
        top2 = np.sort(expected_scores, axis=2)[:, :, -2:]
        margin = top2[:, :, 1] - top2[:, :, 0]
        assert (margin[differ] <= tie).all(), (
            f"{int(differ.sum())} labels differ, margins {margin[differ][:5]} (not ties)")


def assert_same_predictions(got, expected):
    """Label maps identical, scores within SCORE_TOL; returns the max score difference."""
    got = got if isinstance(got, list) else [got]
    expected = expected if isinstance(expected, list) else [expected]
    assert len(got) == len(expected)
    worst = 0.0
    for a, b in zip(got, expected):
        assert a["label_map"].dtype == np.uint8 and a["score_map"].dtype == np.float32
        assert a["label_map"].shape == b["label_map"].shape
        assert a["score_map"].shape == b["score_map"].shape
        assert_same_labels(a["label_map"], b["label_map"], b["score_map"])
        worst = max(worst, float(np.abs(a["score_map"] - b["score_map"]).max()))
    assert worst <= SCORE_TOL, f"max score difference {worst} > {SCORE_TOL}"
    return worst


@pytest.fixture(scope="module")
def unet_export(tmp_path_factory):
    paddle.seed(0)
    model = make_model()
    save_dir = str(tmp_path_factory.mktemp("export") / "unet")
    assert model.export(save_dir) == os.path.abspath(save_dir)
    return model, save_dir


# === The exported directory ===

def test_export_writes_program_params_and_model_yml(unet_export):
    model, save_dir = unet_export
    program = os.path.basename(compat.program_file(os.path.join(save_dir, "model")))
    assert program == "model.pdmodel"   # the old IR on both stacks (oneDNN, OpenVINO)
    assert {program, "model.pdiparams", "model.yml"} <= set(os.listdir(save_dir))
    assert not [n for n in os.listdir(save_dir) if n.startswith(".export")], "temp dir left behind"
    with open(os.path.join(save_dir, "model.yml")) as f:
        info = yaml.safe_load(f)
    assert info["Model"] == "UNet" and info["status"] == "Infer"
    assert info["labels"] == LABELS and info["num_classes"] == 3
    assert info["Transforms"] == model.eval_transforms.to_config()
    assert info["_init_params"]["num_classes"] == 3
    export = info["Export"]
    assert export["model_status"] == "Normal" and export["precision"] == "float32"
    assert export["model_file"] == "model.pdmodel"
    assert export["input_shape"] == [None, 3, None, None] and export["fixed_input_shape"] is None
    assert list(export["outputs"]) == ["label_map", "score_map"]


def test_exported_program_outputs_label_and_score_maps(unet_export):
    model, save_dir = unet_export
    config = paddle.inference.Config(compat.program_file(os.path.join(save_dir, "model")),
                                     os.path.join(save_dir, "model.pdiparams"))
    config.disable_gpu()
    config.disable_glog_info()
    predictor = paddle.inference.create_predictor(config)
    x = np.random.RandomState(3).uniform(-1, 1, (2, 3, 48, 64)).astype("float32")
    handle = predictor.get_input_handle(predictor.get_input_names()[0])
    handle.reshape(list(x.shape))
    handle.copy_from_cpu(x)
    predictor.run()
    label, score = [predictor.get_output_handle(n).copy_to_cpu() for n in predictor.get_output_names()]
    with paddle.no_grad():
        logit = model.net(paddle.to_tensor(x))[0].numpy()
    assert label.shape == (2, 1, 48, 64) and label.dtype == np.int32
    assert score.shape == (2, 48, 64, 3)
    np.testing.assert_array_equal(label[:, 0], logit.argmax(axis=1))
    expected = np.exp(logit - logit.max(1, keepdims=True))
    expected /= expected.sum(1, keepdims=True)
    np.testing.assert_allclose(score, expected.transpose(0, 2, 3, 1), atol=SCORE_TOL)


def test_predictor_equals_model_predict(unet_export):
    model, save_dir = unet_export
    predictor = Predictor(save_dir, mkl_thread_num=2)
    batch = images((64, 64), (72, 88), (64, 64))   # two share a size: a real batch of 2
    diff = assert_same_predictions(predictor.predict(batch), model.predict(batch))
    diff1 = assert_same_predictions(predictor.predict(batch[1]), model.predict(batch[1]))
    print(f"UNet export vs in-process: max score difference {max(diff, diff1):.2e}")


def test_predictor_without_mkldnn_equals_model_predict(unet_export):
    model, save_dir = unet_export
    predictor = Predictor(save_dir, use_mkl=False, cpu_thread_num=2)
    image = images((56, 40), seed=4)[0]
    assert_same_predictions(predictor.predict(image), model.predict(image))


def assert_original_forwards(net):
    converted = [name or type(net).__name__ for name, layer in net.named_sublayers(include_self=True)
                 if "forward" in vars(layer)]
    assert not converted, f"export left a converted forward on {len(converted)} layers: {converted[:5]}"


def test_export_leaves_the_model_usable_and_in_its_mode(tmp_path):
    model = make_model()
    model.net.train()
    before = {k: v.numpy().copy() for k, v in model.net.state_dict().items()}
    model.export(str(tmp_path / "a"))
    assert model.net.training, "export must restore the training flag"
    assert all(layer.training for layer in model.net.sublayers())
    assert paddle.in_dynamic_mode()
    # Tracing puts a converted forward on every sublayer; left there, the model in memory
    # ran 1.3-5x slower after export (measured on UNet).
    assert_original_forwards(model.net)
    after = model.net.state_dict()
    for key, value in before.items():
        np.testing.assert_array_equal(after[key].numpy(), value, err_msg=key)
    model.net.eval()
    image = images((64, 64))[0]
    assert_same_predictions(Predictor(str(tmp_path / "a")).predict(image), model.predict(image))


def test_reexport_replaces_our_files_and_keeps_others(tmp_path):
    save_dir = tmp_path / "out"
    save_dir.mkdir()
    (save_dir / "notes.txt").write_text("mine")
    (save_dir / "model.onnx").write_bytes(b"stale onnx from an earlier export")
    first = make_model()
    paddle.seed(5)  # other weights: the second export must be the one that is read
    second = seg.UNet(num_classes=3)
    randomize_batch_norm_stats(second.net, seed=2)
    second.eval_transforms = T.Compose([T.Normalize()])
    first.export(str(save_dir))
    second.export(str(save_dir))
    assert (save_dir / "notes.txt").read_text() == "mine"
    assert not (save_dir / "model.onnx").exists(), "a stale model.onnx must not survive"
    image = images((64, 64))[0]
    second.net.eval()
    assert_same_predictions(Predictor(str(save_dir)).predict(image), second.predict(image))


# === fixed_input_shape ===

@pytest.mark.parametrize("value, expected", [
    ([224, 160], (None, 160, 224)),            # [w, h]: width first, as in PaddleX
    ([-1, 3, 224, 160], (None, 160, 224)),
    ([4, 3, 64, 32], (4, 32, 64)),
    ("[224,160]", (None, 160, 224)),
    ("224, 160", (None, 160, 224)),
    ("[-1,3,64,48]", (None, 48, 64)),
    (None, None),
])
def test_parse_fixed_input_shape(value, expected):
    assert parse_fixed_input_shape(value) == expected


@pytest.mark.parametrize("value, words", [
    ([224], "[w, h]"), ([1, 3, 224], "[w, h]"), ([1, 1, 64, 64], "channels"),
    ([0, 64], "positive"), ([64, -3], "positive"), ([0, 3, 64, 64], "batch"),
    ("abc", "[w,h]"), ([64.0, 64], "[w, h]"), (64, "[w, h]"),
])
def test_bad_fixed_input_shape_is_a_clear_error(value, words):
    with pytest.raises(ValueError, match="fixed_input_shape") as info:
        parse_fixed_input_shape(value)
    assert words in str(info.value)


def test_fixed_shape_resizes_any_image_and_maps_back(tmp_path):
    # The eval transforms resize to 96; the fixed shape [w=64, h=48] replaces that Resize.
    model = make_model(transforms=T.Compose([T.Resize(96), T.Normalize()]))
    model.export(str(tmp_path), fixed_input_shape=[64, 48])
    with open(tmp_path / "model.yml") as f:
        export = yaml.safe_load(f)["Export"]
    assert export["input_shape"] == [None, 3, 48, 64] and export["fixed_input_shape"] == [64, 48]
    predictor = Predictor(str(tmp_path))
    assert predictor.transforms.to_config()[1] == ["Resize", {"target_size": [48, 64], "interp": "LINEAR",
                                                              "keep_ratio": False}]
    batch = images((80, 100), (48, 64), (33, 77), seed=7)
    results = predictor.predict(batch)
    assert [r["label_map"].shape for r in results] == [(80, 100), (48, 64), (33, 77)]
    assert_same_predictions(results, model.predict(batch, transforms=predictor.transforms))
    # Transforms that do not produce the fixed size: a clear error, not a Paddle shape error.
    with pytest.raises(ValueError, match=r"80x100 .*exported for 48x64"):
        predictor.predict(batch[0], transforms=T.Compose([T.Normalize()]))


def test_fixed_shape_inserts_a_resize_before_normalize(tmp_path):
    model = make_model()  # Compose([Normalize()]): no resize to replace
    model.export(str(tmp_path), fixed_input_shape="[48,40]")
    predictor = Predictor(str(tmp_path))
    assert [name for name, _ in predictor.transforms.to_config()] == ["Compose", "Resize", "Normalize"]
    image = images((64, 64))[0]
    assert_same_predictions(predictor.predict(image), model.predict(image, transforms=predictor.transforms))


def test_fixed_batch_size_runs_any_number_of_images(tmp_path):
    model = make_model()
    model.export(str(tmp_path), fixed_input_shape=[2, 3, 32, 32])
    predictor = Predictor(str(tmp_path))
    batch = images((32, 32), (40, 30), (32, 32), (64, 64), (20, 20), seed=2)  # 5: padded chunk
    assert_same_predictions(predictor.predict(batch), model.predict(batch, transforms=predictor.transforms))


def test_fixed_shape_that_transforms_cannot_give_is_refused(tmp_path):
    model = make_model(transforms=T.Compose([T.Resize(64), T.CenterCrop(32), T.Normalize()]))
    with pytest.raises(ValueError, match="fixed_input_shape asks for 48x64"):
        model.export(str(tmp_path / "x"), fixed_input_shape=[64, 48])
    assert not (tmp_path / "x" / "model.yml").exists()


def test_bad_export_arguments(tmp_path):
    model = make_model()
    with pytest.raises(ValueError, match="save_dir"):
        model.export("")
    with pytest.raises(ValueError, match="onnx must be True or False"):
        model.export(str(tmp_path), onnx="yes")
    model.status = "Strange"
    with pytest.raises(ValueError, match="model.status"):
        model.export(str(tmp_path))


def test_model_without_eval_transforms_exports_and_predictor_asks_for_them(tmp_path):
    model = make_model()
    model.eval_transforms = None
    model.export(str(tmp_path))
    predictor = Predictor(str(tmp_path))
    image = images((32, 32))[0]
    with pytest.raises(ValueError, match="pass transforms="):
        predictor.predict(image)
    transforms = T.Compose([T.Normalize()])
    assert_same_predictions(predictor.predict(image, transforms=transforms),
                            model.predict(image, transforms=transforms))


# BiSeNetV2, HRNet and DeepLabV3P take 5-15 s each to export: benchmarks/inference.py
# exports every class and checks the same equality (column "max|d score|").
@pytest.mark.parametrize("cls, kwargs", [(seg.FastSCNN, {})])
def test_other_model_classes_export_equal(cls, kwargs, tmp_path):
    model = make_model(cls, **kwargs)
    model.export(str(tmp_path))
    image = images((64, 80), seed=9)[0]
    diff = assert_same_predictions(Predictor(str(tmp_path)).predict(image), model.predict(image))
    print(f"{cls.__name__} export vs in-process: max score difference {diff:.2e}")


# === Pruned and quantized models (model.prune / model.quant_aware_train) ===

@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("slim_data")
    d = seg.make_synthetic_dataset(str(root), num_train=4, num_val=2, image_size=(64, 64),
                                   num_classes=3, seed=1)
    train_ds = seg.SegDataset(d.root, d.train_list, d.label_list, transforms=T.Compose([T.Normalize()]),
                              num_workers=0)
    eval_ds = seg.SegDataset(d.root, d.val_list, d.label_list, transforms=T.Compose([T.Normalize()]),
                             num_workers=0)
    return train_ds, eval_ds


def test_pruned_model_exports_equal(tmp_path, monkeypatch):
    """model.prune leaves smaller convolutions and status 'Pruned'; the export of the
    object, and of the pruned directory reloaded by load_model (the command-line path),
    predict as the pruned model does."""
    from paddlex_seg import segmenter
    from paddlex_seg.slim import prune as P
    # Traced at 64x64 instead of 256x256: pruning UNet then takes 2 s instead of 30.
    monkeypatch.setattr(segmenter, "PRUNE_INPUT_SHAPE", [1, 3, 64, 64])
    model = make_model()
    before = sum(int(np.prod(p.shape)) for p in model.net.parameters())
    # Made-up sensitivities stand in for analyze_sensitivity (tested in the slim tests):
    # export does not care which filters went.
    P.register_concat_support()
    names = P.prunable_params(model.net, segmenter.PRUNE_INPUT_SHAPE)
    model.sensitivities = {name: {0.2: 0.01 * (i % 5), 0.5: 0.05 * (i % 5 + 1)}
                           for i, name in enumerate(names)}
    model.prune(pruned_flops=0.3, save_dir=str(tmp_path / "pruned"))
    model.net.eval()
    assert model.status == "Pruned"
    assert sum(int(np.prod(p.shape)) for p in model.net.parameters()) < before
    model.export(str(tmp_path / "infer"))
    with open(tmp_path / "infer" / "model.yml") as f:
        assert yaml.safe_load(f)["Export"]["model_status"] == "Pruned"
    image = images((64, 64), seed=5)[0]
    diff = assert_same_predictions(Predictor(str(tmp_path / "infer")).predict(image), model.predict(image))
    print(f"pruned UNet export vs in-process: max score difference {diff:.2e}")

    reloaded = seg.load_model(str(tmp_path / "pruned"))
    reloaded.export(str(tmp_path / "infer2"))
    assert_same_predictions(Predictor(str(tmp_path / "infer2")).predict(image), model.predict(image))


def test_quantized_model_exports_int8_program(data, tmp_path):
    """model.quant_aware_train sets model.quanter; export goes through
    slim.quant.save_quantized_inference_model, also after load_model of the QAT directory.

    An int8 program is not bit-identical to the fake-quantized dygraph network (each
    convolution output is rounded to 8 bits as well), so agreement is measured rather
    than required to 1e-4: >= 95 % of labels, scores within 0.15.
    """
    train_ds, eval_ds = data
    model = make_model()
    model.quant_aware_train(num_epochs=1, train_dataset=train_ds, train_batch_size=4,
                            eval_dataset=eval_ds, save_dir=str(tmp_path / "qat"), use_vdl=False)
    assert model.status == "Quantized" and model.quanter is not None
    model.net.eval()
    model.export(str(tmp_path / "infer"))
    assert_original_forwards(model.net)
    with open(tmp_path / "infer" / "model.yml") as f:
        export = yaml.safe_load(f)["Export"]
    assert export["model_status"] == "Quantized" and export["precision"] == "int8"
    # handed to the predictor through model.yml
    assert export["onednn_int8_op_types"] == sorted(compat.ONEDNN_INT8_OP_TYPES)
    with open(compat.program_file(str(tmp_path / "infer" / "model")), "rb") as f:
        assert b"quantize_linear" in f.read(), "the quantized program must carry quant ops"
    image = images((64, 64), seed=6)[0]
    expected = model.predict(image)
    for infer_dir in (tmp_path / "infer", tmp_path / "infer2"):
        if infer_dir.name == "infer2":  # the command-line path: load the QAT checkpoint, export
            seg.load_model(str(tmp_path / "qat" / "best_model")).export(str(infer_dir))
        got = Predictor(str(infer_dir), mkl_thread_num=2).predict(image)
        agreement = float((got["label_map"] == expected["label_map"]).mean())
        diff = float(np.abs(got["score_map"] - expected["score_map"]).max())
        print(f"quantized UNet ({infer_dir.name}): label agreement {agreement:.4f}, "
              f"max score difference {diff:.3f}")
        assert agreement >= 0.95 and diff < 0.15


def test_quantized_status_without_quanter_is_a_clear_error(tmp_path):
    model = make_model()
    model.status = "Quantized"
    with pytest.raises(ValueError, match="model.quanter is missing"):
        model.export(str(tmp_path))


def test_inference_net_returns_label_then_scores():
    net = make_model().net
    x = paddle.rand([1, 3, 32, 32])
    label, score = InferenceNet(net)(x)
    assert label.shape == [1, 1, 32, 32] and label.dtype == paddle.int32
    assert score.shape == [1, 32, 32, 3]
    np.testing.assert_allclose(score.numpy().sum(-1), 1.0, rtol=1e-5)
