"""The ``paddlex_seg`` command: train, evaluate, predict and export from the shell.

    paddlex_seg train --model UNet --dataset_dir data --train_list data/train.txt \\
        --val_list data/val.txt --label_list data/labels.txt --num_epochs 10 --save_dir output/unet
    paddlex_seg evaluate --model_dir output/unet/best_model --dataset_dir data --file_list data/val.txt
    paddlex_seg predict --model_dir output/unet/best_model --image a.jpg b.jpg --save_dir output/vis
    paddlex_seg export --model_dir output/unet/best_model --save_dir output/infer --fixed_input_shape [512,512]
    paddlex_seg compress --model_dir output/unet/best_model --dataset_dir data --train_list data/train.txt \
        --eval_list data/val.txt --pruned_flops 0.3 --save_dir output/compress
    paddlex_seg serve --model_dir output/infer --port 8080

Test-time augmentation (``paddlex_seg.aug``) for predict, evaluate and export::

    paddlex_seg predict --model_dir output/unet/best_model --image a.jpg \
        --flip_horizontal --scales 0.75 1.0 1.25 --sliding_window 512 512 384 384

PaddleX 2.x's spelling of the export works too::

    paddlex_seg --export_inference --model_dir=./output/unet/best_model/ --save_dir=./inference_model

Options mirror the Python API (``model.train``, ``model.evaluate``, ``model.predict``,
``model.export``); ``paddlex_seg <command> --help`` lists them. A user error (bad
argument, missing file, bad data) prints one line ``paddlex_seg <command>: error: ...``
and exits with status 1; argparse's own usage errors exit with 2.
"""
import argparse
import json
import sys

__all__ = ["main", "build_parser"]

MODEL_NAMES = ("DeepLabV3P", "BiSeNetV2", "UNet", "HRNet", "FastSCNN")
PROG = "paddlex_seg"


class CommandError(Exception):
    """A user error found by the command line itself."""


def build_parser():
    """The argparse parser with one sub-command per task."""
    parser = argparse.ArgumentParser(
        prog=PROG, description="paddlex_seg: train, evaluate, predict and export segmentation models.",
        epilog="PaddleX form: paddlex_seg --export_inference --model_dir=DIR --save_dir=DIR "
               "[--fixed_input_shape=[w,h]]")
    commands = parser.add_subparsers(
        dest="command",
        metavar="{train,evaluate,predict,export,compress,serve,split_dataset,convert,check_dataset}")
    commands.required = True
    _add_train(commands)
    _add_evaluate(commands)
    _add_predict(commands)
    _add_export(commands)
    _add_compress(commands)
    _add_serve(commands)
    _add_data_tools(commands)
    return parser


def main(argv=None):
    """Entry point of the console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--export_inference" in argv:  # PaddleX 2.x: paddlex --export_inference --model_dir ...
        argv.remove("--export_inference")
        argv = ["export"] + argv
    argv = _paddlex_data_spelling(argv)
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (CommandError, ValueError, OSError, ImportError, RuntimeError) as error:
        message = " ".join(str(error).split()) or type(error).__name__
        print(f"{PROG} {args.command}: error: {message}", file=sys.stderr)
        return 1
    return 0


# --- train -----------------------------------------------------------------------------
def _add_train(commands):
    p = commands.add_parser("train", help="train a model (model.train)",
                            description="Train a model on a PaddleX-style data set (model.train).")
    p.add_argument("--model", required=True, choices=MODEL_NAMES, help="model class")
    p.add_argument("--num_classes", type=int, default=None,
                   help="number of classes (default: the number of lines of --label_list)")
    p.add_argument("--model_params", type=_yaml_mapping, default={},
                   help="other constructor arguments as a YAML mapping, e.g. "
                        "\"{backbone: ResNet101_vd, output_stride: 16}\" or \"{width: 18}\"")
    p.add_argument("--dataset_dir", required=True, help="folder the file lists are relative to")
    p.add_argument("--train_list", required=True, help="training file list (image label per line)")
    p.add_argument("--val_list", default=None, help="validation file list (evaluated while training)")
    p.add_argument("--label_list", default=None, help="class names, one per line")
    p.add_argument("--input_size", type=_size, default=None,
                   help="resize images to this size, 'h,w' or one int (default: keep sizes)")
    p.add_argument("--num_epochs", type=int, required=True)
    p.add_argument("--train_batch_size", type=int, default=2)
    p.add_argument("--learning_rate", type=float, default=0.01)
    p.add_argument("--lr_decay_power", type=float, default=0.9)
    p.add_argument("--save_dir", default="output")
    p.add_argument("--save_interval_epochs", type=int, default=1)
    p.add_argument("--log_interval_steps", type=int, default=2)
    p.add_argument("--pretrain_weights", type=_none_or_str, default=_DEFAULT_WEIGHTS,
                   help="a .pdparams path, a published name (e.g. CITYSCAPES), or None")
    p.add_argument("--resume_checkpoint", default=None, help="an epoch_N directory to resume")
    p.add_argument("--early_stop", action="store_true")
    p.add_argument("--early_stop_patience", type=int, default=5)
    p.add_argument("--use_vdl", action=argparse.BooleanOptionalAction, default=True,
                   help="write VisualDL logs")
    p.add_argument("--use_amp", action="store_true", help="automatic mixed precision")
    p.add_argument("--num_workers", default="auto", help="DataLoader workers, or 'auto'")
    p.set_defaults(func=_train)


def _train(args):
    import paddlex_seg as seg
    from paddlex_seg import transforms as T

    resize = [T.Resize(args.input_size)] if args.input_size else []
    workers = args.num_workers if args.num_workers == "auto" else _int("num_workers", args.num_workers)
    train_ds = seg.SegDataset(args.dataset_dir, args.train_list, args.label_list,
                              T.Compose(resize + [T.RandomHorizontalFlip(), T.Normalize()]),
                              num_workers=workers, shuffle=True)
    eval_ds = None
    if args.val_list:
        eval_ds = seg.SegDataset(args.dataset_dir, args.val_list, args.label_list,
                                 T.Compose(resize + [T.Normalize()]), num_workers=workers)
    num_classes = args.num_classes or len(train_ds.labels)
    if not num_classes:
        raise CommandError("give --num_classes or a --label_list to count the classes")
    model = _model_class(args.model)(num_classes=num_classes, **args.model_params)
    state = model.train(
        num_epochs=args.num_epochs, train_dataset=train_ds, train_batch_size=args.train_batch_size,
        eval_dataset=eval_ds, save_interval_epochs=args.save_interval_epochs,
        log_interval_steps=args.log_interval_steps, save_dir=args.save_dir,
        learning_rate=args.learning_rate,
        lr_decay_power=args.lr_decay_power, early_stop=args.early_stop,
        early_stop_patience=args.early_stop_patience, use_vdl=args.use_vdl,
        resume_checkpoint=args.resume_checkpoint, use_amp=args.use_amp,
        # Left out when not given, so that --resume_checkpoint alone is fine.
        **({} if args.pretrain_weights is _DEFAULT_WEIGHTS else {"pretrain_weights": args.pretrain_weights}))
    best = getattr(state, "best_accuracy", -1.0)
    print(f"Training finished: {args.save_dir}"
          + (f" (best mIoU {best:.4f} at epoch {state.best_model_epoch})" if best >= 0 else ""))


# --- evaluate --------------------------------------------------------------------------
def _add_evaluate(commands):
    p = commands.add_parser("evaluate", help="evaluate a saved model (model.evaluate)",
                            description="Metrics of a saved model on a labelled file list "
                                        "(model.evaluate), printed as JSON.")
    p.add_argument("--model_dir", required=True, help="a saved model (e.g. output/unet/best_model)")
    p.add_argument("--dataset_dir", required=True, help="folder the file list is relative to")
    p.add_argument("--file_list", required=True, help="labelled file list to evaluate")
    p.add_argument("--label_list", default=None, help="class names, one per line")
    p.add_argument("--batch_size", type=int, default=1)
    p.add_argument("--return_details", action="store_true", help="also print the confusion matrix")
    _add_aug_options(p, "average the softmax scores of")
    p.set_defaults(func=_evaluate)


def _evaluate(args):
    import paddlex_seg as seg

    model = seg.load_model(args.model_dir)
    # No transforms here: evaluate then uses the model's recorded eval transforms.
    dataset = seg.SegDataset(args.dataset_dir, args.file_list, args.label_list)
    out = model.evaluate(dataset, batch_size=args.batch_size, return_details=args.return_details,
                         aug=_aug_from_args(args))
    metrics, details = out if args.return_details else (out, None)
    report = {"metrics": _jsonable(metrics)}
    if details is not None:
        report.update(_jsonable(details))
    print(json.dumps(report, indent=2))


# --- predict ---------------------------------------------------------------------------
def _add_predict(commands):
    p = commands.add_parser("predict", help="predict images with a saved or exported model",
                            description="Predict images (model.predict, or "
                                        "paddlex_seg.deploy.Predictor for an exported model) and "
                                        "write overlays visualize_<name> (paddlex_seg.visualize).")
    p.add_argument("--model_dir", required=True,
                   help="a saved model directory or an exported inference model")
    p.add_argument("--image", required=True, nargs="+", help="image file(s)")
    p.add_argument("--save_dir", default="output/predict", help="where overlays are written")
    p.add_argument("--weight", type=float, default=0.6, help="image weight in the overlay (0: mask only)")
    p.add_argument("--legend", action="store_true", help="add a legend with the class names")
    p.add_argument("--save_label", action="store_true",
                   help="also write the label map as label_<name>.png (class ids as pixel values)")
    p.add_argument("--use_gpu", action="store_true", help="exported models: run on GPU")
    p.add_argument("--use_mkl", action=argparse.BooleanOptionalAction, default=True,
                   help="exported models: oneDNN on CPU")
    p.add_argument("--mkl_thread_num", type=int, default=4, help="exported models: CPU threads")
    p.add_argument("--backend", choices=["auto", "paddle", "openvino", "onnxruntime"], default="auto",
                   help="exported models: runtime (auto: fastest installed that keeps accuracy)")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16", "int8"], default="auto",
                   help="exported models: precision (auto: by the figures deploy.check recorded)")
    _add_aug_options(p, "average the softmax scores of")
    p.add_argument("--no_aug", action="store_true",
                   help="exported models: ignore the test-time augmentation recorded in model.yml")
    p.set_defaults(func=_predict)


def _predict(args):
    import os

    import cv2

    from paddlex_seg.visualize import visualize

    labels, results = _run_prediction(args)
    for path, result in zip(args.image, results):
        written = visualize(path, result, weight=args.weight, save_dir=args.save_dir,
                            legend=args.legend, labels=labels)
        line = f"{path}: classes {sorted(int(c) for c in set(result['label_map'].ravel()))} -> {written}"
        if args.save_label:
            stem = os.path.splitext(os.path.basename(path))[0]
            label_file = os.path.join(args.save_dir, f"label_{stem}.png")
            from paddlex_seg._zlib_first import check_png_writes
            check_png_writes(label_file)
            cv2.imwrite(label_file, result["label_map"])
            line += f", {label_file}"
        print(line)


def _run_prediction(args):
    import os

    aug = _aug_from_args(args)
    if aug is not None and args.no_aug:
        raise CommandError("--no_aug cannot be combined with --flip_horizontal, --flip_vertical, "
                           "--scales, --sliding_window or --window_batch_size")
    from paddlex_seg import compat
    if compat.program_file(os.path.join(args.model_dir, "model")):
        from paddlex_seg.deploy import Predictor
        predictor = Predictor(args.model_dir, use_gpu=args.use_gpu, use_mkl=args.use_mkl,
                              mkl_thread_num=args.mkl_thread_num, backend=args.backend,
                              precision=args.precision)
        # None: the aug recorded in model.yml, if any; False: none at all.
        return predictor.labels, predictor.predict(list(args.image),
                                                   aug=False if args.no_aug else aug)
    import paddlex_seg as seg
    model = seg.load_model(args.model_dir)
    return model.labels, model.predict(list(args.image), aug=aug)


# --- export ----------------------------------------------------------------------------
def _add_export(commands):
    p = commands.add_parser("export", help="export a saved model for deployment (model.export)",
                            description="Export a saved model as a Paddle inference model "
                                        "(model.pdmodel, model.pdiparams, model.yml), "
                                        "optionally also ONNX (model.export).")
    p.add_argument("--model_dir", required=True, help="a saved model (e.g. output/unet/best_model)")
    p.add_argument("--save_dir", required=True, help="output directory")
    p.add_argument("--fixed_input_shape", default=None,
                   help="[w,h] or [n,c,w,h] (PaddleX order: width first; n=-1 for any batch)")
    p.add_argument("--onnx", action="store_true", help="also write model.onnx (needs paddle2onnx)")
    p.add_argument("--opset_version", type=int, default=11, help="ONNX opset")
    _add_aug_options(p, "record in model.yml for the Predictor: average the softmax scores of")
    p.set_defaults(func=_export)


def _export(args):
    import paddlex_seg as seg
    from paddlex_seg.deploy.export import parse_fixed_input_shape

    parse_fixed_input_shape(args.fixed_input_shape)  # a typo fails before the model loads
    model = seg.load_model(args.model_dir)
    path = model.export(args.save_dir, fixed_input_shape=args.fixed_input_shape, onnx=args.onnx,
                        opset_version=args.opset_version, aug=_aug_from_args(args))
    print(f"Exported {args.model_dir} to {path}")


# --- test-time augmentation options (predict, evaluate, export) ------------------------
def _add_aug_options(p, verb):
    g = p.add_argument_group(
        "test-time augmentation",
        f"{verb} flipped, rescaled and/or windowed views (paddlex_seg.aug.TestTimeAug)")
    g.add_argument("--flip_horizontal", action="store_true", help="add the left-right mirror image")
    g.add_argument("--flip_vertical", action="store_true", help="add the upside-down image")
    g.add_argument("--scales", type=float, nargs="+", default=None, metavar="S",
                   help="resize factors, e.g. --scales 0.75 1.0 1.25 (default: 1.0)")
    g.add_argument("--sliding_window", type=int, nargs=4, default=None,
                   metavar=("CROP_H", "CROP_W", "STRIDE_H", "STRIDE_W"),
                   help="predict in windows of CROP_H x CROP_W every STRIDE pixels")
    g.add_argument("--window_batch_size", type=int, default=None,
                   help="windows per forward pass (default: 4)")


def _aug_from_args(args):
    """A TestTimeAug from the options given, or None when none was given."""
    given = {key: getattr(args, key) for key in ("flip_horizontal", "flip_vertical", "scales",
                                                 "sliding_window", "window_batch_size")}
    given = {key: value for key, value in given.items() if value is not None and value is not False}
    if not given:
        return None
    from paddlex_seg.aug import TestTimeAug
    return TestTimeAug(**given)


# --- compress --------------------------------------------------------------------------
def _add_compress(commands):
    p = commands.add_parser(
        "compress", help="prune, fine-tune, quantize and export a saved model, with a report "
                         "(model.compress)",
        description="Sensitivity -> prune -> fine-tune -> QAT and PTQ -> export of a saved model, each "
                    "stage in a sub-directory of --save_dir (a rerun skips complete stages and "
                    "resumes an interrupted one); writes report.md, report.json, sensitivity.png "
                    "and tradeoff.png (model.compress). Images go through the model's recorded "
                    "eval transforms; training adds a random horizontal flip.")
    p.add_argument("--model_dir", required=True, help="a saved, trained model (e.g. output/unet/best_model)")
    p.add_argument("--dataset_dir", required=True, help="folder the file lists are relative to")
    p.add_argument("--train_list", required=True, help="file list for fine-tuning and QAT")
    p.add_argument("--eval_list", required=True, help="labelled file list for sensitivities and mIoU")
    p.add_argument("--label_list", default=None, help="class names, one per line")
    p.add_argument("--pruned_flops", type=_none_or_float, default=0.3,
                   help="fraction of FLOPs to remove (0-1), or None to skip pruning (default 0.3)")
    p.add_argument("--no-quant", "--no_quant", dest="quant", action="store_false",
                   help="skip quantization-aware training")
    p.add_argument("--no-ptq", "--no_ptq", dest="ptq", action="store_const", const=False, default=None,
                   help="skip post-training int8 (run by default when the onnx extra is installed)")
    p.add_argument("--ptq_batches", type=int, default=16, help="calibration images for PTQ")
    p.add_argument("--finetune_epochs", type=int, default=10)
    p.add_argument("--qat_epochs", type=int, default=2)
    p.add_argument("--save_dir", default="output/compress")
    p.add_argument("--criterion", default="l1_norm", help="filter importance: l1_norm or fpgm")
    p.add_argument("--train_batch_size", type=int, default=2)
    p.add_argument("--eval_batch_size", type=int, default=1)
    p.add_argument("--finetune_learning_rate", type=float, default=0.01)
    p.add_argument("--qat_learning_rate", type=float, default=0.0001)
    p.add_argument("--num_workers", default=None, help="DataLoader workers, or 'auto' (default: auto)")
    p.add_argument("--fixed_input_shape", default=None, help="[w,h] of the exports (default: free)")
    p.add_argument("--latency_threads", type=int, default=2, help="CPU threads of the latency runs")
    p.add_argument("--latency_warmup", type=int, default=3)
    p.add_argument("--latency_repeats", type=int, default=20, help="timed runs (median reported)")
    p.add_argument("--keep_checkpoints", action="store_true",
                   help="keep the epoch checkpoints of finished stages")
    p.set_defaults(func=_compress)


def _compress(args):
    import os

    import paddlex_seg as seg
    from paddlex_seg import transforms as T

    model = seg.load_model(args.model_dir)
    eval_tf = model.eval_transforms
    if eval_tf is None:
        raise CommandError(f"{args.model_dir} records no eval transforms (it was trained without "
                           "an eval data set); compress it from Python with model.compress")
    train_tf = T.Compose([T.RandomHorizontalFlip()] + list(eval_tf.transforms), to_rgb=eval_tf.to_rgb)
    workers = "auto" if args.num_workers is None else (
        args.num_workers if args.num_workers == "auto" else _int("num_workers", args.num_workers))
    train_ds = seg.SegDataset(args.dataset_dir, args.train_list, args.label_list, train_tf,
                              num_workers=workers, shuffle=True)
    eval_ds = seg.SegDataset(args.dataset_dir, args.eval_list, args.label_list, eval_tf,
                             num_workers=workers)
    report = model.compress(
        train_ds, eval_ds, pruned_flops=args.pruned_flops, quant=args.quant,
        finetune_epochs=args.finetune_epochs, qat_epochs=args.qat_epochs, save_dir=args.save_dir,
        criterion=args.criterion, train_batch_size=args.train_batch_size,
        eval_batch_size=args.eval_batch_size, finetune_learning_rate=args.finetune_learning_rate,
        qat_learning_rate=args.qat_learning_rate, fixed_input_shape=args.fixed_input_shape,
        latency_threads=args.latency_threads, latency_warmup=args.latency_warmup,
        latency_repeats=args.latency_repeats, keep_checkpoints=args.keep_checkpoints,
        ptq=args.ptq, ptq_batches=args.ptq_batches)
    print(f"Report: {os.path.join(report['save_dir'], report['files']['report_md'])}")


# --- serve -----------------------------------------------------------------------------
def _add_serve(commands):
    p = commands.add_parser(
        "serve", help="serve an exported model over HTTP (POST /predict; needs the serve extra)",
        description="Serve an exported model over HTTP with FastAPI on uvicorn: POST /predict "
                    "(multipart upload, base64 JSON or image/* bytes), GET /health, GET /model, "
                    "/openapi.json and /docs; requests arriving together are batched "
                    "(paddlex_seg.deploy.serve). Needs: pip install \"paddlex_seg[serve]\".")
    p.add_argument("--model_dir", required=True, help="an exported inference model")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0: all interfaces)")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--workers", type=int, default=1,
                   help="server processes, each with its own Predictor (default 1)")
    p.add_argument("--backend", choices=["auto", "paddle", "openvino", "onnxruntime"], default=None,
                   help="the Predictor's backend (default: auto)")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16", "int8"], default=None,
                   help="the Predictor's precision (default: auto)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads per Predictor")
    p.add_argument("--max_batch_size", type=int, default=8, help="most images per model run")
    p.add_argument("--max_wait_ms", type=float, default=5.0,
                   help="longest wait for more images to batch with a queued one")
    p.add_argument("--max_upload_bytes", type=int, default=32 * 1024 * 1024,
                   help="largest request body; more gets 413 (default 32 MiB)")
    p.add_argument("--max_pixels", type=int, default=25_000_000,
                   help="largest image, width x height from its header; more gets 413")
    p.add_argument("--log_level", default="info", choices=("critical", "error", "warning", "info", "debug"))
    p.set_defaults(func=_serve)


def _serve(args):
    from paddlex_seg.deploy.serve import serve  # ImportError names the serve extra

    serve(args.model_dir, host=args.host, port=args.port, workers=args.workers,
          backend=args.backend, precision=args.precision, threads=args.threads,
          max_batch_size=args.max_batch_size, max_wait_ms=args.max_wait_ms,
          max_upload_bytes=args.max_upload_bytes, max_pixels=args.max_pixels,
          log_level=args.log_level)


def _none_or_float(text):
    if text.strip().lower() in ("none", "null"):
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or None, got {text!r}") from None


# --- data tools: split_dataset, convert, check_dataset (paddlex_seg.data.tools) -------
def _paddlex_data_spelling(argv):
    """PaddleX 2.x: ``--split_dataset --format SEG ...`` and ``--data_conversion --source labelme
    --to SEG --pics D --annotations D ...`` become the split_dataset / convert sub-commands."""
    for flag, command in (("--split_dataset", "split_dataset"), ("--data_conversion", "convert")):
        if flag in argv:
            argv = [command] + [a for a in argv if a != flag]
    return argv


def _add_data_tools(commands):
    p = commands.add_parser(
        "split_dataset", help="write train/val/test file lists of a JPEGImages/ + Annotations/ folder",
        description="Match JPEGImages/<name>.* with Annotations/<name>.png and write "
                    "train_list.txt, val_list.txt, test_list.txt (with --test_value) and labels.txt "
                    "(an existing one is kept) in --dataset_dir (paddlex_seg.data.tools.split_dataset).")
    p.add_argument("--dataset_dir", required=True)
    p.add_argument("--val_value", type=float, default=0.2, help="fraction for validation")
    p.add_argument("--test_value", type=float, default=0.0, help="fraction for testing")
    p.add_argument("--seed", type=int, default=0, help="shuffling seed (same seed, same lists)")
    p.add_argument("--format", default="SEG", help="PaddleX spelling; only SEG")
    p.set_defaults(func=_split_dataset)

    p = commands.add_parser(
        "convert", help="LabelMe / COCO / VOC / mask annotations to palette PNGs and file lists",
        description="Convert annotations to a PaddleX SEG data set: JPEGImages/, Annotations/*.png "
                    "(class ids), labels.txt, file_list.txt (paddlex_seg.data.tools.convert).")
    p.add_argument("--source", required=True, choices=("labelme", "coco", "voc", "mask"))
    p.add_argument("--input_dir", default=None,
                   help="labelme: JSON folder; coco: image folder; voc/mask: data set root")
    p.add_argument("--annotation_file", default=None, help="coco: the instances JSON")
    p.add_argument("--save_dir", required=True)
    p.add_argument("--label_list", default=None, help="class names, class 0 first (unknown names fail)")
    p.add_argument("--label_dir", default=None, help="voc/mask: label sub-folder")
    p.add_argument("--overlap", default="error", choices=("error", "last", "first"))
    p.add_argument("--empty", default="error", choices=("error", "background", "skip"))
    p.add_argument("--outside", default="error", choices=("error", "clip"))
    p.add_argument("--line_width", type=int, default=3, help="labelme line/linestrip stroke width")
    p.add_argument("--point_radius", type=int, default=2, help="labelme point disc radius")
    p.add_argument("--val_value", type=float, default=0.0, help="also split: validation fraction")
    p.add_argument("--test_value", type=float, default=0.0, help="also split: test fraction")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--to", default="SEG", help="PaddleX spelling; only SEG")
    p.add_argument("--pics", default=None, help="PaddleX spelling: the image folder")
    p.add_argument("--annotations", default=None,
                   help="PaddleX spelling: the LabelMe JSON folder (or the COCO JSON file)")
    p.set_defaults(func=_convert)

    p = commands.add_parser(
        "check_dataset", help="report what in a file list breaks training; class weights; --fix",
        description="Per-file problems, class pixel histogram (table and PNG), class weights for "
                    "train(class_weights=...), and --fix writing fixed copies into --save_dir "
                    "(paddlex_seg.data.tools.check_dataset). Exit status 1 while problems remain.")
    p.add_argument("--dataset_dir", required=True)
    p.add_argument("--file_list", required=True)
    p.add_argument("--label_list", default=None)
    p.add_argument("--num_classes", type=int, default=None)
    p.add_argument("--fix", action="store_true", help="write fixed labels and a new file list")
    p.add_argument("--save_dir", default=None, help="default: DATASET_DIR/check_dataset")
    p.add_argument("--method", default="median_frequency",
                   choices=("median_frequency", "inverse_frequency"), help="class weights")
    p.add_argument("--no_progress", action="store_true")
    p.set_defaults(func=_check_dataset)


def _only_seg(name, value):
    if str(value).upper() != "SEG":
        raise CommandError(f"--{name} {value}: paddlex_seg handles segmentation data only (SEG)")


def _split_dataset(args):
    from paddlex_seg.data.tools import split_dataset

    _only_seg("format", args.format)
    out = split_dataset(args.dataset_dir, args.val_value, args.test_value, args.seed)
    print(f"{out['num_train']} train, {out['num_val']} val, {out['num_test']} test: "
          + ", ".join(out[k] for k in ("train", "val", "test", "labels") if out[k]))


def _convert(args):
    from paddlex_seg.data.tools import convert

    _only_seg("to", args.to)
    input_dir, annotation_file, image_dir = args.input_dir, args.annotation_file, None
    if args.source == "labelme":
        input_dir = input_dir or args.annotations or args.pics
        image_dir = args.pics if args.pics != input_dir else None
    elif args.source == "coco":
        input_dir = input_dir or args.pics
        annotation_file = annotation_file or args.annotations
    else:
        input_dir = input_dir or args.pics
    out = convert(args.source, input_dir, args.save_dir, annotation_file=annotation_file,
                  label_list=args.label_list, label_dir=args.label_dir, image_dir=image_dir,
                  overlap=args.overlap, empty=args.empty, outside=args.outside,
                  line_width=args.line_width, point_radius=args.point_radius,
                  val_value=args.val_value, test_value=args.test_value, seed=args.seed)
    print(f"{out['num_images']} images, {len(out['labels'])} classes ({', '.join(out['labels'])}) "
          f"-> {out['save_dir']}" + (f"; skipped {', '.join(out['skipped'])}" if out['skipped'] else ""))


def _check_dataset(args):
    from paddlex_seg.data.tools import check_dataset

    report = check_dataset(args.dataset_dir, args.file_list, num_classes=args.num_classes,
                           label_list=args.label_list, fix=args.fix, save_dir=args.save_dir,
                           method=args.method, progress=not args.no_progress)
    for index, problem in report.problems:
        fixed = " (fixed)" if report.files[index]["fixed_label"] and problem["fixable"] else ""
        print(f"line {report.files[index]['line']}: {problem['code']}: {problem['message']}{fixed}")
    for note in report.notes:
        print(f"note: {note}")
    print(report.table())
    print(f"class_weights: {report.class_weights}")
    print(f"plot: {report.plot}; report: {report.report_json}"
          + (f"; fixed file list: {report.fixed_file_list}" if report.fixed_file_list else ""))
    if report.unfixed:
        raise CommandError(f"{len(report.unfixed)} problem(s) will break training"
                           + ("" if args.fix else " (some may be fixed with --fix)"))


# --- argument types and helpers --------------------------------------------------------
def _model_class(name):
    import paddlex_seg as seg
    return getattr(seg, name)


def _yaml_mapping(text):
    import yaml
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        value = None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a YAML mapping like \"{{width: 18}}\", got {text!r}")
    return value


def _size(text):
    parts = [p for p in text.replace("[", "").replace("]", "").replace("x", ",").split(",") if p.strip()]
    try:
        sizes = [int(p) for p in parts]
    except ValueError:
        sizes = []
    if len(sizes) not in (1, 2) or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"expected 'h,w' or one positive int, got {text!r}")
    return sizes[0] if len(sizes) == 1 else sizes


class _Default(str):
    """An option's default, told apart from the same text given on the command line."""


_DEFAULT_WEIGHTS = _Default("CITYSCAPES")


def _none_or_str(text):
    return None if text.strip().lower() in ("none", "null", "") else text


def _int(name, text):
    try:
        return int(text)
    except ValueError:
        raise CommandError(f"{name} must be an int or 'auto', got {text!r}") from None


def _jsonable(obj):
    import numpy as np
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, np.ndarray)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


if __name__ == "__main__":
    sys.exit(main())
