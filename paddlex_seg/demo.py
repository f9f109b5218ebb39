"""The main job: ``python -m paddlex_seg.demo``.

Builds a small synthetic data set on disk (coloured shapes on textured backgrounds),
trains a small model on CPU for a couple of minutes, evaluates it, predicts an image,
saves and reloads it, and prints the metrics. No download is needed.

    python -m paddlex_seg.demo --model UNet --epochs 6 --output output/demo
"""
import argparse
import os
import time

import numpy as np

import paddlex_seg as seg
from paddlex_seg import transforms as T

MODELS = {
    "UNet": lambda n: seg.UNet(num_classes=n),
    "FastSCNN": lambda n: seg.FastSCNN(num_classes=n),
    "BiSeNetV2": lambda n: seg.BiSeNetV2(num_classes=n),
    "HRNet": lambda n: seg.HRNet(num_classes=n, width="18_Small_V1"),
    "DeepLabV3P": lambda n: seg.DeepLabV3P(num_classes=n, output_stride=16),
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="UNet", choices=sorted(MODELS), help="model class to train")
    p.add_argument("--epochs", type=int, default=6, help="training epochs (default 6)")
    p.add_argument("--batch_size", type=int, default=4)
    p.add_argument("--learning_rate", type=float, default=0.05)
    p.add_argument("--image_size", type=int, default=96, help="side of the synthetic images")
    p.add_argument("--num_train", type=int, default=32)
    p.add_argument("--num_val", type=int, default=8)
    p.add_argument("--output", default="output/demo", help="data, checkpoints and results go here")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    start = time.time()
    data = seg.make_synthetic_dataset(
        os.path.join(args.output, "data"), num_train=args.num_train, num_val=args.num_val,
        image_size=(args.image_size, args.image_size), num_classes=3, seed=0)
    train_tf = T.Compose([T.RandomHorizontalFlip(), T.RandomVerticalFlip(), T.Normalize()])
    eval_tf = T.Compose([T.Normalize()])
    train_ds = seg.SegDataset(data.root, data.train_list, data.label_list, transforms=train_tf, shuffle=True)
    eval_ds = seg.SegDataset(data.root, data.val_list, data.label_list, transforms=eval_tf)
    print(f"Synthetic data set in {data.root}: {train_ds.num_samples} training and "
          f"{eval_ds.num_samples} validation images, classes {train_ds.labels}")

    model = MODELS[args.model](len(train_ds.labels))
    save_dir = os.path.join(args.output, args.model.lower())
    model.train(num_epochs=args.epochs, train_dataset=train_ds, eval_dataset=eval_ds,
                train_batch_size=args.batch_size, learning_rate=args.learning_rate,
                pretrain_weights=None, save_dir=save_dir, log_interval_steps=5, use_vdl=True)

    metrics = model.evaluate(eval_ds)
    print("Evaluation:", {k: (round(v, 4) if isinstance(v, float) else [round(x, 4) for x in v])
                          for k, v in metrics.items()})

    image_path = eval_ds.samples[0][0]
    result = model.predict(image_path)
    print(f"Prediction of {image_path}: label_map {result['label_map'].shape}, "
          f"score_map {result['score_map'].shape}, classes present {np.unique(result['label_map']).tolist()}")

    final_dir = model.save(os.path.join(save_dir, "final_model"))
    reloaded = seg.load_model(final_dir).predict(image_path)
    diff = float(np.abs(reloaded["score_map"] - result["score_map"]).max())
    print(f"Saved and reloaded {final_dir}: label maps identical: "
          f"{bool((reloaded['label_map'] == result['label_map']).all())}, max score difference {diff:.2e}; "
          f"best mIoU {model.best_accuracy:.4f} at epoch {model.best_model_epoch} (in {save_dir}/best_model)")
    print(f"Done in {time.time() - start:.0f} s. Checkpoints: {save_dir}; "
          f"VisualDL: visualdl --logdir {os.path.join(save_dir, 'vdl_log')} --language en")
    return metrics


if __name__ == "__main__":
    main()
