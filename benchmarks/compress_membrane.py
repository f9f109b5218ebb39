"""model.compress on the ISBI 2012 membrane slices: the pictures of docs/compression.md.

Trains a small float model on ``../shared/data/isbi_membrane`` (slices resized to
``--size``; or reuses ``--float_model``), runs ``model.compress`` on it, and copies the
report (report.md, sensitivity.png, tradeoff.png) into ``--docs_dir``
(default docs/images/compress_membrane/), with a README line saying how it was made.

    python benchmarks/compress_membrane.py     # DeepLabV3P, ResNet18_vd, 256 px: ~15 min on 2 shared cores
    python benchmarks/compress_membrane.py --float_model output/compress_membrane/float/best_model

A rerun with the same arguments reuses the float model and every complete stage in
``--work_dir`` (model.compress skips them), so only the latency is measured again.
"""
import argparse
import datetime
import json
import os
import platform
import shutil
import sys
import time

import numpy as np
import paddle

import paddlex_seg as seg
from paddlex_seg import transforms as T

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_DATA = os.path.normpath(os.path.join(REPO, "..", "shared", "data", "isbi_membrane"))
REPORT_FILES = ("report.md", "sensitivity.png", "tradeoff.png")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=DEFAULT_DATA, help="PaddleX-format data set (train.txt, val.txt, labels.txt)")
    p.add_argument("--model", default="DeepLabV3P", choices=("DeepLabV3P", "UNet", "FastSCNN", "BiSeNetV2"))
    p.add_argument("--backbone", default="ResNet18_vd", help="DeepLabV3P only")
    p.add_argument("--aspp_out_channels", type=int, default=64, help="DeepLabV3P only")
    p.add_argument("--output_stride", type=int, default=16, choices=(8, 16), help="DeepLabV3P only")
    p.add_argument("--size", type=int, default=256, help="slices are resized to size x size")
    p.add_argument("--train_epochs", type=int, default=20)
    p.add_argument("--learning_rate", type=float, default=0.05)
    p.add_argument("--pruned_flops", type=float, default=0.3)
    p.add_argument("--finetune_epochs", type=int, default=8)
    p.add_argument("--qat_epochs", type=int, default=2)
    p.add_argument("--batch_size", type=int, default=4)
    p.add_argument("--float_model", default=None, help="a saved float model to reuse instead of training")
    p.add_argument("--latency_repeats", type=int, default=20)
    p.add_argument("--work_dir", default=os.path.join(REPO, "output", "compress_membrane"))
    p.add_argument("--docs_dir", default=os.path.join(REPO, "docs", "images", "compress_membrane"))
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def datasets(args):
    root = os.path.abspath(args.data)
    lists = {name: os.path.join(root, f"{name}.txt") for name in ("train", "val", "labels")}
    resize = [T.Resize(target_size=args.size)]
    train_ds = seg.SegDataset(root, lists["train"], lists["labels"], shuffle=True, transforms=T.Compose(
        resize + [T.RandomHorizontalFlip(), T.RandomVerticalFlip(), T.Normalize()]))
    eval_ds = seg.SegDataset(root, lists["val"], lists["labels"], transforms=T.Compose(resize + [T.Normalize()]))
    return train_ds, eval_ds


def float_model(args, train_ds, eval_ds):
    """The float model and the minutes its training took (None: not known, given by the user)."""
    best = os.path.join(args.work_dir, "float", "best_model")
    minutes_file = os.path.join(args.work_dir, "float", "train_minutes.txt")
    path = args.float_model or (best if os.path.isdir(best) else None)
    if path:
        print(f"Reusing the float model in {path}", flush=True)
        minutes = None
        if path == best and os.path.isfile(minutes_file):
            with open(minutes_file) as f:
                minutes = float(f.read())
        return seg.load_model(path), minutes
    start = time.perf_counter()
    extra = ({"backbone": args.backbone, "aspp_out_channels": args.aspp_out_channels,
              "output_stride": args.output_stride} if args.model == "DeepLabV3P" else {})
    model = getattr(seg, args.model)(num_classes=len(train_ds.labels), **extra)
    model.train(num_epochs=args.train_epochs, train_dataset=train_ds, eval_dataset=eval_ds,
                train_batch_size=args.batch_size, pretrain_weights=None,
                learning_rate=args.learning_rate, save_interval_epochs=2, log_interval_steps=6,
                save_dir=os.path.join(args.work_dir, "float"), use_vdl=False)
    minutes = (time.perf_counter() - start) / 60
    with open(minutes_file, "w") as f:
        f.write(f"{minutes:.2f}\n")
    return seg.load_model(best), minutes


def read_stage_seconds(save_dir):
    from paddlex_seg.compress import COMPLETE_FILE, STAGE_DIRS
    for sub in STAGE_DIRS.values():
        path = os.path.join(save_dir, sub, COMPLETE_FILE)
        if os.path.isfile(path):
            with open(path) as f:
                yield json.load(f)["result"]["stage_seconds"]


def model_label(args):
    if args.model == "DeepLabV3P":
        return (f"DeepLabV3P ({args.backbone}, output stride {args.output_stride}, ASPP "
                f"{args.aspp_out_channels} channels)")
    return args.model


def main(argv=None):
    args = parse_args(argv)
    paddle.seed(args.seed)
    np.random.seed(args.seed)
    train_ds, eval_ds = datasets(args)
    model, train_minutes = float_model(args, train_ds, eval_ds)
    report = model.compress(
        train_ds, eval_ds, pruned_flops=args.pruned_flops, quant=True,
        finetune_epochs=args.finetune_epochs, qat_epochs=args.qat_epochs,
        save_dir=os.path.join(args.work_dir, "compress"), train_batch_size=args.batch_size,
        eval_batch_size=2, finetune_learning_rate=0.01, qat_learning_rate=0.0001,
        latency_threads=2, latency_warmup=3, latency_repeats=args.latency_repeats,
        log_interval_steps=6)
    # Stage times survive reruns in each stage's complete.json (report['stages'] and the sensitivity's).
    stage_minutes = sum(read_stage_seconds(report["save_dir"])) / 60
    os.makedirs(args.docs_dir, exist_ok=True)
    for name in REPORT_FILES:
        shutil.copyfile(os.path.join(report["save_dir"], name), os.path.join(args.docs_dir, name))
    command = "python " + " ".join([os.path.relpath(os.path.abspath(sys.argv[0]), REPO)] + sys.argv[1:])
    with open(os.path.join(args.docs_dir, "README.md"), "w", encoding="utf-8") as f:
        f.write(
            f"Made by `{command}` (from the repository root) on "
            f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC: {model_label(args)} trained "
            f"from scratch for {args.train_epochs} epochs on {len(train_ds.samples)} ISBI 2012 membrane "
            f"slices resized to {args.size}x{args.size}"
            + (f" ({train_minutes:.1f} min)" if train_minutes is not None else "")
            + f", then model.compress (pruned_flops={args.pruned_flops}, {args.finetune_epochs} "
            f"fine-tuning epochs, {args.qat_epochs} QAT epochs; stages "
            f"{stage_minutes:.1f} min, latency and report {report['seconds'] / 60:.1f} min in this "
            f"call). Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs "
            f"shared with other jobs, paddlepaddle {paddle.__version__}.\n")
    print(f"Copied {', '.join(REPORT_FILES)} to {args.docs_dir}")


if __name__ == "__main__":
    main()
