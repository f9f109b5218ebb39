"""Fast-SCNN (Poudel et al., "Fast-SCNN: Fast Semantic Segmentation Network", BMVC 2019,
arXiv:1902.04502).

A shallow learning-to-downsample module brings the image to 1/8 resolution; a global
feature extractor (MobileNetV2-style inverted bottlenecks down to 1/32, then pyramid
pooling) reads that map, and a feature fusion module adds its upsampled output back to
the 1/8 map before a light classifier. The 1/8 map is computed once and shared, which
is what keeps the network fast.
"""
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from .layers import (AuxLayer, ConvBN, ConvBNReLU, PyramidPooling, SeparableConvBNReLU,
                     check_positive_int, resize_to)

__all__ = ["FastSCNN"]

# Widths from the paper (Table 1), which PaddleSeg's published weights follow.
DOWNSAMPLE_CHANNELS = (32, 48, 64)   # the three stride-2 layers of learning-to-downsample
BOTTLENECK_STAGES = ((64, 3, 2), (96, 3, 2), (128, 3, 1))   # (width, blocks, stride)
EXPANSION = 6
FUSED_CHANNELS = 128
AUX_CHANNELS = 32
PYRAMID_BINS = (1, 2, 3, 6)


class FastSCNN(nn.Layer):
    """Fast-SCNN real-time segmentation network.

    Args:
        num_classes (int): number of classes predicted per pixel.
        enable_auxiliary_loss (bool): build an auxiliary head on the learning-to-downsample
            output; in training mode its logit follows the main one. Default: True.
        align_corners (bool): passed to the bilinear resizes of the fusion module and of
            the outputs. Default: False.
        in_channels (int): channels of the input image. Default: 3.

    Forward returns a list of (N, num_classes, H, W) logits at the input's size:
    ``[logit, aux_logit]`` in training mode with ``enable_auxiliary_loss``, otherwise
    ``[logit]``.
    """

    def __init__(self, num_classes, enable_auxiliary_loss=True, align_corners=False, in_channels=3):
        super().__init__()
        check_positive_int("num_classes", num_classes)
        check_positive_int("in_channels", in_channels)
        self.enable_auxiliary_loss = enable_auxiliary_loss
        self.align_corners = align_corners

        # === Layers === (attribute names are PaddleSeg's parameter keys)
        self.learning_to_downsample = _LearningToDownsample(in_channels, DOWNSAMPLE_CHANNELS)
        shared_channels = DOWNSAMPLE_CHANNELS[-1]
        self.global_feature_extractor = _GlobalFeatureExtractor(shared_channels, FUSED_CHANNELS)
        self.feature_fusion = _FeatureFusion(shared_channels, FUSED_CHANNELS, align_corners)
        self.classifier = _Classifier(FUSED_CHANNELS, num_classes)
        if enable_auxiliary_loss:
            self.auxlayer = AuxLayer(shared_channels, AUX_CHANNELS, num_classes)

    def forward(self, x):
        shared = self.learning_to_downsample(x)
        context = self.global_feature_extractor(shared)
        logits = [self.classifier(self.feature_fusion(shared, context))]
        if self.training and self.enable_auxiliary_loss:
            logits.append(self.auxlayer(shared))
        size = paddle.shape(x)[2:]
        return [resize_to(logit, size, self.align_corners) for logit in logits]


class _Classifier(nn.Layer):
    """Two depthwise-separable 3x3 convs, dropout 0.1, 1x1 classifier."""

    def __init__(self, channels, num_classes):
        super().__init__()
        self.dsconv1 = SeparableConvBNReLU(channels, channels, 3, padding=1)
        self.dsconv2 = SeparableConvBNReLU(channels, channels, 3, padding=1)
        self.dropout = nn.Dropout(p=0.1)
        self.conv = nn.Conv2D(channels, num_classes, 1)

    def forward(self, x):
        return self.conv(self.dropout(self.dsconv2(self.dsconv1(x))))


class _FeatureFusion(nn.Layer):
    """Upsample the global features to the 1/8 map's size, depthwise 3x3 then 1x1 ConvBN;
    project the 1/8 map with a 1x1 ConvBN; add and ReLU."""

    def __init__(self, high_res_channels, channels, align_corners):
        super().__init__()
        self.align_corners = align_corners
        self.dwconv = ConvBNReLU(channels, channels, 3, padding=1, groups=channels, bias_attr=False)
        self.conv_low_res = ConvBN(channels, channels, 1)
        self.conv_high_res = ConvBN(high_res_channels, channels, 1)

    def forward(self, high_res, low_res):
        low_res = resize_to(low_res, paddle.shape(high_res)[2:], self.align_corners)
        low_res = self.conv_low_res(self.dwconv(low_res))
        return F.relu(self.conv_high_res(high_res) + low_res)


class _LearningToDownsample(nn.Layer):
    """A strided 3x3 ConvBNReLU and two strided depthwise-separable convs: 1/8 resolution."""

    def __init__(self, in_channels, channels):
        super().__init__()
        first, second, out = channels
        self.conv_bn_relu = ConvBNReLU(in_channels, first, 3, stride=2)
        self.dsconv_bn_relu1 = SeparableConvBNReLU(first, second, 3, stride=2, padding=1)
        self.dsconv_bn_relu2 = SeparableConvBNReLU(second, out, 3, stride=2, padding=1)

    def forward(self, x):
        return self.dsconv_bn_relu2(self.dsconv_bn_relu1(self.conv_bn_relu(x)))


class _GlobalFeatureExtractor(nn.Layer):
    """Three stages of inverted bottlenecks (1/16, 1/32, 1/32), then pyramid pooling."""

    def __init__(self, in_channels, out_channels):
        super().__init__()
        stages = []
        for width, blocks, stride in BOTTLENECK_STAGES:
            stages.append(nn.Sequential(
                _InvertedBottleneck(in_channels, width, stride),
                *[_InvertedBottleneck(width, width, 1) for _ in range(blocks - 1)]))
            in_channels = width
        self.bottleneck1, self.bottleneck2, self.bottleneck3 = stages
        # PaddleSeg resizes the pooled maps with align_corners=True whatever the network's
        # align_corners is; kept so that its trained weights give the same outputs.
        self.ppm = PyramidPooling(in_channels, out_channels, PYRAMID_BINS, dim_reduction=True,
                                  align_corners=True)

    def forward(self, x):
        return self.ppm(self.bottleneck3(self.bottleneck2(self.bottleneck1(x))))


class _InvertedBottleneck(nn.Layer):
    """MobileNetV2 block: 1x1 expansion, 3x3 depthwise (carrying the stride), linear 1x1
    projection; residual when the shape is unchanged."""

    def __init__(self, in_channels, out_channels, stride):
        super().__init__()
        self.use_shortcut = stride == 1 and in_channels == out_channels
        wide = in_channels * EXPANSION
        self.block = nn.Sequential(
            ConvBNReLU(in_channels, wide, 1, bias_attr=False),
            ConvBNReLU(wide, wide, 3, stride=stride, padding=1, groups=wide, bias_attr=False),
            ConvBN(wide, out_channels, 1, bias_attr=False))

    def forward(self, x):
        out = self.block(x)
        return x + out if self.use_shortcut else out
