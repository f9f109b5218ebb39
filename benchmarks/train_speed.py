"""Training speed: paddlex_seg's engine against a plain PaddleSeg 2.8 loop.

For each model, the same synthetic images (one SegDataset-style file list, not
shuffled, only Normalize) are trained on twice in this one process:

* ours: ``model.train`` (the real Trainer: loss check, LR schedule, logging every
  step), timed by wrapping ``Trainer._train_step`` to stamp the end of each step;
* theirs: PaddleSeg's network and CrossEntropyLoss, Momentum(0.9) with L2 decay
  and PolynomialDecay, a ``paddle.io.DataLoader`` over the same files with
  ``paddleseg.transforms.Normalize``, and a plain forward/loss/backward/step loop
  (``paddleseg.core.train`` breaks on Paddle 2.6 when it logs).

A step's time is the gap between the ends of two consecutive steps, so it
includes waiting for the batch. The first ``--warmup`` steps are not counted.
Ours and theirs take turns model by model (the order alternates) so that load on
the shared machine hits both alike; with ``--repeats N`` each model is trained N
times per side in mirrored pairs (ours, theirs, theirs, ours, ...), which also
cancels load that rises or falls steadily during a model's runs, and the table
gives the median over all measured steps of each side.

This script is a benchmark, not part of the package: it imports paddleseg.

    python benchmarks/train_speed.py --size 128 --batch 2 --warmup 3 --steps 5
"""
import argparse
import os
import platform
import statistics
import sys
import tempfile
import time

import cv2
import numpy as np
import paddle

import paddlex_seg as seg
from paddlex_seg import transforms as T
from paddlex_seg.engine import train as engine_train
from machine_info import cpu_name  # benchmarks/machine_info.py

MODELS = ("DeepLabV3P", "BiSeNetV2", "UNet", "HRNet_W18", "FastSCNN")


# === ours ===
def build_ours(name, num_classes):
    if name == "DeepLabV3P":
        return seg.DeepLabV3P(num_classes=num_classes, backbone="ResNet50_vd", output_stride=8)
    if name == "HRNet_W18":
        return seg.HRNet(num_classes=num_classes, width=18)
    return getattr(seg, name)(num_classes=num_classes)


def time_ours(name, data, args, work_dir):
    """End-of-step timestamps of one model.train epoch."""
    stamps = []
    original = engine_train.Trainer._train_step

    def stamped(self, images, labels):
        value = original(self, images, labels)
        stamps.append(time.perf_counter())
        return value

    paddle.seed(0)
    model = build_ours(name, args.num_classes)
    train_ds = seg.SegDataset(data.root, data.train_list, data.label_list,
                              transforms=T.Compose([T.Normalize()]), shuffle=False,
                              num_workers=args.num_workers)
    engine_train.Trainer._train_step = stamped
    try:
        model.train(num_epochs=1, train_dataset=train_ds, train_batch_size=args.batch,
                    pretrain_weights=None, log_interval_steps=1, use_vdl=False,
                    save_dir=os.path.join(work_dir, f"ours_{name}"), learning_rate=0.01)
    finally:
        engine_train.Trainer._train_step = original
    return stamps


# === theirs ===
def build_theirs(name, num_classes):
    import paddleseg.models as psm
    from paddleseg.models import backbones
    if name == "DeepLabV3P":
        # aspp_ratios as paddlex_seg's OS-8 default (PaddleSeg's OS-8 configs use the same).
        net = psm.DeepLabV3P(num_classes=num_classes,
                             backbone=backbones.ResNet50_vd(output_stride=8),
                             aspp_ratios=(1, 12, 24, 36))
        return net, (1.0,)
    if name == "BiSeNetV2":
        return psm.BiSeNetV2(num_classes=num_classes), (1.0,) * 5
    if name == "UNet":
        return psm.UNet(num_classes=num_classes), (1.0,)
    if name == "HRNet_W18":
        return psm.FCN(num_classes=num_classes, backbone=backbones.HRNet_W18()), (1.0,)
    if name == "FastSCNN":
        return psm.FastSCNN(num_classes=num_classes), (1.0, 0.4)
    raise ValueError(f"unknown model {name!r}")


class TheirFiles(paddle.io.Dataset):
    """The same (image, label) files, read and normalised by paddleseg.transforms."""

    def __init__(self, root, list_file):
        import paddleseg.transforms as pst
        self.compose = pst.Compose([pst.Normalize()])
        with open(list_file) as f:
            pairs = [line.split() for line in f if line.strip()]
        self.pairs = [(os.path.join(root, a), os.path.join(root, b)) for a, b in pairs]

    def __len__(self):
        return len(self.pairs)

    def __getitem__(self, index):
        image, label = self.pairs[index]
        data = self.compose({"img": image, "label": label, "gt_fields": ["label"]})
        # uint8 through the loader, cast in the step: what paddleseg.core.train does.
        return data["img"].astype("float32"), data["label"]


def time_theirs(name, data, args):
    from paddleseg.models.losses import CrossEntropyLoss

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "tests"))
    from oracle import Paddle2Promotion  # PaddleSeg 2.8's loss multiplies int64 by float32
    paddle.seed(0)
    net, coefs = build_theirs(name, args.num_classes)
    ds = TheirFiles(data.root, data.train_list)
    loader = paddle.io.DataLoader(ds, batch_size=args.batch, shuffle=False, drop_last=True,
                                  num_workers=args.num_workers, return_list=True)
    schedule = paddle.optimizer.lr.PolynomialDecay(0.01, decay_steps=len(loader), end_lr=0.0,
                                                   power=0.9)
    opt = paddle.optimizer.Momentum(schedule, momentum=0.9, parameters=net.parameters(),
                                    weight_decay=paddle.regularizer.L2Decay(4e-5))
    criterion = Paddle2Promotion(CrossEntropyLoss())
    net.train()
    stamps = []
    for images, labels in loader:
        labels = labels.astype("int64")
        logits = net(images)
        loss = sum(c * criterion(x, labels) for c, x in zip(coefs, logits))
        loss.backward()
        opt.step()
        opt.clear_grad()
        schedule.step()
        stamps.append(time.perf_counter())
    return stamps


# === driver ===
def step_times(stamps, warmup):
    return [b - a for a, b in zip(stamps[warmup - 1:], stamps[warmup:])]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=3, help="steps not counted (>= 1)")
    parser.add_argument("--steps", type=int, default=5, help="steps measured")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--repeats", type=int, default=1,
                        help="runs per side and model, in mirrored order (ours theirs theirs ours ...)")
    parser.add_argument("--num_classes", type=int, default=3)
    parser.add_argument("--num_workers", type=int, default=None,
                        help="DataLoader workers for both (default: SegDataset's 'auto')")
    parser.add_argument("--work_dir", default=None)
    args = parser.parse_args()
    if args.warmup < 1 or args.steps < 1 or args.repeats < 1:
        parser.error("--warmup, --steps and --repeats must be >= 1")
    if args.num_workers is None:
        args.num_workers = seg.data.dataset.resolve_num_workers("auto")
    paddle.set_device("cpu")
    import paddleseg

    work_dir = args.work_dir or tempfile.mkdtemp(prefix="train_speed_")
    num_steps = args.warmup + args.steps
    data = seg.make_synthetic_dataset(os.path.join(work_dir, "data"),
                                      num_train=num_steps * args.batch, num_val=1,
                                      image_size=(args.size, args.size),
                                      num_classes=args.num_classes)
    started = time.time()
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {cpu_name()}, "
          f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}; Python {platform.python_version()}, "
          f"paddlepaddle {paddle.__version__}, paddleseg {paddleseg.__version__}, "
          f"paddlex_seg {getattr(seg, '__version__', '?')}, opencv {cv2.__version__}, "
          f"numpy {np.__version__}")
    print(f"# size {args.size}, batch {args.batch}, {args.warmup} warm-up + {args.steps} "
          f"measured steps, {args.repeats} run(s) per side, num_workers {args.num_workers}; command: "
          f"python {' '.join(sys.argv)}", flush=True)

    rows = []
    for i, name in enumerate(args.models):
        runs = {"ours": [], "theirs": []}
        pair = ("ours", "theirs") if i % 2 == 0 else ("theirs", "ours")
        order = [who for r in range(args.repeats) for who in (pair if r % 2 == 0 else pair[::-1])]
        for who in order:
            t0 = time.time()
            stamps = (time_ours(name, data, args, work_dir) if who == "ours"
                      else time_theirs(name, data, args))
            if len(stamps) != num_steps:
                raise RuntimeError(f"{who} {name}: {len(stamps)} steps, expected {num_steps}")
            runs[who] += step_times(stamps, args.warmup)
            print(f"# {name} {who}: steps {['%.3f' % t for t in runs[who][-args.steps:]]} s "
                  f"(run {time.time() - t0:.0f} s, load {os.getloadavg()[0]:.1f})", flush=True)
        ours = statistics.median(runs["ours"])
        theirs = statistics.median(runs["theirs"])
        rows.append((name, ours, theirs, args.batch / ours, args.batch / theirs, ours / theirs))

    print()
    print("| model | ours s/step | PaddleSeg s/step | ours img/s | PaddleSeg img/s | ours/PaddleSeg |")
    print("|---|---|---|---|---|---|")
    for name, o, t, oi, ti, r in rows:
        print(f"| {name} | {o:.3f} | {t:.3f} | {oi:.2f} | {ti:.2f} | {r:.2f} |")
    print(f"\n# median of {args.steps * args.repeats} steps per side; total {time.time() - started:.0f} s; "
          f"load {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
