"""Test-time augmentation on the ISBI 2012 membrane data: mIoU and seconds per image.

Trains one small model on the membrane training slices (or loads a saved one with
``--model_dir``), then evaluates it on the validation slices plainly and with each
option of ``paddlex_seg.aug.TestTimeAug``: flips, multi-scale, sliding windows, and
flips + scales together. The slices (512x512) are resized to ``--size`` for the
network; training sees random ``--crop`` crops of them (after scale jitter 0.75-1.25
and flips), so sliding windows of the crop size show the network what it was trained on. mIoU is computed at the labels'
own 512x512 size (``model.evaluate``). Seconds per image: wall time of
``model.evaluate`` over the validation set divided by its size (reading and the
eval transforms included), on CPU.

    python benchmarks/aug_inference.py                   # ~5 min on 2 shared cores
    python benchmarks/aug_inference.py --model_dir output/aug_bench/model --out /tmp/R.md

The table is printed and written to ``--out`` (default
benchmarks/RESULTS_aug_inference.md) with the command, machine, versions and date.
"""
import argparse
import datetime
import logging
import os
import platform
import sys
import time

import numpy as np
import paddle

import paddlex_seg as seg
from paddlex_seg import transforms as T
from paddlex_seg.aug import TestTimeAug
from machine_info import cpu_name, load_average  # benchmarks/machine_info.py

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_DATA = os.path.normpath(os.path.join(HERE, "..", "..", "shared", "data", "isbi_membrane"))
DEFAULT_OUT = os.path.join(HERE, "RESULTS_aug_inference.md")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data_dir", default=DEFAULT_DATA, help=f"default {DEFAULT_DATA}")
    p.add_argument("--model_dir", default=None, help="a saved model to evaluate (skips training)")
    p.add_argument("--model", default="HRNet", choices=("HRNet", "UNet", "FastSCNN", "BiSeNetV2"))
    p.add_argument("--model_params", default="{width: 18_Small_V1}",
                   help="constructor arguments as a YAML mapping (default: the small HRNet)")
    p.add_argument("--size", type=int, default=256, help="slices are resized to size x size")
    p.add_argument("--crop", type=int, default=128, help="training crop (and sliding window) size")
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--batch_size", type=int, default=4)
    p.add_argument("--learning_rate", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work_dir", default="output/aug_bench", help="where the trained model is saved")
    p.add_argument("--out", default=DEFAULT_OUT, help="markdown file for the results")
    return p.parse_args(argv)


def augmentations(crop):
    """The rows of the table: (name, aug)."""
    stride = crop // 2
    return [
        ("plain", None),
        ("flip (h + v, 4 views)", TestTimeAug(flip_horizontal=True, flip_vertical=True)),
        ("multi-scale 0.75/1.0/1.25", TestTimeAug(scales=[0.75, 1.0, 1.25])),
        (f"sliding window {crop}x{crop}, stride {stride}",
         TestTimeAug(sliding_window=(crop, crop, stride, stride))),
        ("flip (h + v) + multi-scale (12 views)",
         TestTimeAug(flip_horizontal=True, flip_vertical=True, scales=[0.75, 1.0, 1.25])),
    ]


def datasets(args):
    d = args.data_dir
    labels = os.path.join(d, "labels.txt")
    # Scale jitter in training, as PaddleSeg's configs have: multi-scale inference
    # presumes a network that has seen objects at several sizes.
    train_tf = T.Compose([T.Resize(args.size), T.ResizeStepScaling(0.75, 1.25, 0.25),
                          T.RandomPaddingCrop(crop_size=args.crop),
                          T.RandomHorizontalFlip(), T.RandomVerticalFlip(), T.Normalize()])
    eval_tf = T.Compose([T.Resize(args.size), T.Normalize()])
    train_ds = seg.SegDataset(d, os.path.join(d, "train.txt"), labels, transforms=train_tf,
                              shuffle=True, num_workers=0)
    eval_ds = seg.SegDataset(d, os.path.join(d, "val.txt"), labels, transforms=eval_tf, num_workers=0)
    return train_ds, eval_ds


def trained_model(args, train_ds, eval_ds):
    import yaml
    if args.model_dir:
        return seg.load_model(args.model_dir), 0.0
    paddle.seed(args.seed)
    np.random.seed(args.seed)
    model = getattr(seg, args.model)(num_classes=len(train_ds.labels), **yaml.safe_load(args.model_params))
    start = time.time()
    model.train(num_epochs=args.epochs, train_dataset=train_ds, eval_dataset=eval_ds,
                train_batch_size=args.batch_size, learning_rate=args.learning_rate,
                pretrain_weights=None, save_dir=os.path.join(args.work_dir, "train"),
                save_interval_epochs=args.epochs, log_interval_steps=30, use_vdl=False)
    seconds = time.time() - start
    model.save(os.path.join(args.work_dir, "model"))
    return model, seconds


def measure(model, eval_ds, aug):
    start = time.perf_counter()
    metrics = model.evaluate(eval_ds, aug=aug)
    return metrics, (time.perf_counter() - start) / len(eval_ds)


def table(rows):
    base = rows[0]
    lines = ["| inference | views | mIoU | Δ mIoU (points) | membrane IoU | s / image | × plain time |",
             "|---|---|---|---|---|---|---|"]
    for name, aug, metrics, seconds in rows:
        views = 1 if aug is None else aug.num_views
        lines.append(f"| {name} | {views} | {100 * metrics['miou']:.2f} "
                     f"| {100 * (metrics['miou'] - base[2]['miou']):+.2f} "
                     f"| {100 * metrics['category_iou'][1]:.2f} | {seconds:.3f} "
                     f"| {seconds / base[3]:.1f}x |")
    return "\n".join(lines)


def environment():
    return (f"{cpu_name()}, {os.cpu_count()} CPUs (load average {load_average():.1f} at the end); "
            f"Python {platform.python_version()}, paddlepaddle {paddle.__version__}, "
            f"paddlex_seg {seg.__version__}; {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC")


def main(argv=None):
    args = parse_args(argv)
    started = time.time()
    train_ds, eval_ds = datasets(args)
    model, train_seconds = trained_model(args, train_ds, eval_ds)
    logging.getLogger("paddlex_seg").setLevel(logging.WARNING)
    model.evaluate(eval_ds)  # warm-up: oneDNN kernels and allocations
    rows = []
    for name, aug in augmentations(args.crop):
        metrics, seconds = measure(model, eval_ds, aug)
        rows.append((name, aug, metrics, seconds))
        print(f"{name}: mIoU {metrics['miou']:.4f}, {seconds:.3f} s/image", flush=True)
    text = table(rows)
    trained = (f"loaded from {args.model_dir}" if args.model_dir else
               f"{args.model} {args.model_params} trained from scratch for {args.epochs} epochs "
               f"(batch {args.batch_size}, lr {args.learning_rate}, seed {args.seed}) on random "
               f"{args.crop}x{args.crop} crops with scale jitter 0.75-1.25 and flips, in "
               f"{train_seconds / 60:.1f} min")
    report = "\n\n".join([
        "# Test-time augmentation on the membrane data (benchmarks/aug_inference.py)",
        "Command (from the repository root): `" + " ".join(
            ["python benchmarks/aug_inference.py"] + list(sys.argv[1:] if argv is None else argv)) + "`",
        f"Data: {args.data_dir} — {len(train_ds)} training / {len(eval_ds)} validation slices "
        f"of 512x512, resized to {args.size}x{args.size} for the network; mIoU over the 2 classes "
        f"(background, membrane) at the labels' own 512x512 size. Model: {trained}.",
        f"Seconds per image: wall time of `model.evaluate` over the {len(eval_ds)} validation "
        "slices divided by their number (reading, transforms, network, restoring), one image "
        "per forward pass, default window batch (4); CPU, after one warm-up evaluation.",
        f"Machine: {environment()}. Total run time {(time.time() - started) / 60:.1f} min.",
        text,
    ]) + "\n"
    print("\n" + text)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(report)
        print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
