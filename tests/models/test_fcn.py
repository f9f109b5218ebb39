"""FCN head on HRNet: PaddleSeg 2.8.0 parity, output contract, arguments."""
import paddle
import pytest

from oracle import assert_output_parity, assert_same_state_dict_layout, he_init_weights, require_paddleseg
from paddlex_seg.models.backbones import BACKBONES
from paddlex_seg.models.fcn import FCN
from test_hrnet import paddleseg_hrnet  # same directory


def paddleseg_fcn(num_classes, backbone, **kwargs):
    require_paddleseg()
    from paddleseg.models import FCN as PaddleSegFCN
    return PaddleSegFCN(num_classes, backbone, **kwargs)


def backbone_pair(name):
    """(ours, PaddleSeg's) backbone, PaddleSeg's with He-scaled random weights.

    The parity check copies PaddleSeg's weights into ours, so one pair can be shared by
    several FCNs (building the wide HRNets takes seconds).
    """
    theirs = paddleseg_hrnet(name)
    he_init_weights(theirs)
    return BACKBONES[name](), theirs


@pytest.fixture(scope="module")
def w18():
    return backbone_pair("HRNet_W18")


@pytest.fixture(scope="module")
def w48():
    return backbone_pair("HRNet_W48")


def check_parity(pair, num_classes, input_shape, **kwargs):
    ours = FCN(num_classes, pair[0], **kwargs)
    theirs = paddleseg_fcn(num_classes, pair[1], **kwargs)
    he_init_weights(theirs.head, seed=2)
    rel = assert_output_parity(ours, theirs, input_shape, rel_tol=1e-4)
    assert rel <= 1e-4


# --- state-dict layout -----------------------------------------------------------------

@pytest.mark.parametrize("name, num_classes, kwargs", [
    ("HRNet_W18", 19, {}),
    ("HRNet_W18", 2, dict(channels=64, bias=False)),
    ("HRNet_W48", 19, {}),
    ("HRNet_W18_Small_V1", 2, dict(channels=32)),
])
def test_state_dict_layout_matches_paddleseg(name, num_classes, kwargs):
    with paddle.LazyGuard():
        ours = FCN(num_classes, BACKBONES[name](), **kwargs)
        theirs = paddleseg_fcn(num_classes, paddleseg_hrnet(name), **kwargs)
    assert_same_state_dict_layout(ours, theirs)
    assert "head.cls.weight" in ours.state_dict()


# --- outputs equal PaddleSeg's ------------------------------------------------------------

@pytest.mark.parametrize("num_classes, input_shape", [
    (2, (1, 3, 64, 64)),
    (19, (1, 3, 64, 64)),
    # Strides 4..32 give 18x14, 9x7, 5x4, 3x2: odd sizes and asymmetric 'same' padding.
    (19, (1, 3, 72, 56)),
])
def test_fcn_hrnet_w18_matches_paddleseg(w18, num_classes, input_shape):
    check_parity(w18, num_classes, input_shape)


@pytest.mark.parametrize("num_classes", [2, 19])
def test_fcn_hrnet_w48_matches_paddleseg(w48, num_classes):
    check_parity(w48, num_classes, (1, 3, 64, 64))


@pytest.mark.parametrize("input_shape, kwargs", [
    ((1, 3, 64, 64), {}),
    ((2, 3, 67, 45), dict(channels=32, bias=False)),
    ((1, 3, 67, 45), dict(align_corners=True)),
])
def test_fcn_hrnet_w18_small_v1_matches_paddleseg(input_shape, kwargs):
    check_parity(backbone_pair("HRNet_W18_Small_V1"), 2, input_shape, **kwargs)


def test_parity_check_sees_the_final_upsampling():
    ours_backbone, theirs_backbone = backbone_pair("HRNet_W18_Small_V1")
    ours = FCN(2, ours_backbone, align_corners=True)
    theirs = paddleseg_fcn(2, theirs_backbone, align_corners=False)
    with pytest.raises(AssertionError, match="relative max abs difference"):
        assert_output_parity(ours, theirs, (1, 3, 64, 64), rel_tol=1e-3)


# --- output contract -------------------------------------------------------------------

@pytest.mark.parametrize("training", [True, False])
def test_returns_one_logit_at_input_size(training):
    net = FCN(5, BACKBONES["HRNet_W18_Small_V1"]())
    net.train() if training else net.eval()
    attributes = set(vars(net))
    logits = net(paddle.rand([2, 3, 50, 38]))
    assert isinstance(logits, list) and len(logits) == 1
    assert logits[0].shape == [2, 5, 50, 38]
    assert set(vars(net)) == attributes, "forward must not store anything on the network"


def test_channels_sets_the_hidden_width():
    net = FCN(3, BACKBONES["HRNet_W18_Small_V1"](), channels=48, bias=False)
    assert net.head.conv_1._conv.weight.shape == [48, 240, 1, 1]
    assert net.head.conv_1._conv.bias is None and net.head.cls.bias is None
    assert net.head.cls.weight.shape == [3, 48, 1, 1]


# --- arguments -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def small_backbone():
    with paddle.LazyGuard():
        return BACKBONES["HRNet_W18_Small_V1"]()


@pytest.mark.parametrize("kwargs, message", [
    (dict(num_classes=0), "num_classes=0 "),
    (dict(num_classes=2.0), r"num_classes=2\.0 "),
    (dict(backbone_indices=(0, 1)), r"backbone_indices=\(0, 1\) must hold exactly one index"),
    (dict(backbone_indices=(1,)), r"backbone_indices=\(1,\) .* 1 feature map"),
    (dict(backbone_indices=-1), "backbone_indices=-1 "),
    (dict(channels=0), "channels=0 "),
])
def test_bad_arguments_raise_value_error_naming_them(small_backbone, kwargs, message):
    kwargs = {"num_classes": 2, **kwargs}
    with pytest.raises(ValueError, match=message):
        FCN(backbone=small_backbone, **kwargs)


@pytest.mark.parametrize("backbone", ["HRNet_W18", paddle.nn.Conv2D(3, 8, 1)])
def test_backbone_must_be_a_layer_with_feat_channels(backbone):
    with pytest.raises(ValueError, match="must be a paddle.nn.Layer with a non-empty feat_channels"):
        FCN(2, backbone)
