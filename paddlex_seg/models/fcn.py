"""FCN: a fully convolutional classifier on one backbone feature map.

Shelhamer, Long and Darrell, "Fully Convolutional Networks for Semantic Segmentation",
TPAMI 2017 (arXiv:1411.4038). Paired with HRNet this is the HRNet segmentation model
(Wang et al., arXiv:1908.07919): a 1x1 ConvBNReLU and a 1x1 classifier on HRNet's
concatenated stride-4 features.

Sub-layer names (``backbone``, ``head.conv_1``, ``head.cls``) are PaddleSeg's, so its
published FCN ``.pdparams`` load without renaming.
"""
import paddle
import paddle.nn as nn

from .layers import ConvBNReLU, resize_to

__all__ = ["FCN"]


class FCN(nn.Layer):
    """FCN segmentation network.

    Args:
        num_classes (int): number of classes (channels of the logits).
        backbone (paddle.nn.Layer): a backbone with ``feat_channels`` whose forward returns
            a list of feature maps (e.g. ``HRNet_W18()``).
        backbone_indices (tuple[int]): one index into the backbone's feature list: the map
            the head classifies. Default: (-1,).
        channels (int|None): channels of the head's hidden 1x1 ConvBNReLU; None uses the
            selected feature map's channels. Default: None.
        align_corners (bool): ``align_corners`` of the final bilinear upsampling. Default: False.
        bias (bool): give the head's two convolutions a bias. Default: True.

    Forward:
        x (Tensor): [N, C, H, W] images.
        Returns ``[logit]``, one tensor [N, num_classes, H, W].

    Example:
        >>> from paddlex_seg.models.backbones import get_backbone
        >>> net = FCN(num_classes=19, backbone=get_backbone('HRNet_W18'))
    """

    def __init__(self, num_classes, backbone, backbone_indices=(-1,), channels=None,
                 align_corners=False, bias=True):
        super().__init__()
        # === Arguments ===
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes={num_classes!r} must be a positive int.")
        feat_channels = getattr(backbone, "feat_channels", None)
        if not isinstance(backbone, nn.Layer) or not feat_channels:
            raise ValueError(f"backbone={type(backbone).__name__} must be a paddle.nn.Layer with a "
                             "non-empty feat_channels list (build one with "
                             "models.backbones.get_backbone).")
        if (not isinstance(backbone_indices, (list, tuple)) or len(backbone_indices) != 1
                or not isinstance(backbone_indices[0], int)
                or not -len(feat_channels) <= backbone_indices[0] < len(feat_channels)):
            raise ValueError(f"backbone_indices={backbone_indices!r} must hold exactly one index "
                             f"into the backbone's {len(feat_channels)} feature map(s) "
                             f"(feat_channels={list(feat_channels)}).")
        if channels is not None and (isinstance(channels, bool) or not isinstance(channels, int)
                                     or channels < 1):
            raise ValueError(f"channels={channels!r} must be None or a positive int.")

        # === Layers ===
        self.backbone = backbone
        self.backbone_indices = tuple(backbone_indices)
        self.align_corners = align_corners
        in_channels = feat_channels[backbone_indices[0]]
        self.head = _FCNHead(in_channels, channels or in_channels, num_classes, bias)

    def forward(self, x):
        feature = self.backbone(x)[self.backbone_indices[0]]
        logit = self.head(feature)
        return [resize_to(logit, paddle.shape(x)[2:], self.align_corners)]


class _FCNHead(nn.Layer):
    """1x1 ConvBNReLU then a 1x1 classifier convolution."""

    def __init__(self, in_channels, channels, num_classes, bias):
        super().__init__()
        bias_attr = None if bias else False  # None: Paddle's default bias
        self.conv_1 = ConvBNReLU(in_channels, channels, 1, bias_attr=bias_attr)
        self.cls = nn.Conv2D(channels, num_classes, 1, bias_attr=bias_attr)
        # PaddleSeg's head initialisation: convolution weights N(0, 0.001).
        normal = nn.initializer.Normal(mean=0.0, std=0.001)
        normal(self.conv_1._conv.weight)
        normal(self.cls.weight)

    def forward(self, x):
        return self.cls(self.conv_1(x))
