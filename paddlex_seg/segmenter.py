"""The user-facing model classes: DeepLabV3P, BiSeNetV2, UNet, HRNet, FastSCNN.

A model class only validates its constructor arguments (they are recorded in
``model.yml``) and turns them into ``(net, loss)``; every method hands off to
``engine/`` (train, evaluate, predict) or ``checkpoint`` (save, load_model).
Constructor signatures follow PaddleX 2.x's ``paddlex.seg`` API.
"""
import copy
import os

import numpy as np
import paddle

from . import checkpoint, models
from .aug import TestTimeAug
from .data import transforms as T
from .data.dataset import read_input_image
from .engine.evaluate import evaluate_net
from .engine.infer import image_scores, restore_tensor_to_input
from .engine.train import TrainConfig, Trainer, default_optimizer
from .log import logger
from .models.backbones.registry import check_backbone_name
from .models.losses import MultiLogitLoss, build_loss
from .utils.checks import check_bool as _check_bool, check_choice as _check_choice
from .utils.checks import check_int as _check_int

# The file analyze_sensitivity writes and prune reads (PaddleX's name).
SENSITIVITIES_FILE = "model.sensi.data"
# Input shape at which pruning traces the network and measures FLOPs. The FLOPs
# fraction removed hardly depends on it; a moderate size keeps the search fast.
PRUNE_INPUT_SHAPE = [1, 3, 256, 256]
# Pruning ratios at which analyze_sensitivity measures each layer (PaddleX's 0.1 … 0.8).
SENSITIVITY_RATIOS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)


class _DefaultWeights(str):
    """``train``'s default ``pretrain_weights``: tells the default from a value passed."""


# With resume_checkpoint, an explicit pretrain_weights is an error; this default is not.
DEFAULT_PRETRAIN_WEIGHTS = _DefaultWeights("CITYSCAPES")

__all__ = ["BaseSegmenter", "DeepLabV3P", "BiSeNetV2", "UNet", "HRNet", "FastSCNN", "load_model"]


class BaseSegmenter:
    """What every model class shares. Subclasses define ``build_net``.

    Attributes:
        net (paddle.nn.Layer): the network; returns a list of logits.
        loss (paddle.nn.Layer): ``loss(logits, labels)`` over all logits the net returns.
        labels (list[str]): class names, from the training data set's label list.
        eval_transforms (Compose|None): what ``predict`` applies when given none.
        status (str): 'Normal', 'Pruned' or 'Quantized'.
    """

    # Pretrained weight names this class accepts for ``train(pretrain_weights=...)``.
    pretrain_choices = ("CITYSCAPES",)
    # Loss weight of each logit the network returns in training (main one first).
    logit_coefs = (1.0,)

    def __init__(self, num_classes, use_mixed_loss, **net_params):
        _check_int("num_classes", num_classes, 2)
        _check_bool("align_corners", net_params.get("align_corners", False))
        self.num_classes = int(num_classes)
        self.use_mixed_loss = use_mixed_loss
        self.init_params = {"num_classes": self.num_classes, "use_mixed_loss": use_mixed_loss,
                            **net_params}
        for key, value in net_params.items():
            setattr(self, key, value)
        self.model_name = type(self).__name__
        self.labels = []
        self.eval_transforms = None
        self.status = "Normal"
        self.best_accuracy = -1.0
        self.best_model_epoch = -1
        self.eval_metrics = None
        self.model_dir = None          # where load_model read it from
        self.sensitivities = None      # from analyze_sensitivity
        self.pruning_criterion = None
        self.pruning = None            # ratios and FLOPs of prune(), replayed by load_model
        self.quanter = None            # PaddleSlim QAT object after quant_aware_train
        self.quant_config = None
        # The loss first: it validates use_mixed_loss before a big network is built.
        self.loss = MultiLogitLoss(build_loss(use_mixed_loss), list(self.logit_coefs))
        self.net = self.build_net()

    def build_net(self):
        raise NotImplementedError

    # === Training ===
    def train(self, num_epochs, train_dataset, train_batch_size=2, eval_dataset=None,
              optimizer=None, save_interval_epochs=1, log_interval_steps=2, save_dir="output",
              pretrain_weights=DEFAULT_PRETRAIN_WEIGHTS, learning_rate=0.01, lr_decay_power=0.9,
              early_stop=False, early_stop_patience=5, use_vdl=True, resume_checkpoint=None,
              use_amp=False, class_weights=None):
        """Train the network (PaddleX 2.x ``train``).

        Args:
            num_epochs (int): epochs to train (in all, when resuming).
            train_dataset (SegDataset): training data, with transforms.
            train_batch_size (int): batch size per process. Default 2.
            eval_dataset (SegDataset|None): evaluated every ``save_interval_epochs``;
                its transforms become the model's eval transforms.
            optimizer (paddle.optimizer.Optimizer|None): used as given; None builds
                Momentum(0.9) with L2 decay 4e-5 and PolynomialDecay over all steps.
            save_interval_epochs (int): evaluate and save ``epoch_N/`` this often.
            log_interval_steps (int): a log line every this many steps.
            save_dir (str): where checkpoints, ``best_model/`` and ``vdl_log/`` go.
            pretrain_weights (str|None): a ``.pdparams`` path, a name from
                ``pretrain_choices``, or None (from scratch). Not with
                ``resume_checkpoint`` (the checkpoint holds the weights): passing both
                raises ValueError; the default is then unused.
            learning_rate (float): initial LR of the default optimizer.
            lr_decay_power (float): power of the default polynomial decay.
            early_stop (bool): stop when mIoU has not improved for
                ``early_stop_patience`` evaluations.
            use_vdl (bool): write VisualDL scalars under ``save_dir/vdl_log``.
            resume_checkpoint (str|None): an ``epoch_N`` (or ``best_model``) directory
                of an earlier run; restores weights, optimizer, LR position and epoch.
            use_amp (bool): automatic mixed precision: fp16 with dynamic loss scaling on
                GPU. On CPU, where Paddle 2.6's auto_cast has no effect, a warning is
                logged and training runs in float32. An addition to PaddleX's API.
            class_weights (list[float]|None): one weight >= 0 per class for the
                cross-entropy terms of the loss (e.g. ``check_dataset(...).class_weights``);
                kept by ``self.loss`` after training. None leaves the loss as built.
                An addition to PaddleX's API.
        """
        _check_int("num_epochs", num_epochs, 1)
        _check_int("train_batch_size", train_batch_size, 1)
        _check_int("save_interval_epochs", save_interval_epochs, 1)
        _check_int("log_interval_steps", log_interval_steps, 1)
        _check_int("early_stop_patience", early_stop_patience, 1)
        if optimizer is not None and not isinstance(optimizer, paddle.optimizer.Optimizer):
            raise ValueError(f"optimizer must be a paddle.optimizer.Optimizer or None, got {type(optimizer).__name__}")
        if not (isinstance(learning_rate, (int, float)) and learning_rate > 0):
            raise ValueError(f"learning_rate must be a positive number, got {learning_rate!r}")
        self._check_dataset("train_dataset", train_dataset, need_labels=True)
        if class_weights is not None:
            self._set_class_weights(class_weights)
        if eval_dataset is not None:
            self._check_dataset("eval_dataset", eval_dataset, need_labels=True)
            if eval_dataset.transforms is None:
                raise ValueError("eval_dataset has no transforms; give it eval transforms "
                                 "(e.g. T.Compose([T.Normalize()]))")
        if (resume_checkpoint is not None and pretrain_weights is not None
                and pretrain_weights is not DEFAULT_PRETRAIN_WEIGHTS):
            raise ValueError(
                f"train() got both pretrain_weights={pretrain_weights!r} and resume_checkpoint="
                f"{resume_checkpoint!r}: resuming restores the checkpoint's weights, so the "
                f"pretrained ones would be ignored; pass pretrain_weights=None to resume, or "
                f"resume_checkpoint=None to start from the pretrained weights")
        if resume_checkpoint is not None:
            checkpoint.read_model_yml(resume_checkpoint)  # fail early on a bad path
            self._check_resume_compatible(resume_checkpoint)
        elif pretrain_weights is not None:
            self._load_pretrained(pretrain_weights)

        self.labels = list(train_dataset.labels)
        if eval_dataset is not None:
            self.eval_transforms = copy.deepcopy(eval_dataset.transforms)
        on_gpu = "gpu" in paddle.get_device()
        config = TrainConfig(
            num_epochs=num_epochs, train_batch_size=train_batch_size,
            save_interval_epochs=save_interval_epochs, log_interval_steps=log_interval_steps,
            save_dir=save_dir, early_stop=early_stop, early_stop_patience=early_stop_patience,
            use_vdl=use_vdl, use_amp=use_amp, amp_dtype="float16" if on_gpu else "bfloat16")
        if optimizer is None:
            parameters = self.net.parameters()

            def optimizer(steps_per_epoch):
                return default_optimizer(parameters, learning_rate, num_epochs,
                                         steps_per_epoch, lr_decay_power)
        # Optimizer accumulators get names from Paddle's global name counter; a fresh
        # counter makes them identical in every run, so a saved model.pdopt always loads.
        with paddle.utils.unique_name.guard():
            trainer = Trainer(self, train_dataset, eval_dataset, optimizer, config, self._save_checkpoint)
            if resume_checkpoint is not None:
                trainer.resume(resume_checkpoint)
            state = trainer.run()
        self.best_accuracy, self.best_model_epoch = state.best_accuracy, state.best_model_epoch
        return state

    def _set_class_weights(self, class_weights):
        from .models.losses import CrossEntropyLoss
        weights = list(np.asarray(class_weights, dtype=float).ravel()) if isinstance(
            class_weights, np.ndarray) else class_weights
        if not isinstance(weights, (list, tuple)) or len(weights) != self.num_classes:
            raise ValueError(f"class_weights must be a list of {self.num_classes} weights (one "
                             f"per class), got {class_weights!r}")
        ce_losses = [layer for layer in self.loss.sublayers(include_self=True)
                     if isinstance(layer, CrossEntropyLoss)]
        if not ce_losses:
            raise ValueError(f"class_weights needs a CrossEntropyLoss in the loss, but "
                             f"use_mixed_loss={self.use_mixed_loss!r} has none")
        checked = CrossEntropyLoss(weight=list(weights)).weight  # validates the values
        for layer in ce_losses:
            layer.weight = checked

    def _check_dataset(self, name, dataset, need_labels):
        for attr in ("samples", "labels", "transforms", "num_workers"):
            if not hasattr(dataset, attr):
                raise ValueError(f"{name} must be a paddlex_seg.SegDataset, got {type(dataset).__name__}")
        if need_labels and any(label is None for _, label in dataset.samples):
            raise ValueError(f"{name} ({dataset.file_list}) has images without labels")
        dataset.set_num_classes(self.num_classes)  # label values are checked against it

    def _check_resume_compatible(self, path):
        info = checkpoint.read_model_yml(path)
        if info["Model"] != self.model_name or info.get("_init_params") != _plain(self.init_params):
            raise ValueError(
                f"resume_checkpoint {path!r} was written by {info['Model']}"
                f"({info.get('_init_params')}), which differs from this "
                f"{self.model_name}({_plain(self.init_params)})")

    def _load_pretrained(self, pretrain_weights):
        from .weights import load_pretrained_weights, resolve_pretrain_weights
        path = resolve_pretrain_weights(self.pretrain_key(), pretrain_weights, self.pretrain_choices)
        if path is not None:
            load_pretrained_weights(self.net, path)

    def pretrain_key(self):
        """The key of this model's entries in the pretrained-weight table."""
        return self.model_name

    # === Evaluation and prediction ===
    def evaluate(self, eval_dataset, batch_size=1, return_details=False, aug=None):
        """Metrics on a labelled data set (PaddleX 2.x ``evaluate``).

        Args:
            eval_dataset (SegDataset): labelled images; its transforms, else the model's.
            batch_size (int): images per forward pass (without ``aug``). Default 1.
            return_details (bool): also return the confusion matrix. Default False.
            aug (TestTimeAug|dict|None): flips, scales and sliding windows averaged at
                prediction time (``paddlex_seg.aug.TestTimeAug``; an addition to
                PaddleX's API). None: plain prediction. Default None.

        Returns:
            dict: miou, category_iou, oacc, category_acc, kappa, category_F1-score;
            with ``return_details`` a tuple (metrics, {'confusion_matrix': list of lists}).
        """
        _check_int("batch_size", batch_size, 1)
        aug = TestTimeAug.from_value(aug)
        self._check_dataset("eval_dataset", eval_dataset, need_labels=True)
        transforms = eval_dataset.transforms or self.eval_transforms
        if transforms is None:
            raise ValueError("eval_dataset has no transforms and the model has no eval transforms")
        metrics, cm = evaluate_net(self.net, eval_dataset, self.num_classes, transforms,
                                   batch_size=batch_size, num_workers=eval_dataset.num_workers,
                                   aug=aug)
        if return_details:
            return metrics, {"confusion_matrix": cm.tolist()}
        return metrics

    def predict(self, img_file, transforms=None, aug=None):
        """Predict one image or a list (PaddleX 2.x ``predict``).

        Args:
            img_file (str|np.ndarray|list): image path(s) or HWC BGR array(s).
            transforms (Compose|None): defaults to the model's eval transforms.
            aug (TestTimeAug|dict|None): flips, scales and sliding windows whose softmax
                scores are averaged (``paddlex_seg.aug.TestTimeAug``; an addition to
                PaddleX's API). None: plain prediction. Default None.

        Returns:
            dict | list[dict]: ``label_map`` (H, W) uint8 class ids and ``score_map``
            (H, W, C) float32 probabilities, at the input image's size.
        """
        aug = TestTimeAug.from_value(aug)
        transforms = transforms or self.eval_transforms
        if transforms is None:
            raise ValueError("predict needs transforms: the model has no eval transforms "
                             "(train it with an eval_dataset, or pass transforms=...)")
        single = not isinstance(img_file, (list, tuple))
        images = [img_file] if single else list(img_file)
        if not images:
            raise ValueError("img_file is an empty list")
        samples = [transforms({"image": read_input_image(im, "img_file" if single else f"img_file[{i}]"),
                                "trans_info": []}) for i, im in enumerate(images)]
        results = [None] * len(samples)
        self.net.eval()
        for i, scores in image_scores(self.net, [s["image"] for s in samples], aug):
            restored = restore_tensor_to_input(scores, samples[i]["trans_info"])[0]
            score_map = restored.transpose([1, 2, 0]).numpy()
            results[i] = {"label_map": score_map.argmax(axis=2).astype("uint8"),
                          "score_map": score_map.astype("float32")}
        return results[0] if single else results

    # === Compression (PaddleSlim) ===
    def analyze_sensitivity(self, dataset, batch_size=8, criterion="l1_norm", save_dir="output"):
        """mIoU loss of pruning each prunable convolution alone at ratios 0.1 … 0.8.

        Written to ``save_dir/model.sensi.data``; when that file already exists (and
        names layers of this network) it is read back instead of being recomputed.

        Args:
            dataset (SegDataset): labelled data the mIoU is measured on.
            batch_size (int): evaluation batch size. Default 8.
            criterion (str): 'l1_norm' or 'fpgm' (filter importance). Default 'l1_norm'.
            save_dir (str): where ``model.sensi.data`` goes. Default 'output'.

        Returns:
            dict: ``{parameter name: {ratio: relative mIoU loss}}``.
        """
        from .slim import prune as P
        _check_choice("criterion", criterion, P.CRITERIA)
        _check_int("batch_size", batch_size, 1)
        self._check_dataset("dataset", dataset, need_labels=True)
        transforms = dataset.transforms or self.eval_transforms
        if transforms is None:
            raise ValueError("dataset has no transforms and the model has no eval transforms")
        P.register_concat_support()
        path = os.path.join(save_dir, SENSITIVITIES_FILE)
        prunable = set(P.prunable_params(self.net, PRUNE_INPUT_SHAPE))
        if os.path.isfile(path):
            sens = P.load_sensitivities(path)
            if set(sens) <= prunable:
                logger.info(f"Reusing the sensitivities in {path} ({len(sens)} layers)")
                self.sensitivities, self.pruning_criterion = sens, criterion
                return sens
            logger.warning(f"{path} does not describe this network; recomputing it")

        def eval_fn():
            metrics, _ = evaluate_net(self.net, dataset, self.num_classes, transforms,
                                      batch_size=batch_size, num_workers=dataset.num_workers)
            return metrics["miou"]

        logger.info(f"Sensitivity analysis of {len(prunable)} layers with {criterion}")
        sens = P.sensitivity(self.net, eval_fn, PRUNE_INPUT_SHAPE, criterion=criterion,
                             ratios=SENSITIVITY_RATIOS)
        P.save_sensitivities(sens, path)
        logger.info(f"Sensitivities saved to {path}")
        self.sensitivities, self.pruning_criterion = sens, criterion
        return sens

    def prune(self, pruned_flops, save_dir=None):
        """Prune filters to remove ``pruned_flops`` of the FLOPs, guided by the sensitivities.

        Uses the sensitivities of the last ``analyze_sensitivity`` (or the
        ``model.sensi.data`` in the directory the model was loaded from). Train the
        pruned model again afterwards to recover its accuracy.

        Args:
            pruned_flops (float): fraction of FLOPs to remove, 0 < pruned_flops < 1.
            save_dir (str|None): save the pruned model there. Default None.
        """
        from .slim import prune as P
        if isinstance(pruned_flops, bool) or not isinstance(pruned_flops, (int, float)) \
                or not 0 < pruned_flops < 1:
            raise ValueError(f"pruned_flops must be a number with 0 < pruned_flops < 1, got {pruned_flops!r}")
        if self.status == "Quantized":
            raise ValueError("a quantized model cannot be pruned; prune before quant_aware_train")
        sens = self.sensitivities
        if sens is None and self.model_dir and os.path.isfile(os.path.join(self.model_dir, SENSITIVITIES_FILE)):
            sens = P.load_sensitivities(os.path.join(self.model_dir, SENSITIVITIES_FILE))
        if sens is None:
            raise ValueError("prune needs sensitivities: call analyze_sensitivity(dataset) first")
        P.register_concat_support()
        criterion = self.pruning_criterion or "l1_norm"
        ratios, _ = P.choose_ratios(self.net, sens, pruned_flops, PRUNE_INPUT_SHAPE, criterion)
        before, after = P.apply_pruning(self.net, ratios, PRUNE_INPUT_SHAPE, criterion)
        earlier = self.pruning or {}
        self.pruning = {
            # Each pruning step is replayed in order by load_model to rebuild the shapes.
            "steps": list(earlier.get("steps", [])) + [{"ratios": {k: float(v) for k, v in ratios.items()},
                                                        "criterion": criterion}],
            "input_shape": list(PRUNE_INPUT_SHAPE),
            "flops_original": int(earlier.get("flops_original", before)),
            "flops": int(after),
            "pruned_flops_requested": float(pruned_flops),
            "pruned_flops_measured": 1.0 - after / before,
        }
        self.status = "Pruned"
        logger.info(f"Pruned {len(ratios)} layers: FLOPs {before / 1e9:.3f} G -> {after / 1e9:.3f} G "
                    f"at {PRUNE_INPUT_SHAPE} ({1 - after / before:.1%} removed, {pruned_flops:.1%} asked)")
        if save_dir is not None:
            self.save(save_dir)

    def quant_aware_train(self, num_epochs, train_dataset, train_batch_size=2, eval_dataset=None,
                          optimizer=None, save_interval_epochs=1, log_interval_steps=2, save_dir="output",
                          learning_rate=.0001, lr_decay_power=0.9, early_stop=False,
                          early_stop_patience=5, use_vdl=True, quant_config=None):
        """Quantization-aware training (PaddleX 2.x ``quant_aware_train``).

        Inserts PaddleSlim's fake-quant layers into the network, then fine-tunes it with
        the same loop as ``train``; checkpoints have status 'Quantized', and ``export``
        writes an int8 inference model. Arguments as ``train``, plus ``quant_config``
        (None for the defaults; unknown keys raise ValueError).
        """
        from .slim.quant import check_quant_config, quantize_net
        config = check_quant_config(quant_config)
        if self.status == "Quantized":
            raise ValueError("the model is already quantized")
        self.quanter = quantize_net(self.net, config)
        self.quant_config = _plain(config)
        self.status = "Quantized"
        return self.train(num_epochs, train_dataset, train_batch_size=train_batch_size,
                          eval_dataset=eval_dataset, optimizer=optimizer,
                          save_interval_epochs=save_interval_epochs,
                          log_interval_steps=log_interval_steps, save_dir=save_dir,
                          pretrain_weights=None, learning_rate=learning_rate,
                          lr_decay_power=lr_decay_power, early_stop=early_stop,
                          early_stop_patience=early_stop_patience, use_vdl=use_vdl)

    def compress(self, train_dataset, eval_dataset, pruned_flops=0.3, quant=True, finetune_epochs=10,
                 qat_epochs=2, save_dir="output/compress", criterion="l1_norm", train_batch_size=2,
                 eval_batch_size=1, finetune_learning_rate=0.01, qat_learning_rate=0.0001,
                 lr_decay_power=0.9, quant_config=None, num_workers=None, fixed_input_shape=None,
                 latency_threads=2, latency_warmup=3, latency_repeats=20, log_interval_steps=10,
                 use_vdl=False, keep_checkpoints=False, ptq=None, ptq_batches=16):
        """Sensitivity → prune → fine-tune → QAT and PTQ → export in one call, with a report.

        Each stage runs the method that does it alone (``analyze_sensitivity``,
        ``prune``, ``train``, ``quant_aware_train``, ``quantize``, ``export``) in its own
        sub-directory of ``save_dir`` (0_float, 1_sensitivity, 2_pruned, 3_quant, 4_ptq),
        each with ``export/`` (and ``model/`` but for PTQ). PTQ, post-training int8 of the
        same model QAT starts from, is the cheaper alternative to QAT; the report compares
        the two. A stage is complete once its ``complete.json`` is
        written (last, atomically); a rerun skips complete stages, and a fine-tune or
        QAT that was killed resumes from its last ``epoch_N`` checkpoint. This model
        is not changed. Details: ``paddlex_seg.compress`` and docs/compression.md.

        Args:
            train_dataset (SegDataset): fine-tuning and QAT data, with training transforms.
            eval_dataset (SegDataset): labelled data for the sensitivities, the mIoU of
                every stage and the latency input (its first image).
            pruned_flops (float|None): fraction of FLOPs to remove, 0 < x < 1; None
                skips sensitivity and pruning. Default 0.3.
            quant (bool): quantization-aware training and an int8 export. Default True.
            finetune_epochs (int): training epochs after pruning. Default 10.
            qat_epochs (int): QAT epochs. Default 2.
            save_dir (str): where the stages and the report go. Default 'output/compress'.
            criterion (str): filter importance, 'l1_norm' or 'fpgm'. Default 'l1_norm'.
            train_batch_size (int): batch size of fine-tuning and QAT. Default 2.
            eval_batch_size (int): batch size of evaluation and sensitivities. Default 1.
            finetune_learning_rate (float): initial LR of fine-tuning. Default 0.01.
            qat_learning_rate (float): initial LR of QAT. Default 0.0001.
            lr_decay_power (float): power of the polynomial LR decay. Default 0.9.
            quant_config (dict|None): as ``quant_aware_train``. Default None.
            num_workers (int|str|None): DataLoader workers for both data sets ('auto' or
                an int); None keeps the data sets' own. Default None.
            fixed_input_shape (list|None): [w, h] of the exports (see ``export``);
                None leaves the size free. Default None.
            latency_threads (int): CPU threads of every Predictor. Default 2.
            latency_warmup (int): untimed runs before timing. Default 3.
            latency_repeats (int): timed runs; the median is reported. Default 20.
            log_interval_steps (int): training log interval. Default 10.
            use_vdl (bool): VisualDL logs of fine-tuning and QAT. Default False.
            keep_checkpoints (bool): keep the ``train/`` checkpoints of a stage once it is
                complete (they serve to resume it). Default False.
            ptq (bool|None): post-training int8 (``quantize``) of the pruned (or float)
                model, run on OpenVINO or ONNX Runtime; None: when the ``onnx`` extra is
                installed. Default None.
            ptq_batches (int): calibration images of ``train_dataset`` for PTQ. Default 16.

        Returns:
            dict: what ``report.json`` holds: 'stages' (one dict per stage: stage,
            status, miou, miou_deployed, params, flops, export_bytes, latency_ms,
            latency_total_ms, model_dir, export_dir, ...), 'settings', 'latency' (how it
            was measured), 'skipped_stages', 'resumed', 'files' and 'seconds'.
        """
        from .compress import compress  # the workflow over a model, beside this module
        return compress(
            self, train_dataset, eval_dataset, pruned_flops=pruned_flops, quant=quant,
            finetune_epochs=finetune_epochs, qat_epochs=qat_epochs, save_dir=save_dir,
            criterion=criterion, train_batch_size=train_batch_size, eval_batch_size=eval_batch_size,
            finetune_learning_rate=finetune_learning_rate, qat_learning_rate=qat_learning_rate,
            lr_decay_power=lr_decay_power, quant_config=quant_config, num_workers=num_workers,
            fixed_input_shape=fixed_input_shape, latency_threads=latency_threads,
            latency_warmup=latency_warmup, latency_repeats=latency_repeats,
            log_interval_steps=log_interval_steps, use_vdl=use_vdl, keep_checkpoints=keep_checkpoints,
            ptq=ptq, ptq_batches=ptq_batches)

    # === Saving ===
    def model_info(self):
        """The content of model.yml (plain types only)."""
        return {
            "version": _package_version(),
            "Model": self.model_name,
            "_init_params": _plain(self.init_params),
            "status": self.status,
            "labels": list(self.labels),
            "num_classes": self.num_classes,
            "Transforms": self.eval_transforms.to_config() if self.eval_transforms else None,
            "best_accuracy": float(self.best_accuracy),
            "best_model_epoch": int(self.best_model_epoch),
            "metrics": _plain(self.eval_metrics),
            "pruning": _plain(self.pruning),
            "quant_config": _plain(self.quant_config),
        }

    def save(self, save_dir):
        """Write ``save_dir`` (model.yml + model.pdparams) atomically; returns its path."""
        path = checkpoint.write_model_dir(save_dir, self.model_info(), self.net.state_dict())
        logger.info(f"Model saved in {path}")
        return path

    save_model = save  # PaddleX 2.x name

    def export(self, save_dir, fixed_input_shape=None, onnx=False, opset_version=11, aug=None,
               calibration_dataset=None):
        """Export for deployment (paddlex_seg.deploy.export_inference_model): model.pdmodel /
        model.pdiparams / model.yml (+ model.onnx), run by paddlex_seg.deploy.Predictor.

        Args:
            save_dir (str): output directory.
            fixed_input_shape (list|None): [w, h] or [n, c, w, h] (PaddleX order,
                width first); None leaves batch and size free. Default None.
            onnx (bool): also write model.onnx (needs paddle2onnx). Default False.
            opset_version (int): ONNX opset. Default 11.
            aug (TestTimeAug|dict|None): recorded in model.yml; the Predictor then
                applies it. Scales and sliding windows need a free input size (no
                ``fixed_input_shape``). Default None.
            calibration_dataset (SegDataset|None): labelled images on which each installed
                backend/precision is measured (paddlex_seg.deploy.check); the figures in
                model.yml guard ``Predictor(backend='auto')``. Default None.

        Returns:
            str: the absolute path of ``save_dir``.
        """
        from .deploy.export import export_inference_model
        return export_inference_model(self, save_dir, fixed_input_shape=fixed_input_shape,
                                      onnx=onnx, opset_version=opset_version, aug=aug,
                                      calibration_dataset=calibration_dataset)

    def quantize(self, dataset, save_dir, batch_size=1, batch_nums=16, fixed_input_shape=None,
                 calibration_dataset=None, **ptq_options):
        """Post-training int8 quantization, no retraining: export to ``save_dir`` with ONNX,
        then write ``model.int8.onnx`` calibrated on ``dataset`` (paddlex_seg.deploy.ptq),
        which ``Predictor(save_dir, precision='int8')`` runs on OpenVINO / ONNX Runtime.

        Args:
            dataset (SegDataset): calibration images (``batch_size * batch_nums`` at most).
            save_dir (str): the export directory.
            batch_size, batch_nums (int): calibration batches. Defaults 1 and 16.
            fixed_input_shape (list|None): as in ``export`` (FastSCNN needs one for ONNX).
            calibration_dataset (SegDataset|None): labelled images to measure every
                backend/precision on afterwards (``paddlex_seg.deploy.check``). Default None.
            **ptq_options: ``per_channel``, ``calibrate_method`` of ``deploy.ptq.quantize``.

        Returns:
            str: the absolute path of ``save_dir``.
        """
        from .deploy import check, ptq
        save_dir = self.export(save_dir, fixed_input_shape=fixed_input_shape, onnx=True)
        ptq.quantize(save_dir, dataset, batch_size=batch_size, batch_nums=batch_nums, **ptq_options)
        if calibration_dataset is not None:
            check(save_dir, calibration_dataset)
        return save_dir

    def save_quantized_program(self, layer, path_prefix, input_spec):
        """Write the int8 inference program of a quantized (QAT) model: what ``export``
        calls for status 'Quantized'. ``layer`` is ``self.net`` or a Layer wrapping it."""
        from .slim.quant import save_quantized_inference_model
        save_quantized_inference_model(layer, self.quanter, path_prefix, input_spec)

    def _save_checkpoint(self, path, optimizer, train_state, metrics):
        self.eval_metrics = metrics
        info = self.model_info()
        info["train_state"] = train_state.to_dict()
        checkpoint.write_model_dir(path, info, self.net.state_dict(), optimizer.state_dict())


def _package_version():
    from . import __version__
    return __version__


def _plain(obj):
    """Tuples → lists, numpy scalars → Python, recursively (for YAML and comparisons)."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


# === The model classes ===

class DeepLabV3P(BaseSegmenter):
    """DeepLabV3+ (Chen et al., ECCV 2018) on any backbone of the registry, or your own.

    Args:
        num_classes (int): number of classes. Default 2.
        backbone (str|paddle.nn.Layer): a registered backbone name
            (``paddlex_seg.models.list_backbones()``; PaddleX offers 'ResNet50_vd' and
            'ResNet101_vd'), or a ``paddle.nn.Layer`` with a ``feat_channels`` list whose
            forward returns one feature map per entry. A Layer is used as given (not
            copied); such a model trains, predicts, exports and saves, but ``load_model``
            cannot rebuild it: register a builder with ``paddlex_seg.models.register``
            and pass its name instead. Default 'ResNet50_vd'.
        use_mixed_loss (bool|list): False → CrossEntropy; True → 0.8·CE + 0.2·Lovász;
            or a list of (loss name, weight).
        output_stride (int): 8 or 16. Passed to the backbone's builder only when it
            accepts ``output_stride`` (ResNet_vd and MobileNetV2/V3 do; Xception takes
            it but keeps PaddleSeg's strides; HRNet, whose only feature map is at
            stride 4, does not); otherwise it is recorded but has no effect. Default 8.
        backbone_indices (tuple): (low-level, high-level) indices into the backbone's
            feature list, checked against ``len(feat_channels)``. Default (0, 3).
        aspp_ratios (tuple): ASPP dilation rates. Default (1, 12, 24, 36).
        aspp_out_channels (int): ASPP output channels. Default 256.
        align_corners (bool): interpolation setting. Default False.
    """
    pretrain_choices = ("CITYSCAPES", "PascalVOC", "IMAGENET")

    def __init__(self, num_classes=2, backbone="ResNet50_vd", use_mixed_loss=False, output_stride=8,
                 backbone_indices=(0, 3), aspp_ratios=(1, 12, 24, 36), aspp_out_channels=256,
                 align_corners=False):
        self.backbone_layer = None
        if isinstance(backbone, paddle.nn.Layer):
            _check_backbone_layer(backbone)
            self.backbone_layer = backbone
            # model.yml cannot describe an arbitrary object; load_model reads this marker.
            backbone = {CUSTOM_BACKBONE_KEY: f"{type(backbone).__module__}.{type(backbone).__qualname__}"}
        elif isinstance(backbone, str):
            check_backbone_name(backbone)
        else:
            raise ValueError(f"backbone={backbone!r} must be a registered backbone name "
                             f"({', '.join(models.list_backbones())}) or a paddle.nn.Layer "
                             "with feat_channels")
        _check_choice("output_stride", output_stride, (8, 16))
        if not isinstance(backbone_indices, (list, tuple)) or len(backbone_indices) != 2 or not all(
                isinstance(i, (int, np.integer)) and not isinstance(i, bool) for i in backbone_indices):
            raise ValueError(f"backbone_indices must hold 2 integer indices (low-level, high-level), "
                             f"got {backbone_indices!r}")
        _check_int("aspp_out_channels", aspp_out_channels, 1)
        super().__init__(num_classes, use_mixed_loss, backbone=backbone, output_stride=output_stride,
                         backbone_indices=tuple(int(i) for i in backbone_indices),
                         aspp_ratios=tuple(aspp_ratios), aspp_out_channels=aspp_out_channels,
                         align_corners=align_corners)

    def build_net(self):
        if self.backbone_layer is not None:
            backbone, label = self.backbone_layer, type(self.backbone_layer).__name__
        else:
            # PaddleX trains the whole network at one learning rate: no per-stage multipliers.
            backbone = _build_backbone(self.backbone, output_stride=self.output_stride,
                                       lr_mult_list=(1.0, 1.0, 1.0, 1.0))
            label = repr(self.backbone)
        channels = list(backbone.feat_channels)
        if not all(-len(channels) <= i < len(channels) for i in self.backbone_indices):
            raise ValueError(
                f"backbone_indices={self.backbone_indices!r} must index the {len(channels)} feature "
                f"maps of backbone {label} (feat_channels {channels}); allowed indices are "
                f"0 … {len(channels) - 1}")
        return models.DeepLabV3P(self.num_classes, backbone, backbone_indices=self.backbone_indices,
                                 aspp_ratios=self.aspp_ratios, aspp_out_channels=self.aspp_out_channels,
                                 align_corners=self.align_corners)

    def pretrain_key(self):
        name = type(self.backbone_layer).__name__ if self.backbone_layer is not None else self.backbone
        return f"{self.model_name}_{name}"

    def _load_pretrained(self, pretrain_weights):
        from .weights import PRETRAINED_WEIGHTS, available_pretrain_weights
        dataset = next((c for c in self.pretrain_choices
                        if isinstance(pretrain_weights, str) and c.lower() == pretrain_weights.lower()), None)
        # Published weights exist for a few backbones only; say which, instead of a bare miss.
        if dataset is not None and dataset not in available_pretrain_weights(self.pretrain_key()):
            prefix = f"{self.model_name}_"
            having = [key[len(prefix):] for key, d in PRETRAINED_WEIGHTS
                      if d == dataset and key.startswith(prefix)]
            raise ValueError(
                f"pretrain_weights={pretrain_weights!r}: DeepLabV3P has {dataset} weights only for "
                f"backbone {', '.join(map(repr, having))}, not for {self.pretrain_key()[len(prefix):]!r}; "
                "pass pretrain_weights=None (train from scratch) or a path to a .pdparams file")
        super()._load_pretrained(pretrain_weights)


# model.yml's record of a backbone given as a Layer instance: {CUSTOM_BACKBONE_KEY: class path}.
CUSTOM_BACKBONE_KEY = "custom_layer"


def _check_backbone_layer(layer):
    channels = getattr(layer, "feat_channels", None)
    if not isinstance(channels, (list, tuple)) or not channels or not all(
            isinstance(c, (int, np.integer)) and not isinstance(c, bool) and c > 0 for c in channels):
        raise ValueError(f"backbone={type(layer).__name__} must have a feat_channels list of positive "
                         f"ints (one per feature map its forward returns), got {channels!r}")


def _build_backbone(name, **optional):
    """Build a registered backbone, passing each ``optional`` argument only if its builder takes it.

    An argument is passed when the builder names it. Builders that take ``**kwargs``
    forward them to a constructor we cannot see, so the argument is tried and dropped
    again when that constructor rejects it by name (HRNet takes no ``output_stride``).
    """
    import inspect
    builder = models.backbones.BACKBONES[name]
    params = inspect.signature(builder).parameters
    open_ended = any(p.kind is p.VAR_KEYWORD for p in params.values())
    kwargs = {k: v for k, v in optional.items() if k in params or open_ended}
    while True:
        try:
            return builder(**kwargs)
        except TypeError as error:
            rejected = [k for k in kwargs if k not in params and f"'{k}'" in str(error)]
            if not rejected:
                raise
            kwargs.pop(rejected[0])


class BiSeNetV2(BaseSegmenter):
    """BiSeNet V2 (Yu et al., 2020): a fast two-branch real-time network.

    Args:
        num_classes (int): number of classes. Default 2.
        use_mixed_loss (bool|list): see DeepLabV3P.
        align_corners (bool): interpolation setting. Default False.
    """
    logit_coefs = (1.0,) * 5  # main head + 4 auxiliary heads in training

    def __init__(self, num_classes=2, use_mixed_loss=False, align_corners=False):
        super().__init__(num_classes, use_mixed_loss, align_corners=align_corners)

    def build_net(self):
        return models.BiSeNetV2(self.num_classes, align_corners=self.align_corners)


class UNet(BaseSegmenter):
    """U-Net (Ronneberger et al., MICCAI 2015).

    Args:
        num_classes (int): number of classes. Default 2.
        use_mixed_loss (bool|list): see DeepLabV3P.
        use_deconv (bool): upsample with transposed convolutions instead of bilinear.
        align_corners (bool): interpolation setting. Default False.
    """

    def __init__(self, num_classes=2, use_mixed_loss=False, use_deconv=False, align_corners=False):
        _check_bool("use_deconv", use_deconv)
        super().__init__(num_classes, use_mixed_loss, use_deconv=use_deconv, align_corners=align_corners)

    def build_net(self):
        return models.UNet(self.num_classes, use_deconv=self.use_deconv, align_corners=self.align_corners)


class HRNet(BaseSegmenter):
    """HRNet (Wang et al., TPAMI 2020) with an FCN head.

    Args:
        num_classes (int): number of classes. Default 2.
        width (int|str): 18, 30, 32, 40, 44, 48, 60, 64, or '18_Small_V1' / '18_Small_V2'.
        use_mixed_loss (bool|list): see DeepLabV3P.
        align_corners (bool): interpolation setting. Default False.
    """
    pretrain_choices = ("CITYSCAPES", "PascalVOC")
    widths = (18, 30, 32, 40, 44, 48, 60, 64, "18_Small_V1", "18_Small_V2")

    def __init__(self, num_classes=2, width=48, use_mixed_loss=False, align_corners=False):
        if isinstance(width, str) and width.isdigit():
            width = int(width)  # PaddleX builds f"HRNet_W{width}", so '48' means 48
        _check_choice("width", width, self.widths)
        super().__init__(num_classes, use_mixed_loss, width=width, align_corners=align_corners)

    def build_net(self):
        backbone = models.get_backbone(f"HRNet_W{self.width}", align_corners=self.align_corners)
        return models.FCN(self.num_classes, backbone, align_corners=self.align_corners)

    def pretrain_key(self):
        return f"{self.model_name}_W{self.width}"


class FastSCNN(BaseSegmenter):
    """Fast-SCNN (Poudel et al., BMVC 2019).

    Args:
        num_classes (int): number of classes. Default 2.
        use_mixed_loss (bool|list): see DeepLabV3P.
        align_corners (bool): interpolation setting. Default False.
    """
    logit_coefs = (1.0, 0.4)  # main head + auxiliary head in training

    def __init__(self, num_classes=2, use_mixed_loss=False, align_corners=False):
        super().__init__(num_classes, use_mixed_loss, align_corners=align_corners)

    def build_net(self):
        return models.FastSCNN(self.num_classes, align_corners=self.align_corners)


MODEL_CLASSES = {cls.__name__: cls for cls in (DeepLabV3P, BiSeNetV2, UNet, HRNet, FastSCNN)}


def load_model(model_dir):
    """Rebuild a saved model: same class, arguments, labels, transforms and weights.

    Args:
        model_dir (str): a directory written by ``save`` or ``train``.
    """
    info = checkpoint.read_model_yml(model_dir)
    name = info["Model"]
    if name not in MODEL_CLASSES:
        raise checkpoint.ModelDirError(
            f"{model_dir}: unknown model class {name!r}; known: {', '.join(MODEL_CLASSES)}")
    params = info.get("_init_params") or {}
    custom = params.get("backbone")
    if isinstance(custom, dict) and CUSTOM_BACKBONE_KEY in custom:
        raise checkpoint.ModelDirError(
            f"{model_dir}: the {name} was built on a custom backbone Layer "
            f"({custom[CUSTOM_BACKBONE_KEY]}), which model.yml cannot rebuild. Rebuild the model "
            "yourself and load model.pdparams with net.set_state_dict, or make it loadable: "
            "register a builder with paddlex_seg.models.register (a function named after the "
            "backbone that returns the Layer) and pass that name as backbone=")
    model = MODEL_CLASSES[name](**params)
    model.labels = list(info.get("labels") or [])
    model.status = info.get("status", "Normal")
    model.best_accuracy = info.get("best_accuracy", -1.0)
    model.best_model_epoch = info.get("best_model_epoch", -1)
    model.eval_metrics = info.get("metrics")
    if info.get("Transforms"):
        model.eval_transforms = T.build_transforms(info["Transforms"])
    model.model_dir = checkpoint.resolve_model_dir(model_dir)
    state = checkpoint.read_state(model_dir)
    if info.get("pruning"):
        from .slim import prune as P
        P.register_concat_support()
        model.pruning = info["pruning"]
        for step in model.pruning["steps"]:
            P.apply_pruning(model.net, step["ratios"], model.pruning["input_shape"], step["criterion"])
    if model.status == "Quantized":
        from .slim.quant import load_quantized_state
        model.quant_config = info.get("quant_config")
        model.quanter = load_quantized_state(model.net, model.quant_config, state)
    else:
        missing = set(model.net.state_dict()) - set(state)
        if missing:
            raise checkpoint.ModelDirError(
                f"{model_dir}: model.pdparams lacks {len(missing)} parameters, e.g. {sorted(missing)[:3]}")
        model.net.set_state_dict(state)
    model.net.eval()
    logger.info(f"Model[{name}] loaded from {model_dir}")
    return model
