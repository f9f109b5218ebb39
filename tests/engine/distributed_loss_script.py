"""Per-step training losses on a fixed data order, for tests/engine/test_distributed.py.

    python distributed_loss_script.py DATA_ROOT SAVE_ROOT GLOBAL_BATCH VARIANT [VARIANT ...]
    python -m paddle.distributed.launch --nproc_per_node 2 distributed_loss_script.py ...

Each process trains a fresh FastSCNN (paddle.seed(0)) with its dropout switched off
for one epoch of DATA_ROOT's train.txt in file order (no shuffle, no random
transforms), with GLOBAL_BATCH / world size images per step, once per VARIANT:

* ``frozen_bn``: every BatchNorm uses its running statistics (mean 0, variance 1 at
  the start) instead of the batch's, so a sample's output does not depend on the
  other samples of its batch, and the gradient of the mean loss over the global
  batch is the same however the batch is split between processes;
* ``batch_bn``: BatchNorm as in normal training, normalising with the statistics of
  the images this process holds (half the global batch with 2 processes);
* ``batch_bn_per_N`` (one process): BatchNorm normalises each group of N images of
  the batch with that group's statistics, as N images per process would.

For each, prints ``LOSSES <variant> <json list>``: the loss of every step as the
trainer computed it (averaged over processes), on every rank.
"""
import json
import os
import sys

import numpy as np
import paddle
from paddle.nn.layer.norm import _BatchNormBase

import paddlex_seg as seg
from paddlex_seg import transforms as T
from paddlex_seg.engine.train import Trainer


def record_losses():
    losses = []
    real_step = Trainer._train_step

    def step(self, images, labels):
        value = real_step(self, images, labels)
        losses.append(value)
        return value

    Trainer._train_step = step
    return losses


def no_dropout(net):
    # Each process draws dropout masks from its own generator: one process with the
    # whole batch and two with half of it each would drop different pixels.
    for layer in net.sublayers():
        if isinstance(layer, paddle.nn.Dropout):
            layer.p = 0.0


def freeze_batch_norm(net):
    for layer in net.sublayers():
        if isinstance(layer, _BatchNormBase):
            # Read by BatchNorm's forward; Trainer's net.train() does not reset it.
            layer._use_global_stats = True


def batch_norm_per_group(group):
    """Make every BatchNorm normalise groups of ``group`` images separately."""
    real_forward = _BatchNormBase.forward

    def forward(self, x):
        if not self.training or x.shape[0] <= group:
            return real_forward(self, x)
        parts = paddle.split(x, x.shape[0] // group, axis=0)
        return paddle.concat([real_forward(self, part) for part in parts], axis=0)

    _BatchNormBase.forward = forward
    return lambda: setattr(_BatchNormBase, "forward", real_forward)


def main(data_root, save_root, global_batch, variants):
    paddle.set_device("cpu")
    world = paddle.distributed.get_world_size()
    if global_batch % world:
        raise SystemExit(f"GLOBAL_BATCH {global_batch} is not a multiple of {world} processes")
    dataset = seg.SegDataset(data_root, "train.txt", "labels.txt",
                             transforms=T.Compose([T.Normalize()]), shuffle=False, num_workers=0)
    losses = record_losses()
    for variant in variants:
        paddle.seed(0)
        np.random.seed(0)
        model = seg.FastSCNN(num_classes=len(dataset.labels))
        no_dropout(model.net)
        undo = lambda: None  # noqa: E731
        if variant == "frozen_bn":
            freeze_batch_norm(model.net)
        elif variant.startswith("batch_bn_per_"):
            undo = batch_norm_per_group(int(variant[len("batch_bn_per_"):]))
        elif variant != "batch_bn":
            raise SystemExit(f"unknown variant {variant!r}")
        del losses[:]
        model.train(num_epochs=1, train_dataset=dataset, train_batch_size=global_batch // world,
                    learning_rate=0.05, pretrain_weights=None, use_vdl=False,
                    save_dir=os.path.join(save_root, f"{variant}_{world}"), log_interval_steps=1)
        undo()
        print("LOSSES", variant, json.dumps(losses), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:])
