"""DeepLabV3+ network.

Chen et al., "Encoder-Decoder with Atrous Separable Convolution for Semantic Image
Segmentation", ECCV 2018 (arXiv:1802.02611). An ASPP module on the backbone's
deepest feature map, then a light decoder that upsamples it to a shallow feature
map, fuses the two and classifies every pixel.

Parameter keys follow PaddleSeg's ``DeepLabV3P`` (``backbone.*``, ``head.aspp.*``,
``head.decoder.*``) so its published weights load unchanged.
"""
import paddle
import paddle.nn as nn

from . import layers

__all__ = ["DeepLabV3P"]

# Channels of the decoder's 1x1 projection of the low-level feature map, and the
# width of its two separable convolutions. Both are fixed by the paper and by
# PaddleSeg's published weights (e.g. the 304 = 256 + 48 input channels of its
# decoder), so they are not arguments.
LOW_LEVEL_CHANNELS = 48
DECODER_CHANNELS = 256


class DeepLabV3P(nn.Layer):
    """DeepLabV3+ segmentation network on any backbone.

    Args:
        num_classes (int): number of classes predicted per pixel.
        backbone (paddle.nn.Layer): feature extractor with a ``feat_channels`` list
            whose forward returns one feature map per entry (see ``models.backbones``).
        backbone_indices (tuple[int], optional): indices into the backbone's feature
            list: the low-level map fed to the decoder, then the high-level map fed to
            ASPP. Default: (0, 3).
        aspp_ratios (tuple[int], optional): dilation rates of the ASPP branches (rate 1
            is a 1x1 convolution). Use (1, 6, 12, 18) at output stride 16 and
            (1, 12, 24, 36) at output stride 8. Default: (1, 6, 12, 18).
        aspp_out_channels (int, optional): channels of every ASPP branch and of its
            output. Default: 256.
        align_corners (bool, optional): ``align_corners`` of every bilinear resize;
            True suits inputs of size 2^n + 1 (e.g. 769x769). Default: False.

    ``forward(x)`` takes a NCHW image tensor and returns a list holding one logit
    tensor of shape [N, num_classes, H, W], the input's spatial size.

    Example:
        >>> from paddlex_seg.models.backbones import ResNet50_vd
        >>> net = DeepLabV3P(2, ResNet50_vd(output_stride=8), aspp_ratios=(1, 12, 24, 36))
        >>> net(paddle.rand([1, 3, 64, 64]))[0].shape
        [1, 2, 64, 64]
    """

    def __init__(self, num_classes, backbone, backbone_indices=(0, 3),
                 aspp_ratios=(1, 6, 12, 18), aspp_out_channels=256, align_corners=False):
        super().__init__()
        _check_arguments(num_classes, backbone, backbone_indices, aspp_ratios,
                         aspp_out_channels)
        self.backbone = backbone
        self.head = DeepLabV3PHead(
            num_classes,
            backbone_indices=tuple(backbone_indices),
            low_level_channels=backbone.feat_channels[backbone_indices[0]],
            high_level_channels=backbone.feat_channels[backbone_indices[1]],
            aspp_ratios=aspp_ratios,
            aspp_out_channels=aspp_out_channels,
            align_corners=align_corners)
        self.align_corners = align_corners

    def forward(self, x):
        logit = self.head(self.backbone(x))
        return [layers.resize_to(logit, paddle.shape(x)[2:], self.align_corners)]


class DeepLabV3PHead(nn.Layer):
    """ASPP on the high-level feature map, then the decoder; returns low-resolution logits.

    Args:
        num_classes (int): number of classes.
        backbone_indices (tuple[int]): (low-level index, high-level index) into the
            backbone's feature list.
        low_level_channels (int): channels of the low-level feature map.
        high_level_channels (int): channels of the high-level feature map.
        aspp_ratios (tuple[int]): ASPP dilation rates.
        aspp_out_channels (int): ASPP output channels.
        align_corners (bool): ``align_corners`` of the resizes.
    """

    def __init__(self, num_classes, backbone_indices, low_level_channels,
                 high_level_channels, aspp_ratios, aspp_out_channels, align_corners):
        super().__init__()
        self.backbone_indices = backbone_indices
        self.aspp = layers.ASPP(aspp_ratios, high_level_channels, aspp_out_channels,
                                align_corners, use_sep_conv=True, image_pooling=True)
        self.decoder = Decoder(num_classes, low_level_channels, aspp_out_channels,
                               align_corners)

    def forward(self, features):
        low_index, high_index = self.backbone_indices
        return self.decoder(self.aspp(features[high_index]), features[low_index])


class Decoder(nn.Layer):
    """DeepLabV3+ decoder.

    Projects the low-level map to ``LOW_LEVEL_CHANNELS``, upsamples the ASPP output to
    its size, concatenates the two (ASPP first), refines with two separable 3x3
    ConvBNReLUs and classifies with a 1x1 convolution.

    Args:
        num_classes (int): number of classes.
        low_level_channels (int): channels of the low-level feature map.
        aspp_channels (int): channels of the ASPP output.
        align_corners (bool): ``align_corners`` of the upsample.
    """

    def __init__(self, num_classes, low_level_channels, aspp_channels, align_corners):
        super().__init__()
        self.align_corners = align_corners
        self.conv_bn_relu1 = layers.ConvBNReLU(low_level_channels, LOW_LEVEL_CHANNELS, 1)
        self.conv_bn_relu2 = layers.SeparableConvBNReLU(
            aspp_channels + LOW_LEVEL_CHANNELS, DECODER_CHANNELS, 3, padding=1)
        self.conv_bn_relu3 = layers.SeparableConvBNReLU(
            DECODER_CHANNELS, DECODER_CHANNELS, 3, padding=1)
        self.conv = nn.Conv2D(DECODER_CHANNELS, num_classes, 1)

    def forward(self, x, low_level):
        low_level = self.conv_bn_relu1(low_level)
        x = layers.resize_to(x, paddle.shape(low_level)[2:], self.align_corners)
        x = paddle.concat([x, low_level], axis=1)
        return self.conv(self.conv_bn_relu3(self.conv_bn_relu2(x)))


def _check_arguments(num_classes, backbone, backbone_indices, aspp_ratios, aspp_out_channels):
    """Validate DeepLabV3P's arguments at entry, naming what was received."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes={num_classes!r} must be a positive int.")
    feat_channels = getattr(backbone, "feat_channels", None)
    if not isinstance(backbone, nn.Layer) or not isinstance(feat_channels, (list, tuple)):
        raise ValueError(f"backbone={type(backbone).__name__} must be a paddle.nn.Layer with a "
                         "feat_channels list (build one with models.backbones.get_backbone).")
    num_features = len(feat_channels)
    if (not isinstance(backbone_indices, (list, tuple)) or len(backbone_indices) != 2
            or not all(isinstance(i, int) and -num_features <= i < num_features
                       for i in backbone_indices)):
        raise ValueError(f"backbone_indices={backbone_indices!r} must be two indices "
                         f"(low level, high level) into the backbone's {num_features} "
                         "feature maps.")
    if (not isinstance(aspp_ratios, (list, tuple)) or not aspp_ratios
            or not all(isinstance(r, int) and r >= 1 for r in aspp_ratios)):
        raise ValueError(f"aspp_ratios={aspp_ratios!r} must be a non-empty tuple of "
                         "positive ints.")
    if (isinstance(aspp_out_channels, bool) or not isinstance(aspp_out_channels, int)
            or aspp_out_channels < 1):
        raise ValueError(f"aspp_out_channels={aspp_out_channels!r} must be a positive int.")
