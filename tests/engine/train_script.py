"""Runs ``model.train`` in its own process, for tests that kill it or watch it fail.

Usage (see tests/engine/test_train.py)::

    python tests/engine/train_script.py --data ROOT --save-dir DIR --epochs 3 \
        [--resume DIR] [--num-workers N] [--slow-save NAME]

Prints the training log on stdout (run it with ``python -u``), then ``DONE`` when
training finished. A SegDataError is printed as ``SegDataError: <message>`` and the
process exits with status 3, so the test can tell it from any other failure.
``--slow-save NAME`` sleeps after each file written for the checkpoint NAME (e.g.
``epoch_2``), which leaves time to kill the process while it is half written.
"""
import argparse
import os
import sys
import time

import paddle

import paddlex_seg as seg
from paddlex_seg import transforms as T
from paddlex_seg.data.dataset import SegDataError
from paddlex_seg.engine.train import Trainer

SEG_DATA_ERROR_EXIT = 3


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", required=True, help="root written by make_synthetic_dataset")
    parser.add_argument("--save-dir", required=True)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--learning-rate", type=float, default=0.01)
    parser.add_argument("--log-interval", type=int, default=1)
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--resume", default=None, help="resume_checkpoint directory")
    parser.add_argument("--slow-save", default=None, metavar="NAME",
                        help="pause after each file of this checkpoint directory")
    return parser.parse_args(argv)


def slow_down_saving(name, seconds=5.0):
    real_save = paddle.save

    def save(obj, path, *args, **kwargs):
        real_save(obj, path, *args, **kwargs)
        # checkpoint.write_model_dir writes into ".<name>.tmp-<id>/" beside <name>/.
        if os.path.basename(os.path.dirname(path)).startswith(f".{name}.tmp-"):
            print(f"SAVED {path}", flush=True)
            time.sleep(seconds)

    paddle.save = save


def report_loader_workers():
    real_run = Trainer.run

    def run(self):
        print(f"LOADER num_workers={self.loader.num_workers}", flush=True)
        return real_run(self)

    Trainer.run = run


def main(argv=None):
    args = parse_args(argv)
    paddle.set_device("cpu")
    if args.slow_save:
        slow_down_saving(args.slow_save)
    report_loader_workers()
    root = args.data
    train_ds = seg.SegDataset(root, os.path.join(root, "train.txt"), os.path.join(root, "labels.txt"),
                              transforms=T.Compose([T.Normalize()]), num_workers=args.num_workers)
    eval_ds = seg.SegDataset(root, os.path.join(root, "val.txt"), os.path.join(root, "labels.txt"),
                             transforms=T.Compose([T.Normalize()]), num_workers=0)
    model = seg.FastSCNN(num_classes=len(train_ds.labels))
    try:
        model.train(num_epochs=args.epochs, train_dataset=train_ds, eval_dataset=eval_ds,
                    train_batch_size=args.batch_size, save_dir=args.save_dir,
                    pretrain_weights=None, learning_rate=args.learning_rate,
                    log_interval_steps=args.log_interval, use_vdl=False,
                    resume_checkpoint=args.resume)
    except SegDataError as error:
        print(f"SegDataError: {error}", flush=True)
        return SEG_DATA_ERROR_EXIT
    print("DONE", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
