"""Xception (DeepLab) backbones: PaddleSeg 2.8.0 parity, the backbone contract, arguments."""
import contextlib

import numpy as np
import paddle
import pytest

from oracle import (backbone_output_strides, assert_same_state_dict_layout, backbone_features_of_both,
                    relative_differences, require_paddleseg)
from paddlex_seg.models.backbones import BACKBONES, list_backbones
from paddlex_seg.models.backbones.xception_deeplab import XceptionDeeplab

NAMES = ["Xception41_deeplab", "Xception65_deeplab", "Xception71_deeplab"]


def paddleseg_xception(name, **kwargs):
    require_paddleseg()
    from paddleseg.models import backbones
    return getattr(backbones, name)(**kwargs)


@contextlib.contextmanager
def cheap_init():
    """Build with constant initial values: about 5x faster than Paddle's random default
    initialisation, and the parity checks overwrite every value anyway."""
    zero = paddle.nn.initializer.Constant(0.0)
    paddle.nn.initializer.set_global_initializer(zero, zero)
    try:
        yield
    finally:
        paddle.nn.initializer.set_global_initializer(None)


# --- state-dict layout and feat_channels of every builder -------------------------------

@pytest.mark.parametrize("output_stride", [8, 16])
@pytest.mark.parametrize("name", NAMES)
def test_state_dict_layout_matches_paddleseg(name, output_stride):
    # Layout only: LazyGuard skips parameter initialisation, shapes are still known.
    with paddle.LazyGuard():
        ours = BACKBONES[name](output_stride=output_stride)
        theirs = paddleseg_xception(name, output_stride=output_stride)
    assert_same_state_dict_layout(ours, theirs)
    assert ours.feat_channels == theirs.feat_channels == [128, 2048]


def test_in_channels_layout_matches_paddleseg():
    with paddle.LazyGuard():
        ours = BACKBONES["Xception41_deeplab"](in_channels=4)
        theirs = paddleseg_xception("Xception41_deeplab", in_channels=4)
    assert_same_state_dict_layout(ours, theirs)


# --- features equal PaddleSeg's ----------------------------------------------------------

@pytest.mark.parametrize("name, output_stride", [
    ("Xception41_deeplab", 16),
    ("Xception41_deeplab", 8),
    ("Xception71_deeplab", 16),  # five entry-flow blocks
])
def test_features_match_paddleseg(name, output_stride):
    with cheap_init():
        ours = BACKBONES[name](output_stride=output_stride)
        theirs = paddleseg_xception(name, output_stride=output_stride)
    feats_ours, feats_theirs = backbone_features_of_both(ours, theirs, (1, 3, 64, 64), gain=1.0)  # see he_init_weights
    rel = relative_differences(feats_ours, feats_theirs)
    assert max(rel) <= 1e-4, f"relative max abs difference per feature: {rel}"


def test_parity_check_sees_a_missing_block():
    # Xception41's weights minus its last middle-flow block: same shapes, other features.
    with cheap_init():
        ours = BACKBONES["Xception41_deeplab"]()
        theirs = paddleseg_xception("Xception41_deeplab")
    ours._middle_flow.pop()  # still a sub-layer: the layout is unchanged
    feats_ours, feats_theirs = backbone_features_of_both(ours, theirs, (1, 3, 64, 64), gain=1.0)  # see he_init_weights
    rel = relative_differences(feats_ours, feats_theirs)
    assert rel[0] == 0.0 and rel[1] > 1e-2, rel


# --- the backbone contract for every registered builder -----------------------------------

def test_every_xception_builder_is_registered():
    assert list_backbones("Xception*") == sorted(NAMES)


# As in PaddleSeg 2.8.0, output_stride does not change the network (see the module docs):
# every entry-flow block strides 2, so the last map is at stride 16 (64 for Xception71).
@pytest.mark.parametrize("name, last_stride", [
    ("Xception41_deeplab", 16), ("Xception65_deeplab", 16), ("Xception71_deeplab", 64),
])
def test_feat_channels_and_strides_match_outputs(name, last_stride):
    with cheap_init():  # shapes only
        net = BACKBONES[name](output_stride=8)
    assert backbone_output_strides(net) == [4, last_stride]
    assert net.feat_channels == [128, 2048]


# --- arguments -----------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, message", [
    (dict(layers=50), "layers=50 "),
    (dict(output_stride=32), "output_stride=32 "),
    (dict(output_stride=None), "output_stride=None "),
    (dict(in_channels=0), "in_channels=0 "),
])
def test_bad_arguments_raise_value_error_naming_them(kwargs, message):
    with pytest.raises(ValueError, match=message):
        XceptionDeeplab(**kwargs)


def test_builders_refuse_another_depth():
    with pytest.raises(ValueError, match="Xception41_deeplab fixes layers=41; got layers=65"):
        BACKBONES["Xception41_deeplab"](layers=65)
