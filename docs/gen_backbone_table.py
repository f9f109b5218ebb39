"""Write docs/backbones.md: every registered backbone with its parameters and FLOPs.

Run from anywhere: ``python docs/gen_backbone_table.py``. Each backbone is built with
its builder's defaults (no dilation), alone, and measured by ``paddle.flops`` on a
[1, 3, 512, 512] input. The table is generated, never edited by hand; rerun the
script after registering a backbone (tests/test_backbone_doc.py checks that
the table names exactly ``paddlex_seg.models.list_backbones()``).
"""
import contextlib
import io
import os
import time

import paddle

from paddlex_seg.models import get_backbone, list_backbones

INPUT_SHAPE = [1, 3, 512, 512]
DOC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "backbones.md")

HEADER = """# Backbones

Every backbone below is registered in `paddlex_seg.models` and can be passed by name,
e.g. `seg.DeepLabV3P(backbone='MobileNetV3_large_x1_0')` (choose `backbone_indices`
within its feature maps: `(low level, high level)`). List them in Python with
`paddlex_seg.models.list_backbones()` (optionally a glob: `list_backbones('ResNet*')`).

Your own backbone works the same way: a `paddle.nn.Layer` with a `feat_channels` list
whose forward returns one feature map per entry, highest resolution first. Register a
builder named after it, and the name is recorded in `model.yml`, so `load_model`
rebuilds it:

```python
import paddle.nn as nn
import paddlex_seg as seg
from paddlex_seg.models import register


class TinyNet(nn.Layer):
    def __init__(self):
        super().__init__()
        self.feat_channels = [16, 32]
        self.stage1 = nn.Conv2D(3, 16, 3, stride=2, padding=1)
        self.stage2 = nn.Conv2D(16, 32, 3, stride=2, padding=1)

    def forward(self, x):
        low = self.stage1(x)
        return [low, self.stage2(low)]


@register
def MyTinyNet():              # the function's name is the backbone's name
    return TinyNet()


model = seg.DeepLabV3P(num_classes=3, backbone='MyTinyNet', backbone_indices=(0, 1))
```

[Models](models.md#your-own-backbone) has a complete example: training, saving and
`load_model`.

A Layer instance (`backbone=TinyNet()`) also trains, predicts and exports, but
`load_model` cannot rebuild it and says so. `output_stride` is passed only to builders
that accept it (ResNet_vd, MobileNetV2/V3 and Xception do; HRNet does not).

**Default output stride of the ResNet_vd builders: 32, not PaddleSeg's 8.** PaddleSeg
2.8's `ResNet50_vd()` (and the other depths) dilate the last two stages by default
(output stride 8); here `get_backbone('ResNet50_vd')` without `output_stride` builds the
plain network (output stride 32), like every other builder in this registry, and is the
network the table below measures. `DeepLabV3P` always passes its own `output_stride`
(default 8, as PaddleX and PaddleSeg's DeepLabV3P), so models are unaffected; to get
PaddleSeg's bare backbone, pass it: `get_backbone('ResNet50_vd', output_stride=8)`.
The parameters (and so published weights) are the same at every stride.
Pretrained DeepLabV3P weights exist for ResNet50_vd and ResNet101_vd only; with any
other backbone train with `pretrain_weights=None` (or a `.pdparams` path).

The table is written by `docs/gen_backbone_table.py`; do not edit it by hand.
Parameters count every tensor of `net.parameters()`, which in Paddle includes
BatchNorm's running mean and variance (as PaddleSeg's counts do). FLOPs are `paddle.flops` of the backbone alone on a 1×3×512×512 input,
built with its defaults: no dilation, so the deepest map is at output stride 32 for
ResNet_vd and MobileNet (8 for the `_os8` builders, which fix it), 16 for Xception41/65
and 64 for Xception71 (PaddleSeg's strides: Xception accepts `output_stride` but, like
PaddleSeg's, does not change its strides), 4 for HRNet. `paddle.flops` counts one
multiply-add as one FLOP; resizes and element-wise additions are not counted.

"""


def measure(name):
    """(feat_channels, parameters, FLOPs) of the backbone ``name`` at INPUT_SHAPE."""
    net = get_backbone(name)
    net.eval()
    params = sum(int(p.size) for p in net.parameters())
    # paddle.flops prints a per-layer table and a total; the doc needs only the number.
    with contextlib.redirect_stdout(io.StringIO()):
        flops = paddle.flops(net, INPUT_SHAPE, print_detail=False)
    return list(net.feat_channels), params, int(flops)


def main():
    start = time.time()
    rows = ["| Backbone | feat_channels | Params (M) | FLOPs @512×512 (G) |",
            "|---|---|---:|---:|"]
    for name in list_backbones():
        t0 = time.time()
        channels, params, flops = measure(name)
        rows.append(f"| `{name}` | {channels} | {params / 1e6:.2f} | {flops / 1e9:.2f} |")
        print(f"{name}: {params / 1e6:.2f} M params, {flops / 1e9:.2f} GFLOPs ({time.time() - t0:.1f} s)")
    with open(DOC, "w", encoding="utf-8") as f:
        f.write(HEADER + "\n".join(rows) + "\n")
    print(f"wrote {DOC}: {len(rows) - 2} backbones in {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
