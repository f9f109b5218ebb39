"""Train UNet on the ISBI 2012 EM membrane data set and print the validation mIoU.

    python examples/train_membrane.py --data_dir ../shared/data/isbi_membrane

The 512x512 grayscale slices are read as 3-channel BGR. Training uses random
256x256 crops with flips and small rotations; evaluation runs on whole slices.
"""
import argparse
import os
import time

import paddlex_seg as seg
from paddlex_seg import transforms as T

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_DATA = os.path.normpath(os.path.join(HERE, "..", "..", "shared", "data", "isbi_membrane"))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data_dir", default=DEFAULT_DATA, help=f"default {DEFAULT_DATA}")
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--batch_size", type=int, default=4)
    p.add_argument("--crop_size", type=int, default=256)
    p.add_argument("--learning_rate", type=float, default=0.05)
    p.add_argument("--save_dir", default="output/membrane_unet")
    p.add_argument("--use_mixed_loss", action="store_true", help="0.8 CE + 0.2 Lovász")
    args = p.parse_args()

    train_tf = T.Compose([
        T.RandomPaddingCrop(crop_size=args.crop_size),
        T.RandomHorizontalFlip(), T.RandomVerticalFlip(),
        T.RandomRotate(max_rotation=10),
        T.RandomPaddingCrop(crop_size=args.crop_size),  # back to a fixed size after rotation
        T.Normalize(),
    ])
    eval_tf = T.Compose([T.Normalize()])
    d = args.data_dir
    train_ds = seg.SegDataset(d, os.path.join(d, "train.txt"), os.path.join(d, "labels.txt"),
                              transforms=train_tf, shuffle=True)
    eval_ds = seg.SegDataset(d, os.path.join(d, "val.txt"), os.path.join(d, "labels.txt"),
                             transforms=eval_tf)
    model = seg.UNet(num_classes=len(train_ds.labels), use_mixed_loss=args.use_mixed_loss)
    start = time.time()
    model.train(num_epochs=args.epochs, train_dataset=train_ds, eval_dataset=eval_ds,
                train_batch_size=args.batch_size, learning_rate=args.learning_rate,
                pretrain_weights=None, save_dir=args.save_dir, log_interval_steps=6,
                save_interval_epochs=5)
    best = seg.load_model(os.path.join(args.save_dir, "best_model"))
    metrics = best.evaluate(eval_ds)
    print(f"val mIoU {metrics['miou']:.4f} (category IoU {[round(x, 4) for x in metrics['category_iou']]}, "
          f"oacc {metrics['oacc']:.4f}) of best_model from epoch {best.best_model_epoch}; "
          f"{args.epochs} epochs in {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
