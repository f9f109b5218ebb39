"""Model compression, measured: float vs pruned (0.3 of FLOPs) + fine-tuned vs QAT int8.

Trains a model (or reuses ``--float_model``) on the ISBI 2012 membrane slices
(``../shared/data/isbi_membrane``) or on the synthetic set, then:

1. prunes it: ``analyze_sensitivity`` (written once to ``model.sensi.data``, reused when
   present), ``prune(pruned_flops=0.3)``, fine-tuning with ``train``;
2. quantizes the float model with ``quant_aware_train`` (and the pruned one with
   ``--qat_pruned``);
3. exports every stage with ``model.export`` at a fixed ``--size`` input and runs it
   with ``paddlex_seg.deploy.Predictor`` (Paddle Inference, oneDNN fp32 for float and
   pruned models, oneDNN int8 for quantized ones, ``--threads`` threads each).

One table is printed and written as markdown to ``--out``. Columns: mIoU of the
in-process model (``model.evaluate``), mIoU of the exported model (label maps of the
Predictor on the val set at the images' own size: the accuracy actually deployed),
parameters (sum of numel), FLOPs at 1x3x``size``x``size`` (``paddle.flops``), exported
size on disk (model.pdmodel + model.pdiparams) and inference latency: the median of
``--repeats`` runs of the same image after ``--warmup`` runs, network only (the
Predictor's 'inference' timing) and end to end (with pre- and postprocessing).

    python benchmarks/compress.py --data synthetic --size 128
    python benchmarks/compress.py --model FastSCNN --size 256 --train_epochs 40

The one-call pipeline ``model.compress`` (paddlex_seg/compress.py) measures the
same columns for sensitivity -> prune -> fine-tune -> QAT of the PRUNED model, stage by
stage, resumable, with a report and pictures (benchmarks/compress_membrane.py runs it
on the membrane slices). This script keeps its own order because it also quantizes the
float model alone, which separates the effect of int8 from that of pruning.
"""
import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time

import numpy as np
import paddle

import paddlex_seg as seg
import paddlex_seg.segmenter as segmenter
from paddlex_seg import transforms as T
from paddlex_seg.data.dataset import read_image, read_label
from paddlex_seg.deploy import Predictor
from paddlex_seg.engine.metrics import confusion_matrix, metrics_from_confusion
from paddlex_seg.slim.prune import flops as count_flops
from machine_info import cpu_name, load_average  # benchmarks/machine_info.py

MODELS = ("UNet", "FastSCNN", "BiSeNetV2")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_DATA = os.path.normpath(os.path.join(REPO, "..", "shared", "data", "isbi_membrane"))
PRUNED_FLOPS = 0.3


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="UNet", choices=MODELS)
    p.add_argument("--data", default=DEFAULT_DATA,
                   help="a PaddleX-format data set (train.txt, val.txt, labels.txt) or 'synthetic'")
    p.add_argument("--size", type=int, default=256,
                   help="images are resized to size x size for training, evaluation and export")
    p.add_argument("--train_epochs", type=int, default=20)
    p.add_argument("--finetune_epochs", type=int, default=10)
    p.add_argument("--qat_epochs", type=int, default=3)
    p.add_argument("--batch_size", type=int, default=4)
    p.add_argument("--lr", type=float, default=0.01, help="learning rate of training and fine-tuning")
    p.add_argument("--finetune_lr", type=float, default=None,
                   help="learning rate of fine-tuning after pruning (default: --lr)")
    p.add_argument("--qat_lr", type=float, default=1e-4, help="learning rate of QAT")
    p.add_argument("--sens_ratios", type=float, nargs="+", default=None,
                   help="pruning ratios of the sensitivity analysis (default: the package's 0.1 … 0.8)")
    p.add_argument("--qat_pruned", action="store_true", help="also QAT the pruned model")
    p.add_argument("--float_model", default=None, help="a saved float model to reuse instead of training")
    p.add_argument("--threads", type=int, default=2, help="Paddle Inference CPU threads")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=20, help="timed runs (the median is reported)")
    p.add_argument("--work_dir", default=os.path.join(REPO, "output", "compress_bench"))
    p.add_argument("--out", default=os.path.join(REPO, "benchmarks", "RESULTS_compress.md"))
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    for name in ("size", "train_epochs", "finetune_epochs", "qat_epochs", "batch_size",
                 "threads", "repeats"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.sens_ratios and not all(0 < r < 1 for r in args.sens_ratios):
        p.error(f"--sens_ratios must lie in (0, 1), got {args.sens_ratios}")
    return args


# === Data ===

def build_datasets(args):
    if args.data == "synthetic":
        data = seg.make_synthetic_dataset(os.path.join(args.work_dir, "synthetic"), num_train=32,
                                          num_val=8, image_size=(args.size, args.size),
                                          num_classes=3, seed=args.seed)
        root, train_list, val_list, label_list = data.root, data.train_list, data.val_list, data.label_list
    else:
        root = os.path.abspath(args.data)
        train_list, val_list, label_list = (os.path.join(root, name) for name in
                                            ("train.txt", "val.txt", "labels.txt"))
    # The membrane slices are 512x512: resizing keeps every step affordable on 2 cores.
    resize = [T.Resize(target_size=args.size)]
    train_ds = seg.SegDataset(root, train_list, label_list, shuffle=True, transforms=T.Compose(
        resize + [T.RandomHorizontalFlip(), T.RandomVerticalFlip(), T.Normalize()]))
    eval_ds = seg.SegDataset(root, val_list, label_list, transforms=T.Compose(resize + [T.Normalize()]))
    return train_ds, eval_ds


# === Measurements ===

def count_params(net):
    return int(sum(int(np.prod(p.shape)) for p in net.parameters()))


def measure_flops(net, size):
    try:
        return count_flops(net, [1, 3, size, size])
    except Exception as e:  # paddle.flops may not follow fake-quant layers
        print(f"  FLOPs not measurable ({type(e).__name__}: {e})", flush=True)
        return None


def exported_bytes(export_dir):
    return sum(os.path.getsize(os.path.join(export_dir, name))
               for name in ("model.pdmodel", "model.pdiparams"))


def predictor_miou(predictor, eval_ds, num_classes):
    """mIoU of the exported model's label maps at each val image's own size."""
    cm = np.zeros((num_classes, num_classes), dtype="int64")
    for image_path, label_path in eval_ds.samples:
        label_map = predictor.predict(read_image(image_path))["label_map"]
        cm += confusion_matrix(read_label(label_path), label_map, num_classes)
    return metrics_from_confusion(cm)["miou"]


def latencies(predictors, image, warmup, repeats):
    """Median milliseconds (network, end to end) of each predictor on ``image``.

    The predictors take turns, one run each per round, so that other work on a shared
    machine slows them alike; ``warmup`` untimed runs each come first.
    """
    for predictor in predictors:
        predictor.predict(image, warmup_iters=warmup, repeats=1)
    network = [[] for _ in predictors]
    total = [[] for _ in predictors]
    for _ in range(repeats):
        for i, predictor in enumerate(predictors):
            predictor.predict(image, repeats=1)
            t = predictor.timings
            network[i].append(t["inference"])
            total[i].append(t["preprocess"] + t["inference"] + t["postprocess"])
    return [(statistics.median(n), statistics.median(t)) for n, t in zip(network, total)]


# === Stages ===

def train_float(args, train_ds, eval_ds):
    if args.float_model:
        print(f"Reusing the float model in {args.float_model}", flush=True)
        return seg.load_model(args.float_model)
    model = getattr(seg, args.model)(num_classes=len(train_ds.labels))
    model.train(num_epochs=args.train_epochs, train_dataset=train_ds, eval_dataset=eval_ds,
                train_batch_size=args.batch_size, pretrain_weights=None, learning_rate=args.lr,
                save_interval_epochs=args.train_epochs, log_interval_steps=10,
                save_dir=os.path.join(args.work_dir, "train_float"), use_vdl=False)
    model.save(os.path.join(args.work_dir, "float_model"))
    return model


def prune_and_finetune(args, float_dir, train_ds, eval_ds, notes):
    model = seg.load_model(float_dir)
    if args.sens_ratios:
        # analyze_sensitivity reads the ratios from this module constant.
        segmenter.SENSITIVITY_RATIOS = tuple(sorted(args.sens_ratios))
    start = time.perf_counter()
    model.analyze_sensitivity(eval_ds, batch_size=args.batch_size,
                              save_dir=os.path.join(args.work_dir, "sensitivity"))
    notes.append(f"sensitivity analysis: {time.perf_counter() - start:.0f} s "
                 f"(ratios {list(segmenter.SENSITIVITY_RATIOS)})")
    model.prune(pruned_flops=PRUNED_FLOPS)
    measured = model.pruning["pruned_flops_measured"]
    before_ft = model.evaluate(eval_ds)["miou"]
    notes.append(f"prune({PRUNED_FLOPS}): {measured:.1%} of FLOPs removed at "
                 f"{model.pruning['input_shape']}; mIoU right after pruning {100 * before_ft:.2f}")
    model.train(num_epochs=args.finetune_epochs, train_dataset=train_ds, eval_dataset=eval_ds,
                train_batch_size=args.batch_size, pretrain_weights=None,
                learning_rate=args.finetune_lr or args.lr,
                save_interval_epochs=args.finetune_epochs, log_interval_steps=10,
                save_dir=os.path.join(args.work_dir, "train_pruned"), use_vdl=False)
    model.save(os.path.join(args.work_dir, "pruned_model"))
    return model


def quant_aware(args, source_dir, name, train_ds, eval_ds):
    model = seg.load_model(source_dir)
    model.quant_aware_train(num_epochs=args.qat_epochs, train_dataset=train_ds, eval_dataset=eval_ds,
                            train_batch_size=args.batch_size, learning_rate=args.qat_lr,
                            save_interval_epochs=args.qat_epochs, log_interval_steps=10,
                            save_dir=os.path.join(args.work_dir, f"train_{name}"), use_vdl=False)
    return model


def measure(args, name, model, eval_ds, float_flops=None):
    """The row of one stage (without latency) and the Predictor of its export."""
    print(f"== {name}: evaluating and exporting", flush=True)
    row = {"stage": name, "status": model.status}
    row["miou"] = model.evaluate(eval_ds)["miou"]
    row["params"] = count_params(model.net)
    row["flops"] = measure_flops(model.net, args.size)
    if model.status == "Quantized" and float_flops is not None:
        row["flops_note"] = "of the network it quantizes"
        row["flops"] = float_flops
    export_dir = model.export(os.path.join(args.work_dir, f"export_{name}"),
                              fixed_input_shape=[args.size, args.size])
    row["bytes"] = exported_bytes(export_dir)
    predictor = Predictor(export_dir, use_mkl=True, cpu_thread_num=args.threads,
                          mkl_thread_num=args.threads)
    row["miou_deployed"] = predictor_miou(predictor, eval_ds, model.num_classes)
    print(f"   {json.dumps(row)}", flush=True)
    return row, predictor


# === Report ===

def format_table(rows):
    base = rows[0]
    head = ("| stage | mIoU (in-process) | mIoU (exported, Predictor) | Δ deployed mIoU (points) "
            "| parameters | FLOPs (G) | exported size (MB) | latency, network (ms) | speed-up "
            "| latency, end to end (ms) |")
    lines = [head, "|" + "---|" * head.count(" | ") + "---|"]
    for r in rows:
        flops = "n/a" if r["flops"] is None else f"{r['flops'] / 1e9:.3f}"
        if r.get("flops_note"):
            flops += "*"
        lines.append(
            f"| {r['stage']} | {100 * r['miou']:.2f} | {100 * r['miou_deployed']:.2f} "
            f"| {100 * (r['miou_deployed'] - base['miou_deployed']):+.2f} | {r['params']:,} "
            f"| {flops} | {r['bytes'] / 2**20:.2f} | {r['ms_net']:.1f} "
            f"| {base['ms_net'] / r['ms_net']:.2f}x | {r['ms_total']:.1f} |")
    return "\n".join(lines)


def environment():
    from importlib.metadata import version
    return (f"{cpu_name()}, {os.cpu_count()} CPUs (load average {load_average():.1f} at the end); "
            f"Python {platform.python_version()}, "
            f"paddlepaddle {paddle.__version__}, paddleslim {version('paddleslim')}, "
            f"paddlex_seg {seg.__version__}; {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC")


def targets(rows):
    by_stage = {r["stage"]: r for r in rows}
    base = by_stage["float"]
    lines = []
    pruned = by_stage.get("pruned0.3+ft")
    if pruned:
        drop = 100 * (base["miou_deployed"] - pruned["miou_deployed"])
        lines.append(f"- prune(0.3) + fine-tune: deployed mIoU drop {drop:+.2f} points "
                     f"(target ≤ 1): {'met' if drop <= 1 else 'NOT met'}")
    qat = by_stage.get("qat_int8")
    if qat:
        drop = 100 * (base["miou_deployed"] - qat["miou_deployed"])
        speed = base["ms_net"] / qat["ms_net"]
        lines.append(f"- QAT int8: deployed mIoU drop {drop:+.2f} points (target ≤ 1): "
                     f"{'met' if drop <= 1 else 'NOT met'}; network latency {speed:.2f}x of float "
                     f"(target ≥ 1.5x): {'met' if speed >= 1.5 else 'NOT met'}")
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    paddle.seed(args.seed)
    np.random.seed(args.seed)
    os.makedirs(args.work_dir, exist_ok=True)
    start = time.perf_counter()
    train_ds, eval_ds = build_datasets(args)
    image = read_image(eval_ds.samples[0][0])  # the one input every latency is measured on
    notes = []

    float_model = train_float(args, train_ds, eval_ds)
    float_dir = args.float_model or os.path.join(args.work_dir, "float_model")
    measured = [measure(args, "float", float_model, eval_ds)]
    float_flops = measured[0][0]["flops"]

    pruned = prune_and_finetune(args, float_dir, train_ds, eval_ds, notes)
    measured.append(measure(args, "pruned0.3+ft", pruned, eval_ds))

    qat = quant_aware(args, float_dir, "qat_int8", train_ds, eval_ds)
    measured.append(measure(args, "qat_int8", qat, eval_ds, float_flops))
    if args.qat_pruned:
        qat_pruned = quant_aware(args, os.path.join(args.work_dir, "pruned_model"),
                                 "pruned_qat_int8", train_ds, eval_ds)
        measured.append(measure(args, "pruned_qat_int8", qat_pruned, eval_ds,
                                measured[1][0]["flops"]))

    print(f"== latency: {len(measured)} exports in turn, {args.repeats} rounds", flush=True)
    rows = [row for row, _ in measured]
    timed = latencies([predictor for _, predictor in measured], image, args.warmup, args.repeats)
    for row, (row["ms_net"], row["ms_total"]) in zip(rows, timed):
        print(f"   {row['stage']}: network {row['ms_net']:.1f} ms, end to end {row['ms_total']:.1f} ms")

    elapsed = time.perf_counter() - start
    table = format_table(rows)
    command = "python " + " ".join([os.path.relpath(os.path.abspath(sys.argv[0]), REPO)] + sys.argv[1:])
    data = "synthetic (32 train / 8 val, 3 classes)" if args.data == "synthetic" else \
        f"{os.path.relpath(os.path.abspath(args.data), REPO)} ({len(train_ds.samples)} train / " \
        f"{len(eval_ds.samples)} val)"
    report = "\n".join([
        "# Compression benchmark (benchmarks/compress.py)", "",
        f"Command (from the repository root): `{command}`", "",
        f"Model {args.model}, data {data}, images resized to {args.size}x{args.size}; "
        + (f"float model reused from {args.float_model}, " if args.float_model else
           f"training {args.train_epochs} epochs (lr {args.lr}), ")
        + f"fine-tuning {args.finetune_epochs} "
        f"epochs (lr {args.finetune_lr or args.lr}), QAT {args.qat_epochs} epochs "
        f"(lr {args.qat_lr}), batch {args.batch_size}. "
        f"Latency: Paddle Inference on CPU with oneDNN (int8 kernels for quantized "
        f"models, fp32 otherwise), {args.threads} threads, the same {args.size}x{args.size} "
        f"input, median of {args.repeats} runs after {args.warmup} warm-up runs, the exports "
        f"taking turns run by run.", "",
        f"Machine: {environment()}. Total run time {elapsed / 60:.1f} min.", "",
        table, "",
        "mIoU (exported) is computed from the Predictor's label maps at the val images' own "
        "size; Δ is against the float export. FLOPs at 1x3x{0}x{0}; * = FLOPs of the float "
        "network the quantized model runs (int8 does not change the count). Exported size: "
        "model.pdmodel + model.pdiparams.".format(args.size), "",
        "Targets:", targets(rows), "",
        "Notes:", *[f"- {n}" for n in notes], ""])
    print("\n" + table + "\n\n" + targets(rows) + "\n" + "\n".join(notes), flush=True)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        f.write(report)
    print(f"\nWritten to {args.out}")


if __name__ == "__main__":
    main()
