"""Building blocks shared by every network.

Attribute names (``_conv``, ``_batch_norm``, ``depthwise_conv``, ``piontwise_conv``, ...)
are PaddleSeg's: they are the keys of its published ``.pdparams`` files, so they must
not be renamed, misspellings included.

Convolutions default to ``padding='same'`` like PaddleSeg's layers; for stride 2 Paddle
pads that asymmetrically, and matching it keeps outputs identical to PaddleSeg's.
"""
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from .. import compat

__all__ = [
    "ConvBN", "ConvBNReLU", "SeparableConvBNReLU", "DepthwiseConvBN",
    "AuxLayer", "ASPP", "PyramidPooling", "Sigmoid", "resize_to",
]


def resize_to(x, size, align_corners=False, mode="bilinear"):
    """Resize a NCHW tensor to spatial ``size`` (a [h, w] list or shape slice)."""
    return F.interpolate(x, size=size, mode=mode, align_corners=align_corners)


class Sigmoid(nn.Layer):
    """``nn.Sigmoid`` that also traces into an old-IR program on Paddle 3 (see ``compat.sigmoid``)."""

    def forward(self, x):
        return compat.sigmoid(x)


class ConvBN(nn.Layer):
    """Conv2D followed by BatchNorm2D. Extra keyword arguments go to the convolution."""

    def __init__(self, in_channels, out_channels, kernel_size, padding="same", **conv_kwargs):
        super().__init__()
        self._conv = nn.Conv2D(in_channels, out_channels, kernel_size, padding=padding, **conv_kwargs)
        self._batch_norm = nn.BatchNorm2D(out_channels)

    def forward(self, x):
        return self._batch_norm(self._conv(x))


class ConvBNReLU(ConvBN):
    """Conv2D, BatchNorm2D, ReLU."""

    def __init__(self, in_channels, out_channels, kernel_size, padding="same", **conv_kwargs):
        super().__init__(in_channels, out_channels, kernel_size, padding=padding, **conv_kwargs)
        self._relu = nn.ReLU()

    def forward(self, x):
        return self._relu(self._batch_norm(self._conv(x)))


class DepthwiseConvBN(nn.Layer):
    """Depthwise Conv2D (groups = in_channels) followed by BatchNorm2D."""

    def __init__(self, in_channels, out_channels, kernel_size, padding="same", **conv_kwargs):
        super().__init__()
        self.depthwise_conv = ConvBN(in_channels, out_channels, kernel_size, padding=padding,
                                     groups=in_channels, **conv_kwargs)

    def forward(self, x):
        return self.depthwise_conv(x)


class SeparableConvBNReLU(nn.Layer):
    """Depthwise ConvBN then pointwise (1x1) ConvBNReLU."""

    def __init__(self, in_channels, out_channels, kernel_size, padding="same",
                 pointwise_bias=None, **conv_kwargs):
        super().__init__()
        self.depthwise_conv = ConvBN(in_channels, in_channels, kernel_size, padding=padding,
                                     groups=in_channels, **conv_kwargs)
        # "piontwise" (sic): PaddleSeg's parameter key.
        self.piontwise_conv = ConvBNReLU(in_channels, out_channels, 1, groups=1,
                                         bias_attr=pointwise_bias)

    def forward(self, x):
        return self.piontwise_conv(self.depthwise_conv(x))


class AuxLayer(nn.Layer):
    """Auxiliary head: 3x3 ConvBNReLU, dropout, 1x1 classifier convolution."""

    def __init__(self, in_channels, inter_channels, out_channels, dropout_prob=0.1, **conv_kwargs):
        super().__init__()
        self.conv_bn_relu = ConvBNReLU(in_channels, inter_channels, 3, padding=1, **conv_kwargs)
        self.dropout = nn.Dropout(p=dropout_prob)
        self.conv = nn.Conv2D(inter_channels, out_channels, 1)

    def forward(self, x):
        return self.conv(self.dropout(self.conv_bn_relu(x)))


class ASPP(nn.Layer):
    """Atrous Spatial Pyramid Pooling (Chen et al., DeepLab v3, arXiv:1706.05587).

    One branch per dilation rate (rate 1 is a 1x1 convolution, the others 3x3 atrous,
    separable when ``use_sep_conv``), an optional image-pooling branch, then a 1x1
    projection of the concatenated branches and dropout 0.1.

    Args:
        aspp_ratios (tuple[int]): dilation rates, one branch each.
        in_channels (int): channels of the input feature map.
        out_channels (int): channels of every branch and of the output.
        align_corners (bool): passed to the image-pooling upsample.
        use_sep_conv (bool): separable 3x3 convolutions for the atrous branches.
        image_pooling (bool): add the global-average-pooling branch.
    """

    def __init__(self, aspp_ratios, in_channels, out_channels, align_corners,
                 use_sep_conv=False, image_pooling=False):
        super().__init__()
        self.align_corners = align_corners
        branches = []
        for ratio in aspp_ratios:
            if ratio == 1:
                branches.append(ConvBNReLU(in_channels, out_channels, 1))
            elif use_sep_conv:
                branches.append(SeparableConvBNReLU(in_channels, out_channels, 3,
                                                    dilation=ratio, padding=ratio))
            else:
                branches.append(ConvBNReLU(in_channels, out_channels, 3, dilation=ratio, padding=ratio))
        self.aspp_blocks = nn.LayerList(branches)

        self.image_pooling = image_pooling
        if image_pooling:
            self.global_avg_pool = nn.Sequential(
                nn.AdaptiveAvgPool2D(output_size=(1, 1)),
                ConvBNReLU(in_channels, out_channels, 1, bias_attr=False),
            )
        num_branches = len(aspp_ratios) + int(image_pooling)
        self.conv_bn_relu = ConvBNReLU(out_channels * num_branches, out_channels, 1)
        self.dropout = nn.Dropout(p=0.1)

    def forward(self, x):
        outputs = [branch(x) for branch in self.aspp_blocks]
        if self.image_pooling:
            pooled = self.global_avg_pool(x)
            outputs.append(resize_to(pooled, paddle.shape(x)[2:], self.align_corners))
        return self.dropout(self.conv_bn_relu(paddle.concat(outputs, axis=1)))


class PyramidPooling(nn.Layer):
    """Pyramid pooling module (Zhao et al., PSPNet, arXiv:1612.01105).

    Average-pools the input to each bin size, projects with a 1x1 ConvBNReLU, upsamples
    back, concatenates with the input (input first, then the largest bin down to the
    smallest) and fuses with a 3x3 ConvBNReLU.

    Args:
        in_channels (int): input channels.
        out_channels (int): output channels.
        bin_sizes (tuple[int]): output sizes of the adaptive pools.
        dim_reduction (bool): project each pooled map to in_channels / len(bin_sizes).
        align_corners (bool): passed to the upsample.
    """

    def __init__(self, in_channels, out_channels, bin_sizes, dim_reduction, align_corners):
        super().__init__()
        self.align_corners = align_corners
        inter_channels = in_channels // len(bin_sizes) if dim_reduction else in_channels
        self.stages = nn.LayerList([
            nn.Sequential(nn.AdaptiveAvgPool2D(output_size=(size, size)),
                          ConvBNReLU(in_channels, inter_channels, 1))
            for size in bin_sizes
        ])
        self.conv_bn_relu2 = ConvBNReLU(in_channels + inter_channels * len(bin_sizes),
                                        out_channels, 3, padding=1)

    def forward(self, x):
        size = paddle.shape(x)[2:]
        pooled = [resize_to(stage(x), size, self.align_corners) for stage in self.stages]
        return self.conv_bn_relu2(paddle.concat([x] + pooled[::-1], axis=1))


def check_positive_int(name, value):
    """Raise ValueError unless ``value`` is an integer >= 1 (a bool is not accepted).

    Networks call it at entry for counts such as ``num_classes`` and ``in_channels``.
    """
    import numbers  # local: keeps this appended helper self-contained

    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
