"""What differs between the supported Paddle releases, in one place.

paddlex_seg runs on two stacks (see README, "Supported stacks"):

* Paddle 3.x (3.3.1, the default): ``paddle.jit.save`` writes the new IR (PIR) as
  ``model.json``, but export writes the old IR's ``model.pdmodel`` (``legacy_program_ir``
  around the save), because Paddle Inference 3.3 cannot run PIR programs with bilinear
  interpolation under oneDNN (Paddle issue #79749) and OpenVINO reads only
  ``.pdmodel``; ``.json`` exports of earlier versions still load; ``paddle.quantization`` exists; PaddleSlim 2.6, written for the old
  IR, still traces networks when the old IR is switched on around its tracing.
* Paddle 2.6.2: programs are ``model.pdmodel`` (protobuf); PaddleSlim does QAT.

Everything else in the package asks this module instead of testing versions itself,
so that each concern has one code path and the differences are listed here:

* ``PADDLE_VERSION`` / ``PADDLE3``: the installed release.
* ``PROGRAM_SUFFIXES`` / ``program_file``: the file a saved inference program lives in.
* ``ONEDNN_INT8_OP_TYPES``: operator types for ``Config.enable_mkldnn_int8`` (shared by
  slim's QAT export and deploy's Predictor).
* ``legacy_program_ir``: a context in which static programs are built in the old IR
  (what PaddleSlim's graph tracing needs); a no-op on 2.6.
* ``import_paddleslim``: PaddleSlim, with the one renamed Paddle function it calls put
  back, or an ImportError saying how to install it.
* ``sigmoid``: ``F.sigmoid`` that also records into an old-IR program on Paddle 3, where
  the Python API calls the new IR's operator directly.

This module imports only Paddle; every other layer may import it.
"""
import contextlib
import os

import numpy as np
import paddle
import paddle.nn.functional as F

__all__ = ["PADDLE_VERSION", "PADDLE3", "PROGRAM_SUFFIXES", "program_file", "legacy_program_ir",
           "ONEDNN_INT8_OP_TYPES",
           "in_legacy_static_mode", "import_paddleslim", "sigmoid", "argmax", "flops", "PADDLESLIM_INSTALL"]


def _version(text):
    parts = []
    for piece in text.split(".")[:3]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts + [0] * (3 - len(parts)))


# A source build reports 0.0.0; treat it as the newest line.
PADDLE_VERSION = _version(paddle.__version__)
PADDLE3 = PADDLE_VERSION >= (3, 0, 0) or PADDLE_VERSION == (0, 0, 0)

# The files a saved program may live in, first choice first. Export writes the old IR's
# ``.pdmodel`` on both stacks (see ``legacy_program_ir``); Paddle 3 also runs the new IR's
# ``.json`` that exports of earlier paddlex_seg versions wrote.
PROGRAM_SUFFIXES = (".pdmodel", ".json") if PADDLE3 else (".pdmodel",)

# Operator types to pass to ``paddle.inference.Config.enable_mkldnn_int8``: every type
# Paddle 2.6's oneDNN quantizer accepts except ``pool2d``. Its default (an empty set:
# all of them) fails at run time on adaptive average pooling whose bins do not divide
# the feature map (FastSCNN's pyramid pooling): "no kernels which are registered in the
# pool2d operator". Pooling then stays in float; nothing else is lost.
ONEDNN_INT8_OP_TYPES = frozenset({
    "conv2d", "depthwise_conv2d", "fused_conv2d", "fc", "matmul", "matmul_v2", "fused_matmul",
    "concat", "split", "slice", "reshape2", "transpose2", "fused_transpose",
    "nearest_interp", "nearest_interp_v2", "prior_box",
    "elementwise_add", "elementwise_mul", "elementwise_sub",
    "fused_elementwise_add", "fused_elementwise_mul", "fused_elementwise_sub",
    "fusion_gru", "multi_gru", "fusion_lstm",
})

PADDLESLIM_INSTALL = "pip install --no-deps paddleslim==2.6.0"


def program_file(prefix):
    """The saved program for ``prefix`` (``model`` → ``model.json`` or ``model.pdmodel``).

    Returns:
        str|None: the first of ``prefix + suffix`` (``PROGRAM_SUFFIXES``) that exists,
        or None when none does.
    """
    for suffix in PROGRAM_SUFFIXES:
        if os.path.isfile(prefix + suffix):
            return prefix + suffix
    return None


def configure_inference(config, model_file):
    """Settings a ``paddle.inference.Config`` needs for the program ``model_file``.

    Paddle 3: a new-IR program (``model.json``) must run on the new executor; without it,
    ``create_predictor`` with memory optimisation fails in a fresh process with
    "Not find predictor_id 0 and pass_name memory_optimize_pass".
    """
    if PADDLE3 and os.fspath(model_file).endswith(".json"):
        config.enable_new_executor(True)
    return config


def disable_onednn(config):
    """Keep oneDNN off in a ``paddle.inference.Config`` (Paddle 3's new executor turns it
    on by default on CPU; Paddle 2.6 only uses it when asked)."""
    if PADDLE3 and hasattr(config, "disable_mkldnn"):
        config.disable_mkldnn()
    return config


@contextlib.contextmanager
def legacy_program_ir():
    """Build static programs in Paddle's old IR inside this block (Paddle 3); no-op on 2.6.

    PaddleSlim 2.6 reads ``paddle.static.Program`` objects of the old IR (ops with
    ``type()``, ``input_arg_names``...), which Paddle 3 builds only with
    ``FLAGS_enable_pir_api`` off; switching it with ``paddle.set_flags`` is not enough,
    so Paddle's own guard swaps the program classes too, and puts them back on exit.
    """
    if not PADDLE3 or not paddle.framework.use_pir_api():
        yield
        return
    from paddle.pir_utils import DygraphOldIrGuard
    with DygraphOldIrGuard():
        yield


def in_legacy_static_mode():
    """True while a static program of the old IR is being built (see ``legacy_program_ir``)."""
    if paddle.in_dynamic_mode():
        return False
    return not (PADDLE3 and paddle.framework.use_pir_api())


def import_paddleslim():
    """Import PaddleSlim for pruning and QAT, ready for the installed Paddle.

    Paddle 3 renamed ``paddle.base.dygraph.base._to_static_mode_guard_`` (which
    PaddleSlim's ``dygraph2program`` calls) to ``to_static_mode_guard``; the old name is
    put back as an alias of the new one.

    numpy 2 removed ``np.product``, which PaddleSlim's sensitivity analysis calls; it is
    put back as ``np.prod``.

    Raises:
        ImportError: PaddleSlim is missing; the message says how to install it.
    """
    if PADDLE3:
        from paddle.base.dygraph import base as dygraph_base
        if not hasattr(dygraph_base, "_to_static_mode_guard_") and hasattr(
                dygraph_base, "to_static_mode_guard"):
            dygraph_base._to_static_mode_guard_ = dygraph_base.to_static_mode_guard
    if not hasattr(np, "product"):
        # PaddleSlim 2.6's sensitivity analysis calls np.product, which numpy 2 removed.
        np.product = np.prod
    try:
        import paddleslim
    except ImportError as error:
        raise ImportError(f"pruning and quantization need PaddleSlim: {PADDLESLIM_INSTALL} "
                          f"(--no-deps: its metadata pins an old OpenCV) ({error})") from None
    return paddleslim


def sigmoid(x):
    """``F.sigmoid(x)``, also inside an old-IR program on Paddle 3 (``legacy_program_ir``).

    Paddle 3.3's ``F.sigmoid`` calls the new IR's operator even when an old-IR program
    is being built, and fails ("must be Value, but got Variable"); there the old
    ``sigmoid`` operator is appended instead. Everywhere else this is ``F.sigmoid``.
    """
    if PADDLE3 and in_legacy_static_mode():
        from paddle.base.layer_helper import LayerHelper
        helper = LayerHelper("sigmoid")
        out = helper.create_variable_for_type_inference(x.dtype)
        helper.append_op(type="sigmoid", inputs={"X": x}, outputs={"Out": out})
        return out
    return F.sigmoid(x)


def argmax(x, axis, keepdim=False):
    """``paddle.argmax(x, axis, keepdim, dtype='int32')``, also inside an old-IR program on Paddle 3.

    Same reason as :func:`sigmoid`: there the old ``arg_max`` operator is appended
    (its ``dtype`` attribute 2 is int32 in the old IR's type enum).
    """
    if PADDLE3 and in_legacy_static_mode():
        from paddle.base.layer_helper import LayerHelper
        helper = LayerHelper("arg_max")
        out = helper.create_variable_for_type_inference("int32")
        helper.append_op(type="arg_max", inputs={"X": x}, outputs={"Out": out},
                         attrs={"axis": axis, "keepdims": keepdim, "flatten": False, "dtype": 2})
        out.stop_gradient = True
        return out
    return paddle.argmax(x, axis=axis, keepdim=keepdim, dtype="int32")


def flops(net, input_size):
    """``paddle.flops(net, input_size)`` as an int, also on Paddle 3 with numpy 2.

    Paddle 3.3's counter keeps its totals in shape-[1] tensors and converts them with
    ``int()``, which numpy 2 refuses for 1-element arrays that are not 0-d ("only
    0-dimensional arrays can be converted to Python scalars"); the conversion is
    widened to any 1-element tensor while the count runs.
    """
    tensor_int = paddle.Tensor.__int__

    def one_element_int(var):
        return int(np.asarray(var).reshape(-1)[0]) if int(np.prod(var.shape)) == 1 else tensor_int(var)

    paddle.Tensor.__int__ = one_element_int
    try:
        return int(paddle.flops(net, input_size, print_detail=False))
    finally:
        paddle.Tensor.__int__ = tensor_int
