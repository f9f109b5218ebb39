"""MobileNetV3 backbone.

Howard et al., "Searching for MobileNetV3", ICCV 2019 (arXiv:1905.02244). A stride-2
stem convolution followed by inverted residual blocks (1x1 expansion, depthwise
convolution, optional squeeze-and-excitation, linear 1x1 projection), with ReLU in the
early blocks and hard-swish in the later ones. ``scale`` widens or narrows every layer.

For segmentation the last down-sampling blocks may trade stride for dilation
(``output_stride`` 8 or 16); with 8 the network equals PaddleSeg's ``*_os8`` variants.

Parameter keys follow PaddleSeg's ``MobileNetV3`` (``conv.conv.weight``,
``blocks.3.mid_se.conv1.bias``, ``blocks.14.linear_conv.bn._mean``, ...) so its
published weights load unchanged.
"""
import paddle
import paddle.nn as nn
import paddle.nn.functional as F
from paddle.regularizer import L2Decay

from .registry import register

__all__ = [
    "MobileNetV3", "stride_schedule",
    "MobileNetV3_small_x0_35", "MobileNetV3_small_x0_5", "MobileNetV3_small_x0_75",
    "MobileNetV3_small_x1_0", "MobileNetV3_small_x1_25",
    "MobileNetV3_large_x0_35", "MobileNetV3_large_x0_5", "MobileNetV3_large_x0_75",
    "MobileNetV3_large_x1_0", "MobileNetV3_large_x1_25",
    "MobileNetV3_small_x1_0_os8", "MobileNetV3_large_x1_0_os8",
]

STEM_CHANNELS = 16      # before scaling; fixed by the paper's tables
SE_REDUCTION = 4        # squeeze ratio of the SE blocks
CHANNEL_DIVISOR = 8     # every scaled width is rounded to a multiple of this

# One row per inverted residual block (tables 1 and 2 of the paper):
# (kernel size, expanded width, output width, squeeze-and-excitation, activation, stride)
_BLOCKS = {
    "large": (
        (3, 16, 16, False, "relu", 1),
        (3, 64, 24, False, "relu", 2),
        (3, 72, 24, False, "relu", 1),
        (5, 72, 40, True, "relu", 2),
        (5, 120, 40, True, "relu", 1),
        (5, 120, 40, True, "relu", 1),
        (3, 240, 80, False, "hardswish", 2),
        (3, 200, 80, False, "hardswish", 1),
        (3, 184, 80, False, "hardswish", 1),
        (3, 184, 80, False, "hardswish", 1),
        (3, 480, 112, True, "hardswish", 1),
        (3, 672, 112, True, "hardswish", 1),
        (5, 672, 160, True, "hardswish", 2),
        (5, 960, 160, True, "hardswish", 1),
        (5, 960, 160, True, "hardswish", 1),
    ),
    "small": (
        (3, 16, 16, True, "relu", 2),
        (3, 72, 24, False, "relu", 2),
        (3, 88, 24, False, "relu", 1),
        (5, 96, 40, True, "hardswish", 2),
        (5, 240, 40, True, "hardswish", 1),
        (5, 240, 40, True, "hardswish", 1),
        (5, 120, 48, True, "hardswish", 1),
        (5, 144, 48, True, "hardswish", 1),
        (5, 288, 96, True, "hardswish", 2),
        (5, 576, 96, True, "hardswish", 1),
        (5, 576, 96, True, "hardswish", 1),
    ),
}
# Blocks whose outputs are returned: the last block at strides 4, 8, 16 and 32.
_OUTPUT_BLOCKS = {"large": (2, 5, 11, 14), "small": (0, 2, 7, 10)}
_OUTPUT_STRIDES = (None, 8, 16, 32)


class MobileNetV3(nn.Layer):
    """MobileNetV3 feature extractor returning four feature maps.

    Args:
        model_name (str, optional): 'large' (15 blocks) or 'small' (11 blocks).
            Default: 'large'.
        scale (float, optional): width multiplier of every layer; widths are rounded to
            multiples of 8. Default: 1.0.
        output_stride (int|None, optional): ratio of input size to the last feature
            map's size: 32 or None (no dilation), 16 or 8 (the later down-sampling
            blocks keep stride 1 and dilate their depthwise convolutions instead).
            Default: None.
        in_channels (int, optional): channels of the input image. Default: 3.

    Attributes:
        feat_channels (list[int]): channels of the four returned maps; at scale 1.0
            [24, 40, 112, 160] for 'large' and [16, 24, 48, 96] for 'small'.

    ``forward(x)`` takes a NCHW tensor and returns a list of four feature maps at
    strides 4, 8, 16 and 32 of the input (strides capped at ``output_stride``).

    Example:
        >>> net = MobileNetV3(model_name="small", scale=0.5, output_stride=8)
        >>> [f.shape[1] for f in net(paddle.rand([1, 3, 64, 64]))]
        [8, 16, 24, 48]
    """

    def __init__(self, model_name="large", scale=1.0, output_stride=None, in_channels=3):
        super().__init__()
        _check_arguments(model_name, scale, output_stride, in_channels)
        rows = _BLOCKS[model_name]
        self._output_blocks = _OUTPUT_BLOCKS[model_name]
        self.feat_channels = [make_divisible(rows[i][2] * scale) for i in self._output_blocks]

        # === Stem ===
        # "conv" and "blocks" (below) are PaddleSeg's parameter keys.
        channels = make_divisible(STEM_CHANNELS * scale)
        self.conv = _ConvBNAct(in_channels, channels, 3, stride=2, act="hardswish")

        # === Inverted residual blocks ===
        schedule = stride_schedule([row[5] for row in rows], output_stride, stem_stride=2)
        blocks = []
        for (kernel, expanded, out, use_se, act, _), (stride, dilation) in zip(rows, schedule):
            out = make_divisible(out * scale)
            blocks.append(_InvertedResidual(channels, make_divisible(expanded * scale), out,
                                            kernel, stride, dilation, use_se, act))
            channels = out
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x):
        x = self.conv(x)
        features = []
        for index, block in enumerate(self.blocks):
            x = block(x)
            if index in self._output_blocks:
                features.append(x)
        return features


class _InvertedResidual(nn.Layer):
    """1x1 expansion, kxk depthwise (strided or dilated), optional SE, 1x1 projection;
    the input is added back when the block keeps both shape and width."""

    def __init__(self, in_channels, expanded, out_channels, kernel_size, stride, dilation,
                 use_se, act):
        super().__init__()
        self._residual = stride == 1 and in_channels == out_channels
        self.expand_conv = _ConvBNAct(in_channels, expanded, 1, act=act)
        self.bottleneck_conv = _ConvBNAct(expanded, expanded, kernel_size, stride=stride,
                                          dilation=dilation, groups=expanded, act=act)
        # "mid_se": PaddleSeg's key; absent from the state dict when unused.
        self.mid_se = _SqueezeExcite(expanded) if use_se else None
        self.linear_conv = _ConvBNAct(expanded, out_channels, 1, act=None)

    def forward(self, x):
        y = self.bottleneck_conv(self.expand_conv(x))
        if self.mid_se is not None:
            y = self.mid_se(y)
        y = self.linear_conv(y)
        return x + y if self._residual else y


class _SqueezeExcite(nn.Layer):
    """Channel gates from globally pooled features: 1x1 squeeze (ReLU), 1x1 excite, and a
    hard sigmoid of slope 0.2 (the published weights were trained with that slope, not
    Paddle's default 1/6)."""

    def __init__(self, channels):
        super().__init__()
        self.conv1 = nn.Conv2D(channels, channels // SE_REDUCTION, 1)
        self.conv2 = nn.Conv2D(channels // SE_REDUCTION, channels, 1)

    def forward(self, x):
        gate = self.conv2(F.relu(self.conv1(F.adaptive_avg_pool2d(x, 1))))
        return x * F.hardsigmoid(gate, slope=0.2, offset=0.5)


class _ConvBNAct(nn.Layer):
    """Conv2D (no bias, symmetric padding), BatchNorm and an optional activation.

    BatchNorm's scale and shift are excluded from weight decay, as in PaddleSeg.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, dilation=1,
                 groups=1, act=None):
        super().__init__()
        self.conv = nn.Conv2D(in_channels, out_channels, kernel_size, stride=stride,
                              padding=(kernel_size - 1) // 2 * dilation, dilation=dilation,
                              groups=groups, bias_attr=False)
        no_decay = paddle.ParamAttr(regularizer=L2Decay(0.0))
        self.bn = nn.BatchNorm2D(out_channels, weight_attr=no_decay, bias_attr=no_decay)
        self._act = {"relu": F.relu, "hardswish": F.hardswish, None: None}[act]

    def forward(self, x):
        x = self.bn(self.conv(x))
        return x if self._act is None else self._act(x)


def make_divisible(value, divisor=CHANNEL_DIVISOR):
    """Round a scaled width to the nearest multiple of ``divisor`` (at least ``divisor``),
    going one multiple up if rounding would lose more than 10% of it."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def stride_schedule(strides, output_stride, stem_stride=2):
    """(stride, dilation) for each block once the total stride is capped.

    A block that would take the total stride past ``output_stride`` keeps stride 1 and
    the dilation of the blocks before it; from the next block on, the dilation grows by
    the stride it gave up, so the receptive field is the one of the strided network.
    Also used by ``mobilenetv2``.

    Args:
        strides (list[int]): each block's stride in the undilated network.
        output_stride (int|None): the cap; None keeps every stride.
        stem_stride (int, optional): total stride of the layers before the blocks.
            Default: 2.
    """
    schedule = []
    total, dilation = stem_stride, 1
    for stride in strides:
        if stride > 1 and output_stride is not None and total * stride > output_stride:
            schedule.append((1, dilation))
            dilation *= stride
        else:
            schedule.append((stride, dilation))
            total *= stride
    return schedule


def _check_arguments(model_name, scale, output_stride, in_channels):
    if model_name not in _BLOCKS:
        raise ValueError(f"model_name={model_name!r} is not supported; "
                         f"choose one of {sorted(_BLOCKS)}.")
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or scale <= 0:
        raise ValueError(f"scale={scale!r} must be a positive number.")
    if output_stride not in _OUTPUT_STRIDES:
        raise ValueError(f"output_stride={output_stride!r} is not supported; "
                         "choose 8, 16, 32 or None.")
    if isinstance(in_channels, bool) or not isinstance(in_channels, int) or in_channels < 1:
        raise ValueError(f"in_channels={in_channels!r} must be a positive int.")


def _fixed(builder_name, kwargs, **fixed):
    """Refuse keyword arguments that would contradict what a builder's name fixes."""
    for key, value in fixed.items():
        if key in kwargs and kwargs[key] != value:
            raise ValueError(f"{builder_name} fixes {key}={value!r}; got {key}={kwargs[key]!r}. "
                             "Build MobileNetV3 directly for other values.")
    return {**kwargs, **fixed}


# === Registered builders ===

@register
def MobileNetV3_small_x0_35(**kwargs):
    """Small MobileNetV3, scale 0.35; feat_channels [8, 8, 16, 32]."""
    return MobileNetV3(**_fixed("MobileNetV3_small_x0_35", kwargs, model_name="small", scale=0.35))


@register
def MobileNetV3_small_x0_5(**kwargs):
    """Small MobileNetV3, scale 0.5; feat_channels [8, 16, 24, 48]."""
    return MobileNetV3(**_fixed("MobileNetV3_small_x0_5", kwargs, model_name="small", scale=0.5))


@register
def MobileNetV3_small_x0_75(**kwargs):
    """Small MobileNetV3, scale 0.75; feat_channels [16, 24, 40, 72]."""
    return MobileNetV3(**_fixed("MobileNetV3_small_x0_75", kwargs, model_name="small", scale=0.75))


@register
def MobileNetV3_small_x1_0(**kwargs):
    """Small MobileNetV3, scale 1.0; feat_channels [16, 24, 48, 96]."""
    return MobileNetV3(**_fixed("MobileNetV3_small_x1_0", kwargs, model_name="small", scale=1.0))


@register
def MobileNetV3_small_x1_25(**kwargs):
    """Small MobileNetV3, scale 1.25; feat_channels [24, 32, 64, 120]."""
    return MobileNetV3(**_fixed("MobileNetV3_small_x1_25", kwargs, model_name="small", scale=1.25))


@register
def MobileNetV3_large_x0_35(**kwargs):
    """Large MobileNetV3, scale 0.35; feat_channels [8, 16, 40, 56]."""
    return MobileNetV3(**_fixed("MobileNetV3_large_x0_35", kwargs, model_name="large", scale=0.35))


@register
def MobileNetV3_large_x0_5(**kwargs):
    """Large MobileNetV3, scale 0.5; feat_channels [16, 24, 56, 80]."""
    return MobileNetV3(**_fixed("MobileNetV3_large_x0_5", kwargs, model_name="large", scale=0.5))


@register
def MobileNetV3_large_x0_75(**kwargs):
    """Large MobileNetV3, scale 0.75; feat_channels [24, 32, 88, 120]."""
    return MobileNetV3(**_fixed("MobileNetV3_large_x0_75", kwargs, model_name="large", scale=0.75))


@register
def MobileNetV3_large_x1_0(**kwargs):
    """Large MobileNetV3, scale 1.0; feat_channels [24, 40, 112, 160]."""
    return MobileNetV3(**_fixed("MobileNetV3_large_x1_0", kwargs, model_name="large", scale=1.0))


@register
def MobileNetV3_large_x1_25(**kwargs):
    """Large MobileNetV3, scale 1.25; feat_channels [32, 48, 144, 200]."""
    return MobileNetV3(**_fixed("MobileNetV3_large_x1_25", kwargs, model_name="large", scale=1.25))


# PaddleSeg 2.8 names its dilated networks with an "_os8" suffix instead of an argument.

@register
def MobileNetV3_small_x1_0_os8(**kwargs):
    """Small MobileNetV3, scale 1.0, output stride 8; feat_channels [16, 24, 48, 96]."""
    return MobileNetV3(**_fixed("MobileNetV3_small_x1_0_os8", kwargs, model_name="small",
                                scale=1.0, output_stride=8))


@register
def MobileNetV3_large_x1_0_os8(**kwargs):
    """Large MobileNetV3, scale 1.0, output stride 8; feat_channels [24, 40, 112, 160]."""
    return MobileNetV3(**_fixed("MobileNetV3_large_x1_0_os8", kwargs, model_name="large",
                                scale=1.0, output_stride=8))
