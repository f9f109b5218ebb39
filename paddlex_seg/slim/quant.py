"""Quantization-aware training (QAT) of a segmentation network, on PaddleSlim.

PaddleSlim's dygraph ``paddleslim.QAT`` does the work: it swaps every quantizable
layer (``Conv2D``, ``Linear``, ...) for a ``Quantized*`` layer that fake-quantizes
its input and weight, and wraps it in a layer that tracks a moving average of the
output's range. This module adds what a high-level toolkit needs around it:

* ``check_quant_config`` validates the user's ``quant_config`` of
  ``quant_aware_train`` (PaddleX 2.x keys) and fills in the defaults;
* ``quantize_net`` quantizes a network in place, so the ordinary training loop
  trains it with an ordinary optimizer over ``net.parameters()``;
* ``load_quantized_state`` rebuilds a saved QAT model: a fresh float network is
  quantized with the same config, then receives the saved state dict (which holds
  the scales next to the weights);
* ``save_quantized_inference_model`` writes ``<prefix>.pdmodel`` /
  ``<prefix>.pdiparams`` that Paddle Inference runs in int8.

Typical use (the training loop and ``quant_aware_train`` live elsewhere)::

    quanter = quantize_net(net, quant_config)           # net is modified in place
    train(net, optimizer=paddle.optimizer.Momentum(parameters=net.parameters()), ...)
    # a wrapper that contains net, e.g. one returning softmax scores of net(x)[0]
    save_quantized_inference_model(wrapper, quanter, "out/model",
                                   [paddle.static.InputSpec([None, 3, None, None])])

The exported model
------------------
It is saved in PaddleSlim's default "ONNX" format: each quantized layer's input,
weight and output pass through ``quantize_linear``/``dequantize_linear`` pairs, and
the weights are stored as int8 values (a quarter of the float file). The outputs of
quantized layers are quantized too, while the dygraph network only observes their
range, so the file does not compute exactly what the dygraph network computes in
eval mode. The gap is largest when the file runs in float: a convolution's output is
rounded with one scale for all channels before its BatchNorm rescales each channel,
rounding error included (on the untrained networks of the tests, 12-25% of the
logits' mean magnitude; DeepLabV3+ about 45%). oneDNN int8 folds BatchNorm into the
convolution first and comes closer: 4-10% (DeepLabV3+ about 25%), the order of the
gap between the dygraph quantized network and the float one (10-25%). These
figures are for random weights; trained networks were not measured.

Running it in int8 on CPU (checked with Paddle 2.6.2 on an Intel Xeon with
AVX512-VNNI and AMX-INT8, 2 cores)::

    config = paddle.inference.Config("out/model.pdmodel", "out/model.pdiparams")
    config.disable_gpu()
    config.set_cpu_math_library_num_threads(2)
    config.enable_mkldnn()                             # oneDNN kernels
    config.enable_mkldnn_int8(set(ONEDNN_INT8_OP_TYPES))
    predictor = paddle.inference.create_predictor(config)

``enable_mkldnn_int8`` runs oneDNN's QAT passes, which fold BatchNorm into the
convolutions, turn the quantize/dequantize pairs into scales and swap the
convolutions for int8 kernels; it turns oneDNN on by itself, and IR optimisation
must stay on (the default). The passes report what they converted on stderr, e.g.
"quantized 19 fused_conv2d ops" for UNet (all of its convolutions). Pass
``ONEDNN_INT8_OP_TYPES`` rather than the default (all types): the default fails on
FastSCNN (see the constant). Without ``enable_mkldnn_int8`` the same file runs in
float, emulating the quantization, and is the slowest of all.

Latency of UNet (4 classes) at 1x3x256x256, 2 threads, median of 10 runs after 3
warm-up runs, the predictors taking turns (measured on a shared machine, load
average ~5, so the ratios matter more than the absolute times)::

    float model (paddle.jit.save), no oneDNN           745 ms
    float model, oneDNN fp32                           760 ms
    QAT model, oneDNN fp32 (fake quant emulated)      2282 ms
    QAT model, oneDNN int8                             227 ms   (3.3x faster)

    model.pdiparams: float 51.1 MB, QAT 12.9 MB (int8 weights)

``python tests/slim/test_quant.py --benchmark`` repeats the measurement. On the
test images the int8 predictor's softmax scores agree in argmax with the dygraph
quantized network on more than 95% of the pixels (UNet, FastSCNN).

Limits of Paddle 2.6's dygraph QAT, enforced by ``check_quant_config``:
activations are quantized only with ``'moving_average_abs_max'`` (PaddleX 2.x also
documented ``'abs_max'``, which Paddle's dygraph quantizer rejects), and only
``Conv2D``, ``Conv2DTranspose`` and ``Linear`` layers can be quantized.
"""
import copy
import numbers
import os
import warnings

import paddle
import paddle.nn as nn
from paddle.nn.quant import quant_layers

from .. import compat

compat.import_paddleslim()  # noqa: E402 (a clear error when PaddleSlim is missing)
from paddleslim import QAT

from ..log import logger

__all__ = [
    "DEFAULT_QUANT_CONFIG", "ONEDNN_INT8_OP_TYPES", "check_quant_config", "quantize_net",
    "load_quantized_state", "save_quantized_inference_model", "count_quantized_layers",
]

# The ``quant_config`` keys of PaddleX 2.x's ``quant_aware_train`` and their defaults.
# Treat as read-only; ``check_quant_config`` returns fresh copies.
DEFAULT_QUANT_CONFIG = {
    "weight_preprocess_type": None,
    "activation_preprocess_type": None,
    "weight_quantize_type": "channel_wise_abs_max",
    "activation_quantize_type": "moving_average_abs_max",
    "weight_bits": 8,
    "activation_bits": 8,
    "moving_rate": 0.9,
    "quantizable_layer_type": ["Conv2D", "Linear"],
}

PREPROCESS_TYPES = (None, "PACT")
# What Paddle 2.6's dygraph quantizer accepts (PaddleSlim's own list is longer, but
# the extra names fail later, deep inside Paddle).
WEIGHT_QUANTIZE_TYPES = ("abs_max", "channel_wise_abs_max")
ACTIVATION_QUANTIZE_TYPES = ("moving_average_abs_max",)
QUANTIZABLE_LAYER_TYPES = ("Conv2D", "Conv2DTranspose", "Linear")

# Operator types for ``Config.enable_mkldnn_int8`` (kept in compat, which deploy shares).
ONEDNN_INT8_OP_TYPES = compat.ONEDNN_INT8_OP_TYPES

# Layers that hold fake-quant logic once a network is quantized.
_QUANTIZED_LAYERS = (quant_layers.QuantizedConv2D, quant_layers.QuantizedConv2DTranspose,
                     quant_layers.QuantizedLinear)


def check_quant_config(quant_config=None):
    """Validate a ``quant_config`` and merge it into the defaults.

    Args:
        quant_config (dict|None): any subset of the keys of ``DEFAULT_QUANT_CONFIG``:

            - ``weight_preprocess_type`` / ``activation_preprocess_type`` (None|str):
              None or ``'PACT'`` (learnt clipping before quantization).
            - ``weight_quantize_type`` (str): ``'channel_wise_abs_max'`` or ``'abs_max'``.
            - ``activation_quantize_type`` (str): ``'moving_average_abs_max'``.
            - ``weight_bits`` / ``activation_bits`` (int): 1 to 16.
            - ``moving_rate`` (float): decay of the moving averages, in (0, 1).
            - ``quantizable_layer_type`` (list[str]): non-empty, from ``'Conv2D'``,
              ``'Conv2DTranspose'``, ``'Linear'``.

            None means all defaults. Default: None.

    Returns:
        dict: a new dict with every key of ``DEFAULT_QUANT_CONFIG``.

    Raises:
        ValueError: unknown keys (all are named, with the allowed ones), or a bad value
            (the key, the value received and what is allowed are named).
    """
    if quant_config is None:
        quant_config = {}
    if not isinstance(quant_config, dict):
        raise ValueError(f"quant_config must be None or a dict, got {type(quant_config).__name__}: "
                         f"{quant_config!r}")
    unknown = sorted(set(quant_config) - set(DEFAULT_QUANT_CONFIG), key=str)
    if unknown:
        raise ValueError(f"quant_config has unknown key(s) {unknown}; the allowed keys are "
                         f"{list(DEFAULT_QUANT_CONFIG)}")

    config = copy.deepcopy(DEFAULT_QUANT_CONFIG)
    config.update(copy.deepcopy(quant_config))
    for key in ("weight_preprocess_type", "activation_preprocess_type"):
        _check_choice(key, config[key], PREPROCESS_TYPES)
    _check_choice("weight_quantize_type", config["weight_quantize_type"], WEIGHT_QUANTIZE_TYPES)
    _check_choice("activation_quantize_type", config["activation_quantize_type"],
                  ACTIVATION_QUANTIZE_TYPES)
    for key in ("weight_bits", "activation_bits"):
        bits = config[key]
        if isinstance(bits, bool) or not isinstance(bits, numbers.Integral) or not 1 <= bits <= 16:
            raise ValueError(f"quant_config['{key}'] must be an int from 1 to 16, got {bits!r}")
        config[key] = int(bits)
    rate = config["moving_rate"]
    if isinstance(rate, bool) or not isinstance(rate, numbers.Real) or not 0 < rate < 1:
        raise ValueError(f"quant_config['moving_rate'] must be a number in (0, 1), got {rate!r}")
    config["moving_rate"] = float(rate)  # PaddleSlim insists on a float
    config["quantizable_layer_type"] = _check_layer_types(config["quantizable_layer_type"])
    return config


def quantize_net(net, quant_config=None):
    """Insert fake-quant layers into ``net`` IN PLACE, ready for quantization-aware training.

    Every layer of the configured types is replaced by its PaddleSlim/Paddle quantized
    counterpart, which shares the original weight and bias parameters and adds
    scale parameters (not trainable; updated by the forward pass in train mode).
    Train ``net`` itself afterwards, with an optimizer over ``net.parameters()``:
    parameters collected before quantizing (from the float layers) are the same
    objects for weights and biases, but miss the PACT clipping parameters.

    Call it once, on a float network, before wrapping it in ``paddle.DataParallel``.
    Activation scales start at a placeholder and follow a moving average of the
    batches seen in training mode, so evaluate only after some training steps.

    Args:
        net (paddle.nn.Layer): the float network, e.g. ``paddlex_seg.models.unet.UNet``.
        quant_config (dict|None): see ``check_quant_config``. Default: None (defaults).

    Returns:
        paddleslim.QAT: the quantizer, needed by ``save_quantized_inference_model``.

    Raises:
        ValueError: ``net`` is not a Layer, is already quantized, or has no layer of
            the quantizable types; or ``quant_config`` is invalid.
    """
    config = check_quant_config(quant_config)
    if not isinstance(net, nn.Layer):
        raise ValueError(f"net must be a paddle.nn.Layer, got {type(net).__name__}")
    if count_quantized_layers(net):
        raise ValueError(f"net ({type(net).__name__}) is already quantized: it holds "
                         f"{count_quantized_layers(net)} quantized layers; quantize a float "
                         "network (see load_quantized_state to restore a QAT checkpoint)")
    layer_classes = tuple(getattr(nn, name) for name in config["quantizable_layer_type"])
    if not any(isinstance(layer, layer_classes) for layer in net.sublayers()):
        raise ValueError(f"net ({type(net).__name__}) has no layer of the quantizable types "
                         f"{config['quantizable_layer_type']} (quant_config"
                         "['quantizable_layer_type']); nothing would be quantized")

    quanter = QAT(config=config)
    quantized = quanter.quantize(net, inplace=True)
    if quantized is not net:  # the training loop relies on quantizing in place
        raise RuntimeError("paddleslim.QAT.quantize returned a new network instead of "
                           "modifying the given one in place")
    logger.info("Quantization-aware training: %d layers of %s quantized (weights %s, %d bits; "
                "activations %s, %d bits)", count_quantized_layers(net),
                config["quantizable_layer_type"], config["weight_quantize_type"],
                config["weight_bits"], config["activation_quantize_type"],
                config["activation_bits"])
    return quanter


def load_quantized_state(net, quant_config, state_dict):
    """Rebuild a saved QAT network: quantize a fresh float ``net``, then load its weights.

    A quantized network's ``state_dict()`` has more entries than the float one (the
    scales and moving-average state of every quantized layer, PACT clipping values),
    so it loads only into a network quantized with the same config.

    Args:
        net (paddle.nn.Layer): a float network built with the same arguments as the
            one that was trained; quantized in place.
        quant_config (dict|None): the config the saved network was quantized with.
        state_dict (dict): ``state_dict()`` of the quantized network (e.g. read with
            ``paddle.load``).

    Returns:
        paddleslim.QAT: the quantizer, as returned by ``quantize_net``.

    Raises:
        ValueError: the keys or shapes of ``state_dict`` do not match the quantized
            network (e.g. a float checkpoint, or another quant_config).
    """
    if not isinstance(state_dict, dict):
        raise ValueError(f"state_dict must be a dict, got {type(state_dict).__name__}")
    quanter = quantize_net(net, quant_config)
    expected = {key: list(value.shape) for key, value in net.state_dict().items()}
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"state_dict does not match {type(net).__name__} quantized with this quant_config: "
            f"{len(missing)} missing key(s) {missing[:5]}, {len(unexpected)} unexpected key(s) "
            f"{unexpected[:5]}. Was it saved from a network quantized with the same config?")
    wrong = {key: (list(state_dict[key].shape), shape) for key, shape in expected.items()
             if list(state_dict[key].shape) != shape}
    if wrong:
        raise ValueError(f"state_dict has {len(wrong)} entries of the wrong shape "
                         f"(saved, expected): {dict(list(wrong.items())[:5])}")
    net.set_state_dict(state_dict)
    return quanter


def save_quantized_inference_model(net, quanter, path_prefix, input_spec):
    """Export a quantized network as an int8-convertible Paddle inference model.

    Writes ``<path_prefix>.pdmodel``, ``<path_prefix>.pdiparams`` (and
    ``.pdiparams.info``). The program is traced in eval mode; ``net`` is left as it
    was (training flag, ``forward``, dygraph mode), so training may go on afterwards.

    Args:
        net (paddle.nn.Layer): the layer to export; its ``forward(x)`` returns a tensor.
            It is either the network given to ``quantize_net`` or a wrapper layer that
            CONTAINS it as a sublayer and post-processes its output (e.g. softmax of
            ``logits[0]``); the exported program's outputs are the wrapper's.
        quanter (paddleslim.QAT): returned by ``quantize_net`` (or
            ``load_quantized_state``) for that network.
        path_prefix (str): output path without extension, e.g. ``'out/model'``;
            missing directories are created.
        input_spec (list[paddle.static.InputSpec]): the inputs of ``net.forward``,
            e.g. ``[InputSpec([None, 3, None, None], 'float32', 'x')]``.

    Raises:
        ValueError: ``net`` holds no quantized layer, ``quanter`` is not a
            ``paddleslim.QAT``, ``path_prefix`` is empty or ``input_spec`` is not a list.
    """
    if not isinstance(net, nn.Layer) or not count_quantized_layers(net):
        raise ValueError(f"net ({type(net).__name__}) holds no quantized layer: pass the network "
                         "given to quantize_net, or a wrapper Layer containing it")
    if not isinstance(quanter, QAT):
        raise ValueError(f"quanter must be the paddleslim.QAT returned by quantize_net, got "
                         f"{type(quanter).__name__}")
    if not isinstance(path_prefix, (str, os.PathLike)) or not str(path_prefix).strip():
        raise ValueError(f"path_prefix must be a non-empty path like 'out/model', "
                         f"got {path_prefix!r}")
    if not isinstance(input_spec, (list, tuple)) or not input_spec:
        raise ValueError(f"input_spec must be a non-empty list of paddle.static.InputSpec, "
                         f"got {input_spec!r}")
    path_prefix = os.path.abspath(os.fspath(path_prefix))
    os.makedirs(os.path.dirname(path_prefix), exist_ok=True)

    if quanter.weight_preprocess is not None or quanter.act_preprocess is not None:
        # PACT only shapes training; the exported program goes without it. PaddleSlim's
        # own removal exports the bare network it saw at quantize time (dropping any
        # wrapper, and with it the trained weights when the keys gain a prefix) and
        # leaves Paddle in static mode, so we strip PACT from a copy ourselves.
        net = _without_preprocess(net)
    training_flags = [(layer, layer.training) for layer in net.sublayers(include_self=True)]
    own_forward = "forward" in vars(net)
    was_dynamic = paddle.in_dynamic_mode()
    net.eval()
    try:
        with warnings.catch_warnings():
            # PaddleSlim passes input_spec to a full_graph=False to_static; harmless.
            warnings.filterwarnings("ignore", message="full_graph=False don't support input_spec")
            # Skip QAT.save_quantized_model's own PACT removal (done above). Paddle 3:
            # the old-IR program (.pdmodel), which oneDNN's int8 passes convert.
            with compat.legacy_program_ir():
                quanter.imperative_qat.save_quantized_model(net, path_prefix,
                                                            input_spec=list(input_spec))
    finally:
        # Paddle's exporter decorates net.forward with to_static in place, and an error
        # half-way can leave static mode on; undo both.
        if not own_forward and "forward" in vars(net):
            del net.forward
        if was_dynamic and not paddle.in_dynamic_mode():
            paddle.disable_static()
        for layer, training in training_flags:
            layer.training = training


def count_quantized_layers(net):
    """Number of sublayers of ``net`` that fake-quantize their input and weight."""
    return sum(isinstance(layer, _QUANTIZED_LAYERS) for layer in net.sublayers(include_self=True))


def _check_choice(key, value, allowed):
    # Only a str or None can be valid; testing the type first keeps values such as
    # numpy arrays from failing inside ``in`` with an unrelated error.
    if not isinstance(value, (str, type(None))) or value not in allowed:
        raise ValueError(f"quant_config['{key}'] must be one of {list(allowed)}, got {value!r}")


def _check_layer_types(layer_types):
    if not isinstance(layer_types, (list, tuple)) or not layer_types:
        raise ValueError("quant_config['quantizable_layer_type'] must be a non-empty list of "
                         f"layer names from {list(QUANTIZABLE_LAYER_TYPES)}, got {layer_types!r}")
    bad = [name for name in layer_types if name not in QUANTIZABLE_LAYER_TYPES]
    if bad:
        raise ValueError(f"quant_config['quantizable_layer_type'] has unsupported layer type(s) "
                         f"{bad}; allowed: {list(QUANTIZABLE_LAYER_TYPES)}")
    return list(dict.fromkeys(layer_types))  # a list, without repeats


def _without_preprocess(net):
    """A deep copy of ``net`` whose quantized layers skip their PACT preprocessing."""
    stripped = copy.deepcopy(net)
    for layer in stripped.sublayers():
        if isinstance(layer, _QUANTIZED_LAYERS):
            layer._act_preprocess = None
            layer._weight_preprocess = None
    return stripped
