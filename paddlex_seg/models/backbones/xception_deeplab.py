"""Xception backbones of DeepLabV3+.

Chen et al., "Encoder-Decoder with Atrous Separable Convolution for Semantic Image
Segmentation", ECCV 2018 (arXiv:1802.02611), modifying Chollet's Xception (CVPR 2017,
arXiv:1610.02357): every max pooling becomes a strided depthwise-separable convolution
and the exit flow's convolutions are dilated. The network is an entry flow of
down-sampling blocks, a middle flow of residual blocks at 728 channels and an exit
flow of two blocks ending at 2048 channels.

This is the network of PaddleSeg 2.8.0's ``XceptionDeeplab``, including its strides:
every entry-flow block down-samples by 2 and nothing later does, whatever
``output_stride`` says (see ``XceptionDeeplab``). Parameter keys are PaddleSeg's
(``_conv1._conv.weight``, ``xception_65/entry_flow/block1._conv1._bn1._mean``,
``_exit_flow_2._conv3._conv2.weight``, ...) so its published weights load unchanged.
"""
import paddle.nn as nn
import paddle.nn.functional as F

from .registry import register

__all__ = ["XceptionDeeplab", "Xception41_deeplab", "Xception65_deeplab", "Xception71_deeplab"]

# Output widths of the entry-flow blocks, and the number of middle-flow blocks.
_ENTRY_WIDTHS = {41: (128, 256, 728), 65: (128, 256, 728), 71: (128, 256, 256, 728, 728)}
_MIDDLE_BLOCKS = {41: 8, 65: 16, 71: 16}
MIDDLE_WIDTH = 728
EXIT_WIDTHS = ((728, 1024, 1024), (1536, 1536, 2048))
EXIT_DILATION = 2
STEM_WIDTHS = (32, 64)
# PaddleSeg's BatchNorm settings for this network (the published weights' statistics).
_BN = dict(epsilon=1e-3, momentum=0.99)


class XceptionDeeplab(nn.Layer):
    """Xception feature extractor returning a low-level and a high-level feature map.

    Args:
        layers (int, optional): depth, 41, 65 or 71 (41 has 8 middle-flow blocks, 65
            and 71 have 16; 71 has five entry-flow blocks instead of three).
            Default: 65.
        output_stride (int, optional): 8 or 16, accepted for compatibility with
            PaddleSeg's ``XceptionDeeplab``, which ignores it: in PaddleSeg 2.8.0 every
            entry-flow block strides 2 and the exit flow is dilated by 2 for either
            value. This network reproduces that, so the features (and published
            weights) are PaddleSeg's. Default: 16.
        in_channels (int, optional): channels of the input image. Default: 3.

    Attributes:
        feat_channels (list[int]): [128, 2048].

    ``forward(x)`` takes a NCHW tensor and returns two feature maps: the first
    entry-flow block's output (stride 4) and the exit flow's (stride 16 for depths 41
    and 65, 64 for depth 71).

    Example:
        >>> net = XceptionDeeplab(layers=41)
        >>> [f.shape for f in net(paddle.rand([1, 3, 64, 64]))]
        [[1, 128, 16, 16], [1, 2048, 4, 4]]
    """

    def __init__(self, layers=65, output_stride=16, in_channels=3):
        super().__init__()
        _check_arguments(layers, output_stride, in_channels)
        self.feat_channels = [_ENTRY_WIDTHS[layers][0], EXIT_WIDTHS[-1][-1]]
        prefix = f"xception_{layers}"  # PaddleSeg's key prefix of the entry and middle flows

        # === Stem ===
        self._conv1 = _ConvBN(in_channels, STEM_WIDTHS[0], 3, stride=2)
        self._conv2 = _ConvBN(STEM_WIDTHS[0], STEM_WIDTHS[1], 3)

        # === Entry flow: each block ends with a stride-2 separable convolution ===
        self._entry_flow = []
        channels = STEM_WIDTHS[1]
        for index, width in enumerate(_ENTRY_WIDTHS[layers]):
            block = _XceptionBlock(channels, (width,) * 3, stride=2)
            self._entry_flow.append(
                self.add_sublayer(f"{prefix}/entry_flow/block{index + 1}", block))
            channels = width

        # === Middle flow: residual blocks with identity shortcuts ===
        self._middle_flow = [
            self.add_sublayer(
                f"{prefix}/middle_flow/block{index + 1}",
                _XceptionBlock(MIDDLE_WIDTH, (MIDDLE_WIDTH,) * 3, shortcut="identity"))
            for index in range(_MIDDLE_BLOCKS[layers])
        ]

        # === Exit flow ===
        self._exit_flow_1 = _XceptionBlock(MIDDLE_WIDTH, EXIT_WIDTHS[0])
        self._exit_flow_2 = _XceptionBlock(EXIT_WIDTHS[0][-1], EXIT_WIDTHS[1],
                                           dilation=EXIT_DILATION, shortcut=None,
                                           relu_inside=True)

    def forward(self, x):
        x = self._conv2(self._conv1(x))
        low_level = x = self._entry_flow[0](x)
        for block in self._entry_flow[1:] + self._middle_flow:
            x = block(x)
        return [low_level, self._exit_flow_2(self._exit_flow_1(x))]


class _XceptionBlock(nn.Layer):
    """Three 3x3 separable convolutions (the last one strided), plus a shortcut.

    Args:
        in_channels (int): input channels.
        widths (tuple[int]): output channels of the three separable convolutions.
        stride (int): stride of the third convolution and of the shortcut.
        dilation (int): dilation of the three depthwise convolutions.
        shortcut (str|None): 'conv' (a strided 1x1 ConvBN), 'identity' or None.
        relu_inside (bool): False puts a ReLU before each separable convolution (the
            shortcut still takes the un-activated input); True puts one after each of
            its BatchNorms instead.
    """

    def __init__(self, in_channels, widths, stride=1, dilation=1, shortcut="conv",
                 relu_inside=False):
        super().__init__()
        self._relu_before = not relu_inside
        self._shortcut = shortcut
        ins = (in_channels,) + tuple(widths[:2])
        strides = (1, 1, stride)
        self._conv1, self._conv2, self._conv3 = (
            _SeparableConvBN(i, o, s, dilation, relu_inside)
            for i, o, s in zip(ins, widths, strides))
        if shortcut == "conv":
            self._short = _ConvBN(in_channels, widths[-1], 1, stride=stride, relu=False)

    def forward(self, x):
        y = x
        for conv in (self._conv1, self._conv2, self._conv3):
            y = conv(F.relu(y) if self._relu_before else y)
        if self._shortcut == "conv":
            return y + self._short(x)
        return y + x if self._shortcut == "identity" else y


class _SeparableConvBN(nn.Layer):
    """3x3 depthwise conv + BN, then 1x1 pointwise conv + BN, each BN optionally
    followed by ReLU. Keys ``_conv1``/``_bn1`` (depthwise), ``_conv2``/``_bn2``."""

    def __init__(self, in_channels, out_channels, stride, dilation, relu):
        super().__init__()
        self._relu = relu
        self._conv1 = nn.Conv2D(in_channels, in_channels, 3, stride=stride, padding=dilation,
                                dilation=dilation, groups=in_channels, bias_attr=False)
        self._bn1 = nn.BatchNorm2D(in_channels, **_BN)
        self._conv2 = nn.Conv2D(in_channels, out_channels, 1, bias_attr=False)
        self._bn2 = nn.BatchNorm2D(out_channels, **_BN)

    def forward(self, x):
        x = self._bn1(self._conv1(x))
        x = F.relu(x) if self._relu else x
        x = self._bn2(self._conv2(x))
        return F.relu(x) if self._relu else x


class _ConvBN(nn.Layer):
    """Conv2D (no bias, symmetric padding), BatchNorm and, by default, ReLU.
    Keys ``_conv`` and ``_bn``."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, relu=True):
        super().__init__()
        self._relu = relu
        self._conv = nn.Conv2D(in_channels, out_channels, kernel_size, stride=stride,
                               padding=(kernel_size - 1) // 2, bias_attr=False)
        self._bn = nn.BatchNorm2D(out_channels, **_BN)

    def forward(self, x):
        x = self._bn(self._conv(x))
        return F.relu(x) if self._relu else x


def _check_arguments(layers, output_stride, in_channels):
    if layers not in _ENTRY_WIDTHS:
        raise ValueError(f"layers={layers!r} is not supported; "
                         f"choose one of {sorted(_ENTRY_WIDTHS)}.")
    if output_stride not in (8, 16):
        raise ValueError(f"output_stride={output_stride!r} is not supported; choose 8 or 16.")
    if isinstance(in_channels, bool) or not isinstance(in_channels, int) or in_channels < 1:
        raise ValueError(f"in_channels={in_channels!r} must be a positive int.")


def _with_depth(builder_name, kwargs, layers):
    if "layers" in kwargs and kwargs["layers"] != layers:
        raise ValueError(f"{builder_name} fixes layers={layers}; got layers={kwargs['layers']!r}.")
    return XceptionDeeplab(**{**kwargs, "layers": layers})


# === Registered builders ===

@register
def Xception41_deeplab(**kwargs):
    """XceptionDeeplab with 8 middle-flow blocks; feat_channels [128, 2048]."""
    return _with_depth("Xception41_deeplab", kwargs, 41)


@register
def Xception65_deeplab(**kwargs):
    """XceptionDeeplab with 16 middle-flow blocks; feat_channels [128, 2048]."""
    return _with_depth("Xception65_deeplab", kwargs, 65)


@register
def Xception71_deeplab(**kwargs):
    """XceptionDeeplab with five entry-flow blocks and 16 middle-flow blocks;
    feat_channels [128, 2048]."""
    return _with_depth("Xception71_deeplab", kwargs, 71)
