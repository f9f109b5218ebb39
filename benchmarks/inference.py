"""Latency of exported models under Paddle Inference on CPU, ours beside PaddleSeg 2.8's.

For each model class the network is built with random weights (latency does not depend
on them), exported with ``model.export`` and run with ``paddle.inference`` (oneDNN,
``--threads`` threads). When PaddleSeg 2.8 is installed, its implementation of the same
network receives the same weights (the parameter keys are the same), is wrapped in the
same argmax + softmax output layer (``paddlex_seg.deploy.export.InferenceNet``) and
exported with ``paddle.jit.save``, so the two programs differ only in how the network
is written. Runs of the two alternate, so that a machine busy with other work slows
both alike. Latency is the median of ``--runs`` timed runs after ``--warmup`` runs.

Also printed: the largest score difference between our exported program and the
in-process network (``d_self``, at min(size, 128)), between the two exported programs
(``d_ps``), and whether the two programs hold the same operators, counted by type
(``same ops``; when True, both do the same work and a latency difference is noise).

    python benchmarks/inference.py                          # 512x512, batch 1 and 4, 10 runs
    python benchmarks/inference.py --size 256 --runs 5 --models UNet FastSCNN
"""
import argparse
import os
import statistics
import sys
import tempfile
import time

import numpy as np
import paddle

import paddlex_seg as seg
from paddlex_seg import transforms as T
from paddlex_seg.deploy.export import InferenceNet

MODELS = ("UNet", "FastSCNN", "BiSeNetV2", "HRNet", "DeepLabV3P")
NUM_CLASSES = 19


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=512, help="input height and width")
    p.add_argument("--batch_sizes", type=int, nargs="+", default=[1, 4])
    p.add_argument("--runs", type=int, default=10, help="timed runs (the median is reported)")
    p.add_argument("--warmup", type=int, default=3, help="untimed runs first")
    p.add_argument("--threads", type=int, default=2, help="CPU threads of Paddle Inference")
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    p.add_argument("--no_paddleseg", action="store_true", help="time ours only")
    p.add_argument("--work_dir", default=None, help="where the models are exported (default: temp)")
    return p.parse_args(argv)


# === Building the two versions of a network ===

def build_ours(name):
    kwargs = {"HRNet": {"width": 48}, "DeepLabV3P": {"backbone": "ResNet50_vd"}}.get(name, {})
    model = getattr(seg, name)(num_classes=NUM_CLASSES, **kwargs)
    _randomize_batch_norm(model.net)
    model.net.eval()
    model.eval_transforms = T.Compose([T.Normalize()])
    return model


def _randomize_batch_norm(net, seed=0):
    """Non-trivial BatchNorm statistics, so that the score comparisons mean something."""
    rng = np.random.RandomState(seed)
    for layer in net.sublayers():
        if isinstance(layer, paddle.nn.BatchNorm2D):
            n = layer._mean.shape[0]
            layer._mean.set_value(rng.uniform(-0.1, 0.1, n).astype("float32"))
            layer._variance.set_value(rng.uniform(0.5, 1.5, n).astype("float32"))
            layer.weight.set_value(rng.uniform(0.5, 1.5, n).astype("float32"))
            layer.bias.set_value(rng.uniform(-0.1, 0.1, n).astype("float32"))


def op_types(model_dir):
    """The operator types of an exported program, in order."""
    from paddle.base.proto import framework_pb2
    program = framework_pb2.ProgramDesc()
    with open(os.path.join(model_dir, "model.pdmodel"), "rb") as f:
        program.ParseFromString(f.read())
    return [op.type for block in program.blocks for op in block.ops]


def build_paddleseg(name):
    """PaddleSeg's network with the same architecture, or None without PaddleSeg."""
    try:
        import paddleseg.models as psm
    except ImportError:
        return None
    if name == "UNet":
        return psm.UNet(NUM_CLASSES)
    if name == "FastSCNN":
        net = psm.FastSCNN(NUM_CLASSES)
        net.enable_auxiliary_loss = False  # PaddleSeg returns the auxiliary logit in eval too
        return net
    if name == "BiSeNetV2":
        return psm.BiSeNetV2(NUM_CLASSES)
    if name == "HRNet":
        return psm.FCN(NUM_CLASSES, psm.backbones.HRNet_W48())
    if name == "DeepLabV3P":
        # PaddleX's ASPP rates for output stride 8 (PaddleSeg's default is 1, 6, 12, 18).
        return psm.DeepLabV3P(NUM_CLASSES, psm.backbones.ResNet50_vd(output_stride=8),
                              aspp_ratios=(1, 12, 24, 36))
    raise ValueError(name)


def export_paddleseg(net, state, path_prefix):
    net.set_state_dict(state)
    net.eval()
    wrapper = InferenceNet(net)
    wrapper.eval()
    paddle.jit.save(wrapper, path_prefix,
                    input_spec=[paddle.static.InputSpec([None, 3, None, None], "float32", "x")])


# === Timing ===

def make_predictor(model_dir, threads):
    config = paddle.inference.Config(os.path.join(model_dir, "model.pdmodel"),
                                     os.path.join(model_dir, "model.pdiparams"))
    config.disable_gpu()
    config.set_mkldnn_cache_capacity(10)
    config.enable_mkldnn()
    config.set_cpu_math_library_num_threads(threads)
    config.enable_memory_optim()
    config.disable_glog_info()
    config.switch_use_feed_fetch_ops(False)
    return paddle.inference.create_predictor(config)


def run_once(predictor, x):
    handle = predictor.get_input_handle(predictor.get_input_names()[0])
    handle.reshape(list(x.shape))
    handle.copy_from_cpu(x)
    start = time.perf_counter()
    predictor.run()
    outputs = [predictor.get_output_handle(n).copy_to_cpu() for n in predictor.get_output_names()]
    return time.perf_counter() - start, outputs


def time_alternating(predictors, x, runs, warmup):
    """Median seconds of each predictor, runs interleaved; plus each one's last outputs."""
    for _ in range(warmup):
        for predictor in predictors:
            run_once(predictor, x)
    times = [[] for _ in predictors]
    outputs = [None] * len(predictors)
    for _ in range(runs):
        for i, predictor in enumerate(predictors):
            seconds, outputs[i] = run_once(predictor, x)
            times[i].append(seconds)
    return [statistics.median(t) for t in times], outputs


def self_difference(model, model_dir, size, threads):
    """Max score difference: our exported program vs the in-process network."""
    x = np.random.RandomState(1).uniform(-1, 1, (1, 3, size, size)).astype("float32")
    _, (_, exported) = run_once(make_predictor(model_dir, threads), x)
    with paddle.no_grad():
        logit = model.net(paddle.to_tensor(x))[0]
        expected = paddle.nn.functional.softmax(logit, axis=1).numpy().transpose(0, 2, 3, 1)
    return float(np.abs(exported - expected).max())


# === Main ===

def main(argv=None):
    args = parse_args(argv)
    paddle.set_device("cpu")
    if args.work_dir:
        return benchmark(args, args.work_dir)
    with tempfile.TemporaryDirectory(prefix="pxs_bench_") as work:
        return benchmark(args, work)


def benchmark(args, work):
    rows = []
    print(f"size {args.size}x{args.size}, batches {args.batch_sizes}, median of {args.runs} runs "
          f"after {args.warmup} warm-up, {args.threads} threads, oneDNN, Paddle {paddle.__version__}",
          flush=True)
    for name in args.models:
        paddle.seed(0)
        model = build_ours(name)
        ours_dir = model.export(os.path.join(work, name, "ours"))
        d_self = self_difference(model, ours_dir, min(args.size, 128), args.threads)
        dirs = [ours_dir]
        theirs = None if args.no_paddleseg else build_paddleseg(name)
        if theirs is not None:
            theirs_dir = os.path.join(work, name, "paddleseg")
            export_paddleseg(theirs, model.net.state_dict(), os.path.join(theirs_dir, "model"))
            dirs.append(theirs_dir)
        same_ops = (sorted(op_types(dirs[0])) == sorted(op_types(dirs[1]))) if len(dirs) > 1 else None
        predictors = [make_predictor(d, args.threads) for d in dirs]
        for batch in args.batch_sizes:
            x = np.random.RandomState(0).uniform(-1, 1, (batch, 3, args.size, args.size)).astype("float32")
            medians, outputs = time_alternating(predictors, x, args.runs, args.warmup)
            d_ps = float(np.abs(outputs[0][1] - outputs[1][1]).max()) if len(outputs) > 1 else None
            row = (name, batch, medians[0] * 1000, medians[1] * 1000 if len(medians) > 1 else None,
                   d_self, d_ps, same_ops)
            rows.append(row)
            print(format_row(row), flush=True)
    print()
    print(table(rows))
    return rows


HEADER = ("model", "batch", "ours ms", "PaddleSeg ms", "ours/PS", "d_self", "d_ps", "same ops")


def format_row(row):
    name, batch, ours, theirs, d_self, d_ps, same_ops = row
    ratio = f"{ours / theirs:.2f}" if theirs else "-"
    theirs = "-" if theirs is None else f"{theirs:.1f}"
    return (f"{name:<11} {batch:>5} {ours:>9.1f} {theirs:>13} {ratio:>7} {d_self:>9.1e} "
            f"{'-' if d_ps is None else f'{d_ps:.1e}':>9} {'-' if same_ops is None else str(same_ops):>9}")


def table(rows):
    head = (f"{HEADER[0]:<11} {HEADER[1]:>5} {HEADER[2]:>9} {HEADER[3]:>13} {HEADER[4]:>7} "
            f"{HEADER[5]:>9} {HEADER[6]:>9} {HEADER[7]:>9}")
    return "\n".join([head, "-" * len(head)] + [format_row(r) for r in rows])


if __name__ == "__main__":
    main()
    sys.exit(0)
