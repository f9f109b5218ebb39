"""Post-training int8 quantization (PTQ) of an exported model, with no retraining.

    from paddlex_seg.deploy import ptq, Predictor
    ptq.quantize(model_dir, calibration_dataset, batch_nums=16)    # writes the int8 files
    Predictor(model_dir, backend='openvino', precision='int8')     # or 'onnxruntime'

ONNX Runtime's static quantization (``onnxruntime.quantization.quantize_static``) does
the work: it runs the float ONNX model (``model.onnx``, converted first when missing)
on images of the calibration dataset, transformed by the eval transforms recorded in
model.yml, records each activation's range, and writes QDQ models (quantize /
dequantize pairs, int8 weights per output channel). The two runtimes are fastest on
different forms, so one file is written for each (``RUNTIME_FORMS``; measured on this
project's networks at 512², 2 threads, AVX-512 VNNI, against fp32 on the same runtime):

* ``model.int8.onnx`` for ONNX Runtime: uint8 activations with a zero point, around the
  convolutions only (FastSCNN 1.16x, BiSeNetV2 1.57x faster than fp32; int8 activations
  ran slower than fp32 there);
* ``model.int8.openvino.onnx`` for OpenVINO: symmetric int8 activations, around the
  convolutions, additions and multiplications (FastSCNN 2.75x, BiSeNetV2 5.2x; with the
  ONNX Runtime form only 1.1x and 2.5x: OpenVINO then keeps conversions in reference code).

The quantization route of Paddle itself (QAT, ``model.quant_aware_train``) stays in
``slim``. model.yml records PTQ under ``Export: ptq`` (images used, files, settings).
"""
import os

import numpy as np
import yaml

from .backends import INT8_ONNX_FILE, ONNX_FILE, OPENVINO_INT8_FILE, import_backend

__all__ = ["quantize", "RUNTIME_FORMS"]

_CONV_OPS = ["Conv", "ConvTranspose", "MatMul", "Gemm"]
# file -> (activation type, symmetric activations, operator types to quantize); see above.
RUNTIME_FORMS = {
    INT8_ONNX_FILE: ("QUInt8", False, _CONV_OPS),
    OPENVINO_INT8_FILE: ("QInt8", True, _CONV_OPS + ["Add", "Mul"]),
}


def _dataset_images(dataset, transforms, batch_nums, batch_size):
    from ..data.dataset import read_input_image
    samples = getattr(dataset, "samples", None)
    if samples is None:
        raise ValueError(f"calibration dataset must be a paddlex_seg SegDataset (with .samples), "
                         f"got {type(dataset).__name__}")
    if not samples:
        raise ValueError("calibration dataset is empty")
    count = min(len(samples), batch_nums * batch_size)
    for sample in samples[:count]:
        image = read_input_image(sample[0])
        yield transforms({"image": image})["image"].astype("float32")


def quantize(model_dir, dataset, batch_size=1, batch_nums=16, per_channel=True,
             calibrate_method="MinMax"):
    """Write ``model_dir/model.int8.onnx``: the exported model quantized to int8.

    Args:
        model_dir (str): a directory written by ``model.export`` (float model).
        dataset (SegDataset): calibration images (labels are not used).
        batch_size (int): images per calibration run. Default: 1.
        batch_nums (int): calibration runs; ``batch_size * batch_nums`` images at most.
            Default: 16.
        per_channel (bool): per-output-channel weight scales. Default: True.
        calibrate_method (str): 'MinMax', 'Entropy' or 'Percentile' (ONNX Runtime's).
            Default: 'MinMax'.

    Returns:
        str: the path of the ONNX Runtime int8 file (``model.int8.onnx``); OpenVINO's
        (``model.int8.openvino.onnx``) is written beside it.

    Raises:
        ValueError: bad arguments, a quantized (QAT) export, or a dataset that is not one.
        ImportError: onnxruntime (or paddle2onnx for the conversion) is missing.
    """
    from .export import MODEL_YML, export_onnx, _write_yml
    from .predictor import _read_exported_yml
    from ..data.transforms import build_transforms
    for name, value in (("batch_size", batch_size), ("batch_nums", batch_nums)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    import_backend("onnxruntime")
    from onnxruntime import quantization as ortq
    methods = {"MinMax": ortq.CalibrationMethod.MinMax, "Entropy": ortq.CalibrationMethod.Entropy,
               "Percentile": ortq.CalibrationMethod.Percentile}
    if calibrate_method not in methods:
        raise ValueError(f"calibrate_method must be one of {list(methods)}, got {calibrate_method!r}")
    model_dir = os.fspath(model_dir)
    info = _read_exported_yml(model_dir)
    export = info["Export"]
    if export.get("model_status") == "Quantized":
        raise ValueError(f"{model_dir!r} holds a QAT (already quantized) model; PTQ needs a float export")
    if not info.get("Transforms"):
        raise ValueError(f"{model_dir}/{MODEL_YML} records no eval transforms to calibrate with")
    transforms = build_transforms(info["Transforms"])
    onnx_path = os.path.join(model_dir, ONNX_FILE)
    if not os.path.isfile(onnx_path):
        export_onnx(model_dir)
    images = list(_dataset_images(dataset, transforms, int(batch_nums), int(batch_size)))
    fixed_batch = (export.get("input_shape") or [None])[0]
    step = fixed_batch or int(batch_size)
    batches = []
    for k in range(0, len(images), step):
        chunk = images[k:k + step]
        shapes = {image.shape for image in chunk}
        if len(shapes) > 1:  # free-size export: images of different sizes go one by one
            batches.extend(image[None] for image in chunk)
        elif fixed_batch and len(chunk) < fixed_batch:
            continue
        else:
            batches.append(np.stack(chunk))

    class Reader(ortq.CalibrationDataReader):
        def __init__(self):
            self._it = iter(batches)

        def get_next(self):
            batch = next(self._it, None)
            return None if batch is None else {export.get("input_name") or "x": batch}

    prepared = os.path.join(model_dir, ".ptq-prep.onnx")
    temporary = [prepared]
    try:
        # Per-channel QDQ needs opset 13 (OpenVINO reads per-channel scales only there);
        # then ONNX shape inference and graph clean-up, as ONNX Runtime recommends.
        import onnx
        from onnx import version_converter
        graph = onnx.load(onnx_path)
        opset = max((o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")), default=0)
        if opset < 13:
            graph = version_converter.convert_version(graph, 13)
        onnx.save(graph, prepared)
        ortq.quant_pre_process(prepared, prepared, skip_symbolic_shape=True)
        written = []
        for name, (activation, symmetric, op_types) in RUNTIME_FORMS.items():
            tmp = os.path.join(model_dir, f".{name}.tmp.onnx")
            temporary.append(tmp)
            ortq.quantize_static(prepared, tmp, Reader(), quant_format=ortq.QuantFormat.QDQ,
                                 per_channel=bool(per_channel),
                                 activation_type=getattr(ortq.QuantType, activation),
                                 weight_type=ortq.QuantType.QInt8,
                                 calibrate_method=methods[calibrate_method],
                                 op_types_to_quantize=op_types,
                                 extra_options={"ActivationSymmetric": symmetric})
            written.append((tmp, os.path.join(model_dir, name)))
        for tmp, target in written:
            os.replace(tmp, target)
    finally:
        for path in temporary:
            if os.path.exists(path):
                os.remove(path)
    yml = os.path.join(model_dir, MODEL_YML)
    with open(yml, encoding="utf-8") as f:
        info = yaml.safe_load(f)
    info["Export"]["ptq"] = {"file": INT8_ONNX_FILE, "files": {"onnxruntime": INT8_ONNX_FILE,
                                                             "openvino": OPENVINO_INT8_FILE},
                             "images": len(images),
                             "batches": len(batches), "per_channel": bool(per_channel),
                             "calibrate_method": calibrate_method, "tool": "onnxruntime.quantization"}
    info["Export"].pop("checks", None)  # figures of the earlier int8 file no longer hold
    _write_yml(yml, info)
    return os.path.join(model_dir, INT8_ONNX_FILE)
