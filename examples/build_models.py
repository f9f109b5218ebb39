"""Build each model class and print its parameter count and output shape.

    python examples/build_models.py [--size 128]
"""
import argparse

import paddle

import paddlex_seg as seg

MODELS = [
    ("DeepLabV3P(ResNet50_vd, OS 8)", lambda: seg.DeepLabV3P(num_classes=2, backbone="ResNet50_vd", output_stride=8)),
    ("DeepLabV3P(ResNet101_vd, OS 16)", lambda: seg.DeepLabV3P(num_classes=2, backbone="ResNet101_vd", output_stride=16)),
    ("BiSeNetV2", lambda: seg.BiSeNetV2(num_classes=2)),
    ("UNet", lambda: seg.UNet(num_classes=2)),
    ("UNet(use_deconv)", lambda: seg.UNet(num_classes=2, use_deconv=True)),
    ("HRNet(width=18)", lambda: seg.HRNet(num_classes=2, width=18)),
    ("HRNet(width=48)", lambda: seg.HRNet(num_classes=2, width=48)),
    ("FastSCNN", lambda: seg.FastSCNN(num_classes=2)),
]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=128, help="input side (a multiple of 32)")
    args = parser.parse_args()
    x = paddle.rand([1, 3, args.size, args.size])
    print(f"{'model':34s} {'parameters':>12s}  output shape")
    for name, build in MODELS:
        model = build()
        model.net.eval()
        with paddle.no_grad():
            out = model.net(x)
        params = sum(int(p.numel()) for p in model.net.parameters())
        print(f"{name:34s} {params:>12,d}  {[list(o.shape) for o in out]}")


if __name__ == "__main__":
    main()
