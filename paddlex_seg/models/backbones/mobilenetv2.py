"""MobileNetV2 backbone.

Sandler et al., "MobileNetV2: Inverted Residuals and Linear Bottlenecks", CVPR 2018
(arXiv:1801.04381). A stride-2 stem convolution, then seven stages of inverted
residual blocks (1x1 expansion, 3x3 depthwise, linear 1x1 projection; ReLU6). As in
DeepLabV3+ (Chen et al., arXiv:1802.02611), the last down-sampling stages may trade
stride for dilation so that the deepest map is at stride 8 or 16 (``output_stride``).

Parameter keys follow PaddleSeg's ``MobileNetV2`` (``conv1._conv.weight``,
``conv3._first_block._expand_conv._batch_norm._mean``, ``conv4.conv4_2._linear_conv._conv
.weight``, ...) so its published weights load unchanged.
"""
import paddle.nn as nn
import paddle.nn.functional as F

from ..layers import ConvBN
from .mobilenetv3 import stride_schedule
from .registry import register

__all__ = [
    "MobileNetV2", "MobileNetV2_x0_25", "MobileNetV2_x0_5", "MobileNetV2_x0_75",
    "MobileNetV2_x1_0", "MobileNetV2_x1_5", "MobileNetV2_x2_0",
]

STEM_CHANNELS = 32   # before scaling
# One row per stage (table 2 of the paper): (expansion, output width, blocks, stride).
_STAGES = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
# Stages whose outputs are returned: the last stage at strides 4, 8, 16 and 32.
_OUTPUT_STAGES = (1, 2, 4, 6)
_OUTPUT_STRIDES = (None, 8, 16, 32)


class MobileNetV2(nn.Layer):
    """MobileNetV2 feature extractor returning four feature maps.

    Args:
        scale (float, optional): width multiplier; scaled widths are truncated to
            integers (no rounding to multiples of 8, as in PaddleSeg). Default: 1.0.
        output_stride (int|None, optional): ratio of input size to the last feature
            map's size: 32 or None (no dilation), 16 or 8 (stages that would
            down-sample further keep stride 1 and dilate their depthwise convolutions).
            Default: None.
        in_channels (int, optional): channels of the input image. Default: 3.

    Attributes:
        feat_channels (list[int]): channels of the four returned maps,
            ``int(c * scale)`` for c in [24, 32, 96, 320].

    ``forward(x)`` takes a NCHW tensor and returns a list of four feature maps at
    strides 4, 8, 16 and 32 of the input (strides capped at ``output_stride``).

    Example:
        >>> net = MobileNetV2(scale=0.5, output_stride=8)
        >>> [f.shape[1] for f in net(paddle.rand([1, 3, 64, 64]))]
        [12, 16, 48, 160]
    """

    def __init__(self, scale=1.0, output_stride=None, in_channels=3):
        super().__init__()
        _check_arguments(scale, output_stride, in_channels)
        self.feat_channels = [int(_STAGES[i][1] * scale) for i in _OUTPUT_STAGES]

        # "conv1", "conv2" ... "conv8" are PaddleSeg's parameter keys.
        channels = int(STEM_CHANNELS * scale)
        self.conv1 = ConvBN(in_channels, channels, 3, stride=2, padding=1, bias_attr=False)

        schedule = stride_schedule([row[3] for row in _STAGES], output_stride, stem_stride=2)
        self._stages = []
        for index, ((expansion, width, num_blocks, planned_stride), (stride, dilation)) in (
                enumerate(zip(_STAGES, schedule))):
            out = int(width * scale)
            # A stage that gave up its stride dilates its later blocks by that stride.
            later_dilation = dilation * planned_stride // stride
            stage = _Stage(f"conv{index + 2}", channels, out, expansion, num_blocks,
                           stride, dilation, later_dilation)
            self._stages.append(self.add_sublayer(f"conv{index + 2}", stage))
            channels = out

    def forward(self, x):
        x = F.relu6(self.conv1(x))
        features = []
        for index, stage in enumerate(self._stages):
            x = stage(x)
            if index in _OUTPUT_STAGES:
                features.append(x)
        return features


class _Stage(nn.Layer):
    """A stage of inverted residual blocks; only the first changes width or stride.

    The first block is ``_first_block``; the others are registered as
    ``<name>_2``, ``<name>_3``, ... (PaddleSeg's keys).
    """

    def __init__(self, name, in_channels, out_channels, expansion, num_blocks, stride,
                 first_dilation, dilation):
        super().__init__()
        self._first_block = _InvertedResidual(in_channels, out_channels, expansion, stride,
                                              first_dilation, residual=False)
        self._later_blocks = [
            self.add_sublayer(f"{name}_{i}", _InvertedResidual(
                out_channels, out_channels, expansion, 1, dilation, residual=True))
            for i in range(2, num_blocks + 1)
        ]

    def forward(self, x):
        x = self._first_block(x)
        for block in self._later_blocks:
            x = block(x)
        return x


class _InvertedResidual(nn.Layer):
    """1x1 expansion (ReLU6), 3x3 depthwise (ReLU6), linear 1x1 projection, and the
    input added back when ``residual``.

    The expansion exists even when its factor is 1 (a 1x1 convolution keeping the
    width): the published weights have it.
    """

    def __init__(self, in_channels, out_channels, expansion, stride, dilation, residual):
        super().__init__()
        self._residual = residual
        expanded = int(round(in_channels * expansion))
        self._expand_conv = ConvBN(in_channels, expanded, 1, padding=0, bias_attr=False)
        self._bottleneck_conv = ConvBN(expanded, expanded, 3, stride=stride, padding=dilation,
                                       dilation=dilation, groups=expanded, bias_attr=False)
        self._linear_conv = ConvBN(expanded, out_channels, 1, padding=0, bias_attr=False)

    def forward(self, x):
        y = F.relu6(self._bottleneck_conv(F.relu6(self._expand_conv(x))))
        y = self._linear_conv(y)
        return x + y if self._residual else y


def _check_arguments(scale, output_stride, in_channels):
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or scale <= 0:
        raise ValueError(f"scale={scale!r} must be a positive number.")
    if int(16 * scale) < 1:
        raise ValueError(f"scale={scale!r} is too small: the narrowest stage (16 channels) "
                         "would have none; use scale >= 0.0625.")
    if output_stride not in _OUTPUT_STRIDES:
        raise ValueError(f"output_stride={output_stride!r} is not supported; "
                         "choose 8, 16, 32 or None.")
    if isinstance(in_channels, bool) or not isinstance(in_channels, int) or in_channels < 1:
        raise ValueError(f"in_channels={in_channels!r} must be a positive int.")


def _scaled(builder_name, kwargs, scale):
    if "scale" in kwargs and kwargs["scale"] != scale:
        raise ValueError(f"{builder_name} fixes scale={scale!r}; got scale={kwargs['scale']!r}. "
                         "Build MobileNetV2 directly for other widths.")
    return MobileNetV2(**{**kwargs, "scale": scale})


# === Registered builders ===

@register
def MobileNetV2_x0_25(**kwargs):
    """MobileNetV2, scale 0.25; feat_channels [6, 8, 24, 80]."""
    return _scaled("MobileNetV2_x0_25", kwargs, 0.25)


@register
def MobileNetV2_x0_5(**kwargs):
    """MobileNetV2, scale 0.5; feat_channels [12, 16, 48, 160]."""
    return _scaled("MobileNetV2_x0_5", kwargs, 0.5)


@register
def MobileNetV2_x0_75(**kwargs):
    """MobileNetV2, scale 0.75; feat_channels [18, 24, 72, 240]."""
    return _scaled("MobileNetV2_x0_75", kwargs, 0.75)


@register
def MobileNetV2_x1_0(**kwargs):
    """MobileNetV2, scale 1.0; feat_channels [24, 32, 96, 320]."""
    return _scaled("MobileNetV2_x1_0", kwargs, 1.0)


@register
def MobileNetV2_x1_5(**kwargs):
    """MobileNetV2, scale 1.5; feat_channels [36, 48, 144, 480]."""
    return _scaled("MobileNetV2_x1_5", kwargs, 1.5)


@register
def MobileNetV2_x2_0(**kwargs):
    """MobileNetV2, scale 2.0; feat_channels [48, 64, 192, 640]."""
    return _scaled("MobileNetV2_x2_0", kwargs, 2.0)
