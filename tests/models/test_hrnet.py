"""HRNet backbone: PaddleSeg 2.8.0 parity, the backbone contract, arguments."""
import numpy as np
import paddle
import pytest

from oracle import assert_output_parity, assert_same_state_dict_layout, he_init_weights, require_paddleseg
from paddlex_seg.models.backbones import BACKBONES, list_backbones
from paddlex_seg.models.backbones.hrnet import HRNet
from paddlex_seg.models.layers import resize_to

NAMES = ["HRNet_W18_Small_V1", "HRNet_W18_Small_V2", "HRNet_W18", "HRNet_W30", "HRNet_W32",
         "HRNet_W40", "HRNet_W44", "HRNet_W48", "HRNet_W60", "HRNet_W64"]
FEAT_CHANNELS = {"HRNet_W18_Small_V1": 240, "HRNet_W18_Small_V2": 270, "HRNet_W18": 270,
                 "HRNet_W30": 450, "HRNet_W32": 480, "HRNet_W40": 600, "HRNet_W44": 660,
                 "HRNet_W48": 720, "HRNet_W60": 900, "HRNet_W64": 960}


def paddleseg_hrnet(name, **kwargs):
    require_paddleseg()
    from paddleseg.models import backbones
    return getattr(backbones, name)(**kwargs)


class AtInputSize(paddle.nn.Layer):
    """Backbone features upsampled to the input size: the form the oracle compares."""

    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone

    def forward(self, x):
        return [resize_to(f, paddle.shape(x)[2:]) for f in self.backbone(x)]


# --- (a) state-dict layout -------------------------------------------------------------

@pytest.mark.parametrize("name, kwargs", [
    *[(name, {}) for name in NAMES],
    ("HRNet_W18", dict(has_se=True)),
    ("HRNet_W18", dict(use_psa=True)),
    ("HRNet_W18_Small_V1", dict(in_channels=4)),
])
def test_state_dict_layout_matches_paddleseg(name, kwargs):
    # Layout only: LazyGuard skips parameter initialisation, shapes are still known.
    with paddle.LazyGuard():
        ours = BACKBONES[name](**kwargs)
        theirs = paddleseg_hrnet(name, **kwargs)
    assert_same_state_dict_layout(ours, theirs)
    assert ours.feat_channels == theirs.feat_channels == [FEAT_CHANNELS[name]]


# --- features equal PaddleSeg's, for every structural / numerical option -----------------

@pytest.mark.parametrize("name, kwargs, input_shape", [
    ("HRNet_W18_Small_V1", {}, (1, 3, 64, 64)),
    ("HRNet_W18_Small_V1", {}, (2, 3, 67, 45)),
    ("HRNet_W18_Small_V1", dict(padding_same=False), (1, 3, 64, 64)),
    ("HRNet_W18_Small_V1", dict(padding_same=False), (1, 3, 67, 45)),
    ("HRNet_W18_Small_V1", dict(align_corners=True), (1, 3, 67, 45)),
    ("HRNet_W18_Small_V1", dict(has_se=True), (2, 3, 64, 64)),
    ("HRNet_W18_Small_V1", dict(use_psa=True), (2, 3, 72, 56)),
    ("HRNet_W18_Small_V1", dict(in_channels=4), (1, 4, 64, 64)),
    ("HRNet_W18_Small_V2", {}, (1, 3, 72, 56)),
])
def test_features_match_paddleseg(name, kwargs, input_shape):
    ours = AtInputSize(BACKBONES[name](**kwargs))
    theirs = AtInputSize(paddleseg_hrnet(name, **kwargs))
    he_init_weights(theirs)
    assert assert_output_parity(ours, theirs, input_shape, rel_tol=1e-5) <= 1e-5


@pytest.mark.parametrize("ours_kwargs", [dict(padding_same=False), dict(align_corners=True)])
def test_parity_check_sees_a_changed_option(ours_kwargs):
    # The check above must be able to fail: one changed option gives other features.
    ours = AtInputSize(HRNet(**_small_v1_config(), **ours_kwargs))
    theirs = AtInputSize(paddleseg_hrnet("HRNet_W18_Small_V1"))
    he_init_weights(theirs)
    with pytest.raises(AssertionError, match="relative max abs difference"):
        assert_output_parity(ours, theirs, (1, 3, 64, 64), rel_tol=1e-2)


def _small_v1_config():
    return dict(stage1_num_blocks=(1,), stage1_num_channels=(32,),
                stage2_num_modules=1, stage2_num_blocks=(2, 2), stage2_num_channels=(16, 32),
                stage3_num_modules=1, stage3_num_blocks=(2, 2, 2),
                stage3_num_channels=(16, 32, 64),
                stage4_num_modules=1, stage4_num_blocks=(2, 2, 2, 2),
                stage4_num_channels=(16, 32, 64, 128))


# --- (c) the backbone contract for every registered builder ---------------------------

def test_every_hrnet_builder_is_registered():
    assert list_backbones("HRNet*") == sorted(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_feat_channels_match_outputs(name):
    net = BACKBONES[name]()
    net.eval()
    attributes = set(vars(net))
    with paddle.no_grad():
        feats = net(paddle.rand([1, 3, 32, 32]))
    assert isinstance(feats, list) and len(feats) == 1
    assert [f.shape[1] for f in feats] == net.feat_channels == [FEAT_CHANNELS[name]]
    assert feats[0].shape[2:] == [8, 8], "one map at stride 4"
    assert set(vars(net)) == attributes, "forward must not store anything on the backbone"


def test_custom_configuration_and_in_channels():
    config = _small_v1_config()
    config["stage4_num_channels"] = (8, 16, 24, 40)
    net = HRNet(in_channels=1, **config)
    net.eval()
    with paddle.no_grad():
        feats = net(paddle.rand([2, 1, 36, 52]))
    assert net.feat_channels == [88]
    assert feats[0].shape == [2, 88, 9, 13]


# --- (d) arguments ---------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, message", [
    (dict(stage2_num_channels=(18, 36, 72)), r"stage2_num_channels=\(18, 36, 72\)"),
    (dict(stage3_num_blocks=(4, 4)), r"stage3_num_blocks=\(4, 4\)"),
    (dict(stage4_num_channels=(18, 36, 72)), r"stage4_num_channels=\(18, 36, 72\) must .* 4 "),
    (dict(stage2_num_channels=(18, 0)), r"stage2_num_channels=\(18, 0\)"),
    (dict(stage1_num_blocks=4), r"stage1_num_blocks=4 "),
    (dict(stage3_num_modules=0), r"stage3_num_modules=0 "),
    (dict(stage1_num_modules=2), r"stage1_num_modules=2 "),
    (dict(in_channels=0), r"in_channels=0 "),
    (dict(has_se=True, stage2_num_channels=(8, 16), stage3_num_channels=(8, 16, 32),
          stage4_num_channels=(8, 16, 32, 64)), r"has_se=True .* narrowest branch has 8"),
])
def test_bad_arguments_raise_value_error_naming_them(kwargs, message):
    with pytest.raises(ValueError, match=message):
        HRNet(**kwargs)


def test_builders_refuse_to_change_their_stages():
    with pytest.raises(ValueError, match="HRNet_W18 fixes stage4_num_channels"):
        BACKBONES["HRNet_W18"](stage4_num_channels=(18, 36, 72, 100))
