"""Runtimes that run an exported program: Paddle Inference, OpenVINO, ONNX Runtime.

Every runner takes a float32 NCHW batch and returns ``[label_map (N, 1, H, W) int32,
score_map (N, H, W, C) float32]``, the exported program's two outputs; the Predictor
does the transforms, test-time augmentation and the way back to the image size
around it, the same for every backend.

Backends and precisions (``BACKENDS``):

* ``paddle``: Paddle Inference with oneDNN. fp32; int8 for a QAT model (oneDNN int8
  kernels). Paddle 2.6's ``enable_mkldnn_bfloat16`` fails on these networks ("no
  kernels registered in the pool2d operator"), so no bf16. The only GPU backend
  (TensorRT where present).
* ``openvino``: reads ``model.pdmodel`` directly. fp32, and bf16 through the CPU
  plugin's ``INFERENCE_PRECISION_HINT`` when the CPU reports BF16 (AVX-512 BF16 or
  AMX); int8 runs the PTQ ONNX file made for it (``model.int8.openvino.onnx``: symmetric
  int8 activations, which its CPU plugin runs fastest), else ``model.int8.onnx``.
* ``onnxruntime``: ``model.onnx`` (written by ``export(..., onnx=True)``, or converted
  on first use into the model directory and kept there); int8 runs ``model.int8.onnx``
  (uint8 activations, int8 weights: ONNX Runtime's fastest form on x86).

``choose(...)`` is what ``backend='auto'`` / ``precision='auto'`` do: among the choices
installed here and supported by this CPU, the fastest whose recorded mIoU loss against
Paddle fp32 (model.yml ``Export: checks``, written by ``paddlex_seg.deploy.check``) is at
most ``MAX_MIOU_LOSS`` points. Without recorded figures it takes fp32 on the backend
that is fastest on CPU in our measurements (``FP32_PREFERENCE``: OpenVINO, then ONNX
Runtime, then Paddle Inference; benchmarks/RESULTS.md), since an unchecked bf16 or int8
could lose accuracy. auto considers ONNX Runtime only when ``model.onnx`` exists (it
does not convert on the fly). A precision given explicitly (``precision='int8'``) is not guarded:
auto then only picks the fastest backend for it.
"""
import importlib
import os

import numpy as np

__all__ = ["BACKENDS", "PRECISIONS", "MAX_MIOU_LOSS", "FP32_PREFERENCE", "INSTALL_HINTS",
           "available_backends", "supported_precisions", "choose", "make_runner",
           "import_backend", "BackendUnavailable", "INT8_ONNX_FILE", "OPENVINO_INT8_FILE",
           "int8_file"]

BACKENDS = ("paddle", "openvino", "onnxruntime")
PRECISIONS = ("fp32", "bf16", "int8")
MAX_MIOU_LOSS = 0.5       # mIoU points (0-100 scale) auto may give up against Paddle fp32
FP32_PREFERENCE = ("openvino", "onnxruntime", "paddle")
INT8_ONNX_FILE = "model.int8.onnx"                  # PTQ for ONNX Runtime (and any runtime)
OPENVINO_INT8_FILE = "model.int8.openvino.onnx"     # PTQ in the form OpenVINO runs fastest
ONNX_FILE = "model.onnx"
INSTALL_HINTS = {
    "paddle": 'pip install "paddlex_seg[cpu]"',
    "openvino": 'pip install "paddlex_seg[openvino]"',
    "onnxruntime": 'pip install "paddlex_seg[onnx]"',
}
_MODULES = {"paddle": "paddle.inference", "openvino": "openvino", "onnxruntime": "onnxruntime"}


class BackendUnavailable(ValueError):
    """A backend/precision this model directory or CPU cannot run."""


def import_backend(backend):
    """The backend's Python module, or an ImportError naming the extra to install."""
    try:
        return importlib.import_module(_MODULES[backend])
    except ImportError as error:
        raise ImportError(f"backend={backend!r} needs the {_MODULES[backend].split('.')[0]} package, "
                          f"which is not installed: {INSTALL_HINTS[backend]} ({error})") from None


def available_backends():
    """The backends whose packages import here, in ``BACKENDS`` order."""
    found = []
    for backend in BACKENDS:
        try:
            import_backend(backend)
        except ImportError:
            continue
        found.append(backend)
    return found


_OPENVINO_CORE = []


def openvino_core():
    """The process's one ``openvino.Core``, kept alive for as long as the process.

    With a Core per runner (even one kept alive beside its compiled model), OpenVINO
    2026.4 corrupted Python's heap: after two runners made one after the other, a later
    tuple allocation crashed with SIGSEGV (seen in the test suite on Paddle 3.3.1).
    One Core per process, as OpenVINO advises, does not.
    """
    if not _OPENVINO_CORE:
        _OPENVINO_CORE.append(import_backend("openvino").Core())
    return _OPENVINO_CORE[0]


def _cpu_has_bf16():
    try:
        return "BF16" in openvino_core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    except Exception:  # no OpenVINO, or a plugin without the property
        return False


def int8_file(model_dir, backend):
    """The PTQ file ``backend`` runs in int8, or None when there is none."""
    names = ([OPENVINO_INT8_FILE] if backend == "openvino" else []) + [INT8_ONNX_FILE]
    for name in names:
        path = os.path.join(model_dir, name)
        if os.path.isfile(path):
            return path
    return None


def supported_precisions(backend, model_dir, export):
    """Precisions ``backend`` can run for this export on this CPU."""
    quantized = export.get("model_status") == "Quantized"
    if backend == "paddle":
        return ["int8"] if quantized else ["fp32"]
    if quantized:  # QAT programs run on Paddle Inference only (tested there)
        return []
    if backend == "openvino" and str(export.get("model_file", "")).endswith(".json"):
        return []  # OpenVINO reads .pdmodel, not the new IR of older Paddle 3 exports
    precisions = ["fp32"]
    if backend == "openvino" and _cpu_has_bf16():
        precisions.append("bf16")
    if int8_file(model_dir, backend):
        precisions.append("int8")
    return precisions


def choose(model_dir, export, backend="auto", precision="auto", installed=None,
           max_miou_loss=MAX_MIOU_LOSS):
    """(backend, precision) for the Predictor; see the module docstring.

    Args:
        model_dir (str): the exported model directory.
        export (dict): its model.yml ``Export`` entry.
        backend, precision (str): the user's request; 'auto' chooses.
        installed (list|None): backends to consider (default: those installed).
        max_miou_loss (float): largest mIoU loss (points) auto accepts.

    Raises:
        ValueError: an unknown backend or precision.
        ImportError: the requested backend is not installed (names the extra).
        BackendUnavailable: the requested precision is not possible here.
    """
    if backend not in ("auto",) + BACKENDS:
        raise ValueError(f"backend must be 'auto' or one of {list(BACKENDS)}, got {backend!r}")
    if precision not in ("auto",) + PRECISIONS:
        raise ValueError(f"precision must be 'auto' or one of {list(PRECISIONS)}, got {precision!r}")
    if backend != "auto":
        import_backend(backend)
        backends = [backend]
    else:
        backends = list(available_backends() if installed is None else installed)
        if not os.path.isfile(os.path.join(model_dir, ONNX_FILE)):
            # auto does not convert on the fly (paddle2onnx needs a fixed size for some
            # networks); backend='onnxruntime' asked for explicitly does.
            backends = [b for b in backends if b != "onnxruntime"]
    options = [(b, p) for b in backends for p in supported_precisions(b, model_dir, export)
               if precision in ("auto", p)]
    if not options:
        have = {b: supported_precisions(b, model_dir, export) for b in backends}
        raise BackendUnavailable(
            f"no backend here runs precision={precision!r} for {model_dir!r} (installed backends and "
            f"their precisions: {have}); bf16 needs OpenVINO and a CPU with BF16, int8 needs a "
            "QAT model (paddle) or a PTQ model.int8.onnx (paddlex_seg.deploy.ptq)")
    if len(options) == 1:
        return options[0]
    checks = export.get("checks") or {}
    measured = []
    for option in options:
        figure = checks.get(f"{option[0]}/{option[1]}")
        if isinstance(figure, dict) and figure.get("latency_ms") is not None:
            loss = figure.get("miou_loss")
            # The guard is auto's: a precision the user asks for is taken as asked.
            if option[1] == "fp32" or precision != "auto" or (
                    loss is not None and loss <= max_miou_loss):
                measured.append((float(figure["latency_ms"]), option))
    if measured:
        return min(measured)[1]
    # No figures: fp32 on the backend fastest in our measurements (never an unchecked
    # bf16/int8 unless asked for by precision=...).
    rank = {b: i for i, b in enumerate(FP32_PREFERENCE)}
    preferred = [o for o in options if o[1] == "fp32"] or options
    return min(preferred, key=lambda o: (rank.get(o[0], 99), PRECISIONS.index(o[1])))


# --- runners ----------------------------------------------------------------------------
class OpenVINORunner:
    def __init__(self, model_dir, model_file, precision, threads):
        self.core = core = openvino_core()
        path = int8_file(model_dir, "openvino") if precision == "int8" else model_file
        config = {"INFERENCE_NUM_THREADS": int(threads), "PERFORMANCE_HINT": "LATENCY",
                  "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32"}
        self.compiled = core.compile_model(core.read_model(path), "CPU", config)
        self.request = self.compiled.create_infer_request()
        self.outputs = list(self.compiled.outputs)

    def __call__(self, batch):
        # The batch is made afresh for each call, so OpenVINO may read it in place; the
        # outputs are copied (the next call would overwrite them).
        result = self.request.infer({0: np.ascontiguousarray(batch)}, share_inputs=True)
        label_map, score_map = [np.asarray(result[output]) for output in self.outputs][:2]
        if label_map.ndim == 3:  # OpenVINO's Paddle reader drops arg_max's keepdim
            label_map = label_map[:, None]
        return [label_map.astype("int32", copy=False), score_map]


class ONNXRuntimeRunner:
    def __init__(self, model_dir, precision, threads):
        ort = import_backend("onnxruntime")
        if precision == "int8":
            path = int8_file(model_dir, "onnxruntime")
        else:
            path = os.path.join(model_dir, ONNX_FILE)
            if not os.path.isfile(path):  # convert once, keep it next to the program
                from .export import export_onnx
                export_onnx(model_dir)
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, batch):
        label_map, score_map = self.session.run(None, {self.input_name: batch})[:2]
        return [label_map.astype("int32", copy=False), score_map]


def make_runner(backend, precision, model_dir, model_file, threads):
    """A callable batch -> [label_map, score_map] for a non-Paddle backend."""
    if backend == "openvino":
        return OpenVINORunner(model_dir, model_file, precision, threads)
    if backend == "onnxruntime":
        return ONNXRuntimeRunner(model_dir, precision, threads)
    raise ValueError(f"make_runner handles openvino and onnxruntime, got {backend!r}")
