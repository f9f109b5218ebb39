"""DeepLabV3+: PaddleSeg 2.8.0 parity, channel derivation, argument checks."""
import paddle
import paddle.nn as nn
import pytest

from oracle import assert_output_parity, assert_same_state_dict_layout, require_paddleseg
from paddlex_seg.models.backbones import get_backbone
from paddlex_seg.models.deeplab import DECODER_CHANNELS, LOW_LEVEL_CHANNELS, DeepLabV3P

# The ASPP rates that go with each output stride.
ASPP_RATIOS = {8: (1, 12, 24, 36), 16: (1, 6, 12, 18)}


def build_pair(num_classes, output_stride, align_corners=False):
    psm = require_paddleseg()
    ratios = ASPP_RATIOS[output_stride]
    ours = DeepLabV3P(num_classes, get_backbone("ResNet50_vd", output_stride=output_stride),
                      aspp_ratios=ratios, align_corners=align_corners)
    theirs = psm.DeepLabV3P(num_classes,
                            psm.backbones.ResNet50_vd(output_stride=output_stride),
                            aspp_ratios=ratios, align_corners=align_corners)
    return ours, theirs


@pytest.mark.parametrize("num_classes", [2, 19])
@pytest.mark.parametrize("output_stride", [8, 16])
def test_matches_paddleseg(num_classes, output_stride):
    ours, theirs = build_pair(num_classes, output_stride)
    assert_output_parity(ours, theirs, (2, 3, 64, 64), rel_tol=1e-4)


@pytest.mark.parametrize("output_stride, input_shape, align_corners", [
    (16, (1, 3, 65, 47), False),
    (8, (1, 3, 65, 65), True),
])
def test_matches_paddleseg_on_odd_sizes(output_stride, input_shape, align_corners):
    ours, theirs = build_pair(19, output_stride, align_corners)
    assert_output_parity(ours, theirs, input_shape, rel_tol=1e-4)


def test_train_mode_returns_one_logit_at_input_size():
    ours, _ = build_pair(3, 16)
    ours.train()
    logits = ours(paddle.rand([2, 3, 64, 48]))
    assert isinstance(logits, list) and len(logits) == 1
    assert logits[0].shape == [2, 3, 64, 48]


class TinyBackbone(nn.Layer):
    """Two feature maps, strides 4 and 16, channels 8 and 24."""

    def __init__(self):
        super().__init__()
        self.feat_channels = [8, 24]
        self.low = nn.Conv2D(3, 8, 3, stride=4, padding=1)
        self.high = nn.Conv2D(8, 24, 3, stride=4, padding=1)

    def forward(self, x):
        low = self.low(x)
        return [low, self.high(low)]


def test_channels_derive_from_backbone_and_aspp_out_channels():
    net = DeepLabV3P(5, TinyBackbone(), backbone_indices=(0, 1), aspp_out_channels=32)
    shapes = {k: v.shape for k, v in net.state_dict().items()}
    assert shapes["head.aspp.aspp_blocks.0._conv.weight"] == [32, 24, 1, 1]
    assert shapes["head.decoder.conv_bn_relu1._conv.weight"] == [LOW_LEVEL_CHANNELS, 8, 1, 1]
    fused = 32 + LOW_LEVEL_CHANNELS
    assert shapes["head.decoder.conv_bn_relu2.depthwise_conv._conv.weight"] == [fused, 1, 3, 3]
    assert shapes["head.decoder.conv_bn_relu2.piontwise_conv._conv.weight"] == [
        DECODER_CHANNELS, fused, 1, 1]
    assert shapes["head.decoder.conv.weight"] == [5, DECODER_CHANNELS, 1, 1]
    net.eval()
    assert net(paddle.rand([1, 3, 33, 50]))[0].shape == [1, 5, 33, 50]


def test_default_decoder_input_is_paddlesegs_304_channels():
    psm = require_paddleseg()
    with paddle.LazyGuard():
        ours = DeepLabV3P(2, get_backbone("ResNet50_vd"))
        theirs = psm.DeepLabV3P(2, psm.backbones.ResNet50_vd())
    fused = ours.state_dict()["head.decoder.conv_bn_relu2.depthwise_conv._conv.weight"]
    assert fused.shape[0] == 304
    assert_same_state_dict_layout(ours, theirs)


@pytest.mark.parametrize("kwargs, message", [
    (dict(num_classes=0), "num_classes=0"),
    (dict(backbone=nn.Conv2D(3, 8, 1)), "backbone=Conv2D"),
    (dict(backbone_indices=(0, 2)), r"backbone_indices=\(0, 2\)"),
    (dict(backbone_indices=(1,)), r"backbone_indices=\(1,\)"),
    (dict(aspp_ratios=()), r"aspp_ratios=\(\)"),
    (dict(aspp_out_channels=-1), "aspp_out_channels=-1"),
])
def test_bad_arguments_raise_value_error_naming_them(kwargs, message):
    args = dict(num_classes=2, backbone=TinyBackbone(), backbone_indices=(0, 1))
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        DeepLabV3P(**args)
