"""UNet against PaddleSeg 2.8.0: weight layout, outputs (bilinear and deconv), argument checks."""
import numpy as np
import paddle
import pytest

from oracle import assert_output_parity, assert_same_state_dict_layout, require_paddleseg
from paddlex_seg.models.unet import UNet


@pytest.mark.parametrize("num_classes, kwargs, input_shape", [
    (2, {"use_deconv": False}, (1, 3, 64, 64)),
    (19, {"use_deconv": False}, (1, 3, 64, 64)),
    (2, {"use_deconv": True}, (1, 3, 64, 64)),
    (19, {"use_deconv": True}, (1, 3, 64, 64)),
    (19, {"use_deconv": False}, (1, 3, 45, 71)),   # odd sides: pooling floors, upsampling restores
    (2, {"use_deconv": True}, (1, 3, 48, 80)),     # deconv needs multiples of 16, not squares
    (2, {"align_corners": True, "in_channels": 1}, (1, 1, 64, 64)),
])
def test_eval_outputs_match_paddleseg(num_classes, kwargs, input_shape):
    ps = require_paddleseg()
    rel = assert_output_parity(UNet(num_classes, **kwargs), ps.UNet(num_classes, **kwargs),
                               input_shape)
    assert rel <= 1e-4


@pytest.mark.parametrize("use_deconv", [False, True])
def test_training_mode_returns_one_logit_like_paddleseg(use_deconv):
    ps = require_paddleseg()
    ours, theirs = UNet(2, use_deconv=use_deconv), ps.UNet(2, use_deconv=use_deconv)
    assert_same_state_dict_layout(ours, theirs)
    ours.set_state_dict(theirs.state_dict())
    x = paddle.to_tensor(np.random.RandomState(1).uniform(-1, 1, (2, 3, 32, 48)).astype("float32"))
    ours.train()
    theirs.train()
    with paddle.no_grad():
        out_ours, out_theirs = ours(x), theirs(x)
    assert len(out_ours) == len(out_theirs) == 1
    assert out_ours[0].shape == out_theirs[0].shape == [2, 2, 32, 48]
    # No dropout in UNet; batch-norm uses batch statistics on both sides.
    scale = float(out_theirs[0].abs().max())
    np.testing.assert_allclose(out_ours[0].numpy(), out_theirs[0].numpy(),
                               rtol=0, atol=1e-4 * scale)


def test_classifier_is_one_layer_under_both_paddleseg_names():
    net = UNet(2)
    assert net.cls is net.conv
    assert {"cls.weight", "conv.weight"} <= set(net.state_dict())


@pytest.mark.parametrize("kwargs, argument", [
    ({"num_classes": 0}, "num_classes"),
    ({"num_classes": -1}, "num_classes"),
    ({"num_classes": 1.5}, "num_classes"),
    ({"num_classes": None}, "num_classes"),
    ({"num_classes": 2, "in_channels": 0}, "in_channels"),
    ({"num_classes": 2, "in_channels": -3}, "in_channels"),
])
def test_bad_arguments_raise_value_error(kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        UNet(**kwargs)
