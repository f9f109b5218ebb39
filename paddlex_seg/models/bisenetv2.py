"""BiSeNet V2 (Yu et al., "BiSeNet V2: Bilateral Network with Guided Aggregation for
Real-time Semantic Segmentation", IJCV 2021, arXiv:2004.02147).

Two branches read the image side by side: a wide, shallow *detail* branch kept at 1/8
resolution and a narrow, deep *semantic* branch that goes down to 1/32 and ends in a
context-embedding block. A bilateral guided aggregation layer lets each branch gate the
other before a segmentation head classifies the fused map. While training, four more
heads read the semantic branch's intermediate stages (the paper's booster training).
"""
import numbers

import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from .. import compat
from .layers import ConvBN, ConvBNReLU, DepthwiseConvBN, Sigmoid, check_positive_int, resize_to

__all__ = ["BiSeNetV2"]

# Channel widths fixed by the paper (Table 1) and by PaddleSeg's published weights.
DETAIL_CHANNELS = (64, 64, 128)       # detail branch stages S1, S2, S3
SEMANTIC_BASE_CHANNELS = (64, 128)    # scaled by lambd for the stem (S1/S2) and stage S3
SEMANTIC_DEEP_CHANNELS = (64, 128)    # stages S4 and S5, not scaled
FUSED_CHANNELS = 128                  # both branches meet at this width
EXPANSION = 6                         # gather-and-expansion ratio


class BiSeNetV2(nn.Layer):
    """BiSeNet V2 real-time segmentation network.

    Args:
        num_classes (int): number of classes predicted per pixel.
        lambd (float): width multiplier of the semantic branch's stem and third stage
            (the paper's lambda). Default: 0.25.
        align_corners (bool): passed to every bilinear resize. Default: False.
        in_channels (int): channels of the input image. Default: 3.

    Forward returns a list of logits of shape (N, num_classes, H, W), at the input's
    size: ``[logit]`` in eval mode, ``[logit, aux1, aux2, aux3, aux4]`` in training mode,
    the auxiliary logits coming from the semantic branch's stem and stages 3, 4, 5.
    """

    def __init__(self, num_classes, lambd=0.25, align_corners=False, in_channels=3):
        super().__init__()
        check_positive_int("num_classes", num_classes)
        check_positive_int("in_channels", in_channels)
        # The stem halves its width once more inside, so it needs at least 2 channels.
        if (isinstance(lambd, bool) or not isinstance(lambd, numbers.Real)
                or int(SEMANTIC_BASE_CHANNELS[0] * lambd) < 2):
            raise ValueError(f"lambd must be a number >= 1/32 (so that the semantic stem keeps "
                             f"at least 2 channels), got {lambd!r}")
        self.align_corners = align_corners

        stem_ch, stage3_ch = (int(c * lambd) for c in SEMANTIC_BASE_CHANNELS)
        semantic_channels = (stem_ch, stage3_ch) + SEMANTIC_DEEP_CHANNELS

        # === Layers === (attribute names are PaddleSeg's parameter keys)
        self.db = _DetailBranch(in_channels, DETAIL_CHANNELS)
        self.sb = _SemanticBranch(in_channels, semantic_channels)
        self.bga = _GuidedAggregation(FUSED_CHANNELS, align_corners)
        self.head = _SegHead(FUSED_CHANNELS, num_classes)
        # One booster head per semantic stage, only run in training mode.
        self.aux_head1 = _SegHead(semantic_channels[0], num_classes)
        self.aux_head2 = _SegHead(semantic_channels[1], num_classes)
        self.aux_head3 = _SegHead(semantic_channels[2], num_classes)
        self.aux_head4 = _SegHead(semantic_channels[3], num_classes)

        _init_weights(self)

    def forward(self, x):
        detail = self.db(x)
        *stage_features, semantic = self.sb(x)
        logits = [self.head(self.bga(detail, semantic))]
        if self.training:
            aux_heads = (self.aux_head1, self.aux_head2, self.aux_head3, self.aux_head4)
            logits += [head(feat) for head, feat in zip(aux_heads, stage_features)]
        size = paddle.shape(x)[2:]
        return [resize_to(logit, size, self.align_corners) for logit in logits]


class _SegHead(nn.Layer):
    """3x3 ConvBNReLU (same width), dropout 0.1, 1x1 classifier."""

    def __init__(self, in_channels, num_classes):
        super().__init__()
        self.conv_3x3 = nn.Sequential(ConvBNReLU(in_channels, in_channels, 3), nn.Dropout(0.1))
        self.conv_1x1 = nn.Conv2D(in_channels, num_classes, 1)

    def forward(self, x):
        return self.conv_1x1(self.conv_3x3(x))


class _GuidedAggregation(nn.Layer):
    """Bilateral guided aggregation (paper Fig. 6).

    The detail map (1/8) is gated by the upsampled semantic map, the semantic map (1/32)
    by the downsampled detail map; the second product is brought back to 1/8, the two
    are summed and fused by a 3x3 ConvBN.
    """

    def __init__(self, channels, align_corners):
        super().__init__()
        self.align_corners = align_corners
        self.db_branch_keep = nn.Sequential(DepthwiseConvBN(channels, channels, 3),
                                            nn.Conv2D(channels, channels, 1))
        self.db_branch_down = nn.Sequential(ConvBN(channels, channels, 3, stride=2),
                                            nn.AvgPool2D(kernel_size=3, stride=2, padding=1))
        self.sb_branch_keep = nn.Sequential(DepthwiseConvBN(channels, channels, 3),
                                            nn.Conv2D(channels, channels, 1),
                                            Sigmoid())
        self.sb_branch_up = ConvBN(channels, channels, 3)
        self.conv = ConvBN(channels, channels, 3)

    def forward(self, detail, semantic):
        detail_keep = self.db_branch_keep(detail)
        detail_size = paddle.shape(detail_keep)[2:]
        semantic_gate = compat.sigmoid(resize_to(self.sb_branch_up(semantic), detail_size,
                                                 self.align_corners))
        detail_guided = detail_keep * semantic_gate
        semantic_guided = self.db_branch_down(detail) * self.sb_branch_keep(semantic)
        semantic_guided = resize_to(semantic_guided, detail_size, self.align_corners)
        return self.conv(detail_guided + semantic_guided)


class _DetailBranch(nn.Layer):
    """Three stages of plain 3x3 ConvBNReLUs (2, 3, 3 convs), each starting with stride 2."""

    def __init__(self, in_channels, stage_channels):
        super().__init__()
        convs = []
        for out_channels, depth in zip(stage_channels, (2, 3, 3)):
            convs.append(ConvBNReLU(in_channels, out_channels, 3, stride=2))
            convs += [ConvBNReLU(out_channels, out_channels, 3) for _ in range(depth - 1)]
            in_channels = out_channels
        self.convs = nn.Sequential(*convs)

    def forward(self, x):
        return self.convs(x)


class _SemanticBranch(nn.Layer):
    """Stem (1/4), gather-and-expansion stages (1/8, 1/16, 1/32), context embedding.

    forward returns the outputs of the stem and of the three stages (inputs of the
    booster heads), then the context-embedded 1/32 map.
    """

    def __init__(self, in_channels, channels):
        super().__init__()
        stem_ch, stage3_ch, stage4_ch, stage5_ch = channels
        self.stem = _Stem(in_channels, stem_ch)
        self.stage3 = _gather_expand_stage(stem_ch, stage3_ch, depth=2)
        self.stage4 = _gather_expand_stage(stage3_ch, stage4_ch, depth=2)
        self.stage5_4 = _gather_expand_stage(stage4_ch, stage5_ch, depth=4)
        self.ce = _ContextEmbedding(stage5_ch)

    def forward(self, x):
        features = [self.stem(x)]
        for stage in (self.stage3, self.stage4, self.stage5_4):
            features.append(stage(features[-1]))
        return features + [self.ce(features[-1])]


class _Stem(nn.Layer):
    """Strided 3x3 conv, then a conv path and a max-pool path (both stride 2), concatenated
    (conv path first) and fused by a 3x3 conv."""

    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.conv = ConvBNReLU(in_channels, out_channels, 3, stride=2)
        self.left = nn.Sequential(ConvBNReLU(out_channels, out_channels // 2, 1),
                                  ConvBNReLU(out_channels // 2, out_channels, 3, stride=2))
        self.right = nn.MaxPool2D(kernel_size=3, stride=2, padding=1)
        self.fuse = ConvBNReLU(out_channels * 2, out_channels, 3)

    def forward(self, x):
        x = self.conv(x)
        return self.fuse(paddle.concat([self.left(x), self.right(x)], axis=1))


class _ContextEmbedding(nn.Layer):
    """Global average pool, BN, 1x1 ConvBNReLU, broadcast-added to the input, 3x3 conv."""

    def __init__(self, channels):
        super().__init__()
        self.bn = nn.BatchNorm2D(channels)
        self.conv_1x1 = ConvBNReLU(channels, channels, 1)
        self.conv_3x3 = nn.Conv2D(channels, channels, 3, padding=1)

    def forward(self, x):
        context = self.conv_1x1(self.bn(x.mean(axis=[2, 3], keepdim=True)))
        return self.conv_3x3(x + context)


class _GatherExpand(nn.Layer):
    """Gather-and-expansion layer (paper Fig. 5).

    Main path: 3x3 ConvBNReLU, depthwise 3x3 expanding the width ``EXPANSION`` times,
    1x1 ConvBN projection; added to the shortcut, then ReLU. With stride 2 the depthwise
    conv is strided and followed by a second one, and the shortcut becomes a strided
    depthwise conv plus a 1x1 projection.
    """

    def __init__(self, in_channels, out_channels, stride):
        super().__init__()
        self.stride = stride
        wide = in_channels * EXPANSION
        main = [ConvBNReLU(in_channels, in_channels, 3),
                DepthwiseConvBN(in_channels, wide, 3, stride=stride)]
        if stride == 2:
            main.append(DepthwiseConvBN(wide, wide, 3))
        main.append(ConvBN(wide, out_channels, 1))
        # PaddleSeg's keys: "conv" for the stride-1 layer, "branch_1"/"branch_2" for stride 2.
        if stride == 1:
            self.conv = nn.Sequential(*main)
        else:
            self.branch_1 = nn.Sequential(*main)
            self.branch_2 = nn.Sequential(DepthwiseConvBN(in_channels, in_channels, 3, stride=2),
                                          ConvBN(in_channels, out_channels, 1))

    def forward(self, x):
        if self.stride == 1:
            return F.relu(self.conv(x) + x)
        return F.relu(self.branch_1(x) + self.branch_2(x))


def _gather_expand_stage(in_channels, out_channels, depth):
    """One stride-2 gather-and-expansion layer followed by ``depth - 1`` stride-1 ones."""
    blocks = [_GatherExpand(in_channels, out_channels, stride=2)]
    blocks += [_GatherExpand(out_channels, out_channels, stride=1) for _ in range(depth - 1)]
    return nn.Sequential(*blocks)


def _init_weights(net):
    """He-normal convolution weights (fan-in counted per group, unlike Paddle's default)."""
    he_normal = nn.initializer.KaimingNormal()
    for layer in net.sublayers():
        if isinstance(layer, nn.Conv2D):
            he_normal(layer.weight)
