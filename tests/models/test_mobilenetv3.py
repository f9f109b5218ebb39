"""MobileNetV3 backbones: PaddleSeg 2.8.0 parity, the backbone contract, arguments."""
import numpy as np
import paddle
import pytest

from oracle import (backbone_features_of_both, backbone_output_strides, relative_differences,
                    require_paddleseg, assert_same_state_dict_layout)
from paddlex_seg.models.backbones import BACKBONES, list_backbones
from paddlex_seg.models.backbones.mobilenetv3 import MobileNetV3, stride_schedule

FEAT_CHANNELS = {
    "MobileNetV3_small_x0_35": [8, 8, 16, 32],
    "MobileNetV3_small_x0_5": [8, 16, 24, 48],
    "MobileNetV3_small_x0_75": [16, 24, 40, 72],
    "MobileNetV3_small_x1_0": [16, 24, 48, 96],
    "MobileNetV3_small_x1_25": [24, 32, 64, 120],
    "MobileNetV3_large_x0_35": [8, 16, 40, 56],
    "MobileNetV3_large_x0_5": [16, 24, 56, 80],
    "MobileNetV3_large_x0_75": [24, 32, 88, 120],
    "MobileNetV3_large_x1_0": [24, 40, 112, 160],
    "MobileNetV3_large_x1_25": [32, 48, 144, 200],
    "MobileNetV3_small_x1_0_os8": [16, 24, 48, 96],
    "MobileNetV3_large_x1_0_os8": [24, 40, 112, 160],
}
NAMES = list(FEAT_CHANNELS)


def paddleseg_module():
    require_paddleseg()
    from paddleseg.models.backbones import mobilenetv3
    return mobilenetv3


def paddleseg_mobilenetv3(model_name, output_stride):
    """PaddleSeg's network at scale 1.0; it has no output_stride argument, only configs."""
    ps = paddleseg_module()
    if output_stride == 8:
        config = ps.NET_CONFIG[f"{model_name}_os8"]
    else:
        config = [list(row) for row in ps.NET_CONFIG[model_name]]
        if output_stride == 16:
            # By hand: the last stride-2 block keeps stride 1, the blocks after it dilate by 2.
            last = max(i for i, row in enumerate(config) if row[5] == 2)
            config[last][5] = 1
            for row in config[last + 1:]:
                row.append(2)
    return ps.MobileNetV3(config=config, stages_pattern=None,
                          out_index=ps.OUT_INDEX[model_name], scale=1.0)


def feature_parity(ours, theirs, input_shape, seed=0):
    """Max relative difference of each of the 4 feature maps, PaddleSeg's weights in ours."""
    return relative_differences(*backbone_features_of_both(ours, theirs, input_shape, seed), count=4)


# --- state-dict layout and feat_channels of every builder -------------------------------

@pytest.mark.parametrize("name", NAMES)
def test_state_dict_layout_matches_paddleseg(name):
    # Layout only: LazyGuard skips parameter initialisation, shapes are still known.
    with paddle.LazyGuard():
        ours = BACKBONES[name]()
        theirs = getattr(paddleseg_module(), name)()
    assert_same_state_dict_layout(ours, theirs)
    assert ours.feat_channels == theirs.feat_channels == FEAT_CHANNELS[name]


def test_in_channels_layout_matches_paddleseg():
    with paddle.LazyGuard():
        ours = BACKBONES["MobileNetV3_small_x0_5"](in_channels=4)
        theirs = paddleseg_module().MobileNetV3_small_x0_5(in_channels=4)
    assert_same_state_dict_layout(ours, theirs)


# --- features equal PaddleSeg's ----------------------------------------------------------

@pytest.mark.parametrize("output_stride", [None, 16, 8])
@pytest.mark.parametrize("model_name", ["large", "small"])
def test_features_match_paddleseg(model_name, output_stride):
    ours = MobileNetV3(model_name=model_name, output_stride=output_stride)
    theirs = paddleseg_mobilenetv3(model_name, output_stride)
    rel = feature_parity(ours, theirs, (1, 3, 64, 64))
    assert max(rel) <= 1e-4, f"relative max abs difference per feature: {rel}"


def test_parity_check_sees_the_dilation():
    # PaddleSeg's os8 strides without its dilations: same shapes, other features.
    ps = paddleseg_module()
    undilated = [row[:6] for row in ps.NET_CONFIG["large_os8"]]
    theirs = ps.MobileNetV3(config=undilated, stages_pattern=None,
                            out_index=ps.OUT_INDEX["large"])
    rel = feature_parity(MobileNetV3("large", output_stride=8), theirs, (1, 3, 64, 64))
    assert rel[:2] == [0.0, 0.0], "the blocks before the first dilation are the same"
    assert min(rel[2:]) > 1e-2, rel


@pytest.mark.parametrize("model_name", ["large", "small"])
def test_stride_schedule_gives_paddleseg_os8_config(model_name):
    ps = paddleseg_module()
    strides = [row[5] for row in ps.NET_CONFIG[model_name]]
    os8_config = ps.NET_CONFIG[f"{model_name}_os8"]
    expected = [(row[5], row[6] if len(row) > 6 else 1) for row in os8_config]
    assert stride_schedule(strides, 8) == expected
    undilated = [(s, 1) for s in strides]
    assert stride_schedule(strides, None) == stride_schedule(strides, 32) == undilated


# --- the backbone contract for every registered builder -----------------------------------

def test_every_mobilenetv3_builder_is_registered():
    assert list_backbones("MobileNetV3*") == sorted(NAMES)


@pytest.mark.parametrize("name, kwargs, expected", [
    *[(name, {}, [4, 8, 16, 32]) for name in NAMES if not name.endswith("_os8")],
    ("MobileNetV3_small_x1_0_os8", {}, [4, 8, 8, 8]),
    ("MobileNetV3_large_x1_0_os8", {}, [4, 8, 8, 8]),
    ("MobileNetV3_large_x0_5", dict(output_stride=16), [4, 8, 16, 16]),
    ("MobileNetV3_small_x0_5", dict(output_stride=8), [4, 8, 8, 8]),
    ("MobileNetV3_small_x0_5", dict(output_stride=32), [4, 8, 16, 32]),
])
def test_feat_channels_and_strides_match_outputs(name, kwargs, expected):
    net = BACKBONES[name](**kwargs)
    strides = backbone_output_strides(net)
    assert net.feat_channels == FEAT_CHANNELS[name]
    assert strides == expected


# --- arguments -----------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, message", [
    (dict(model_name="medium"), "model_name='medium'"),
    (dict(scale=0), "scale=0 "),
    (dict(scale="1.0"), "scale='1.0'"),
    (dict(output_stride=4), "output_stride=4 "),
    (dict(output_stride=64), "output_stride=64 "),
    (dict(in_channels=0), "in_channels=0 "),
])
def test_bad_arguments_raise_value_error_naming_them(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MobileNetV3(**kwargs)


def test_builders_refuse_to_change_what_their_name_fixes():
    with pytest.raises(ValueError, match="MobileNetV3_small_x0_5 fixes scale=0.5"):
        BACKBONES["MobileNetV3_small_x0_5"](scale=1.0)
    with pytest.raises(ValueError, match="fixes output_stride=8; got output_stride=16"):
        BACKBONES["MobileNetV3_large_x1_0_os8"](output_stride=16)
    net = BACKBONES["MobileNetV3_large_x1_0_os8"](output_stride=8)
    assert net.feat_channels == [24, 40, 112, 160]
