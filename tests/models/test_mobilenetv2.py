"""MobileNetV2 backbones: PaddleSeg 2.8.0 parity, dilation, the backbone contract, arguments."""
import numpy as np
import paddle
import pytest

from oracle import (backbone_output_strides, assert_same_state_dict_layout, relative_differences,
                    require_paddleseg)
from oracle import backbone_features_of_both as features_of_both
from paddlex_seg.models.backbones import BACKBONES, list_backbones
from paddlex_seg.models.backbones.mobilenetv2 import MobileNetV2

FEAT_CHANNELS = {
    "MobileNetV2_x0_25": [6, 8, 24, 80],
    "MobileNetV2_x0_5": [12, 16, 48, 160],
    "MobileNetV2_x0_75": [18, 24, 72, 240],
    "MobileNetV2_x1_0": [24, 32, 96, 320],
    "MobileNetV2_x1_5": [36, 48, 144, 480],
    "MobileNetV2_x2_0": [48, 64, 192, 640],
}
NAMES = list(FEAT_CHANNELS)


def paddleseg_mobilenetv2(name, **kwargs):
    require_paddleseg()
    from paddleseg.models.backbones import mobilenetv2
    # PaddleSeg names every parameter explicitly ("conv1_1_weights", ...); a second
    # instance in one process is refused unless names are drawn from a fresh scope.
    with paddle.utils.unique_name.guard():
        return getattr(mobilenetv2, name)(**kwargs)


# --- state-dict layout and feat_channels of every builder -------------------------------

@pytest.mark.parametrize("name", NAMES)
def test_state_dict_layout_matches_paddleseg(name):
    # Layout only: LazyGuard skips parameter initialisation, shapes are still known.
    with paddle.LazyGuard():
        ours = BACKBONES[name]()
        theirs = paddleseg_mobilenetv2(name)
    assert_same_state_dict_layout(ours, theirs)
    assert ours.feat_channels == theirs.feat_channels == FEAT_CHANNELS[name]


def test_in_channels_layout_matches_paddleseg():
    with paddle.LazyGuard():
        ours = BACKBONES["MobileNetV2_x0_5"](in_channels=1)
        theirs = paddleseg_mobilenetv2("MobileNetV2_x0_5", in_channels=1)
    assert_same_state_dict_layout(ours, theirs)


# --- features equal PaddleSeg's ----------------------------------------------------------

@pytest.mark.parametrize("name, input_shape", [
    ("MobileNetV2_x1_0", (1, 3, 64, 64)),
    ("MobileNetV2_x0_5", (1, 3, 64, 64)),
    ("MobileNetV2_x0_5", (2, 3, 67, 45)),
])
def test_features_match_paddleseg(name, input_shape):
    rel = relative_differences(*features_of_both(BACKBONES[name](), paddleseg_mobilenetv2(name),
                                                 input_shape))
    assert max(rel) <= 1e-4, f"relative max abs difference per feature: {rel}"


# PaddleSeg's MobileNetV2 has no output_stride. The oracle for the dilated network is
# the "a trous" identity: a stage that keeps stride 1 and dilates what follows computes
# the strided network's features on a finer grid, so subsampling them gives PaddleSeg's
# features exactly (MobileNetV2 has no global pooling that would break this).
@pytest.mark.parametrize("output_stride, subsampling", [
    (16, [1, 1, 1, 2]),
    (8, [1, 1, 2, 4]),
])
def test_dilated_features_subsample_to_paddleseg_features(output_stride, subsampling):
    ours = BACKBONES["MobileNetV2_x1_0"](output_stride=output_stride)
    feats_ours, feats_theirs = features_of_both(ours, paddleseg_mobilenetv2("MobileNetV2_x1_0"),
                                                (1, 3, 64, 64))
    assert [f.shape[2] for f in feats_ours] == [64 // 4, 64 // 8, *[64 // output_stride] * 2]
    subsampled = [f[:, :, ::step, ::step] for f, step in zip(feats_ours, subsampling)]
    rel = relative_differences(subsampled, feats_theirs)
    assert max(rel) <= 1e-4, f"relative max abs difference per feature: {rel}"


def test_subsampling_check_sees_a_wrong_dilation():
    # Stride removed but no dilation added: same shapes, other features.
    ours = BACKBONES["MobileNetV2_x1_0"](output_stride=16)
    for name, layer in ours.named_sublayers():
        if name.startswith(("conv7.conv7_", "conv8.")) and name.endswith("_bottleneck_conv"):
            layer._conv._dilation = [1, 1]
            layer._conv._padding = 1
            layer._conv._updated_padding = [1, 1]
    feats_ours, feats_theirs = features_of_both(ours, paddleseg_mobilenetv2("MobileNetV2_x1_0"),
                                                (1, 3, 64, 64))
    rel = relative_differences([f[:, :, ::s, ::s] for f, s in zip(feats_ours, [1, 1, 1, 2])],
                               feats_theirs)
    assert rel[:3] == [0.0, 0.0, 0.0] and rel[3] > 1e-2, rel


# --- the backbone contract for every registered builder -----------------------------------

def test_every_mobilenetv2_builder_is_registered():
    assert list_backbones("MobileNetV2*") == sorted(NAMES)


@pytest.mark.parametrize("name, output_stride, expected", [
    *[(name, None, [4, 8, 16, 32]) for name in NAMES],
    ("MobileNetV2_x0_5", 32, [4, 8, 16, 32]),
    ("MobileNetV2_x0_5", 16, [4, 8, 16, 16]),
    ("MobileNetV2_x0_5", 8, [4, 8, 8, 8]),
])
def test_feat_channels_and_strides_match_outputs(name, output_stride, expected):
    net = BACKBONES[name](output_stride=output_stride)
    strides = backbone_output_strides(net)
    assert net.feat_channels == FEAT_CHANNELS[name]
    assert strides == expected


# --- arguments -----------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, message", [
    (dict(scale=0), "scale=0 "),
    (dict(scale=0.01), "scale=0.01 is too small"),
    (dict(scale=True), "scale=True "),
    (dict(output_stride=4), "output_stride=4 "),
    (dict(output_stride=24), "output_stride=24 "),
    (dict(in_channels=0), "in_channels=0 "),
])
def test_bad_arguments_raise_value_error_naming_them(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MobileNetV2(**kwargs)


def test_builders_refuse_another_scale():
    with pytest.raises(ValueError, match="MobileNetV2_x0_5 fixes scale=0.5; got scale=1.0"):
        BACKBONES["MobileNetV2_x0_5"](scale=1.0)
