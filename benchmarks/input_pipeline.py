"""Training input pipeline throughput, ours beside PaddleSeg 2.8's.

Both pipelines read the same image/label files and apply the standard training
augmentation: ResizeStepScaling (0.75..1.25, step 0.25), RandomPaddingCrop 512x512,
RandomHorizontalFlip, RandomDistort, Normalize (defaults of each library).

* Ours: ``paddlex_seg.SegDataset`` + ``paddlex_seg.transforms``, loaded with
  ``paddlex_seg.data.dataset.collate`` as the trainer does.
* PaddleSeg: ``paddleseg.datasets.Dataset`` (which reads the files inside its
  ``Compose``, the image as float32) + ``paddleseg.transforms``, loaded with
  Paddle's default collate as ``paddleseg.core.train`` does.

Loader table: images/s through ``paddle.io.DataLoader`` (shuffle, drop_last, same
loader options for both) with 0, 1 and 2 workers; each measurement skips
``--warmup`` batches (worker start-up) then times ``--batches`` batches. The two
pipelines alternate (ours 0 workers, theirs 0 workers, ours 1, ...; theirs goes first
in every other round) and the whole sweep runs ``--rounds`` times, so a machine busy
with other work slows both alike. The table reports the median over rounds of each
pipeline's rate, and the median of the per-round ratios (each ratio pairs two
measurements taken seconds apart, which cancels most of a shared machine's swings).

Profile table: one process, the same ``--profile_samples`` samples through each
stage of each pipeline (file reading, our label checks, BGR->RGB, each operator, the
final HWC->CHW, and "to batch": the data set's output conversion plus the collate
into batches of ``--batch_size``), mean milliseconds per sample. The pipelines take
turns sample by sample, each with its own copy of the random state, after a few
untimed samples (so one-time costs such as decoder start-up are not counted).

    python benchmarks/input_pipeline.py                        # ../shared/data/isbi_membrane
    python benchmarks/input_pipeline.py --workers 0 1 --rounds 1 --batches 10
"""
import argparse
import os
import platform
import random
import statistics
import sys
import tempfile
import time

import cv2
import numpy as np
import paddle
from PIL import Image

import paddlex_seg as seg
from paddlex_seg import transforms as T
from paddlex_seg.data import dataset as our_dataset
from paddlex_seg.data.dataset import collate, read_image, read_label
from machine_info import cpu_name  # benchmarks/machine_info.py

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data_dir", default=os.path.join(REPO, "..", "shared", "data", "isbi_membrane"),
                   help="folder with train.txt and labels.txt (PaddleX file lists)")
    p.add_argument("--file_list", default="train.txt", help="file list inside data_dir")
    p.add_argument("--repeat", type=int, default=8, help="times the file list is repeated")
    p.add_argument("--batch_size", type=int, default=4)
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--warmup", type=int, default=2, help="untimed batches per measurement")
    p.add_argument("--batches", type=int, default=24, help="timed batches per measurement")
    p.add_argument("--rounds", type=int, default=5, help="repetitions of the whole sweep")
    p.add_argument("--profile_samples", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="also write the tables to this Markdown file")
    args = p.parse_args(argv)
    if args.repeat < 1 or args.batch_size < 1 or args.batches < 1 or args.rounds < 1:
        p.error("--repeat, --batch_size, --batches and --rounds must be >= 1")
    return args


def repeated_list(data_dir, file_list, repeat, out_dir):
    """Write the file list ``repeat`` times with absolute paths (both readers accept them)."""
    pairs = []
    with open(os.path.join(data_dir, file_list)) as f:
        for line in f:
            parts = line.split()
            if len(parts) == 2 and not parts[0].startswith("#"):
                pairs.append(tuple(os.path.abspath(os.path.join(data_dir, x)) for x in parts))
    if not pairs:
        raise SystemExit(f"no 'image label' lines in {os.path.join(data_dir, file_list)}")
    path = os.path.join(out_dir, "train_repeated.txt")
    with open(path, "w") as f:
        for _ in range(repeat):
            for image, label in pairs:
                f.write(f"{image} {label}\n")
    return path, pairs


def our_ops():
    return [T.ResizeStepScaling(), T.RandomPaddingCrop(crop_size=512), T.RandomHorizontalFlip(),
            T.RandomDistort(), T.Normalize()]


def their_ops():
    import paddleseg.transforms as PT
    return [PT.ResizeStepScaling(), PT.RandomPaddingCrop(crop_size=(512, 512)),
            PT.RandomHorizontalFlip(), PT.RandomDistort(), PT.Normalize()]


def build_datasets(data_dir, list_path, num_classes):
    ours = seg.SegDataset(data_dir, list_path, transforms=T.Compose(our_ops()), shuffle=True)
    ours.set_num_classes(num_classes)  # as model.train does: label values are checked
    import paddleseg.datasets
    theirs = paddleseg.datasets.Dataset(mode="train", dataset_root=data_dir, transforms=their_ops(),
                                        num_classes=num_classes, train_path=list_path)
    return ours, theirs


def _worker_seed(worker_id):
    # PaddleSeg's trainer seeds each worker; do the same for both pipelines.
    np.random.seed(1000 + worker_id)
    random.seed(1000 + worker_id)


def images_per_second(dataset, collate_fn, workers, args):
    sampler = paddle.io.BatchSampler(dataset, batch_size=args.batch_size, shuffle=True, drop_last=True)
    needed = args.warmup + args.batches
    if len(sampler) < needed:
        raise SystemExit(f"{len(sampler)} batches per epoch < warmup + batches = {needed}; "
                         f"raise --repeat")
    loader = paddle.io.DataLoader(dataset, batch_sampler=sampler, num_workers=workers,
                                  return_list=True, collate_fn=collate_fn,
                                  worker_init_fn=_worker_seed if workers else None,
                                  use_shared_memory=workers > 0)
    it = iter(loader)
    for _ in range(args.warmup):
        next(it)
    start = time.perf_counter()
    for _ in range(args.batches):
        batch = next(it)
    elapsed = time.perf_counter() - start
    del it, loader
    # Sanity check: a real batch came through (an error batch would have 3 fields).
    images = batch["img"] if isinstance(batch, dict) else batch[0]
    shape = tuple(images.shape)
    if shape != (args.batch_size, 3, 512, 512):
        raise SystemExit(f"unexpected batch image shape {shape}")
    return args.batch_size * args.batches / elapsed


def loader_table(ours, theirs, args):
    rates = {(name, w): [] for name in ("ours", "theirs") for w in args.workers}
    pipelines = [("ours", ours, collate), ("theirs", theirs, None)]
    for r in range(args.rounds):
        for w in args.workers:
            for name, dataset, collate_fn in pipelines if r % 2 == 0 else pipelines[::-1]:
                rates[(name, w)].append(images_per_second(dataset, collate_fn, w, args))
            print(f"  round {r + 1}/{args.rounds}, {w} workers: ours {rates[('ours', w)][-1]:.1f} "
                  f"img/s, PaddleSeg {rates[('theirs', w)][-1]:.1f} img/s", flush=True)
    rows = []
    for w in args.workers:
        a, b = rates[("ours", w)], rates[("theirs", w)]
        paired = statistics.median(x / y for x, y in zip(a, b))
        rows.append((w, statistics.median(a), statistics.median(b), paired, a, b))
    return rows


def _timed(totals, key, fn, *a):
    start = time.perf_counter()
    out = fn(*a)
    totals[key] = totals.get(key, 0.0) + time.perf_counter() - start
    return out


class _Stages:
    """One pipeline for the profile: ``run_one(pair, totals)`` -> sample; ``finish(samples)``."""

    def __init__(self, run_one, finish, seed):
        self.run_one, self.finish = run_one, finish
        # Each pipeline draws from its own copy of the global RNGs, as if it ran alone.
        np.random.seed(seed)
        random.seed(seed)
        self.rng = (np.random.get_state(), random.getstate())

    def __call__(self, fn, *a):
        np.random.set_state(self.rng[0])
        random.setstate(self.rng[1])
        try:
            return fn(*a)
        finally:
            self.rng = (np.random.get_state(), random.getstate())


def profile_both(pipelines, pairs, n, batch_size):
    """Mean ms per sample of each stage of each pipeline.

    The pipelines take turns sample by sample, so a change in the machine's load
    (it is shared) reaches them alike. A few untimed samples go first: decoder
    start-up and lazy imports are not what is measured.
    """
    for pipe in pipelines:
        pipe(lambda: [pipe.run_one(pair, {}) for pair in pairs[:min(4, n)]])
    totals = [{} for _ in pipelines]
    pending = [[] for _ in pipelines]
    for i in range(n):
        for pipe, tot, todo in zip(pipelines, totals, pending):
            todo.append(pipe(pipe.run_one, pairs[i % len(pairs)], tot))
            if len(todo) == batch_size or i == n - 1:
                _timed(tot, "to batch", pipe.finish, todo)
                todo.clear()
    return [{k: 1000 * v / n for k, v in tot.items()} for tot in totals]


def our_stages(seed, num_classes, dataset):
    """Our pipeline, stage by stage, in the order SegDataset and Compose run them.

    ``dataset.transforms`` must pass samples through unchanged while it is used:
    ``finish`` calls the data set's own output conversion on transformed samples.
    """
    ops = our_ops()

    def finish(samples):
        # What SegDataset does after its transforms (output dtypes), then the collate.
        outputs = [dataset._apply_transforms(0, s["image"], s["label"]) for s in samples]
        return collate(outputs)

    def run_one(pair, totals):
        image_path, label_path = pair
        image = _timed(totals, "read image", read_image, image_path)
        label = _timed(totals, "read label", read_label, label_path)
        _timed(totals, "label checks", _our_label_checks, image, label, num_classes, image_path, label_path)
        sample = {"image": image, "label": label, "trans_info": []}
        sample["image"] = _timed(totals, "BGR->RGB", cv2.cvtColor, sample["image"], cv2.COLOR_BGR2RGB)
        for op in ops:
            sample = _timed(totals, type(op).__name__, op, sample)
        sample["image"] = _timed(
            totals, "HWC->CHW",
            lambda x: np.ascontiguousarray(x.transpose(2, 0, 1), dtype=np.float32), sample["image"])
        assert sample["image"].shape == (3, 512, 512), sample["image"].shape
        return sample

    return _Stages(run_one, finish, seed)


def _our_label_checks(image, label, num_classes, image_path, label_path):
    # The checks SegDataset.read_sample makes between reading and transforming.
    our_dataset._check_same_size(image, label, image_path, label_path)
    our_dataset._check_label_values(label, num_classes, label_path)


def their_stages(seed):
    """PaddleSeg 2.8's pipeline, stage by stage, reading files as its Compose does."""
    from paddle.io.dataloader.collate import default_collate_fn
    ops = their_ops()

    def run_one(pair, totals):
        image_path, label_path = pair
        image = _timed(totals, "read image",
                       lambda p: cv2.imread(p, cv2.IMREAD_COLOR).astype("float32"), image_path)
        label = _timed(totals, "read label", lambda p: np.asarray(Image.open(p)), label_path)
        data = {"img": image, "label": label, "trans_info": [], "gt_fields": ["label"]}
        data["img"] = _timed(totals, "BGR->RGB", cv2.cvtColor, data["img"], cv2.COLOR_BGR2RGB)
        for op in ops:
            data = _timed(totals, type(op).__name__, op, data)
        data["img"] = _timed(totals, "HWC->CHW", lambda x: np.transpose(x, (2, 0, 1)), data["img"])
        assert data["img"].shape == (3, 512, 512), data["img"].shape
        return data

    return _Stages(run_one, default_collate_fn, seed)


def versions():
    import paddleseg
    import PIL
    return (f"Python {platform.python_version()}, paddlepaddle {paddle.__version__}, "
            f"paddleseg {paddleseg.__version__}, numpy {np.__version__}, "
            f"opencv {cv2.__version__}, Pillow {PIL.__version__}")


def machine():
    return f"{platform.system()} {platform.machine()}, {cpu_name()}, {os.cpu_count()} CPUs"


def main(argv=None):
    args = parse_args(argv)
    paddle.set_device("cpu")
    data_dir = os.path.abspath(args.data_dir)
    labels_txt = os.path.join(data_dir, "labels.txt")
    num_classes = 2
    if os.path.exists(labels_txt):
        with open(labels_txt) as f:
            num_classes = max(2, sum(1 for line in f if line.strip()))
    started = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        list_path, pairs = repeated_list(data_dir, args.file_list, args.repeat, tmp)
        ours, theirs = build_datasets(data_dir, list_path, num_classes)
        print(f"{len(pairs)} distinct samples x {args.repeat} = {len(ours)}; "
              f"batch {args.batch_size}, {args.warmup} warm-up + {args.batches} timed batches, "
              f"{args.rounds} rounds", flush=True)
        rows = loader_table(ours, theirs, args)
        saved, ours.transforms = ours.transforms, (lambda sample: sample)
        prof_ours, prof_theirs = profile_both(
            [our_stages(args.seed, num_classes, ours), their_stages(args.seed)],
            pairs, args.profile_samples, args.batch_size)
        ours.transforms = saved

    lines = ["| workers | ours img/s | PaddleSeg img/s | ours / PaddleSeg (median of per-round ratios) "
             "| ours per round | PaddleSeg per round |",
             "|---:|---:|---:|---:|---|---|"]
    for w, a, b, ratio, ra, rb in rows:
        lines.append(f"| {w} | {a:.1f} | {b:.1f} | {ratio:.2f} | "
                     f"{', '.join(f'{x:.1f}' for x in ra)} | {', '.join(f'{x:.1f}' for x in rb)} |")
    loader_md = "\n".join(lines)

    stages = (["read image", "read label", "label checks", "BGR->RGB"]
              + [type(op).__name__ for op in our_ops()] + ["HWC->CHW", "to batch"])
    lines = ["| stage | ours ms/sample | PaddleSeg ms/sample | cost ours / PaddleSeg |",
             "|---|---:|---:|---:|"]
    for s in stages:
        a, b = prof_ours.get(s, 0.0), prof_theirs.get(s, 0.0)
        lines.append(f"| {s} | {a:.2f} | {b:.2f} | {a / b if b else float('nan'):.2f} |")
    ta, tb = sum(prof_ours.values()), sum(prof_theirs.values())
    lines.append(f"| **total** | **{ta:.2f}** | **{tb:.2f}** | **{ta / tb:.2f}** |")
    profile_md = "\n".join(lines)

    print("\nDataLoader throughput (median over rounds)\n" + loader_md)
    profile_title = f"Per-stage cost, {args.profile_samples} samples, one process, pipelines taking turns"
    print(f"\n{profile_title}\n" + profile_md)
    seconds = time.time() - started
    print(f"\ntotal run time {seconds:.0f} s")
    if args.out:
        with open(args.out, "w") as f:
            f.write(f"<!-- written by benchmarks/input_pipeline.py -->\n"
                    f"Command: `python {' '.join(sys.argv)}`\n\n"
                    f"Date: {time.strftime('%Y-%m-%d %H:%M %Z')}; run time {seconds:.0f} s\n\n"
                    f"Machine: {machine()}\n\nVersions: {versions()}\n\n"
                    f"Data: {data_dir}/{args.file_list}, {len(pairs)} samples x {args.repeat}; "
                    f"batch {args.batch_size}; {args.warmup} warm-up + {args.batches} timed "
                    f"batches per measurement; {args.rounds} rounds, pipelines interleaved\n\n"
                    f"### DataLoader throughput (median over rounds)\n\n{loader_md}\n\n"
                    f"### {profile_title}\n\n"
                    f"{profile_md}\n")
    return loader_md, profile_md, seconds


if __name__ == "__main__":
    main(sys.argv[1:])
