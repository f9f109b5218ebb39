"""One call from a trained model to a pruned, fine-tuned, quantized and exported one.

``compress(model, train_dataset, eval_dataset, ...)`` (what ``model.compress`` calls)
chains the steps a PaddleX user runs by hand, each through the API that already does
it, and writes a report that compares them::

    save_dir/
      0_float/          model/ (the model as given), export/ (Paddle inference model)
      1_sensitivity/    model.sensi.data (model.analyze_sensitivity)
      2_pruned/         pruning.json, train/ (fine-tuning checkpoints), model/, export/
      3_quant/          train/ (QAT checkpoints), model/, export/ (int8)
      4_ptq/            export/ (float export + model.int8.onnx)
      report.md  report.json  sensitivity.png  tradeoff.png

Stages: float (evaluate + export) → sensitivity (``analyze_sensitivity``) → pruned
(``prune``, then fine-tuning with ``train``) → quant (``quant_aware_train``) of the
pruned model → ptq (``model.quantize``: post-training int8 of the same pruned model, no
retraining, calibrated on training images; the cheaper alternative to QAT, run by
OpenVINO or ONNX Runtime). ``pruned_flops=None`` leaves out the two pruning stages,
``quant=False`` QAT, ``ptq=False`` PTQ (by default PTQ runs when the ``onnx`` extra is
installed). Each stage starts from the previous stage's ``model/`` (read with
``load_model``); the model passed in is not changed.

Resuming
    A stage writes ``inputs.json`` when it starts (a fingerprint of everything its
    result depends on: the float weights, the data lists and transforms, the settings
    of this and earlier stages) and ``complete.json`` (its measurements) as its very
    last file, written to a temporary name and renamed. A rerun skips every stage with
    a ``complete.json`` whose fingerprint matches, and clears a stage directory whose
    fingerprint does not (another model or other settings), with a warning. A
    fine-tune or QAT stopped part way (killed, out of memory) resumes from the newest
    ``train/epoch_N`` checkpoint through ``train(resume_checkpoint=...)``.

Report
    Per stage: mIoU of the in-process model (``model.evaluate``) and of its export
    (the Predictor's label maps at each val image's own size: what is deployed),
    parameters, FLOPs (``paddle.flops`` at the input the first val image becomes after
    the eval transforms), exported size on disk (model.pdmodel + model.pdiparams; the
    int8 ONNX file for PTQ) and CPU latency through ``paddlex_seg.deploy.Predictor``:
    Paddle Inference with oneDNN for the float, pruned and QAT exports (int8 kernels for
    QAT), the fastest installed int8 runtime for PTQ (OpenVINO, else ONNX Runtime), which
    is also timed in fp32 on the same export so that the int8 speed-up is read on one
    runtime. The same image and thread count for every stage, the exports taking turns
    run by run, the median of ``latency_repeats`` runs after ``latency_warmup`` runs.
    Latency is measured again on every call (it depends on the machine's load at the
    time); everything else comes from the stage markers. PTQ has no in-process model, so
    its "mIoU" is that of its export.
"""
import contextlib
import copy
import hashlib
import json
import logging
import os
import shutil
import statistics
import tempfile
import time

import numpy as np
import yaml

from . import segmenter
from .log import logger
from .utils.checks import check_bool as _check_bool, check_int as _check_int

__all__ = ["compress", "STAGE_DIRS", "COMPLETE_FILE", "INPUTS_FILE"]

# Sub-directory of save_dir of each stage, in pipeline order.
STAGE_DIRS = {"float": "0_float", "sensitivity": "1_sensitivity", "pruned": "2_pruned",
              "quant": "3_quant", "ptq": "4_ptq"}
# A stage is complete when this file exists in its directory (written last, atomically).
COMPLETE_FILE = "complete.json"
# The fingerprint of a stage's inputs, written when the stage starts.
INPUTS_FILE = "inputs.json"
MODEL_SUBDIR = "model"
EXPORT_SUBDIR = "export"
TRAIN_SUBDIR = "train"
PRUNING_FILE = "pruning.json"
REPORT_MD, REPORT_JSON = "report.md", "report.json"
SENSITIVITY_PNG, TRADEOFF_PNG = "sensitivity.png", "tradeoff.png"
# Layers named in the legend of sensitivity.png (the most sensitive ones); the others
# are drawn as thin grey lines, so the picture stays readable for 100+ layers.
PLOT_TOP_K = 8


def compress(model, train_dataset, eval_dataset, pruned_flops=0.3, quant=True, finetune_epochs=10,
             qat_epochs=2, save_dir="output/compress", criterion="l1_norm", train_batch_size=2,
             eval_batch_size=1, finetune_learning_rate=0.01, qat_learning_rate=0.0001,
             lr_decay_power=0.9, quant_config=None, num_workers=None, fixed_input_shape=None,
             latency_threads=2, latency_warmup=3, latency_repeats=20, log_interval_steps=10,
             use_vdl=False, keep_checkpoints=False, ptq=None, ptq_batches=16):
    """Sensitivity → prune → fine-tune → QAT / PTQ → export, with a report. See ``BaseSegmenter.compress``.

    Returns:
        dict: the content of ``report.json`` (see ``BaseSegmenter.compress``).
    """
    settings = _check_arguments(
        model, train_dataset, eval_dataset, pruned_flops=pruned_flops, quant=quant,
        finetune_epochs=finetune_epochs, qat_epochs=qat_epochs, save_dir=save_dir,
        criterion=criterion, train_batch_size=train_batch_size, eval_batch_size=eval_batch_size,
        finetune_learning_rate=finetune_learning_rate, qat_learning_rate=qat_learning_rate,
        lr_decay_power=lr_decay_power, quant_config=quant_config, num_workers=num_workers,
        fixed_input_shape=fixed_input_shape, latency_threads=latency_threads,
        latency_warmup=latency_warmup, latency_repeats=latency_repeats,
        log_interval_steps=log_interval_steps, use_vdl=use_vdl, keep_checkpoints=keep_checkpoints,
        ptq=ptq, ptq_batches=ptq_batches)
    train_dataset = _with_workers(train_dataset, settings["num_workers"])
    eval_dataset = _with_workers(eval_dataset, settings["num_workers"])
    pipeline = _Pipeline(model, train_dataset, eval_dataset, settings)
    return pipeline.run()


# === Argument checks ===

def _check_arguments(model, train_dataset, eval_dataset, **s):
    from .deploy.export import parse_fixed_input_shape
    from .slim.prune import CRITERIA
    from .slim.quant import check_quant_config

    if not hasattr(model, "net") or not hasattr(model, "model_info"):
        raise ValueError(f"model must be a paddlex_seg model (e.g. seg.UNet), got {type(model).__name__}")
    if model.status == "Quantized":
        raise ValueError("model is already quantized (status 'Quantized'); compress starts from a "
                         "float or pruned model")
    backbone = model.init_params.get("backbone")
    if isinstance(backbone, dict):
        raise ValueError(
            f"model: compress saves and reloads each stage with load_model, which cannot rebuild "
            f"a {model.model_name} on a custom backbone Layer ({backbone}); register a backbone "
            "builder (paddlex_seg.models.register) and pass its name as backbone=")
    model._check_dataset("train_dataset", train_dataset, need_labels=True)
    model._check_dataset("eval_dataset", eval_dataset, need_labels=True)
    if eval_dataset.transforms is None:
        raise ValueError("eval_dataset has no transforms; give it eval transforms "
                         "(e.g. T.Compose([T.Normalize()]))")
    if len(eval_dataset) == 0:
        raise ValueError(f"eval_dataset ({eval_dataset.file_list}) is empty")

    pruned_flops = s["pruned_flops"]
    if pruned_flops is not None and (isinstance(pruned_flops, bool) or not isinstance(
            pruned_flops, (int, float, np.floating)) or not 0 < pruned_flops < 1):
        raise ValueError(f"pruned_flops must be a number with 0 < pruned_flops < 1, or None "
                         f"(no pruning), got {pruned_flops!r}")
    _check_bool("quant", s["quant"])
    if s["ptq"] is not None:
        _check_bool("ptq", s["ptq"])
    missing = _ptq_missing()
    if s["ptq"] and missing:
        raise ImportError(f"ptq=True: {missing}; install it or pass ptq=False")
    if s["ptq"] is None:  # the default: PTQ when its runtimes are installed
        if missing:
            logger.info(f"compress: no PTQ stage ({missing})")
        s["ptq"] = missing is None
    if pruned_flops is None and not s["quant"] and not s["ptq"]:
        raise ValueError("pruned_flops=None, quant=False and ptq=False leave nothing to do; give "
                         "pruned_flops (e.g. 0.3), quant=True or ptq=True")
    for name in ("finetune_epochs", "qat_epochs", "train_batch_size", "eval_batch_size",
                 "latency_threads", "latency_repeats", "log_interval_steps", "ptq_batches"):
        _check_int(name, s[name], 1)
    _check_int("latency_warmup", s["latency_warmup"], 0)
    if s["train_batch_size"] > len(train_dataset):
        raise ValueError(f"train_batch_size={s['train_batch_size']} is larger than train_dataset "
                         f"({len(train_dataset)} samples); lower train_batch_size")
    if not isinstance(s["save_dir"], (str, os.PathLike)) or not str(s["save_dir"]).strip():
        raise ValueError(f"save_dir must be a directory path, got {s['save_dir']!r}")
    if s["criterion"] not in CRITERIA:
        raise ValueError(f"criterion={s['criterion']!r} is not supported; allowed values: "
                         f"{', '.join(map(repr, CRITERIA))}")
    for name in ("finetune_learning_rate", "qat_learning_rate"):
        value = s[name]
        if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)) or not value > 0:
            raise ValueError(f"{name} must be a positive number, got {value!r}")
    power = s["lr_decay_power"]
    if isinstance(power, bool) or not isinstance(power, (int, float, np.floating)) or power < 0:
        raise ValueError(f"lr_decay_power must be a number >= 0, got {power!r}")
    _check_bool("use_vdl", s["use_vdl"])
    _check_bool("keep_checkpoints", s["keep_checkpoints"])
    if s["num_workers"] is not None:
        from .data.dataset import resolve_num_workers
        s["num_workers"] = resolve_num_workers(s["num_workers"])  # ValueError names it
    parse_fixed_input_shape(s["fixed_input_shape"])
    s["quant_config"] = check_quant_config(s["quant_config"]) if s["quant"] else None
    s["save_dir"] = os.path.abspath(os.fspath(s["save_dir"]))
    s["pruned_flops"] = None if pruned_flops is None else float(pruned_flops)
    for name in ("finetune_learning_rate", "qat_learning_rate", "lr_decay_power"):
        s[name] = float(s[name])
    return s


def _ptq_missing():
    """Why PTQ cannot run here (the packages of the ``onnx`` extra), or None."""
    import importlib
    for module in ("paddle2onnx", "onnx", "onnxruntime"):
        try:
            importlib.import_module(module)
        except ImportError:
            return (f"post-training quantization needs {module}, which is not installed: "
                    "pip install \"paddlex_seg[onnx]\"")
    return None


def _with_workers(dataset, num_workers):
    """The dataset, or a shallow copy with other DataLoader workers (the caller's is untouched)."""
    if num_workers is None or num_workers == dataset.num_workers:
        return dataset
    dataset = copy.copy(dataset)
    dataset.num_workers = num_workers
    return dataset


# === The pipeline ===

class _Pipeline:
    """Runs the stages in order, skipping the complete ones; then measures and reports."""

    def __init__(self, model, train_dataset, eval_dataset, settings):
        self.model = model
        self.train_dataset = train_dataset
        self.eval_dataset = eval_dataset
        self.s = settings
        self.root = settings["save_dir"]
        self.input_shape = _input_shape(eval_dataset, settings["fixed_input_shape"])
        self.skipped = []
        self.resumed = {}

    def run(self):
        start = time.perf_counter()
        os.makedirs(self.root, exist_ok=True)
        logger.info(f"Compressing {self.model.model_name} into {self.root}: "
                    + " -> ".join(self._stage_names()))
        rows = []
        fingerprint = self._float_fingerprint()
        rows.append(self._stage("float", fingerprint, self._run_float))
        source = "float"
        if self.s["pruned_flops"] is not None:
            fingerprint = _digest([fingerprint, "sensitivity", self.s["criterion"],
                                   list(_sensitivity_ratios())])
            sensitivity = self._stage("sensitivity", fingerprint, self._run_sensitivity)
            fingerprint = _digest([fingerprint, "pruned", self.s["pruned_flops"],
                                   self.s["finetune_epochs"], self.s["finetune_learning_rate"],
                                   self._training_fingerprint()])
            rows.append(self._stage("pruned", fingerprint, self._run_pruned))
            source = "pruned"
        else:
            sensitivity = None
        if self.s["quant"]:
            quant_fingerprint = _digest([fingerprint, "quant", source, self.s["qat_epochs"],
                                         self.s["qat_learning_rate"], self.s["quant_config"],
                                         self._training_fingerprint()])
            rows.append(self._stage("quant", quant_fingerprint, lambda d: self._run_quant(d, source)))
        if self.s["ptq"]:
            ptq_fingerprint = _digest([fingerprint, "ptq", source, self.s["ptq_batches"],
                                       _dataset_fingerprint(self.train_dataset)])
            rows.append(self._stage("ptq", ptq_fingerprint, lambda d: self._run_ptq(d, source)))

        self._measure_latency(rows)
        report = self._report(rows, sensitivity, time.perf_counter() - start)
        return report

    def _stage_names(self):
        names = ["float"]
        if self.s["pruned_flops"] is not None:
            names += ["sensitivity", "pruned"]
        if self.s["quant"]:
            names.append("quant")
        if self.s["ptq"]:
            names.append("ptq")
        return names

    def _dir(self, stage, *parts):
        return os.path.join(self.root, STAGE_DIRS[stage], *parts)

    def _stage(self, stage, fingerprint, run):
        """Run one stage unless a complete one with the same fingerprint is on disk."""
        folder = self._dir(stage)
        inputs = _read_json(os.path.join(folder, INPUTS_FILE))
        if inputs is not None and inputs.get("fingerprint") != fingerprint:
            logger.warning(f"{folder} was made from another model, data or settings; "
                           f"stage {stage!r} is redone")
            shutil.rmtree(folder)
        elif inputs is None and os.path.isdir(folder) and os.listdir(folder):
            logger.warning(f"{folder} holds files compress did not record ({INPUTS_FILE} is "
                           f"missing); they are removed and stage {stage!r} is run")
            shutil.rmtree(folder)
        done = _read_json(os.path.join(folder, COMPLETE_FILE))
        if done is not None and done.get("fingerprint") == fingerprint:
            logger.info(f"Stage {STAGE_DIRS[stage]} is complete ({COMPLETE_FILE} present); skipped")
            self.skipped.append(stage)
            return done["result"]
        os.makedirs(folder, exist_ok=True)
        _write_json(os.path.join(folder, INPUTS_FILE), {"stage": stage, "fingerprint": fingerprint})
        logger.info(f"Stage {STAGE_DIRS[stage]}: started")
        begin = time.perf_counter()
        result = run(folder)
        result["stage_seconds"] = round(time.perf_counter() - begin, 1)
        _write_json(os.path.join(folder, COMPLETE_FILE),
                    {"stage": stage, "fingerprint": fingerprint, "result": result})
        logger.info(f"Stage {STAGE_DIRS[stage]}: complete in {result['stage_seconds']:.0f} s")
        if not self.s["keep_checkpoints"] and os.path.isdir(os.path.join(folder, TRAIN_SUBDIR)):
            # The checkpoints served only to resume; model/ holds the stage's result.
            shutil.rmtree(os.path.join(folder, TRAIN_SUBDIR), ignore_errors=True)
        return result

    # --- fingerprints ----------------------------------------------------------------
    def _float_fingerprint(self):
        model = self.model
        weights = hashlib.sha256()
        for key, value in sorted(model.net.state_dict().items()):
            weights.update(key.encode())
            weights.update(np.ascontiguousarray(value.numpy()).tobytes())
        return _digest([model.model_name, _plain(model.init_params), model.status,
                        _plain(model.pruning), weights.hexdigest(),
                        _dataset_fingerprint(self.eval_dataset), self.s["fixed_input_shape"]])

    def _training_fingerprint(self):
        return [_dataset_fingerprint(self.train_dataset), self.s["train_batch_size"],
                self.s["lr_decay_power"]]

    # --- the stages ------------------------------------------------------------------
    def _run_float(self, folder):
        model = self.model
        if model.eval_transforms is None:
            # Record eval transforms in the saved model and its export (on a shallow copy:
            # the caller's model is not changed).
            model = copy.copy(model)
            model.eval_transforms = copy.deepcopy(self.eval_dataset.transforms)
        model.save(os.path.join(folder, MODEL_SUBDIR))
        return self._measure("float", model, folder)

    def _run_sensitivity(self, folder):
        model = self._load("float")
        sens = model.analyze_sensitivity(self.eval_dataset, batch_size=self.s["eval_batch_size"],
                                         criterion=self.s["criterion"], save_dir=folder)
        return {"stage": "sensitivity", "layers": len(sens), "criterion": self.s["criterion"],
                "ratios": sorted({float(r) for points in sens.values() for r in points})}

    def _run_pruned(self, folder):
        train_dir = os.path.join(folder, TRAIN_SUBDIR)
        resume = _latest_checkpoint(train_dir)
        if resume is not None and not os.path.isfile(os.path.join(folder, PRUNING_FILE)):
            resume = None  # checkpoints without the record of their pruning: start afresh
            shutil.rmtree(train_dir)
        if resume is None:
            from .slim.prune import load_sensitivities
            model = self._load("float")
            # What analyze_sensitivity leaves on the model, read from the sensitivity stage
            # (calling it again would trace the network once more just to find the file).
            model.sensitivities = load_sensitivities(
                self._dir("sensitivity", segmenter.SENSITIVITIES_FILE))
            model.pruning_criterion = self.s["criterion"]
            model.prune(pruned_flops=self.s["pruned_flops"])
            before = model.evaluate(self.eval_dataset, batch_size=self.s["eval_batch_size"])["miou"]
            logger.info(f"mIoU right after pruning, before fine-tuning: {before:.4f}")
            _write_json(os.path.join(folder, PRUNING_FILE),
                        {"miou_before_finetune": before, "pruning": _plain(model.pruning)})
        else:
            model = self._resume_from(resume, "pruned")
        state = model.train(num_epochs=self.s["finetune_epochs"], **self._train_kwargs(
            train_dir, self.s["finetune_learning_rate"], resume))
        pruning = _read_json(os.path.join(folder, PRUNING_FILE))
        result = self._finish_training("pruned", model, state, folder)
        result.update(miou_before_finetune=pruning["miou_before_finetune"],
                      pruned_flops_requested=self.s["pruned_flops"],
                      pruned_flops_measured=pruning["pruning"]["pruned_flops_measured"],
                      finetune_epochs=self.s["finetune_epochs"])
        return result

    def _run_quant(self, folder, source):
        train_dir = os.path.join(folder, TRAIN_SUBDIR)
        resume = _latest_checkpoint(train_dir)
        kwargs = self._train_kwargs(train_dir, self.s["qat_learning_rate"], resume)
        if resume is None:
            model = self._load(source)
            kwargs.pop("pretrain_weights")
            kwargs.pop("resume_checkpoint")
            state = model.quant_aware_train(num_epochs=self.s["qat_epochs"],
                                            quant_config=self.s["quant_config"], **kwargs)
        else:
            # load_model rebuilds the quantized network; train() goes on where it stopped.
            model = self._resume_from(resume, "quant")
            state = model.train(num_epochs=self.s["qat_epochs"], **kwargs)
        source_flops = _read_json(os.path.join(self._dir(source), COMPLETE_FILE))["result"]["flops"]
        result = self._finish_training("quant", model, state, folder, flops=source_flops)
        result.update(qat_epochs=self.s["qat_epochs"], quantized_from=source,
                      flops_note=f"FLOPs of the {source} network it quantizes (int8 does not "
                                 "change the count)")
        return result

    def _run_ptq(self, folder, source):
        """Post-training int8 of the source stage's model: ``model.quantize`` into export/."""
        from .deploy import Predictor
        from .deploy.backends import int8_file
        model = self._load(source)
        export_dir = model.quantize(self.train_dataset, os.path.join(folder, EXPORT_SUBDIR),
                                    batch_nums=self.s["ptq_batches"],
                                    fixed_input_shape=self.s["fixed_input_shape"])
        threads = self.s["latency_threads"]
        # The fastest installed int8 runtime (OpenVINO, else ONNX Runtime).
        predictor = Predictor(export_dir, precision="int8", mkl_thread_num=threads,
                              cpu_thread_num=threads)
        with _quiet():
            deployed = _predictor_miou(predictor, self.eval_dataset, model.num_classes)
        source_result = _read_json(os.path.join(self._dir(source), COMPLETE_FILE))["result"]
        with open(os.path.join(export_dir, "model.yml"), encoding="utf-8") as f:
            images = (yaml.safe_load(f)["Export"].get("ptq") or {}).get("images")
        result = {
            "stage": "ptq", "status": "PTQ int8", "miou": float(deployed),
            "miou_deployed": float(deployed), "params": source_result["params"],
            "flops": source_result["flops"], "flops_input_shape": list(self.input_shape),
            "export_bytes": int(os.path.getsize(int8_file(export_dir, predictor.backend))),
            "export_dir": os.path.relpath(export_dir, self.root),
            "backend": predictor.backend, "precision": "int8", "quantized_from": source,
            "calibration_images": images,
            "flops_note": f"FLOPs of the {source} network it quantizes (int8 does not "
                          "change the count)",
        }
        logger.info(f"Stage {STAGE_DIRS['ptq']}: exported mIoU {deployed:.4f} on {predictor.backend} "
                    f"int8, {images} calibration images, export {result['export_bytes'] / 2**20:.2f} MB")
        return result

    def _train_kwargs(self, train_dir, learning_rate, resume):
        return dict(train_dataset=self.train_dataset, eval_dataset=self.eval_dataset,
                    train_batch_size=self.s["train_batch_size"], save_interval_epochs=1,
                    log_interval_steps=self.s["log_interval_steps"], save_dir=train_dir,
                    pretrain_weights=None, learning_rate=learning_rate,
                    lr_decay_power=self.s["lr_decay_power"], use_vdl=self.s["use_vdl"],
                    resume_checkpoint=resume)

    def _resume_from(self, checkpoint_dir, stage):
        logger.info(f"Stage {STAGE_DIRS[stage]}: resuming from {checkpoint_dir}")
        self.resumed[stage] = os.path.relpath(checkpoint_dir, self.root)
        return segmenter.load_model(checkpoint_dir)

    def _finish_training(self, stage, model, state, folder, flops=None):
        """Keep the best epoch of a fine-tune / QAT run as the stage's model, export and measure it."""
        from .checkpoint import ModelDirError, resolve_model_dir
        if state.best_model_epoch != state.epoch:
            best = os.path.join(folder, TRAIN_SUBDIR, "best_model")
            try:
                resolve_model_dir(best)
            except ModelDirError:
                # Killed between writing epoch_N and best_model: epoch_N has the same weights.
                best = os.path.join(folder, TRAIN_SUBDIR, f"epoch_{state.best_model_epoch}")
            model = segmenter.load_model(best)
        model.save(os.path.join(folder, MODEL_SUBDIR))
        result = self._measure(stage, model, folder, flops=flops)
        result["best_epoch"] = int(model.best_model_epoch)
        return result

    def _load(self, stage):
        return segmenter.load_model(self._dir(stage, MODEL_SUBDIR))

    # --- measurements ----------------------------------------------------------------
    def _measure(self, stage, model, folder, flops=None):
        """mIoU, size and FLOPs of a stage's model, exported to ``folder/export``."""
        from .deploy import Predictor
        from .slim.prune import flops as count_flops
        export_dir = model.export(os.path.join(folder, EXPORT_SUBDIR),
                                  fixed_input_shape=self.s["fixed_input_shape"])
        miou = model.evaluate(self.eval_dataset, batch_size=self.s["eval_batch_size"])["miou"]
        predictor = Predictor(export_dir, backend="paddle", use_mkl=True,
                              cpu_thread_num=self.s["latency_threads"],
                              mkl_thread_num=self.s["latency_threads"])
        with _quiet():
            deployed = _predictor_miou(predictor, self.eval_dataset, model.num_classes)
        if flops is None:
            flops = count_flops(model.net, self.input_shape)
        result = {
            "stage": stage, "status": model.status, "miou": float(miou), "miou_deployed": float(deployed),
            "backend": "paddle", "precision": "int8" if model.status == "Quantized" else "fp32",
            "params": int(sum(int(np.prod(p.shape)) for p in model.net.parameters())),
            "flops": int(flops), "flops_input_shape": list(self.input_shape),
            "export_bytes": _exported_bytes(export_dir),
            "model_dir": os.path.relpath(os.path.join(folder, MODEL_SUBDIR), self.root),
            "export_dir": os.path.relpath(export_dir, self.root),
        }
        logger.info(f"Stage {STAGE_DIRS[stage]}: mIoU {miou:.4f} (exported {deployed:.4f}), "
                    f"{result['params']:,} parameters, {flops / 1e9:.3f} GFLOPs, "
                    f"export {result['export_bytes'] / 2**20:.2f} MB")
        return result

    def _measure_latency(self, rows):
        """Median latency of every stage's export on one image; the exports take turns."""
        from .data.dataset import read_image
        from .deploy import Predictor
        threads, warmup, repeats = (self.s[k] for k in ("latency_threads", "latency_warmup",
                                                        "latency_repeats"))
        image = read_image(self.eval_dataset.samples[0][0])
        logger.info(f"Latency: {len(rows)} exports, {threads} threads, median of {repeats} runs "
                    f"after {warmup} warm-up runs, on {self.eval_dataset.samples[0][0]}")
        # Each stage on its runtime (row's backend / precision); PTQ's export also in fp32 on
        # the same runtime, so that its int8 speed-up is read on one runtime.
        runs = [(row, row["backend"], row["precision"]) for row in rows]
        runs += [(row, row["backend"], "fp32") for row in rows if row["stage"] == "ptq"]
        predictors = [Predictor(os.path.join(self.root, row["export_dir"]), backend=backend,
                                precision=precision, use_mkl=True, cpu_thread_num=threads,
                                mkl_thread_num=threads) for row, backend, precision in runs]
        transforms = [p.transforms or self.eval_dataset.transforms for p in predictors]
        network = [[] for _ in runs]
        total = [[] for _ in runs]
        with _quiet():
            for predictor, tf in zip(predictors, transforms):
                predictor.predict(image, transforms=tf, warmup_iters=warmup, repeats=1)
            # One run of each export per round: load changes on a shared machine slow them alike.
            for _ in range(repeats):
                for i, predictor in enumerate(predictors):
                    predictor.predict(image, transforms=transforms[i], repeats=1)
                    t = predictor.timings
                    network[i].append(t["inference"])
                    total[i].append(t["preprocess"] + t["inference"] + t["postprocess"])
        for (row, _, precision), net_ms, total_ms in zip(runs, network, total):
            if precision == row["precision"]:
                row["latency_ms"] = float(statistics.median(net_ms))
                row["latency_total_ms"] = float(statistics.median(total_ms))
            else:
                row["latency_fp32_ms"] = float(statistics.median(net_ms))

    # --- report ----------------------------------------------------------------------
    def _report(self, rows, sensitivity, seconds):
        s = self.s
        sens_png = None
        if sensitivity is not None:
            from .slim.prune import load_sensitivities
            sens = load_sensitivities(self._dir("sensitivity", segmenter.SENSITIVITIES_FILE))
            pruning = _read_json(self._dir("pruned", PRUNING_FILE))
            chosen = pruning["pruning"]["steps"][-1]["ratios"] if pruning else {}
            sens_png = os.path.join(self.root, SENSITIVITY_PNG)
            plot_sensitivity(sens, sens_png, chosen=chosen, title=f"{self.model.model_name}: "
                             f"mIoU loss of pruning one layer ({s['criterion']})")
        tradeoff_png = os.path.join(self.root, TRADEOFF_PNG)
        plot_tradeoff(rows, tradeoff_png, title=f"{self.model.model_name}: mIoU vs CPU latency")
        report = {
            "model": self.model.model_name,
            "save_dir": self.root,
            "stages": rows,
            "settings": {k: _plain(v) for k, v in s.items()},
            "latency": {"threads": s["latency_threads"], "warmup": s["latency_warmup"],
                        "repeats": s["latency_repeats"], "statistic": "median",
                        "image": self.eval_dataset.samples[0][0],
                        "input_shape": list(self.input_shape),
                        "backend": "per stage: paddle.inference with oneDNN (int8 kernels "
                                   "for the QAT export); PTQ on its int8 runtime"},
            "skipped_stages": list(self.skipped),
            "resumed": dict(self.resumed),
            "files": {"report_md": REPORT_MD, "report_json": REPORT_JSON,
                      "sensitivity_png": SENSITIVITY_PNG if sens_png else None,
                      "tradeoff_png": TRADEOFF_PNG},
            "seconds": round(seconds, 1),
        }
        table = format_table(rows)
        _write_text(os.path.join(self.root, REPORT_MD), _report_markdown(report, table))
        _write_json(os.path.join(self.root, REPORT_JSON), report)
        print(table, flush=True)
        logger.info(f"Report written to {os.path.join(self.root, REPORT_MD)}")
        return report


# === Helpers ===

def _sensitivity_ratios():
    return segmenter.SENSITIVITY_RATIOS


def _input_shape(eval_dataset, fixed_input_shape):
    """[1, 3, H, W]: what the first val image becomes after the eval transforms."""
    from .data.dataset import read_image
    from .deploy.export import parse_fixed_input_shape
    fixed = parse_fixed_input_shape(fixed_input_shape)
    if fixed is not None:
        return [1, 3, fixed[1], fixed[2]]
    sample = eval_dataset.transforms({"image": read_image(eval_dataset.samples[0][0])})
    _, height, width = sample["image"].shape
    return [1, 3, int(height), int(width)]


@contextlib.contextmanager
def _quiet():
    """Hold back the Predictor's INFO line per call while it runs many times."""
    level = logger.level
    logger.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        logger.setLevel(level)


def _latest_checkpoint(train_dir):
    """The newest ``epoch_N`` of a training run (also one left as ``epoch_N.old``), or None."""
    if not os.path.isdir(train_dir):
        return None
    from .checkpoint import ModelDirError, resolve_model_dir
    epochs = []
    for name in os.listdir(train_dir):
        stem = name[:-len(".old")] if name.endswith(".old") else name
        if stem.startswith("epoch_") and stem[len("epoch_"):].isdigit():
            epochs.append(int(stem[len("epoch_"):]))
    for epoch in sorted(set(epochs), reverse=True):
        path = os.path.join(train_dir, f"epoch_{epoch}")
        try:
            resolve_model_dir(path)
        except ModelDirError:
            continue
        return path
    return None


def _predictor_miou(predictor, eval_dataset, num_classes):
    """mIoU of an export's label maps at each val image's own size."""
    from .data.dataset import read_image, read_label
    from .engine.metrics import confusion_matrix, metrics_from_confusion
    cm = np.zeros((num_classes, num_classes), dtype="int64")
    # The transforms the export records (they resize to a fixed input shape, if any).
    transforms = predictor.transforms or eval_dataset.transforms
    for image_path, label_path in eval_dataset.samples:
        label_map = predictor.predict(read_image(image_path), transforms=transforms)["label_map"]
        cm += confusion_matrix(read_label(label_path), label_map, num_classes)
    return metrics_from_confusion(cm)["miou"]


def _exported_bytes(export_dir):
    from . import compat
    from .deploy.export import MODEL_PREFIX, PARAMS_FILE
    program = compat.program_file(os.path.join(export_dir, MODEL_PREFIX))
    return int(os.path.getsize(program) + os.path.getsize(os.path.join(export_dir, PARAMS_FILE)))


def _dataset_fingerprint(dataset):
    transforms = dataset.transforms.to_config() if dataset.transforms is not None else None
    return [[list(map(str, sample)) for sample in dataset.samples], _plain(transforms)]


def _digest(obj):
    return hashlib.sha256(json.dumps(_plain(obj), sort_keys=True, default=str).encode()).hexdigest()


def _plain(obj):
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    return obj


def _read_json(path):
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _write_json(path, obj):
    _write_text(path, json.dumps(_plain(obj), indent=2) + "\n")


def _write_text(path, text):
    _atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def _atomic_write(path, write):
    """Write through ``write(file)`` to a temporary file beside ``path``, then rename it into place."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", dir=folder)
    try:
        with os.fdopen(handle, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes the file private; the report is for everyone
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


# === Table and pictures ===

STAGE_LABELS = {"float": "float", "pruned": "pruned + fine-tuned", "quant": "QAT int8",
                "ptq": "PTQ int8"}


def format_table(rows):
    """The report's markdown table, one row per stage."""
    base = rows[0]
    head = ["stage", "mIoU", "mIoU exported", "parameters", "GFLOPs", "export (MB)",
            "latency (ms)", "speed-up", "end to end (ms)", "runtime"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        flops = f"{r['flops'] / 1e9:.3f}" + ("*" if r.get("flops_note") else "")
        lines.append("| " + " | ".join([
            STAGE_LABELS.get(r["stage"], r["stage"]), f"{100 * r['miou']:.2f}",
            f"{100 * r['miou_deployed']:.2f}", f"{r['params']:,}", flops,
            f"{r['export_bytes'] / 2**20:.2f}", f"{r['latency_ms']:.1f}",
            f"{base['latency_ms'] / r['latency_ms']:.2f}x", f"{r['latency_total_ms']:.1f}",
            f"{r.get('backend', 'paddle')} {r.get('precision', 'fp32')}"]) + " |")
    return "\n".join(lines)


def _report_markdown(report, table):
    s = report["settings"]
    lat = report["latency"]
    shape = "x".join(map(str, lat["input_shape"][2:]))
    lines = [f"# Compression report: {report['model']}", "", table, ""]
    lines.append(f"mIoU in %: of the in-process model (`model.evaluate`) and of its export "
                 f"(Paddle Inference label maps at each val image's own size). FLOPs at "
                 f"1x3x{shape}" + ("; * = " + next(r["flops_note"] for r in report["stages"]
                                                    if r.get("flops_note"))
                                   if any(r.get("flops_note") for r in report["stages"]) else "")
                 + ". Export: model.pdmodel + model.pdiparams (PTQ: model.int8.onnx). Latency: "
                 + lat["backend"]
                 + f", {lat['threads']} threads, the same {shape} input for every stage, median "
                 f"of {lat['repeats']} runs after {lat['warmup']} warm-up runs, the exports taking "
                 "turns; 'latency' is the network, 'end to end' adds pre- and postprocessing.")
    lines.append("")
    notes = []
    for r in report["stages"]:
        if r["stage"] == "pruned":
            notes.append(f"prune({r['pruned_flops_requested']}): {r['pruned_flops_measured']:.1%} of "
                         f"the FLOPs removed; mIoU {100 * r['miou_before_finetune']:.2f} right after "
                         f"pruning, {100 * r['miou']:.2f} after {r['finetune_epochs']} fine-tuning "
                         f"epochs (best epoch {r['best_epoch']}, lr {s['finetune_learning_rate']})")
        if r["stage"] == "quant":
            notes.append(f"QAT of the {r['quantized_from']} model: {r['qat_epochs']} epochs "
                         f"(best epoch {r['best_epoch']}, lr {s['qat_learning_rate']})")
        if r["stage"] == "ptq":
            notes.append(_ptq_note(r, report["stages"]))
    if report["skipped_stages"]:
        notes.append("stages already complete in save_dir, not rerun: "
                     + ", ".join(report["skipped_stages"]))
    if report["resumed"]:
        notes.append("resumed: " + ", ".join(f"{k} from {v}" for k, v in report["resumed"].items()))
    lines += [f"- {n}" for n in notes]
    lines.append("")
    if report["files"]["sensitivity_png"]:
        lines += [f"![sensitivity]({SENSITIVITY_PNG})", ""]
    lines += [f"![tradeoff]({TRADEOFF_PNG})", ""]
    return "\n".join(lines)


def _ptq_note(ptq, stages):
    """PTQ against fp32 on its own runtime and against QAT and the model it quantizes."""
    by_stage = {r["stage"]: r for r in stages}
    source = by_stage.get(ptq["quantized_from"])
    text = (f"PTQ of the {ptq['quantized_from']} model, no retraining ({ptq['calibration_images']} "
            f"calibration images of the training set) on {ptq['backend']}")
    if ptq.get("latency_fp32_ms"):
        text += (f": {ptq['latency_ms']:.1f} ms in int8 against {ptq['latency_fp32_ms']:.1f} ms in "
                 f"fp32 on {ptq['backend']} ({ptq['latency_fp32_ms'] / ptq['latency_ms']:.2f}x)")
    if source:
        text += (f"; exported mIoU {100 * ptq['miou_deployed']:.2f} against "
                 f"{100 * source['miou_deployed']:.2f} for the {source['stage']} model in fp32")
    qat = by_stage.get("quant")
    if qat:
        text += (f"; QAT int8: {100 * qat['miou_deployed']:.2f} after {qat['qat_epochs']} training "
                 f"epochs, {qat['latency_ms']:.1f} ms on paddle")
    return text


def _figure(width, height):
    # A Figure with its own Agg canvas: no pyplot, so the user's backend is left alone.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save_figure(fig, path):
    from ._zlib_first import check_png_writes
    check_png_writes(path)
    _atomic_write(path, lambda f: fig.savefig(f, format="png", bbox_inches="tight"))


def plot_sensitivity(sensitivities, path, chosen=None, top_k=PLOT_TOP_K, title=None):
    """Draw mIoU loss vs pruning ratio, one line per layer, the ``top_k`` most sensitive labelled.

    Args:
        sensitivities (dict): ``{layer: {ratio: relative mIoU loss}}`` (``model.sensi.data``).
        path (str): the PNG to write.
        chosen (dict|None): ``{layer: ratio}`` that ``prune`` applied; drawn as dots.
        top_k (int): layers named in the legend. Default PLOT_TOP_K.
        title (str|None): figure title.
    """
    chosen = chosen or {}
    # Every curve starts at (0, 0): a layer left whole loses nothing.
    curves = {name: [(0.0, 0.0)] + sorted((float(r), 100.0 * float(loss)) for r, loss in points.items())
              for name, points in sensitivities.items()}
    # Rank by the area under the curve: a layer that hurts at every ratio comes first.
    ranked = sorted(curves, key=lambda n: -sum(loss for _, loss in curves[n]))
    top = ranked[:top_k]
    fig = _figure(9, 5.5)
    ax = fig.add_subplot(1, 1, 1)
    for name in ranked[top_k:]:
        xs, ys = zip(*curves[name])
        ax.plot(xs, ys, color="0.75", linewidth=0.8, zorder=1)
    # Matplotlib's default cycle without its grey (C7), which the unnamed layers use.
    colors = [f"C{i}" for i in range(10) if i != 7]
    for i, name in enumerate(top):
        xs, ys = zip(*curves[name])
        ax.plot(xs, ys, color=colors[i % len(colors)], linewidth=1.8, marker="o", markersize=3,
                label=_short_name(name), zorder=3)
    pruned_x, pruned_y = [], []
    for name, ratio in chosen.items():
        if name in curves:
            xs, ys = zip(*curves[name])
            pruned_x.append(ratio)
            pruned_y.append(float(np.interp(ratio, xs, ys)))
    if pruned_x:
        ax.scatter(pruned_x, pruned_y, s=18, color="black", marker="x", zorder=4,
                   label=f"ratio prune() chose ({len(pruned_x)} layers)")
    ax.axhline(0.0, color="0.4", linewidth=0.6)
    ax.set_xlabel("pruning ratio of the layer (fraction of its filters removed)")
    ax.set_ylabel("mIoU loss (% of the float mIoU)")
    others = len(ranked) - len(top)
    ax.set_title((title or "Sensitivity") + f"\n{len(ranked)} layers; the {len(top)} most "
                 f"sensitive named" + (f", {others} others in grey" if others else ""), fontsize=10)
    ax.grid(True, linewidth=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    _save_figure(fig, path)


def plot_tradeoff(rows, path, title=None):
    """Draw mIoU of each stage's export against its CPU latency; the legend gives sizes and FLOPs."""
    fig = _figure(7.5, 4.8)
    ax = fig.add_subplot(1, 1, 1)
    xs = [r["latency_ms"] for r in rows]
    ys = [100 * r["miou_deployed"] for r in rows]
    ax.plot(xs, ys, color="0.6", linewidth=1, linestyle="--", zorder=1)
    for i, r in enumerate(rows):
        # The legend, not labels beside the points: stages often land close together.
        ax.scatter([xs[i]], [ys[i]], s=70, color=f"C{i}", zorder=3, label=(
            f"{STAGE_LABELS.get(r['stage'], r['stage'])}: {ys[i]:.2f} %, {xs[i]:.1f} ms, "
            f"{r['export_bytes'] / 2**20:.2f} MB, {r['flops'] / 1e9:.2f} GFLOPs"))
    # Latency from 0, so that distances show ratios; at least 2 mIoU points in view, so
    # that differences of a few hundredths do not fill the picture.
    ax.set_xlim(0.0, max(xs) * 1.15)
    middle, half = (max(ys) + min(ys)) / 2, max((max(ys) - min(ys)) * 0.6, 1.0)
    ax.set_ylim(middle - half, middle + half)
    ax.set_xlabel("CPU latency of the export, network only (ms, median; lower is better)")
    ax.set_ylabel("mIoU of the export (%)")
    ax.set_title(title or "mIoU vs latency", fontsize=10)
    ax.grid(True, linewidth=0.3)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=1, frameon=False)
    _save_figure(fig, path)


def _short_name(param):
    name = param[:-len(".weight")] if param.endswith(".weight") else param
    return name if len(name) <= 48 else "…" + name[-47:]
