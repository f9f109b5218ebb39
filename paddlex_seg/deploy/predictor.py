"""Run an exported model with Paddle Inference (``paddle.inference``).

    from paddlex_seg.deploy import Predictor
    predictor = Predictor('output/inference_model', use_mkl=True, mkl_thread_num=4)
    result = predictor.predict('photo.jpg')        # label_map (H, W), score_map (H, W, C)
    print(predictor.timings)                       # preprocess / inference / postprocess

Same arguments and results as PaddleX 2.x's ``paddlex.deploy.Predictor``. The results
equal ``model.predict``'s for the model that was exported: the same transforms (read
from model.yml), the same network, and the same way back to the input's size
(bilinear resize of the probabilities, then argmax).

Deployment needs only this file, the transforms, the image reader and ``paddlex_seg.aug``
(NumPy and OpenCV only): it imports nothing of paddlex_seg's training code (engine,
models, segmenter, slim).

Test-time augmentation (flips, scales, sliding windows; ``paddlex_seg.aug``): an
``aug`` recorded in model.yml by ``export(..., aug=...)`` is applied to every
prediction; ``predict(..., aug=...)`` overrides it and ``aug=False`` turns it off.

Images of another size than a fixed input shape: the exported model.yml records eval
transforms that resize to that shape, so any image works and its result comes back at
its own size. Transforms passed to ``predict`` that do not produce the fixed shape are
an error (``ValueError`` naming both sizes).
"""
import logging
import os
import time

import numpy as np
import paddle.inference as paddle_infer
import yaml

from .. import compat
from .backends import choose as _choose_backend, make_runner as _make_runner
from ..aug import TestTimeAug, augmented_scores
from ..data.dataset import read_input_image
from ..data.transforms import Compose, build_transforms, restore_to_input

__all__ = ["Predictor", "InferenceModelError"]

logger = logging.getLogger("paddlex_seg")

MODEL_YML = "model.yml"
EXPORTED_STATUS = "Infer"
TRT_PRECISIONS = {"float32": "Float32", "float16": "Half", "int8": "Int8"}
# oneDNN keeps kernels per input shape; bound the cache when shapes vary.
MKLDNN_CACHE_CAPACITY = 10


class InferenceModelError(ValueError):
    """An exported model directory is missing, incomplete or corrupt."""


class Predictor:
    """Predict with an exported segmentation model (PaddleX 2.x ``paddlex.deploy.Predictor``).

    Args:
        model_dir (str): a directory written by ``model.export`` / ``paddlex_seg export``.
        use_gpu (bool): run on GPU (needs paddlepaddle-gpu). Default: False.
        gpu_id (int): GPU to use. Default: 0.
        cpu_thread_num (int): math-library threads on CPU without oneDNN. Default: 1.
        use_mkl (bool): use oneDNN (MKL-DNN) kernels on CPU; an int8 (quantized) model
            runs in int8 only with it. Default: True.
        mkl_thread_num (int): threads with oneDNN. Default: 4.
        use_trt (bool): TensorRT subgraphs on GPU. Default: False.
        use_glog (bool): let Paddle Inference print its glog lines. Default: False.
        memory_optimize (bool): reuse intermediate buffers. Default: True.
        max_trt_batch_size (int): largest batch TensorRT is built for. Default: 1.
        trt_precision_mode (str): 'float32', 'float16' or 'int8'. Default: 'float32'.
        backend (str): 'auto', 'paddle' (Paddle Inference), 'openvino' or 'onnxruntime'
            (see ``paddlex_seg.deploy.backends``). 'auto' picks the fastest installed
            backend and precision that keeps accuracy by the figures recorded in model.yml
            (``paddlex_seg.deploy.check``), fp32 on OpenVINO > ONNX Runtime > Paddle when
            none are recorded. On GPU it is always 'paddle'. Default: 'auto'.
        precision (str): 'auto', 'fp32', 'bf16' (OpenVINO on a CPU with BF16) or 'int8'
            (a QAT model on Paddle, a PTQ ``model.int8.onnx`` on OpenVINO / ONNX Runtime).
            Default: 'auto'.

    Attributes:
        labels (list[str]): class names from model.yml.
        num_classes (int): number of classes.
        transforms (Compose|None): the recorded eval transforms.
        aug (TestTimeAug|None): the test-time augmentation recorded in model.yml.
        input_shape (list): exported NCHW input shape, None for a free dimension.
        backend (str), precision (str): what runs the model (after 'auto' is resolved).
        timings (dict): of the last ``predict``: milliseconds per repeat for
            'preprocess', 'inference' and 'postprocess' (mean over ``repeats``),
            plus 'images' and 'repeats'.

    Raises:
        InferenceModelError: ``model_dir`` is missing, not an exported model, or its
            files are incomplete or corrupt (the message names the file).
        ValueError: an argument out of range (named, with the value received).
    """

    def __init__(self, model_dir, use_gpu=False, gpu_id=0, cpu_thread_num=1, use_mkl=True,
                 mkl_thread_num=4, use_trt=False, use_glog=False, memory_optimize=True,
                 max_trt_batch_size=1, trt_precision_mode="float32", backend="auto",
                 precision="auto"):
        for name, value in (("use_gpu", use_gpu), ("use_mkl", use_mkl), ("use_trt", use_trt),
                            ("use_glog", use_glog), ("memory_optimize", memory_optimize)):
            if not isinstance(value, bool):
                raise ValueError(f"{name} must be True or False, got {value!r}")
        for name, value, low in (("gpu_id", gpu_id, 0), ("cpu_thread_num", cpu_thread_num, 1),
                                 ("mkl_thread_num", mkl_thread_num, 1),
                                 ("max_trt_batch_size", max_trt_batch_size, 1)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
                raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
        if trt_precision_mode not in TRT_PRECISIONS:
            raise ValueError(f"trt_precision_mode must be one of {list(TRT_PRECISIONS)}, "
                             f"got {trt_precision_mode!r}")
        if use_trt and not use_gpu:
            raise ValueError("use_trt=True needs use_gpu=True (TensorRT runs on GPU only)")
        if use_gpu and not _compiled_with_cuda():
            raise ValueError("use_gpu=True, but this Paddle is built without CUDA; install "
                             "paddlepaddle-gpu or use use_gpu=False")

        self.model_dir = os.fspath(model_dir)
        info = _read_exported_yml(self.model_dir)
        export = info["Export"]
        self.model_name = info.get("Model")
        self.labels = list(info.get("labels") or [])
        self.num_classes = info.get("num_classes")
        self.model_status = export.get("model_status", "Normal")
        self.input_shape = list(export.get("input_shape") or [None, 3, None, None])
        try:
            self.transforms = build_transforms(info["Transforms"]) if info.get("Transforms") else None
        except ValueError as e:
            raise InferenceModelError(f"{self.model_dir}/{MODEL_YML}: its Transforms cannot be "
                                      f"rebuilt: {e}") from None
        try:
            self.aug = TestTimeAug.from_value(export.get("aug"))
        except ValueError as e:
            raise InferenceModelError(f"{self.model_dir}/{MODEL_YML}: its Export aug is invalid: "
                                      f"{e}") from None
        self.timings = {}

        model_file, params_file = _model_files(self.model_dir, export)
        if use_gpu:
            if backend not in ("auto", "paddle"):
                raise ValueError(f"use_gpu=True runs on Paddle Inference only; got backend={backend!r}")
            backend = "paddle"
            precision = "int8" if self.model_status == "Quantized" else "fp32"
        self.backend, self.precision = _choose_backend(self.model_dir, export, backend, precision)
        self._runner = None
        if self.backend != "paddle":
            threads = mkl_thread_num if use_mkl else cpu_thread_num
            try:
                self._runner = _make_runner(self.backend, self.precision, self.model_dir,
                                                     model_file, threads)
            except (ImportError, InferenceModelError):
                raise
            except Exception as e:  # the runtimes raise their own error types
                detail = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise InferenceModelError(
                    f"{self.backend} cannot load the exported model in {self.model_dir!r}: its "
                    f"program or model.pdiparams is corrupt or incomplete ({detail}); export it "
                    "again") from None
            logger.info("Predictor: %s %s", self.backend, self.precision)
            return
        config = compat.configure_inference(paddle_infer.Config(model_file, params_file), model_file)
        if use_mkl and not use_gpu and model_file.endswith(".json"):
            # Paddle 3.3's oneDNN kernels fail on new-IR programs with bilinear
            # interpolation (every network here): "ConvertPirAttribute2RuntimeAttribute
            # not support ArrayAttribute<DoubleAttribute>", Paddle issue #79749.
            logger.warning("Predictor: oneDNN cannot run Paddle 3 programs with bilinear "
                           "interpolation (Paddle issue #79749); running without it")
            use_mkl = False
        if use_gpu:
            config.enable_use_gpu(100, int(gpu_id))
            if use_trt:
                precision = getattr(paddle_infer.PrecisionType, TRT_PRECISIONS[trt_precision_mode])
                config.enable_tensorrt_engine(
                    workspace_size=1 << 30, max_batch_size=int(max_trt_batch_size),
                    min_subgraph_size=3, precision_mode=precision, use_static=False,
                    use_calib_mode=False)
        else:
            config.disable_gpu()
            if use_mkl:
                config.set_mkldnn_cache_capacity(MKLDNN_CACHE_CAPACITY)
                config.enable_mkldnn()
                if self.model_status == "Quantized":
                    # Turns the quantize/dequantize pairs into int8 oneDNN kernels, for the
                    # operator types model.yml names (None: all that oneDNN supports).
                    config.enable_mkldnn_int8(set(export.get("onednn_int8_op_types") or ()))
                config.set_cpu_math_library_num_threads(int(mkl_thread_num))
            else:
                compat.disable_onednn(config)
                config.set_cpu_math_library_num_threads(int(cpu_thread_num))
        if not use_glog:
            config.disable_glog_info()
        if memory_optimize:
            config.enable_memory_optim()
        config.switch_use_feed_fetch_ops(False)
        try:
            self._predictor = paddle_infer.create_predictor(config)
        except Exception as e:  # Paddle raises ValueError/RuntimeError with C++ details
            detail = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise InferenceModelError(
                f"cannot load the exported model in {self.model_dir!r}: model.pdmodel or "
                f"model.pdiparams is corrupt or incomplete ({detail}); export it again") from None
        self._input = self._predictor.get_input_handle(self._predictor.get_input_names()[0])
        self._outputs = [self._predictor.get_output_handle(name)
                         for name in self._predictor.get_output_names()]
        if len(self._outputs) != 2:
            raise InferenceModelError(
                f"{self.model_dir!r}: expected 2 outputs (label_map, score_map), the program "
                f"has {len(self._outputs)}; it was not exported by paddlex_seg")

    def predict(self, img_file, transforms=None, warmup_iters=0, repeats=1, aug=None):
        """Predict one image or a batch.

        Args:
            img_file (str|np.ndarray|list): an image path, an HWC BGR array (uint8, as
                ``cv2.imread`` gives), or a list of them (run as batches of the images
                that share a size after the transforms).
            transforms (Compose|None): defaults to the transforms recorded in model.yml.
            warmup_iters (int): untimed runs of the whole pipeline first. Default: 0.
            repeats (int): timed runs; ``timings`` holds their mean. Default: 1.
            aug (TestTimeAug|dict|bool|None): test-time augmentation. None uses the one
                recorded in model.yml (if any); False predicts plainly; a TestTimeAug or
                dict overrides the recorded one. Default: None.

        Returns:
            dict | list[dict]: like ``model.predict``: ``label_map`` (H, W) uint8 and
            ``score_map`` (H, W, C) float32 at each input image's size; a list for a
            list input.
        """
        transforms = transforms if transforms is not None else self.transforms
        if not isinstance(transforms, Compose):
            raise ValueError("predict needs transforms: model.yml records none (the model had "
                             "no eval transforms when exported); pass transforms=T.Compose([...])"
                             if transforms is None else
                             f"transforms must be a paddlex_seg transforms Compose, got {transforms!r}")
        for name, value, low in (("warmup_iters", warmup_iters, 0), ("repeats", repeats, 1)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
                raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
        aug = self._choose_aug(aug)
        single = not isinstance(img_file, (list, tuple))
        images = [img_file] if single else list(img_file)
        if not images:
            raise ValueError("img_file is an empty list")
        images = [read_input_image(image, "img_file" if single else f"img_file[{i}]")
                  for i, image in enumerate(images)]

        for _ in range(warmup_iters):
            self._run(images, transforms, aug)
        totals = {"preprocess": 0.0, "inference": 0.0, "postprocess": 0.0}
        for _ in range(repeats):
            results, times = self._run(images, transforms, aug)
            for key in totals:
                totals[key] += times[key]
        self.timings = {key: 1000.0 * value / repeats for key, value in totals.items()}
        self.timings.update(images=len(images), repeats=int(repeats))
        logger.info("Predictor: %d image(s), mean of %d run(s): preprocess %.2f ms, inference "
                    "%.2f ms, postprocess %.2f ms", len(images), repeats,
                    self.timings["preprocess"], self.timings["inference"],
                    self.timings["postprocess"])
        return results[0] if single else results

    def get_timings(self):
        """A copy of ``timings`` (PaddleX-style accessor)."""
        return dict(self.timings)

    def _choose_aug(self, aug):
        if aug is False:
            return None
        aug = self.aug if aug is None else TestTimeAug.from_value(aug)
        fixed = self.input_shape[2:]
        if aug is not None and not aug.keeps_input_size and any(v is not None for v in fixed):
            raise ValueError(
                f"aug with scales {list(aug.scales)} / sliding_window {aug.sliding_window} needs "
                f"a free input size, but the model was exported for {fixed[0]}x{fixed[1]} (h x w); "
                "export it without fixed_input_shape, or keep only the flips")
        return aug

    # --- the three stages ------------------------------------------------------------
    def _run(self, images, transforms, aug=None):
        if aug is not None:
            return self._run_augmented(images, transforms, aug)
        start = time.perf_counter()
        samples = [transforms({"image": image}) for image in images]
        batches = self._batches([s["image"] for s in samples])
        preprocessed = time.perf_counter()
        outputs = [(indices, self._infer(batch)) for indices, batch in batches]
        inferred = time.perf_counter()
        results = [None] * len(images)
        for indices, (label_maps, score_maps) in outputs:
            for j, i in enumerate(indices):
                results[i] = _postprocess(label_maps[j, 0], score_maps[j], samples[i]["trans_info"])
        done = time.perf_counter()
        return results, {"preprocess": preprocessed - start, "inference": inferred - preprocessed,
                         "postprocess": done - inferred}

    def _run_augmented(self, images, transforms, aug):
        """``_run`` with test-time augmentation: each image alone, scores averaged over views."""
        start = time.perf_counter()
        samples = [transforms({"image": image}) for image in images]
        for i, sample in enumerate(samples):
            self._check_size(i, sample["image"])
        preprocessed = time.perf_counter()
        scores = [augmented_scores(self._softmax_scores, s["image"], aug) for s in samples]
        inferred = time.perf_counter()
        results = []
        for sample, score in zip(samples, scores):
            score_map = score.transpose(1, 2, 0)
            results.append(_postprocess(score_map.argmax(axis=2), score_map, sample["trans_info"]))
        done = time.perf_counter()
        return results, {"preprocess": preprocessed - start, "inference": inferred - preprocessed,
                         "postprocess": done - inferred}

    def _softmax_scores(self, batch):
        """Scores (N, C, H, W) of a float32 NCHW batch, run in the exported batch size."""
        step = self.input_shape[0] or len(batch)
        parts = []
        for k in range(0, len(batch), step):
            chunk = batch[k:k + step]
            if len(chunk) < step:  # a fixed batch: pad with copies
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], step - len(chunk), 0)])
            parts.append(self._infer(chunk)[1][:len(batch) - k])
        return np.concatenate(parts).transpose(0, 3, 1, 2)

    def _check_size(self, i, image):
        height, width = self.input_shape[2:]
        if (height is not None and image.shape[1] != height) or (
                width is not None and image.shape[2] != width):
            raise ValueError(
                f"image {i} is {image.shape[1]}x{image.shape[2]} (h x w) after the transforms, "
                f"but the model was exported for {height}x{width}: use the transforms "
                "recorded in model.yml (they resize to it) or transforms that give that size")

    def _batches(self, chw_images):
        """(indices, NCHW batch) for runs of same-sized images, in the exported batch size."""
        batch_size = self.input_shape[0]
        groups = {}
        for i, image in enumerate(chw_images):
            self._check_size(i, image)
            groups.setdefault(image.shape, []).append(i)
        batches = []
        for indices in groups.values():
            step = batch_size or len(indices)
            for k in range(0, len(indices), step):
                chunk = indices[k:k + step]
                batch = np.stack([chw_images[i] for i in chunk]).astype("float32", copy=False)
                if batch_size and len(chunk) < batch_size:  # a fixed batch: pad with copies
                    batch = np.concatenate([batch, np.repeat(batch[-1:], batch_size - len(chunk), 0)])
                batches.append((chunk, batch))
        return batches

    def _infer(self, batch):
        if self._runner is not None:
            return self._runner(np.ascontiguousarray(batch, dtype="float32"))
        self._input.reshape(list(batch.shape))
        self._input.copy_from_cpu(np.ascontiguousarray(batch))
        self._predictor.run()
        return [output.copy_to_cpu() for output in self._outputs]


def _postprocess(label_map, score_map, trans_info):
    """One image's (H, W) labels and (H, W, C) scores, brought back to the input size."""
    if any(record[0] in ("resize", "padding", "crop") for record in trans_info):
        score_map = restore_to_input(score_map, trans_info, interp="bilinear")
        # As model.predict does: resize the probabilities, then take the argmax.
        label_map = score_map.argmax(axis=2)
    return {"label_map": label_map.astype("uint8"),
            "score_map": np.ascontiguousarray(score_map, dtype="float32")}


def _read_exported_yml(model_dir):
    if not os.path.isdir(model_dir):
        raise InferenceModelError(f"exported model directory {model_dir!r} does not exist")
    yml = os.path.join(model_dir, MODEL_YML)
    if not os.path.isfile(yml):
        raise InferenceModelError(f"{model_dir!r} is not an exported model: it has no {MODEL_YML} "
                                  "(write one with model.export or `paddlex_seg export`)")
    try:
        with open(yml, encoding="utf-8") as f:
            info = yaml.safe_load(f)
    except yaml.YAMLError as e:
        raise InferenceModelError(f"{yml} is not valid YAML: {e}") from None
    if not isinstance(info, dict) or "Model" not in info:
        raise InferenceModelError(f"{yml} does not describe a paddlex_seg model (no 'Model' entry)")
    if info.get("status") == EXPORTED_STATUS and not isinstance(info.get("Export"), dict):
        raise InferenceModelError(f"{yml} has no 'Export' entry: it was not written by "
                                  "paddlex_seg's export; export the model again with paddlex_seg")
    if info.get("status") != EXPORTED_STATUS:
        raise InferenceModelError(
            f"{model_dir!r} holds a training checkpoint (status {info.get('status')!r}), not an "
            "exported model: export it first (model.export(save_dir) or `paddlex_seg export "
            f"--model_dir {model_dir} --save_dir ...`), or load it with paddlex_seg.load_model")
    return info


def _model_files(model_dir, export):
    files = []
    program = compat.program_file(os.path.join(model_dir, "model")) or os.path.join(
        model_dir, "model" + compat.PROGRAM_SUFFIXES[0])
    for key, default in (("model_file", program), ("params_file", "model.pdiparams")):
        path = os.path.join(model_dir, export.get(key) or default)
        if not os.path.isfile(path):
            raise InferenceModelError(f"{path} is missing: the export in {model_dir!r} is incomplete")
        if path.endswith(".json") and not compat.PADDLE3:
            raise InferenceModelError(f"{path} is a Paddle 3 program (new IR), which Paddle "
                                      f"{compat.paddle.__version__} cannot run: export the model "
                                      "again with this Paddle, or run it with Paddle 3")
        files.append(path)
    return files


def _compiled_with_cuda():
    import paddle  # already loaded by paddle.inference; only asked when use_gpu=True
    return paddle.device.is_compiled_with_cuda()
