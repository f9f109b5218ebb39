"""Quantization-aware training: config checks, in-place quantization of our networks,
training, the state-dict round trip, and the exported model run by paddle.inference.

Random networks are made realistic first: one training-mode pass with BatchNorm
momentum 0 gives every BatchNorm the statistics of the data, so activations in eval
mode are O(1) as in a trained network. Activation scales are then calibrated by a
few training-mode passes on the evaluation image with BatchNorm frozen, so the float
and the quantized network differ by quantization only.

``python tests/slim/test_quant.py --benchmark`` measures float vs int8 latency.
"""
import copy
import os
import sys

import numpy as np
import paddle
import paddle.inference as paddle_infer
import paddle.nn as nn
import paddle.nn.functional as F
import pytest
from paddleslim import QAT

from paddlex_seg.slim.quant import (DEFAULT_QUANT_CONFIG, ONEDNN_INT8_OP_TYPES,
                                    check_quant_config, count_quantized_layers,
                                    load_quantized_state, quantize_net,
                                    save_quantized_inference_model)

NUM_CLASSES = 4
INPUT_SPEC = [paddle.static.InputSpec([None, 3, None, None], "float32", "x")]
# A fast-converging moving average for the tests: after CALIBRATION_STEPS passes the
# scales' initial placeholder weighs 0.3**8 ~ 7e-5. Training uses the default 0.9.
CALIBRATION = {"moving_rate": 0.3}
CALIBRATION_STEPS = 8


def build(name):
    """A small float network by name; skips when its module is not written yet."""
    if name == "UNet":
        from paddlex_seg.models.unet import UNet
        return UNet(NUM_CLASSES)
    if name == "BiSeNetV2":
        from paddlex_seg.models.bisenetv2 import BiSeNetV2
        return BiSeNetV2(NUM_CLASSES)
    if name == "FastSCNN":
        from paddlex_seg.models.fast_scnn import FastSCNN
        return FastSCNN(NUM_CLASSES)
    backbones = pytest.importorskip("paddlex_seg.models.backbones")
    if name == "DeepLabV3P":
        deeplab = pytest.importorskip("paddlex_seg.models.deeplab")
        backbone = backbones.get_backbone("ResNet18_vd", output_stride=8)
        return deeplab.DeepLabV3P(NUM_CLASSES, backbone, aspp_ratios=(1, 12, 24, 36))
    if name == "FCN":
        fcn = pytest.importorskip("paddlex_seg.models.fcn")
        return fcn.FCN(NUM_CLASSES, backbones.get_backbone("HRNet_W18_Small_V1"))
    raise KeyError(name)


def image(batch, seed, size=64):
    """Noise with a brighter square, so the networks see some structure."""
    x = np.random.RandomState(seed).uniform(-1, 1, (batch, 3, size, size)).astype("float32")
    x[:, :, size // 4:3 * size // 4, size // 4:3 * size // 4] += 1.0
    return paddle.to_tensor(x)


def batch_norms(net):
    return [layer for layer in net.sublayers() if isinstance(layer, nn.layer.norm._BatchNormBase)]


def fit_batch_norm_to_data(net, x):
    for bn in batch_norms(net):
        bn._momentum = 0.0  # running statistics := this batch's statistics
    net.train()
    with paddle.no_grad():
        net(x)
    for bn in batch_norms(net):
        bn._momentum = 0.9
    net.eval()


def calibrate(net, x, steps=CALIBRATION_STEPS):
    """Training-mode passes that update only the activation scales (BatchNorm frozen)."""
    net.train()
    for bn in batch_norms(net):
        bn.eval()
    with paddle.no_grad():
        for _ in range(steps):
            net(x)
    net.eval()


def eval_logits(net, x):
    net.eval()
    with paddle.no_grad():
        return net(x)[0].numpy()


def compare(ours, ref):
    """(max relative difference, mean relative difference, argmax agreement) over NCHW maps."""
    diff = np.abs(ours - ref)
    return (float(diff.max() / np.abs(ref).max()), float(diff.mean() / np.abs(ref).mean()),
            float((ours.argmax(1) == ref.argmax(1)).mean()))


def distinct_layers(net, layer_type):
    return len({id(layer) for layer in net.sublayers() if type(layer) is layer_type})


class Scores(nn.Layer):
    """What an export wrapper looks like: softmax scores of the main logits."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return F.softmax(self.net(x)[0], axis=1)


def predict(path_prefix, x, int8, op_types=ONEDNN_INT8_OP_TYPES):
    config = paddle_infer.Config(path_prefix + ".pdmodel", path_prefix + ".pdiparams")
    config.disable_gpu()
    config.set_cpu_math_library_num_threads(2)
    config.disable_glog_info()
    if int8:
        config.enable_mkldnn()
        config.enable_mkldnn_int8(set(op_types))
    predictor = paddle_infer.create_predictor(config)
    predictor.get_input_handle(predictor.get_input_names()[0]).copy_from_cpu(x)
    predictor.run()
    return predictor.get_output_handle(predictor.get_output_names()[0]).copy_to_cpu()


# --- check_quant_config ---------------------------------------------------------------

def test_defaults_are_the_paddlex_ones():
    assert DEFAULT_QUANT_CONFIG == {
        "weight_preprocess_type": None, "activation_preprocess_type": None,
        "weight_quantize_type": "channel_wise_abs_max",
        "activation_quantize_type": "moving_average_abs_max",
        "weight_bits": 8, "activation_bits": 8, "moving_rate": 0.9,
        "quantizable_layer_type": ["Conv2D", "Linear"]}
    assert check_quant_config(None) == DEFAULT_QUANT_CONFIG
    assert check_quant_config({}) == DEFAULT_QUANT_CONFIG


def test_user_values_are_merged_into_a_copy():
    user = {"weight_bits": 4, "weight_preprocess_type": "PACT", "moving_rate": 0.5,
            "quantizable_layer_type": ["Conv2D", "Conv2DTranspose", "Conv2D"]}
    config = check_quant_config(user)
    assert config["weight_bits"] == 4 and config["weight_preprocess_type"] == "PACT"
    assert config["activation_bits"] == 8
    assert config["quantizable_layer_type"] == ["Conv2D", "Conv2DTranspose"]
    assert user["quantizable_layer_type"] == ["Conv2D", "Conv2DTranspose", "Conv2D"]
    config["quantizable_layer_type"].append("Linear")
    assert DEFAULT_QUANT_CONFIG["quantizable_layer_type"] == ["Conv2D", "Linear"]
    assert isinstance(check_quant_config({"moving_rate": np.float32(0.5)})["moving_rate"], float)


def test_unknown_keys_are_named_with_the_allowed_ones():
    with pytest.raises(ValueError) as info:
        check_quant_config({"weight_bit": 8, "onnx_format": False, "moving_rate": 0.9})
    message = str(info.value)
    assert "'onnx_format'" in message and "'weight_bit'" in message
    assert "'weight_bits'" in message and "'quantizable_layer_type'" in message


@pytest.mark.parametrize("key, value", [
    ("weight_bits", 0), ("weight_bits", 17), ("weight_bits", 8.0), ("activation_bits", True),
    ("activation_bits", "8"), ("moving_rate", 1.0), ("moving_rate", 0), ("moving_rate", "0.9"),
    ("weight_quantize_type", "range_abs_max"), ("weight_quantize_type", "moving_average_abs_max"),
    ("activation_quantize_type", "abs_max"), ("weight_preprocess_type", "pact"),
    ("activation_preprocess_type", ["PACT"]), ("quantizable_layer_type", ["Conv2D", "BatchNorm"]),
    ("quantizable_layer_type", "Conv2D"), ("quantizable_layer_type", []),
])
def test_bad_values_name_the_key(key, value):
    with pytest.raises(ValueError, match=f"quant_config\\['{key}'\\]"):
        check_quant_config({key: value})


def test_config_must_be_a_dict():
    with pytest.raises(ValueError, match="quant_config must be None or a dict"):
        check_quant_config([("weight_bits", 8)])


# --- quantize_net on our networks -----------------------------------------------------

MODELS = ["UNet", "BiSeNetV2", "FastSCNN", "DeepLabV3P", "FCN"]


@pytest.mark.parametrize("name", MODELS)
def test_quantize_train_and_reload(name, tmp_path):
    x = image(1, seed=1)
    float_net = build(name)
    fit_batch_norm_to_data(float_net, image(4, seed=0))
    reference = eval_logits(float_net, x)

    # 16 bits: the quantized network computes the float network's function.
    net16 = copy.deepcopy(float_net)
    quantize_net(net16, dict(CALIBRATION, weight_bits=16, activation_bits=16))
    calibrate(net16, x)
    rel_max16, _, _ = compare(eval_logits(net16, x), reference)
    assert rel_max16 < 1e-2, f"{name}: 16-bit quantized vs float, relative max diff {rel_max16}"

    # 8 bits (default), quantized in place.
    net = copy.deepcopy(float_net)
    float_params = {id(p) for p in net.parameters()}
    convs = distinct_layers(net, nn.Conv2D)
    quanter = quantize_net(net, CALIBRATION)
    assert isinstance(quanter, QAT)
    assert count_quantized_layers(net) == convs > 0
    assert float_params <= {id(p) for p in net.parameters()}, "weights are shared, not copied"
    assert len(net.state_dict()) > len(float_net.state_dict())  # scales were added
    calibrate(net, x)
    rel_max, rel_mean, agree = compare(eval_logits(net, x), reference)
    # 8-bit rounding through 19-73 untrained layers. Measured mean relative difference
    # / argmax agreement: UNet .13/.93, BiSeNetV2 .12/.94, FastSCNN .14/.97,
    # DeepLabV3P .27/.85, FCN .18/.84 (16 bits: < .002/> .99).
    assert rel_mean < 0.4 and agree > 0.75, (name, rel_max, rel_mean, agree)

    # A few SGD steps, as the shared training loop would run them.
    optimizer = paddle.optimizer.Momentum(1e-3, parameters=net.parameters(), weight_decay=1e-4)
    label = paddle.to_tensor(np.random.RandomState(2).randint(0, NUM_CLASSES, (2, 1, 64, 64)))
    before = {k: v.numpy().copy() for k, v in net.state_dict().items()}
    net.train()
    for step in range(2):
        logits = net(image(2, seed=10 + step))
        loss = sum(F.cross_entropy(logit, label, axis=1).mean() for logit in logits)
        loss.backward()
        optimizer.step()
        optimizer.clear_grad()
        assert np.isfinite(float(loss)), f"{name}: loss {float(loss)} at step {step}"
    after = net.state_dict()
    changed = [k for k in before if not np.array_equal(before[k], after[k].numpy())]
    assert any(k.endswith("_fake_quant_input._scale") for k in changed), "scales follow the batches"
    assert any(k.endswith(".weight") and "_scale" not in k for k in changed), "weights are trained"

    # Round trip through a file: a fresh network, the same config, identical outputs.
    paddle.save(net.state_dict(), str(tmp_path / "model.pdparams"))
    restored = build(name)
    load_quantized_state(restored, CALIBRATION, paddle.load(str(tmp_path / "model.pdparams")))
    assert count_quantized_layers(restored) == convs
    np.testing.assert_array_equal(eval_logits(restored, x), eval_logits(net, x))


# --- export and paddle.inference ------------------------------------------------------

# int8_convs: what oneDNN reports as "quantized N fused_conv2d ops". UNet: all 19.
# FastSCNN: 39, plus 6 reported "with residual connection"; its 2 auxiliary-head
# convolutions only run in training and are not in the exported program.
@pytest.mark.parametrize("name, int8_convs", [("UNet", 19), ("FastSCNN", 39)])
def test_export_runs_in_paddle_inference_int8(name, int8_convs, tmp_path, capfd):
    x = image(1, seed=1)
    net = build(name)
    fit_batch_norm_to_data(net, image(4, seed=0))
    quanter = quantize_net(net, CALIBRATION)
    calibrate(net, x)
    wrapper = Scores(net)
    wrapper.eval()
    with paddle.no_grad():
        dygraph = wrapper(x).numpy()

    wrapper.train()  # the exporter must trace in eval mode and give the flags back
    prefix = str(tmp_path / "infer" / "model")
    save_quantized_inference_model(wrapper, quanter, prefix, INPUT_SPEC)
    assert os.path.getsize(prefix + ".pdmodel") > 0
    assert os.path.getsize(prefix + ".pdiparams") > 0
    assert net.training and wrapper.training and paddle.in_dynamic_mode()
    assert "forward" not in vars(wrapper), "the to_static decoration is undone"
    wrapper.eval()
    with paddle.no_grad():
        np.testing.assert_array_equal(wrapper(x).numpy(), dygraph)

    capfd.readouterr()
    int8 = predict(prefix, x.numpy(), int8=True)
    log = capfd.readouterr().err
    # oneDNN's quantize pass reports the convolutions it turned into int8 kernels.
    assert f"quantized {int8_convs} fused_conv2d ops" in log, log[-2000:]
    plain = predict(prefix, x.numpy(), int8=False)
    for out in (int8, plain):
        assert out.shape == (1, NUM_CLASSES, 64, 64)
        np.testing.assert_allclose(out.sum(1), 1.0, atol=1e-4)  # softmax scores
    # The exported program also quantizes every convolution's output (before its
    # BatchNorm), which the dygraph network only observes: float inference of it is
    # the farthest from dygraph. oneDNN folds BatchNorm first and comes closer.
    # Measured: argmax agreement int8 .960 (UNet) / .974 (FastSCNN), float .904 / .984;
    # mean absolute score difference int8 .009 / .018.
    _, score_diff, agree = compare(int8, dygraph)
    assert agree > 0.95 and np.abs(int8 - dygraph).mean() < 0.03, (agree, score_diff)
    _, _, agree_plain = compare(plain, dygraph)
    assert agree_plain > 0.85, agree_plain

    if name == "FastSCNN":  # why ONEDNN_INT8_OP_TYPES leaves pool2d out
        with pytest.raises(NotImplementedError, match="no kernels .* pool2d"):
            predict(prefix, x.numpy(), int8=True, op_types=())


class TinySegNet(nn.Layer):
    """Conv-BN-ReLU and a 1x1 classifier, returning [logits] like our networks."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2D(3, 8, 3, padding=1), nn.BatchNorm2D(8), nn.ReLU())
        self.cls = nn.Conv2D(8, NUM_CLASSES, 1)

    def forward(self, x):
        return [self.cls(self.body(x))]


def test_pact_exports_the_trained_wrapper(tmp_path):
    # A tiny network: tracing a real one for export takes seconds, and PACT's export
    # path does not depend on the architecture.
    x = image(1, seed=1)
    net = TinySegNet()
    fit_batch_norm_to_data(net, image(4, seed=0))
    quanter = quantize_net(net, dict(CALIBRATION, weight_preprocess_type="PACT",
                                     activation_preprocess_type="PACT"))
    alphas = [p for p in net.parameters() if p.name.endswith(".pact")]
    assert len(alphas) == 2 * count_quantized_layers(net) == 4, "one clip per weight and input"
    calibrate(net, x)
    wrapper = Scores(net)
    wrapper.eval()
    with paddle.no_grad():
        unchanged = wrapper(x).numpy()
    # Change the weights after quantizing, as training does: PaddleSlim's own PACT
    # export would save the network as it was at quantize time (and drop the wrapper).
    classifier = net.cls._layer
    assert type(classifier).__name__ == "QuantizedConv2D"
    classifier.weight.set_value(-classifier.weight)
    classifier.bias.set_value(-classifier.bias)
    with paddle.no_grad():
        dygraph = wrapper(x).numpy()
    assert compare(dygraph, unchanged)[2] < 0.5

    save_quantized_inference_model(wrapper, quanter, str(tmp_path / "model"), INPUT_SPEC)
    assert paddle.in_dynamic_mode(), "PaddleSlim's PACT export leaves static mode on"
    assert len([p for p in net.parameters() if p.name.endswith(".pact")]) == len(alphas)
    exported = predict(str(tmp_path / "model"), x.numpy(), int8=True)
    _, _, agree = compare(exported, dygraph)
    assert agree > 0.9, agree


def test_failed_export_leaves_the_network_usable(tmp_path):
    net = TinySegNet()
    quanter = quantize_net(net)
    wrapper = Scores(net)
    wrapper.train()
    wrong_rank = [paddle.static.InputSpec([None, 3], "float32", "x")]  # a convolution needs 4-D
    with pytest.raises(ValueError):  # the trace fails on the first convolution
        save_quantized_inference_model(wrapper, quanter, str(tmp_path / "model"), wrong_rank)
    assert "forward" not in vars(wrapper) and paddle.in_dynamic_mode()
    assert wrapper.training and net.training
    assert wrapper(image(1, seed=0, size=8)).shape == [1, NUM_CLASSES, 8, 8]


# --- argument errors ------------------------------------------------------------------

def _tiny_net():
    return nn.Sequential(nn.Conv2D(3, 4, 3, padding=1), nn.BatchNorm2D(4), nn.ReLU(),
                         nn.Conv2DTranspose(4, NUM_CLASSES, 2, stride=2))


def test_quantize_net_errors():
    with pytest.raises(ValueError, match="net must be a paddle.nn.Layer"):
        quantize_net(lambda x: x)
    with pytest.raises(ValueError, match="no layer of the quantizable types"):
        quantize_net(_tiny_net(), {"quantizable_layer_type": ["Linear"]})
    net = _tiny_net()
    quantize_net(net)
    with pytest.raises(ValueError, match="already quantized"):
        quantize_net(net)


def test_conv2d_transpose_and_abs_max_weights():
    net = _tiny_net()
    quantize_net(net, {"quantizable_layer_type": ["Conv2D", "Conv2DTranspose"],
                       "weight_quantize_type": "abs_max"})
    assert count_quantized_layers(net) == 2
    net.train()
    assert net(image(1, seed=0, size=16)).shape == [1, NUM_CLASSES, 32, 32]


def test_load_quantized_state_rejects_other_checkpoints():
    with pytest.raises(ValueError, match="missing key"):  # a float checkpoint
        load_quantized_state(_tiny_net(), None, _tiny_net().state_dict())
    saved = _tiny_net()
    quantize_net(saved, {"weight_quantize_type": "abs_max"})
    with pytest.raises(ValueError, match="wrong shape"):  # per-tensor vs per-channel scales
        load_quantized_state(_tiny_net(), None, saved.state_dict())


def test_save_errors(tmp_path):
    net = _tiny_net()
    quanter = quantize_net(net)
    with pytest.raises(ValueError, match="holds no quantized layer"):
        save_quantized_inference_model(_tiny_net(), quanter, str(tmp_path / "m"), INPUT_SPEC)
    with pytest.raises(ValueError, match="quanter must be"):
        save_quantized_inference_model(net, None, str(tmp_path / "m"), INPUT_SPEC)
    with pytest.raises(ValueError, match="input_spec"):
        save_quantized_inference_model(net, quanter, str(tmp_path / "m"), None)
    with pytest.raises(ValueError, match="path_prefix"):
        save_quantized_inference_model(net, quanter, "", INPUT_SPEC)


# --- latency (not a test) -------------------------------------------------------------

def benchmark(size=256, threads=2, warmup=3, runs=10):
    """Median latency of UNet float vs QAT int8 under paddle.inference on CPU.

    Predictors run in turns (one run of each per round), so a change in the machine's
    load affects all of them alike.
    """
    import tempfile
    import time

    from paddlex_seg.models.unet import UNet

    paddle.seed(0)
    work = tempfile.mkdtemp()
    net = UNet(NUM_CLASSES)
    fit_batch_norm_to_data(net, image(2, seed=0, size=size))
    paddle.jit.save(net, os.path.join(work, "float", "model"), input_spec=INPUT_SPEC)
    vars(net).pop("forward", None)
    quanter = quantize_net(net)
    calibrate(net, image(1, seed=1, size=size), steps=3)
    save_quantized_inference_model(net, quanter, os.path.join(work, "qat", "model"), INPUT_SPEC)

    def make(kind, mkldnn, int8):
        prefix = os.path.join(work, kind, "model")
        config = paddle_infer.Config(prefix + ".pdmodel", prefix + ".pdiparams")
        config.disable_gpu()
        config.disable_glog_info()
        config.set_cpu_math_library_num_threads(threads)
        if mkldnn:
            config.enable_mkldnn()
        if int8:
            config.enable_mkldnn_int8(set(ONEDNN_INT8_OP_TYPES))
        predictor = paddle_infer.create_predictor(config)
        predictor.get_input_handle(predictor.get_input_names()[0]).copy_from_cpu(
            image(1, seed=2, size=size).numpy())
        return predictor

    cases = {
        "float model, no oneDNN": make("float", False, False),
        "float model, oneDNN fp32": make("float", True, False),
        "QAT model, oneDNN fp32 (fake quant)": make("qat", True, False),
        "QAT model, oneDNN int8": make("qat", True, True),
    }
    times = {label: [] for label in cases}
    for round_ in range(warmup + runs):
        for label, predictor in cases.items():
            start = time.perf_counter()
            predictor.run()
            if round_ >= warmup:
                times[label].append(time.perf_counter() - start)
    print(f"UNet({NUM_CLASSES}) 1x3x{size}x{size}, {threads} threads, median of {runs}, "
          f"load average {os.getloadavg()[0]:.1f}")
    for label, samples in times.items():
        print(f"  {label:40s} {1000 * np.median(samples):8.1f} ms")
    for kind in ("float", "qat"):
        megabytes = os.path.getsize(os.path.join(work, kind, "model.pdiparams")) / 2 ** 20
        print(f"  {kind} model.pdiparams: {megabytes:.1f} MB")


if __name__ == "__main__" and "--benchmark" in sys.argv:
    benchmark()
