"""Deploy backends x precisions x models: latency, GFLOP/s against this CPU's peak, and mIoU.

For each model class (FastSCNN, BiSeNetV2, UNet, HRNet, DeepLabV3P-ResNet50_vd,
DeepLabV3P-ResNet18_vd):

1. a model is trained from scratch on the 24 ISBI 2012 membrane training slices (random
   256² crops of the full-resolution 512² slices with flips; the membranes are 1-3 pixels
   wide, and resized slices lose them), for the epochs ``MODELS`` gives it (about 50
   minutes for all six on 2 cores; kept in ``--cache_dir`` and reused by later runs);
2. it is exported at 512² for accuracy and at the model's deployment size (``--size`` or
   the issue's: 512, UNet 256) for latency (one export when the two are equal), each with
   its PTQ int8 files (``model.quantize``, calibrated on ``--ptq_batches`` training slices);
3. accuracy: ``paddlex_seg.deploy.check`` on the 6 whole validation slices gives every
   backend/precision's mIoU and its loss against Paddle fp32;
4. latency: every backend/precision is loaded on the same exported graph, same input,
   ``--threads`` threads; rounds interleave the choices (one run each per round, after
   warm-up) and the table gives medians of ``--rounds`` rounds;
5. the default: those figures (mIoU loss from 3., latency from 4.) are recorded in the
   latency export's model.yml as ``deploy.check`` records them, and ``Predictor(model_dir)``
   with no backend or precision given (what it picks never loses more than 0.5 mIoU
   points) is timed against the fastest choice of the table, interleaved again, in
   ``--rounds`` rounds: the "default / fastest" figure.

GFLOP/s = 2 x multiply-accumulates of the convolutions and linear layers (counted with
forward hooks at the deployment size) / latency. The peak it is set against is measured:
the best fp32 GEMM rate of NumPy's BLAS (2048² x 2048², ``--threads`` threads), what this
CPU sustains on the densest fp32 work; pass ``--ghz`` and ``--flop_per_cycle`` to use a
theoretical peak (cores x GHz x FLOP/cycle) instead. bf16 and int8 rows can exceed 100%:
their peak is higher than fp32's.

    python benchmarks/deploy_backends.py                               # all six models, ~20 min on 2 cores once trained
    python benchmarks/deploy_backends.py --models FastSCNN UNet --rounds 10
    python benchmarks/deploy_backends.py --markdown benchmarks/RESULTS.md
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
# name: (builder, deployment size, training epochs: fewer for the slow networks)
MODELS = {
    "FastSCNN": (lambda n: seg.FastSCNN(num_classes=n), 512, 60),
    "BiSeNetV2": (lambda n: seg.BiSeNetV2(num_classes=n), 512, 40),
    "UNet": (lambda n: seg.UNet(num_classes=n), 256, 12),
    "HRNet_W18": (lambda n: seg.HRNet(num_classes=n, width=18), 512, 25),
    "DeepLabV3P-R50": (lambda n: seg.DeepLabV3P(num_classes=n, backbone="ResNet50_vd"), 512, 8),
    "DeepLabV3P-R18": (lambda n: seg.DeepLabV3P(num_classes=n, backbone="ResNet18_vd"), 512, 15),
}
ACC_SIZE = 512   # the validation slices' own size


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--data", default=DEFAULT_DATA)
    p.add_argument("--cache_dir", default=os.path.join(REPO, "output", "deploy_backends"))
    p.add_argument("--size", type=int, default=None, help="deployment size for all models (default: 512, UNet 256)")
    p.add_argument("--crop_size", type=int, default=256, help="training crops")
    p.add_argument("--epoch_scale", type=float, default=1.0, help="multiplies each model's epochs")
    p.add_argument("--learning_rate", type=float, default=0.05)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--ptq_batches", type=int, default=8)
    p.add_argument("--ghz", type=float, default=None,
                   help="CPU clock for a theoretical peak (default: the measured fp32 GEMM peak)")
    p.add_argument("--flop_per_cycle", type=int, default=64,
                   help="fp32 FLOP per cycle per core of the theoretical peak (two AVX-512 FMA units: 64)")
    p.add_argument("--markdown", default=None, help="also append the table to this file")
    p.add_argument("--json", default=None, help="write the figures here")
    return p.parse_args(argv)


def measured_fp32_peak(threads, size=2048, repeats=5):
    """Best GFLOP/s of an fp32 matrix product through NumPy's BLAS on ``threads`` threads."""
    from threadpoolctl import threadpool_limits
    rng = np.random.RandomState(0)
    a, b = rng.rand(size, size).astype("float32"), rng.rand(size, size).astype("float32")
    best = float("inf")
    with threadpool_limits(limits=threads):
        a @ b
        for _ in range(repeats):
            start = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - start)
    return 2 * size ** 3 / best / 1e9


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


def epochs_of(name, args):
    return max(1, round(MODELS[name][2] * args.epoch_scale))


def trained_model(name, args, train_ds, eval_ds):
    epochs = epochs_of(name, args)
    best = os.path.join(args.cache_dir, name, f"crop{args.crop_size}_e{epochs}_lr{args.learning_rate}",
                        "best_model")
    if os.path.isfile(os.path.join(best, "model.yml")):
        return seg.load_model(best)
    model = MODELS[name][0](len(train_ds.labels))
    model.train(num_epochs=epochs, train_dataset=train_ds, eval_dataset=eval_ds,
                train_batch_size=4, pretrain_weights=None, learning_rate=args.learning_rate,
                save_interval_epochs=max(1, epochs // 4), log_interval_steps=1000,
                save_dir=os.path.dirname(best), use_vdl=False)
    return seg.load_model(best)


def time_choices(model_dir, choices, args):
    """Median inference ms per choice; a choice is (backend, precision), or "default"
    (``Predictor(model_dir)`` with no backend or precision given)."""
    rng = np.random.RandomState(0)
    predictors = {}
    for choice in choices:
        chosen = {} if choice == "default" else dict(backend=choice[0], precision=choice[1])
        predictors[choice] = Predictor(model_dir, mkl_thread_num=args.threads,
                                       cpu_thread_num=args.threads, **chosen)
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
    acc_dir = os.path.join(base, f"acc{ACC_SIZE}")
    lat_dir = os.path.join(base, f"lat{size}") if size != ACC_SIZE else acc_dir
    calibration = train_ds_at(args, ACC_SIZE)
    model.eval_transforms = T.Compose([T.Resize([ACC_SIZE, ACC_SIZE]), T.Normalize()])
    model.quantize(calibration, acc_dir, batch_nums=args.ptq_batches,
                   fixed_input_shape=[ACC_SIZE, ACC_SIZE])
    if lat_dir != acc_dir:
        model.eval_transforms = T.Compose([T.Resize([size, size]), T.Normalize()])
        model.quantize(train_ds_at(args, size), lat_dir, batch_nums=args.ptq_batches,
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
    # What deploy.check would record at the deployment size: the accuracy figures of the
    # training size and the latency just measured. Then the real default Predictor.
    combined = {"/".join(c): dict(figures["/".join(c)], latency_ms=round(latency[c], 3)) for c in choices}
    _record_checks(lat_dir, combined)
    default = Predictor(lat_dir, mkl_thread_num=args.threads, cpu_thread_num=args.threads)
    auto = (default.backend, default.precision)
    fastest = min(choices, key=lambda c: latency[c])
    duel = time_choices(lat_dir, ["default", fastest], args)
    for row in rows:
        row["auto"] = (row["backend"], row["precision"]) == auto
        row["default_over_fastest"] = duel["default"] / duel[fastest]
        row["fastest"] = "/".join(fastest)
    return rows, 2 * macs / 1e9


def _record_checks(model_dir, checks):
    import yaml
    path = os.path.join(model_dir, "model.yml")
    with open(path, encoding="utf-8") as f:
        info = yaml.safe_load(f)
    info["Export"]["checks"] = checks
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(info, f, sort_keys=False)


_DS_CACHE = {}


def train_ds_at(args, size):
    if size not in _DS_CACHE:
        tf = T.Compose([T.Resize([size, size]), T.Normalize()])
        _DS_CACHE[size] = seg.SegDataset(args.data, os.path.join(args.data, "train.txt"),
                                         os.path.join(args.data, "labels.txt"), transforms=tf)
    return _DS_CACHE[size]


def table(rows, gflop):
    lines = ["| model, input | backend | precision | latency ms (median) | GFLOP/s | % of fp32 peak | mIoU | loss vs Paddle fp32 | label agreement | default |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        default = (f"**default** ({r['default_over_fastest']:.2f}× the fastest, {r['fastest']}, "
                   "side by side)" if r["auto"] else "")
        lines.append(f"| {r['model']} {r['size']}² ({gflop[r['model']]:.1f} GFLOP) | {r['backend']} | {r['precision']} | "
                     f"{r['latency_ms']:.1f} | {r['gflops']:.1f} | {r['peak_pct']:.0f}% | {r['miou']:.2f} | "
                     f"{r['miou_loss']:+.2f} | {100 * r['agreement']:.2f}% | {default} |")
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    if args.ghz:
        peak = args.threads * args.ghz * args.flop_per_cycle
        peak_text = (f"fp32 peak = {args.threads} cores x {args.ghz:.2f} GHz x {args.flop_per_cycle} "
                     f"FLOP/cycle = {peak:.0f} GFLOP/s")
    else:
        peak = measured_fp32_peak(args.threads)
        peak_text = (f"fp32 peak = NumPy's fp32 GEMM, 2048², {args.threads} threads, measured "
                     f"{peak:.0f} GFLOP/s")
    start = time.perf_counter()
    train_tf = T.Compose([T.RandomPaddingCrop(crop_size=args.crop_size), T.RandomHorizontalFlip(),
                          T.RandomVerticalFlip(), T.Normalize()])
    eval_tf = T.Compose([T.Normalize()])
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
              f"whole validation membrane slices ({ACC_SIZE}²) of models trained from scratch on "
              f"{args.crop_size}² crops of the 24 training slices ("
              + ", ".join(f"{n} {epochs_of(n, args)} epochs" for n in args.models)
              + f", lr {args.learning_rate}); {peak_text}; "
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
