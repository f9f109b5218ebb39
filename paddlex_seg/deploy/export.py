"""Export a trained model for deployment: a Paddle inference model, optionally ONNX.

``export_inference_model(model, save_dir)`` (what ``model.export`` calls) writes::

    save_dir/
      model.pdmodel          the program: input ``x`` (N, 3, H, W) float32, already
      model.pdiparams        normalised by the eval transforms; outputs, in this order,
      model.pdiparams.info   label_map (N, 1, H, W) int32 and score_map (N, H, W, C)
                             float32 (softmax of the main logit, channels last)
      model.yml              class, labels, eval transforms, input shape, outputs,
                             and the test-time augmentation (``aug``) when one is given
      model.onnx             only with ``onnx=True`` (paddle2onnx)

``paddlex_seg.deploy.Predictor(save_dir)`` runs it with ``paddle.inference``.

Input shape
    ``fixed_input_shape`` follows PaddleX 2.x: ``[w, h]`` or ``[n, c, w, h]`` (width
    BEFORE height, unlike the ``[height, width]`` of the transforms), ``n = -1`` for a
    free batch size. With a fixed shape the recorded eval transforms resize every image
    to it (the last Resize operator is replaced by ``Resize([h, w])``, or one is added
    before ``Normalize``), so the predictor accepts images of any size and maps the
    result back to it. Without one, height, width and batch are free.

Model kinds
    * float and pruned models (``model.status`` 'Normal' / 'Pruned'; a pruned network
      is simply smaller) go through ``paddle.jit.save``;
    * quantized models ('Quantized', holding ``model.quanter`` from QAT) are saved by
      the model itself (``model.save_quantized_program``, which hands over to
      ``paddlex_seg.slim.quant``; deployment does not import the training side): the
      quantize/dequantize program that Paddle Inference runs in int8 on CPU.

Test-time augmentation
    ``aug`` (``paddlex_seg.aug.TestTimeAug`` or its dict) is written to model.yml as
    ``Export: aug:`` and the Predictor applies it around the exported network (the
    program itself is unchanged). Scales and sliding windows feed the network other
    sizes than the transformed image's, so they cannot be combined with a
    ``fixed_input_shape``; flips can.

ONNX
    ``paddle2onnx`` 1.2.x (the line that reads Paddle 2.6 programs; tested with
    1.2.11, run with ``onnxruntime`` 1.20.1) converts the exported program in-process.
    Newer paddle2onnx releases can run an external optimiser (polygraphy) that
    pip-installs packages at run time, which once upgraded NumPy to 2.x and broke
    OpenCV; when the installed paddle2onnx offers that switch we turn it off, so an
    export never changes the Python environment. Adaptive pooling to more than one
    bin (FastSCNN's pyramid pooling) converts only at a fixed input size, so
    ``onnx=True`` requires ``fixed_input_shape`` for such networks, and one large enough
    that each pool's input is at least as large as its bins (FastSCNN: 192x192, since
    its 6x6 bins pool a 1/32 map); smaller ones give a model onnxruntime crashes on.
"""
import ast
import copy
import inspect
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import uuid

import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F
import yaml

from .. import compat
from ..aug import TestTimeAug
from ..data import transforms as T
from ..log import logger

__all__ = ["export_inference_model", "export_onnx", "parse_fixed_input_shape", "InferenceNet",
           "MODEL_FILE", "PARAMS_FILE", "ONNX_FILE", "MODEL_YML", "OUTPUT_NAMES"]

MODEL_PREFIX = "model"
# Where the program goes: model.pdmodel (the old IR) on both stacks; model.yml's Export:
# model_file records it (Predictor also reads the model.json of earlier Paddle 3 exports).
MODEL_FILE = MODEL_PREFIX + ".pdmodel"
PARAMS_FILE = MODEL_PREFIX + ".pdiparams"
ONNX_FILE = MODEL_PREFIX + ".onnx"
MODEL_YML = "model.yml"
INPUT_NAME = "x"
OUTPUT_NAMES = ("label_map", "score_map")
# Status written into an exported model.yml (PaddleX 2.x's word for it).
EXPORTED_STATUS = "Infer"
# Resize operators the fixed input shape overrides.
_RESIZE_OPS = (T.Resize, T.RandomResize, T.ResizeByShort, T.RandomResizeByShort, T.ResizeByLong)


class InferenceNet(nn.Layer):
    """The network as deployed: the main logit turned into a label map and probabilities.

    Args:
        net (paddle.nn.Layer): a segmentation network returning a list of logits
            (N, C, H, W), the main one first.

    Forward returns ``(label_map, score_map)``: (N, 1, H, W) int32 class ids and
    (N, H, W, C) float32 softmax probabilities, the layout PaddleX 2.x exports.
    """

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        logit = self.net(x)[0]
        label_map = compat.argmax(logit, axis=1, keepdim=True)
        score_map = paddle.transpose(F.softmax(logit, axis=1), perm=[0, 2, 3, 1])
        return label_map, score_map


def parse_fixed_input_shape(value):
    """Read a PaddleX ``fixed_input_shape``: ``[w, h]`` or ``[n, c, w, h]``.

    Args:
        value (list|tuple|str|None): the shape; a string such as ``'[224,224]'`` or
            ``'224,224'`` (command line) is parsed first. ``n`` may be -1 (or None)
            for a free batch size; ``c`` must be 3.

    Returns:
        tuple|None: ``(batch or None, height, width)``; None when ``value`` is None.

    Raises:
        ValueError: anything else, naming the value received.
    """
    if value is None:
        return None
    raw = value
    if isinstance(value, str):
        text = value.strip()
        try:
            value = ast.literal_eval(text if text.startswith(("[", "(")) else f"[{text}]")
        except (ValueError, SyntaxError):
            raise ValueError(f"fixed_input_shape must look like [w,h] or [n,c,w,h], got {raw!r}") from None
    if not isinstance(value, (list, tuple)) or len(value) not in (2, 4) or not all(
            v is None or (isinstance(v, (int, np.integer)) and not isinstance(v, bool)) for v in value):
        raise ValueError(f"fixed_input_shape must be [w, h] or [n, c, w, h] (integers, PaddleX "
                         f"order: width before height), got {raw!r}")
    value = [None if v is None else int(v) for v in value]
    batch, channels, width, height = [None, 3] + value if len(value) == 2 else value
    if batch is not None and batch != -1 and batch < 1:
        raise ValueError(f"fixed_input_shape: batch size n must be -1 (free) or >= 1, got {raw!r}")
    if channels != 3:
        raise ValueError(f"fixed_input_shape: channels c must be 3 (BGR images), got {raw!r}")
    if width is None or height is None or width < 1 or height < 1:
        raise ValueError(f"fixed_input_shape: width and height must be positive, got {raw!r}")
    return (None if batch in (None, -1) else batch), height, width


def export_inference_model(model, save_dir, fixed_input_shape=None, onnx=False, opset_version=11,
                           aug=None, calibration_dataset=None):
    """Write ``model`` to ``save_dir`` as a Paddle inference model (+ ONNX on request).

    Args:
        model (BaseSegmenter): a float, pruned or quantized model.
        save_dir (str): output directory; created if missing. Files of an earlier
            export there are replaced, other files are left alone.
        fixed_input_shape (list|str|None): ``[w, h]`` or ``[n, c, w, h]`` (PaddleX
            order, see the module docstring); None for a free input size. Default: None.
        onnx (bool): also write ``model.onnx`` with paddle2onnx. Default: False.
        opset_version (int): ONNX opset (paddle2onnx raises it where an operator needs
            more). Default: 11.
        aug (TestTimeAug|dict|None): test-time augmentation recorded in model.yml for
            the Predictor; None records none. Default: None.
        calibration_dataset (SegDataset|None): labelled images on which every installed
            backend/precision is measured against Paddle fp32 (``paddlex_seg.deploy.check``);
            the figures go into model.yml and guard ``Predictor(backend='auto')``.
            Default: None (auto then runs fp32).

    Returns:
        str: the absolute path of ``save_dir``.

    Raises:
        ValueError: bad arguments, a quantized model without its quantizer, transforms
            that cannot produce the fixed shape, ONNX for a network that needs a
            fixed shape without one, or scales / sliding windows with a fixed shape.
        ImportError: ``onnx=True`` without paddle2onnx installed.
        RuntimeError: paddle2onnx failed (its error lines are in the message).
    """
    net = getattr(model, "net", None)
    if not isinstance(net, nn.Layer):
        raise ValueError(f"model must be a paddlex_seg model with a .net, got {type(model).__name__}")
    if not isinstance(save_dir, (str, os.PathLike)) or not str(save_dir).strip():
        raise ValueError(f"save_dir must be a directory path, got {save_dir!r}")
    if not isinstance(onnx, bool):
        raise ValueError(f"onnx must be True or False, got {onnx!r}")
    shape = parse_fixed_input_shape(fixed_input_shape)
    aug = TestTimeAug.from_value(aug)
    if aug is not None and shape is not None and not aug.keeps_input_size:
        raise ValueError(
            f"aug with scales {list(aug.scales)} / sliding_window {aug.sliding_window} feeds the "
            f"network other sizes than fixed_input_shape={fixed_input_shape!r} allows: export "
            "without fixed_input_shape, or keep only the flips in aug")
    status = getattr(model, "status", "Normal")
    if status not in ("Normal", "Pruned", "Quantized"):
        raise ValueError(f"model.status is {status!r}; export handles 'Normal', 'Pruned' and "
                         "'Quantized' models")
    if status == "Quantized" and (getattr(model, "quanter", None) is None
                                  or not hasattr(model, "save_quantized_program")):
        raise ValueError("model.status is 'Quantized' but model.quanter is missing: export a "
                         "quantized model from the object that ran quant_aware_train, or from "
                         "paddlex_seg.load_model of its saved directory")
    if onnx:
        _import_paddle2onnx()  # fail before the slow part
        if shape is None and _adaptive_pools(net):
            raise ValueError(
                f"{type(model).__name__} has adaptive pooling to several bins, which ONNX "
                "supports only at a fixed input size: pass fixed_input_shape=[w, h] "
                "(e.g. [512, 512]) together with onnx=True")
        if shape is not None:
            _check_pools_fit(model, net, shape)

    transforms = _fixed_shape_transforms(getattr(model, "eval_transforms", None), shape)
    save_dir = os.path.abspath(os.fspath(save_dir))
    os.makedirs(save_dir, exist_ok=True)
    work = tempfile.mkdtemp(prefix=f".export-{uuid.uuid4().hex[:6]}-", dir=save_dir)
    try:
        input_spec = [paddle.static.InputSpec(
            [shape[0], 3, shape[1], shape[2]] if shape else [None, 3, None, None],
            "float32", INPUT_NAME)]
        _save_program(model, status, os.path.join(work, MODEL_PREFIX), input_spec)
        info = _export_info(model, transforms, fixed_input_shape, shape, status)
        info["Export"]["model_file"] = os.path.basename(compat.program_file(os.path.join(work, MODEL_PREFIX)))
        info["Export"]["aug"] = None if aug is None else aug.to_dict()
        _write_yml(os.path.join(work, MODEL_YML), info)
        if onnx:
            export_onnx(work, opset_version=opset_version)
        _move_into(work, save_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    logger.info(f"Exported inference model of {type(model).__name__} to {save_dir}"
                + (" (with model.onnx)" if onnx else ""))
    if calibration_dataset is not None:
        from .check import check
        check(save_dir, calibration_dataset)
    return save_dir


def export_onnx(model_dir, save_file=None, opset_version=11):
    """Convert an exported inference model to ONNX with paddle2onnx.

    Args:
        model_dir (str): a directory written by ``export_inference_model``.
        save_file (str|None): where to write; None means ``model_dir/model.onnx`` (and
            model.yml then records it). Default: None.
        opset_version (int): ONNX opset (raised automatically where needed). Default: 11.

    Returns:
        str: the path of the ONNX file.

    Raises:
        ValueError: ``model_dir`` is not an exported model, or a bad ``opset_version``.
        ImportError: paddle2onnx is missing.
        RuntimeError: paddle2onnx reported errors (quoted in the message), e.g. adaptive
            pooling in a model exported without ``fixed_input_shape``.
    """
    if isinstance(opset_version, bool) or not isinstance(opset_version, int) or not 7 <= opset_version <= 19:
        raise ValueError(f"opset_version must be an int from 7 to 19, got {opset_version!r}")
    model_dir = os.fspath(model_dir)
    model_file = compat.program_file(os.path.join(model_dir, MODEL_PREFIX))
    params_file = os.path.join(model_dir, PARAMS_FILE)
    for path in (model_file or os.path.join(model_dir, MODEL_FILE), params_file):
        if not os.path.isfile(path):
            raise ValueError(f"{model_dir!r} is not an exported inference model: {path} is missing")
    paddle2onnx = _import_paddle2onnx()
    target = os.path.abspath(save_file or os.path.join(model_dir, ONNX_FILE))
    tmp = f"{target}.tmp-{uuid.uuid4().hex[:6]}"
    options = dict(save_file=tmp, opset_version=opset_version, auto_upgrade_opset=True,
                   verbose=False, enable_onnx_checker=True, enable_experimental_op=True,
                   enable_optimize=True)
    if "optimize_tool" in inspect.signature(paddle2onnx.export).parameters:
        # The external optimiser of newer releases pip-installs packages at run time.
        options["optimize_tool"] = "None"
    try:
        returncode, output = _run_paddle2onnx(model_file, params_file, options)
        errors = [line.strip() for line in output.splitlines() if "[ERROR]" in line]
        if returncode != 0 and not errors:
            errors = [f"paddle2onnx exited with code {returncode}"] + output.strip().splitlines()[-3:]
        if errors or not os.path.isfile(tmp):
            static = any("static input shape" in line for line in errors) or (
                returncode != 0 and not _export_has_fixed_shape(model_dir))
            hint = " It needs a static input shape: export the model with a fixed_input_shape." if static else ""
            raise RuntimeError(f"paddle2onnx could not convert {model_file}: "
                               f"{'; '.join(errors) or 'no output written'}.{hint}")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    if save_file is None:
        yml = os.path.join(model_dir, MODEL_YML)
        if os.path.isfile(yml):
            with open(yml, encoding="utf-8") as f:
                info = yaml.safe_load(f) or {}
            info.setdefault("Export", {})["onnx_file"] = ONNX_FILE
            info["Export"]["onnx_opset_version"] = opset_version
            _write_yml(yml, info)
    logger.info(f"ONNX model written to {target}")
    return target


# --- helpers -------------------------------------------------------------------------
def _save_program(model, status, path_prefix, input_spec):
    """Trace ``InferenceNet(model.net)`` in eval mode and save it; training flags are restored."""
    net = model.net
    wrapper = InferenceNet(net)
    layers = net.sublayers(include_self=True)
    flags = [(layer, layer.training) for layer in layers]
    # Tracing replaces each sublayer's forward with a converted one (an instance attribute)
    # and leaves it there; the model in memory would then run ~1.3-5x slower.
    own_forward = {id(layer) for layer in layers if "forward" in vars(layer)}
    wrapper.eval()
    try:
        if status == "Quantized":
            model.save_quantized_program(wrapper, path_prefix, input_spec)
        else:
            # The old IR: Paddle Inference 3.3 runs it with oneDNN, OpenVINO reads it.
            with compat.legacy_program_ir():
                paddle.jit.save(wrapper, path_prefix, input_spec=input_spec)
    finally:
        if not paddle.in_dynamic_mode():
            paddle.disable_static()
        for layer, training in flags:
            layer.training = training
            if id(layer) not in own_forward and "forward" in vars(layer):
                del layer.forward
                layer._original_funcs.pop("forward", None)


def _export_info(model, transforms, raw_shape, shape, status):
    info = model.model_info() if hasattr(model, "model_info") else {"Model": type(model).__name__}
    info = copy.deepcopy(info)
    info.pop("train_state", None)
    info["status"] = EXPORTED_STATUS
    info["Transforms"] = transforms.to_config() if transforms is not None else None
    info["Export"] = {
        "model_status": status,
        "precision": "int8" if status == "Quantized" else "float32",
        "model_file": MODEL_FILE,
        "params_file": PARAMS_FILE,
        "onnx_file": None,
        "input_name": INPUT_NAME,
        # PaddleX order as given ([w, h] or [n, c, w, h]) and the resulting NCHW shape.
        "fixed_input_shape": None if raw_shape is None else _plain_shape(raw_shape),
        "input_shape": [shape[0], 3, shape[1], shape[2]] if shape else [None, 3, None, None],
        "outputs": {OUTPUT_NAMES[0]: "(N, 1, H, W) int32", OUTPUT_NAMES[1]: "(N, H, W, C) float32"},
        "paddle_version": paddle.__version__,
    }
    if status == "Quantized":
        # What the predictor hands to Config.enable_mkldnn_int8.
        info["Export"]["onednn_int8_op_types"] = sorted(compat.ONEDNN_INT8_OP_TYPES)
    return info


def _plain_shape(raw):
    """The user's fixed_input_shape as a list (PaddleX order), also when given as text."""
    if isinstance(raw, str):
        text = raw.strip()
        raw = ast.literal_eval(text if text.startswith(("[", "(")) else f"[{text}]")
    return [None if v is None else int(v) for v in raw]


def _fixed_shape_transforms(transforms, shape):
    """A copy of the eval transforms that always produces the fixed (h, w), if given."""
    if transforms is None:
        logger.warning("The model has no eval transforms: the exported model.yml records none, "
                       "so Predictor.predict will need transforms=...")
        return None
    transforms = copy.deepcopy(transforms)
    if shape is None:
        return transforms
    _, height, width = shape
    ops = transforms.transforms
    resize_at = [i for i, op in enumerate(ops) if isinstance(op, _RESIZE_OPS)]
    fixed = T.Resize(target_size=[height, width])
    if resize_at:
        ops[resize_at[-1]] = fixed
    else:
        normalize_at = [i for i, op in enumerate(ops) if isinstance(op, T.Normalize)]
        ops.insert(normalize_at[0] if normalize_at else len(ops), fixed)
    # Operators after the resize (padding, cropping) could still change the size.
    for probe_shape in ((height + 37, width * 2 + 5, 3), (max(height // 2, 1), width + 11, 3)):
        out = transforms({"image": np.zeros(probe_shape, np.uint8)})["image"].shape[1:]
        if tuple(out) != (height, width):
            raise ValueError(
                f"fixed_input_shape asks for {height}x{width} (h x w) images, but the eval "
                f"transforms {transforms!r} give {out[0]}x{out[1]} after the inserted Resize; "
                "remove the size-changing operators that follow it, or export without "
                "fixed_input_shape")
    return transforms


def _adaptive_pools(net):
    """Adaptive pooling layers to more than one bin: ONNX has them only for a fixed size."""
    pools = []
    for layer in net.sublayers(include_self=True):
        if isinstance(layer, (nn.AdaptiveAvgPool2D, nn.AdaptiveMaxPool2D)):
            size = layer._output_size
            bins = size if isinstance(size, (list, tuple)) else (size, size)
            if any(b is not None and b != 1 for b in bins):
                pools.append((layer, [1 if b is None else int(b) for b in bins]))
    return pools


def _check_pools_fit(model, net, shape):
    """At the fixed size, every adaptive pool must see a map at least as large as its bins.

    Smaller maps are fine in Paddle (windows overlap), but paddle2onnx turns the pool into
    a fixed AveragePool whose kernel is then 0, and onnxruntime dies with SIGFPE on it.
    """
    pools = _adaptive_pools(net)
    if not pools:
        return
    seen = []
    hooks = [layer.register_forward_pre_hook(
        lambda layer, inputs, bins=bins: seen.append((list(inputs[0].shape[2:]), bins)))
        for layer, bins in pools]
    training = [(layer, layer.training) for layer in net.sublayers(include_self=True)]
    net.eval()
    try:
        with paddle.no_grad():
            net(paddle.zeros([1, 3, shape[1], shape[2]], "float32"))
    finally:
        for hook in hooks:
            hook.remove()
        for layer, flag in training:
            layer.training = flag
    too_small = [(size, bins) for size, bins in seen if size[0] < bins[0] or size[1] < bins[1]]
    if too_small:
        # The pool's stride from the input (a power of two) times its bins is the least size.
        need = list(shape[1:])
        for size, bins in seen:
            for axis in (0, 1):
                stride = 2 ** math.ceil(math.log2(shape[1 + axis] / max(size[axis], 1)) - 1e-9)
                need[axis] = max(need[axis], stride * bins[axis])
        size, bins = max(too_small, key=lambda item: max(item[1]))
        raise ValueError(
            f"at fixed_input_shape h x w = {shape[1]}x{shape[2]}, {type(model).__name__}'s adaptive "
            f"pooling gets a {size[0]}x{size[1]} map, smaller than its {bins[0]}x{bins[1]} bins, "
            f"which ONNX cannot express; use at least fixed_input_shape=[{need[1]}, {need[0]}] "
            "(w, h) for ONNX")


def _import_paddle2onnx():
    try:
        import paddle2onnx
    except ImportError:
        raise ImportError("ONNX export needs paddle2onnx: pip install 'paddlex_seg[onnx]' "
                          "(paddle2onnx==1.2.11, onnxruntime==1.20.1)") from None
    return paddle2onnx


# paddle2onnx runs in a child process: on some graphs version 2.x aborts (SIGABRT) instead
# of reporting, which must not take the user's process down with it.
_PADDLE2ONNX_CHILD = """
import json, sys
import paddle2onnx
args = json.loads(sys.argv[1])
paddle2onnx.export(args.pop("model_file"), args.pop("params_file"), **args)
"""


def _export_has_fixed_shape(model_dir):
    yml = os.path.join(model_dir, MODEL_YML)
    if not os.path.isfile(yml):
        return False
    with open(yml, encoding="utf-8") as f:
        info = yaml.safe_load(f) or {}
    return bool((info.get("Export") or {}).get("fixed_input_shape") or info.get("fixed_input_shape"))


def _run_paddle2onnx(model_file, params_file, options):
    """Convert in a child process; returns (returncode, what it printed)."""
    args = json.dumps(dict(options, model_file=model_file, params_file=params_file))
    done = subprocess.run([sys.executable, "-c", _PADDLE2ONNX_CHILD, args],
                          capture_output=True, text=True, errors="replace")
    return done.returncode, done.stdout + done.stderr


def _write_yml(path, info):
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:6]}"
    with open(tmp, "w", encoding="utf-8") as f:
        yaml.safe_dump(info, f, sort_keys=False, allow_unicode=True)
    os.replace(tmp, path)


def _move_into(work, save_dir):
    """Move the finished files into ``save_dir``, model.yml last (it marks completeness);
    an earlier export's model.onnx / model.json is removed when this one has none."""
    names = sorted(os.listdir(work), key=lambda name: name == MODEL_YML)
    old_yml = os.path.join(save_dir, MODEL_YML)
    if os.path.exists(old_yml):
        os.remove(old_yml)  # the directory is incomplete until the new one lands
    # The int8 files of post-training quantization belong to the program they were made
    # from: a new export drops them (model.quantize writes them again after exporting).
    from .backends import INT8_ONNX_FILE, OPENVINO_INT8_FILE
    stale = [MODEL_PREFIX + suffix for suffix in compat.PROGRAM_SUFFIXES] + [
        ONNX_FILE, INT8_ONNX_FILE, OPENVINO_INT8_FILE]
    for name in stale:  # a program or ONNX file of an earlier export that this one lacks
        if name not in names and os.path.exists(os.path.join(save_dir, name)):
            os.remove(os.path.join(save_dir, name))
    for name in names:
        os.replace(os.path.join(work, name), os.path.join(save_dir, name))
