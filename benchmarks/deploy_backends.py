"""Deploy backends x precisions x models: latency, GFLOP/s against this CPU's peak, and mIoU.

For each model class (FastSCNN, BiSeNetV2, UNet, HRNet, DeepLabV3P-ResNet50_vd,
DeepLabV3P-ResNet18_vd):

1. a model is trained briefly on the ISBI 2012 membrane slices at ``--train_size``
   (kept in ``--cache_dir``, reused by later runs);
2. it is exported twice with the same weights: at ``--train_size`` for accuracy, and at
   the model's deployment size (``--size`` or the issue's: 512, UNet 256) for latency;
   both get a PTQ int8 file (``model.quantize``, calibrated on the training slices);
3. accuracy: ``paddlex_seg.deploy.check`` on the validation slices gives every
   backend/precision's mIoU and its loss against Paddle fp32;
4. latency: every backend/precision is loaded on the same exported graph, same input,
   ``--threads`` threads; rounds interleave the choices (one run each per round, after
   warm-up) and the table gives medians of ``--rounds`` rounds. The ``auto`` row is what
   ``Predictor(backend='auto')`` picks given those figures (it never takes a choice losing
   more than 0.5 mIoU points).

GFLOP/s = 2 x multiply-accumulates of the convolutions and linear layers (counted with
forward hooks at the deployment size) / latency. Peak of this CPU (fp32):
``cores x GHz x FLOP/cycle``; FLOP/cycle per core is 32 on AMD Zen 4 (AVX-512 executed
on two 256-bit FMA pipes: 2 x 8 lanes x 2 FLOP), 64 on Intel with two 512-bit FMA
units or Zen 5. Pass ``--ghz`` and ``--flop_per_cycle`` for another CPU.

    python benchmarks/deploy_backends.py                               # all six models, ~15 min on 2 cores once trained
    python benchmarks/deploy_backends.py --models FastSCNN UNet --rounds 10
    python benchmarks/deploy_backends.py --train_epochs 20 --markdown benchmarks/RESULTS.md
"""
import argparse
import datetime
import json
import os
import statistics
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import paddle  # noqa: E402

import paddlex_seg as seg  # noqa: E402
from paddlex_seg import transforms as T  # noqa: E402
from paddlex_seg.deploy import Predictor, backends, check  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from machine_info import cpu_name, load_average  # noqa: E402

DEFAULT_DATA = os.path.normpath(os.path.join(REPO, "..", "shared", "data", "isbi_membrane"))
MODELS = {
    "FastSCNN": (lambda n: seg.FastSCNN(num_classes=n), 512),
    "BiSeNetV2": (lambda n: seg.BiSeNetV2(num_classes=n), 512),
    "UNet": (lambda n: seg.UNet(num_classes=n), 256),
    "HRNet_W18": (lambda n: seg.HRNet(num_classes=n, width=18), 512),
    "DeepLabV3P-R50": (lambda n: seg.DeepLabV3P(num_classes=n, backbone="ResNet50_vd"), 512),
    "DeepLabV3P-R18": (lambda n: seg.DeepLabV3P(num_classes=n, backbone="ResNet18_vd"), 512),
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--data", default=DEFAULT_DATA)
    p.add_argument("--cache_dir", default=os.path.join(REPO, "output", "deploy_backends"))
    p.add_argument("--size", type=int, default=None, help="deployment size for all models (default: 512, UNet 256)")
    p.add_argument("--train_size", type=int, default=128)
    p.add_argument("--train_epochs", type=int, default=4)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--ptq_batches", type=int, default=8)
    p.add_argument("--ghz", type=float, default=None, help="CPU clock for the peak (default: /proc/cpuinfo MHz)")
    p.add_argument("--flop_per_cycle", type=int, default=32, help="fp32 FLOP per cycle per core (Zen 4: 32)")
    p.add_argument("--markdown", default=None, help="also append the table to this file")
    p.add_argument("--json", default=None, help="write the figures here")
    return p.parse_args(argv)


def cpu_ghz():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("cpu MHz"):
                    return float(line.split(":")[1]) / 1000.0
    except OSError:
        pass
    return float("nan")


def count_macs(net, size):
    """Multiply-accumulates of Conv2D / Conv2DTranspose / Linear for one 3 x size x size image."""
    total = [0]

    def hook(layer, inputs, output):
        out = output[0] if isinstance(output, (list, tuple)) else output
        if isinstance(layer, paddle.nn.Linear):
            total[0] += int(np.prod(out.shape)) * layer.weight.shape[0]
        elif isinstance(layer, paddle.nn.Conv2DTranspose):
            w = layer.weight.shape  # (Cin, Cout/groups, kh, kw)
            total[0] += int(np.prod(inputs[0].shape)) * w[1] * w[2] * w[3]
        else:
            w = layer.weight.shape  # (Cout, Cin/groups, kh, kw)
            total[0] += int(np.prod(out.shape)) * w[1] * w[2] * w[3]

    hooks = [layer.register_forward_post_hook(hook) for layer in net.sublayers()
             if isinstance(layer, (paddle.nn.Conv2D, paddle.nn.Conv2DTranspose, paddle.nn.Linear))]
    net.eval()
    with paddle.no_grad():
        net(paddle.zeros([1, 3, size, size]))
    for h in hooks:
        h.remove()
    return total[0]


def trained_model(name, args, train_ds, eval_ds):
    best = os.path.join(args.cache_dir, name, f"train{args.train_size}_e{args.train_epochs}", "best_model")
    if os.path.isfile(os.path.join(best, "model.yml")):
        return seg.load_model(best)
    model = MODELS[name][0](len(train_ds.labels))
    model.train(num_epochs=args.train_epochs, train_dataset=train_ds, eval_dataset=eval_ds,
                train_batch_size=4, pretrain_weights=None, learning_rate=0.01,
                save_interval_epochs=args.train_epochs, log_interval_steps=100,
                save_dir=os.path.dirname(best), use_vdl=False)
    return seg.load_model(best)


def time_choices(model_dir, choices, args):
    rng = np.random.RandomState(0)
    predictors = {}
    for choice in choices:
        predictors[choice] = Predictor(model_dir, backend=choice[0], precision=choice[1],
                                       mkl_thread_num=args.threads, cpu_thread_num=args.threads)
    size = predictors[choices[0]].input_shape[2]
    image = (rng.rand(size, size, 3) * 255).astype("uint8")
    for predictor in predictors.values():
        predictor.predict(image, warmup_iters=args.warmup, aug=False)
    times = {choice: [] for choice in choices}
    for _ in range(args.rounds):  # interleaved: one run of each choice per round
        for choice, predictor in predictors.items():
            predictor.predict(image, aug=False)
            times[choice].append(predictor.timings["inference"])
    return {choice: statistics.median(values) for choice, values in times.items()}


def run_model(name, args, train_ds, eval_ds, peak):
    model = trained_model(name, args, train_ds, eval_ds)
    size = args.size or MODELS[name][1]
    base = os.path.join(args.cache_dir, name)
    # FastSCNN's 6x6 pyramid pooling converts to ONNX from 192² up (see deploy/export.py).
    acc_size = max(args.train_size, 192) if name == "FastSCNN" else args.train_size
    acc_dir = os.path.join(base, f"acc{acc_size}")
    lat_dir = os.path.join(base, f"lat{size}")
    # Both exports first: a Paddle export after the runtimes ran in this process crashed.
    model.quantize(train_ds, acc_dir, batch_nums=args.ptq_batches,
                   fixed_input_shape=[acc_size, acc_size])
    model.eval_transforms = T.Compose([T.Resize([size, size]), T.Normalize()])
    model.quantize(train_ds_at(args, size), lat_dir, batch_nums=min(args.ptq_batches, 4),
                   fixed_input_shape=[size, size])
    macs = count_macs(model.net, size)
    figures = check(acc_dir, eval_ds, repeats=1, threads=args.threads)
    choices = [tuple(key.split("/")) for key in figures]
    latency = time_choices(lat_dir, choices, args)
    rows = []
    for choice in choices:
        key = "/".join(choice)
        gflops = 2 * macs / (latency[choice] / 1000.0) / 1e9
        rows.append(dict(model=name, size=size, backend=choice[0], precision=choice[1],
                         latency_ms=latency[choice], gflops=gflops, peak_pct=100 * gflops / peak,
                         miou=figures[key]["miou"], miou_loss=figures[key]["miou_loss"],
                         agreement=figures[key]["agreement"]))
    combined = {"/".join(c): {"latency_ms": latency[c], "miou_loss": figures["/".join(c)]["miou_loss"]}
                for c in choices}
    auto = backends.choose(lat_dir, {"model_status": "Normal", "model_file": "model.pdmodel",
                                     "checks": combined})
    for row in rows:
        row["auto"] = (row["backend"], row["precision"]) == auto
    return rows, 2 * macs / 1e9


_DS_CACHE = {}


def train_ds_at(args, size):
    if size not in _DS_CACHE:
        tf = T.Compose([T.Resize([size, size]), T.Normalize()])
        _DS_CACHE[size] = seg.SegDataset(args.data, os.path.join(args.data, "train.txt"),
                                         os.path.join(args.data, "labels.txt"), transforms=tf)
    return _DS_CACHE[size]


def table(rows, gflop):
    lines = ["| model, input | backend | precision | latency ms (median) | GFLOP/s | % of fp32 peak | mIoU | loss vs Paddle fp32 | label agreement | auto |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} {r['size']}² ({gflop[r['model']]:.1f} GFLOP) | {r['backend']} | {r['precision']} | "
                     f"{r['latency_ms']:.1f} | {r['gflops']:.1f} | {r['peak_pct']:.0f}% | {r['miou']:.2f} | "
                     f"{r['miou_loss']:+.2f} | {100 * r['agreement']:.2f}% | {'**auto**' if r['auto'] else ''} |")
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    ghz = args.ghz or cpu_ghz()
    peak = args.threads * ghz * args.flop_per_cycle
    start = time.perf_counter()
    train_tf = T.Compose([T.Resize([args.train_size, args.train_size]), T.RandomHorizontalFlip(),
                          T.Normalize()])
    eval_tf = T.Compose([T.Resize([args.train_size, args.train_size]), T.Normalize()])
    train_ds = seg.SegDataset(args.data, os.path.join(args.data, "train.txt"),
                              os.path.join(args.data, "labels.txt"), transforms=train_tf, shuffle=True)
    eval_ds = seg.SegDataset(args.data, os.path.join(args.data, "val.txt"),
                             os.path.join(args.data, "labels.txt"), transforms=eval_tf)
    rows, gflop = [], {}
    for name in args.models:
        model_rows, gflop[name] = run_model(name, args, train_ds, eval_ds, peak)
        rows += model_rows
        print(table(model_rows, gflop), flush=True)
    header = (f"Deploy backends, {datetime.date.today()}: {cpu_name()}, {args.threads} threads, "
              f"Paddle {paddle.__version__}, load average {load_average():.1f}; medians of "
              f"{args.rounds} interleaved rounds after {args.warmup} warm-up runs; mIoU on the 6 "
              f"validation membrane slices at {args.train_size}² of a model trained "
              f"{args.train_epochs} epochs at {args.train_size}²; fp32 peak = {args.threads} cores x "
              f"{ghz:.2f} GHz x {args.flop_per_cycle} FLOP/cycle = {peak:.0f} GFLOP/s; "
              f"{(time.perf_counter() - start) / 60:.1f} min.")
    text = header + "\n\n" + table(rows, gflop) + "\n"
    print("\n" + text)
    if args.markdown:
        with open(args.markdown, "a", encoding="utf-8") as f:
            f.write("\n## Deploy backends (benchmarks/deploy_backends.py)\n\n" + text)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(header=header, rows=rows), f, indent=1)


if __name__ == "__main__":
    main()
