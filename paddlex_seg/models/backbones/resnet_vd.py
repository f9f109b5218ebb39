"""ResNet_vd backbone.

He et al., "Bag of Tricks for Image Classification with Convolutional Neural
Networks", CVPR 2019 (arXiv:1812.01187). The "vd" tweaks: a stem of three 3x3
convolutions instead of one 7x7, and down-sampling shortcuts that average-pool
before their 1x1 convolution instead of striding it. For segmentation the last
stages may trade stride for dilation (``output_stride`` 8 or 16).

Parameter keys follow PaddleSeg's ``ResNet_vd`` (``conv1_1._conv.weight``,
``bb_2_0.short._batch_norm._mean``, ...) so its published weights load unchanged.
"""
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from .registry import register

__all__ = [
    "ResNetVd", "ResNet18_vd", "ResNet34_vd", "ResNet50_vd", "ResNet101_vd",
    "ResNet152_vd", "ResNet200_vd",
]

# Blocks per stage for each supported depth.
_STAGE_DEPTHS = {
    18: (2, 2, 2, 2),
    34: (3, 4, 6, 3),
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
    152: (3, 8, 36, 3),
    200: (3, 12, 48, 3),
}
# Inner width of each stage; bottleneck stages output four times this.
_STAGE_WIDTHS = (64, 128, 256, 512)
_BOTTLENECK_EXPANSION = 4
# Dilation per stage index for each output stride; stages not listed keep stride 2.
_STAGE_DILATIONS = {None: {}, 16: {3: 2}, 8: {2: 2, 3: 4}}


class ResNetVd(nn.Layer):
    """ResNet_vd feature extractor returning the output of each of its four stages.

    Args:
        layers (int, optional): depth, one of 18, 34, 50, 101, 152, 200. 18 and 34 use
            basic blocks, the others bottleneck blocks. Default: 50.
        output_stride (int|None, optional): ratio of input size to the last feature
            map's size: 8 (stages 3 and 4 dilated by 2 and 4), 16 (stage 4 dilated by 2)
            or None (no dilation, stride 32). Default: None.
        multi_grid (tuple[int], optional): extra dilation factor for each block of the
            last stage, multiplied with the stage's dilation; needs at least as many
            entries as that stage has blocks (2 for depth 18, else 3). Default: (1, 1, 1).
        lr_mult_list (tuple[float], optional): learning-rate multiplier of the
            parameters of each of the four stages (the stem shares the first stage's),
            stored in each parameter's ``ParamAttr`` and applied by the optimizer.
            Default: (0.1, 0.1, 0.2, 0.2).
        in_channels (int, optional): channels of the input image. Default: 3.

    Attributes:
        feat_channels (list[int]): channels of the four returned feature maps:
            [64, 128, 256, 512] for depths 18 and 34, [256, 512, 1024, 2048] otherwise.

    ``forward(x)`` takes a NCHW tensor and returns a list of four feature maps at
    strides 4, 8, 16 and 32 of the input (strides capped at ``output_stride``).

    Example:
        >>> net = ResNetVd(layers=50, output_stride=8)
        >>> [f.shape[1] for f in net(paddle.rand([1, 3, 64, 64]))]
        [256, 512, 1024, 2048]
    """

    def __init__(self, layers=50, output_stride=None, multi_grid=(1, 1, 1),
                 lr_mult_list=(0.1, 0.1, 0.2, 0.2), in_channels=3):
        super().__init__()
        depths = _check_arguments(layers, output_stride, multi_grid, lr_mult_list, in_channels)
        bottleneck = layers >= 50
        block_class = _BottleneckBlock if bottleneck else _BasicBlock
        expansion = _BOTTLENECK_EXPANSION if bottleneck else 1
        self.feat_channels = [width * expansion for width in _STAGE_WIDTHS]

        # === Stem: three 3x3 convolutions (the "vd" deep stem), then max pooling ===
        stem_lr = lr_mult_list[0]
        self.conv1_1 = _ConvBNLayer(in_channels, 32, 3, stride=2, act=True, lr_mult=stem_lr)
        self.conv1_2 = _ConvBNLayer(32, 32, 3, act=True, lr_mult=stem_lr)
        self.conv1_3 = _ConvBNLayer(32, 64, 3, act=True, lr_mult=stem_lr)
        self.pool2d_max = nn.MaxPool2D(kernel_size=3, stride=2, padding=1)

        # === Stages ===
        # Blocks are registered flat as "bb_<stage>_<block>": PaddleSeg's weight keys.
        stage_dilations = _STAGE_DILATIONS[output_stride]
        self._stages = []
        channels = 64
        for stage, (num_blocks, width) in enumerate(zip(depths, _STAGE_WIDTHS)):
            dilation = stage_dilations.get(stage, 1)
            # A dilated stage keeps its input's resolution; the first stage follows
            # the max pooling and never down-samples.
            stride = 2 if stage > 0 and dilation == 1 else 1
            blocks = []
            for index in range(num_blocks):
                block_dilation = dilation * (multi_grid[index] if stage == 3 else 1)
                block = block_class(
                    channels, width,
                    stride=stride if index == 0 else 1,
                    dilation=block_dilation,
                    project_shortcut=index == 0,
                    pool_shortcut=index == 0 and stage > 0 and stride == 2,
                    lr_mult=lr_mult_list[stage])
                blocks.append(self.add_sublayer(f"bb_{stage}_{index}", block))
                channels = width * expansion
            self._stages.append(blocks)

    def forward(self, x):
        x = self.pool2d_max(self.conv1_3(self.conv1_2(self.conv1_1(x))))
        features = []
        for blocks in self._stages:
            for block in blocks:
                x = block(x)
            features.append(x)
        return features


class _BottleneckBlock(nn.Layer):
    """1x1 reduce, 3x3 (strided or dilated), 1x1 expand by 4, plus the shortcut."""

    def __init__(self, in_channels, width, stride, dilation, project_shortcut,
                 pool_shortcut, lr_mult):
        super().__init__()
        out_channels = width * _BOTTLENECK_EXPANSION
        self.conv0 = _ConvBNLayer(in_channels, width, 1, act=True, lr_mult=lr_mult)
        self.conv1 = _ConvBNLayer(width, width, 3, stride=stride, dilation=dilation,
                                  act=True, lr_mult=lr_mult)
        self.conv2 = _ConvBNLayer(width, out_channels, 1, lr_mult=lr_mult)
        self.short = _make_shortcut(in_channels, out_channels, project_shortcut,
                                    pool_shortcut, lr_mult)

    def forward(self, x):
        residual = self.conv2(self.conv1(self.conv0(x)))
        shortcut = x if self.short is None else self.short(x)
        return F.relu(shortcut + residual)


class _BasicBlock(nn.Layer):
    """Two 3x3 convolutions plus the shortcut (depths 18 and 34)."""

    def __init__(self, in_channels, width, stride, dilation, project_shortcut,
                 pool_shortcut, lr_mult):
        super().__init__()
        self.conv0 = _ConvBNLayer(in_channels, width, 3, stride=stride, dilation=dilation,
                                  act=True, lr_mult=lr_mult)
        self.conv1 = _ConvBNLayer(width, width, 3, dilation=dilation, lr_mult=lr_mult)
        self.short = _make_shortcut(in_channels, width, project_shortcut,
                                    pool_shortcut, lr_mult)

    def forward(self, x):
        residual = self.conv1(self.conv0(x))
        shortcut = x if self.short is None else self.short(x)
        return F.relu(shortcut + residual)


def _make_shortcut(in_channels, out_channels, project, pool, lr_mult):
    """The first block of a stage projects its shortcut with a 1x1 ConvBN.

    When that block down-samples, the "vd" shortcut average-pools first and keeps
    the 1x1 convolution at stride 1, so no input pixel is skipped.
    """
    if not project:
        return None
    return _ConvBNLayer(in_channels, out_channels, 1, avg_pool_first=pool, lr_mult=lr_mult)


class _ConvBNLayer(nn.Layer):
    """Conv2D (no bias) and BatchNorm2D, optionally preceded by 2x2 average pooling
    and followed by ReLU. ``lr_mult`` scales the learning rate of all its parameters.

    Padding is explicit and symmetric (half the dilated kernel), unlike the
    ``'same'`` padding of ``layers.ConvBN``: it is what the published weights were
    trained with.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, dilation=1,
                 act=False, avg_pool_first=False, lr_mult=1.0):
        super().__init__()
        self.act = act
        # ceil_mode keeps the last row/column of odd-sized maps, matching a stride-2 conv.
        self._pool2d_avg = (nn.AvgPool2D(kernel_size=2, stride=2, padding=0, ceil_mode=True)
                            if avg_pool_first else None)
        self._conv = nn.Conv2D(
            in_channels, out_channels, kernel_size, stride=stride,
            padding=dilation * (kernel_size - 1) // 2, dilation=dilation,
            weight_attr=paddle.ParamAttr(learning_rate=lr_mult), bias_attr=False)
        self._batch_norm = nn.BatchNorm2D(
            out_channels,
            weight_attr=paddle.ParamAttr(learning_rate=lr_mult),
            bias_attr=paddle.ParamAttr(learning_rate=lr_mult))

    def forward(self, x):
        if self._pool2d_avg is not None:
            x = self._pool2d_avg(x)
        x = self._batch_norm(self._conv(x))
        return F.relu(x) if self.act else x


def _check_arguments(layers, output_stride, multi_grid, lr_mult_list, in_channels):
    """Validate ResNetVd's arguments; return the blocks per stage."""
    if layers not in _STAGE_DEPTHS:
        raise ValueError(f"layers={layers!r} is not supported; "
                         f"choose one of {sorted(_STAGE_DEPTHS)}.")
    if output_stride not in _STAGE_DILATIONS:
        raise ValueError(f"output_stride={output_stride!r} is not supported; "
                         "choose 8, 16 or None.")
    depths = _STAGE_DEPTHS[layers]
    if (not isinstance(multi_grid, (list, tuple)) or len(multi_grid) < depths[3]
            or not all(isinstance(g, int) and g >= 1 for g in multi_grid)):
        raise ValueError(f"multi_grid={multi_grid!r} must be a list or tuple of at least "
                         f"{depths[3]} positive ints (one per block of the last stage).")
    if (not isinstance(lr_mult_list, (list, tuple)) or len(lr_mult_list) != 4
            or not all(isinstance(m, (int, float)) and m >= 0 for m in lr_mult_list)):
        raise ValueError(f"lr_mult_list={lr_mult_list!r} must be a list or tuple of 4 "
                         "non-negative numbers (one per stage).")
    if not isinstance(in_channels, int) or in_channels < 1:
        raise ValueError(f"in_channels={in_channels!r} must be a positive int.")
    return depths


# === Registered builders ===
# Without output_stride these build the undilated network (output stride 32), like every
# builder in the registry; PaddleSeg 2.8's ResNet*_vd() default to output_stride=8.
# DeepLabV3P always passes its output_stride, so models do not depend on this default
# (documented in docs/backbones.md).

@register
def ResNet18_vd(**kwargs):
    """ResNetVd with 18 layers (basic blocks); feat_channels [64, 128, 256, 512]."""
    return ResNetVd(layers=18, **kwargs)


@register
def ResNet34_vd(**kwargs):
    """ResNetVd with 34 layers (basic blocks); feat_channels [64, 128, 256, 512]."""
    return ResNetVd(layers=34, **kwargs)


@register
def ResNet50_vd(**kwargs):
    """ResNetVd with 50 layers; feat_channels [256, 512, 1024, 2048]."""
    return ResNetVd(layers=50, **kwargs)


@register
def ResNet101_vd(**kwargs):
    """ResNetVd with 101 layers; feat_channels [256, 512, 1024, 2048]."""
    return ResNetVd(layers=101, **kwargs)


@register
def ResNet152_vd(**kwargs):
    """ResNetVd with 152 layers; feat_channels [256, 512, 1024, 2048]."""
    return ResNetVd(layers=152, **kwargs)


@register
def ResNet200_vd(**kwargs):
    """ResNetVd with 200 layers; feat_channels [256, 512, 1024, 2048]."""
    return ResNetVd(layers=200, **kwargs)
