"""BiSeNetV2 against PaddleSeg 2.8.0: weight layout, eval and training outputs, bad arguments."""
import numpy as np
import paddle
import pytest

from oracle import assert_output_parity, assert_same_state_dict_layout, require_paddleseg
from paddlex_seg.models.bisenetv2 import BiSeNetV2


@pytest.mark.parametrize("num_classes, kwargs, input_shape", [
    (2, {}, (1, 3, 64, 64)),
    (19, {}, (1, 3, 64, 64)),
    (19, {}, (1, 3, 75, 93)),       # odd sides: every stride-2 stage rounds up
    (2, {"lambd": 0.5, "align_corners": True}, (1, 3, 64, 64)),
])
def test_eval_outputs_match_paddleseg(num_classes, kwargs, input_shape):
    ps = require_paddleseg()
    rel = assert_output_parity(BiSeNetV2(num_classes, **kwargs),
                               ps.BiSeNetV2(num_classes, **kwargs), input_shape)
    assert rel <= 1e-4


def test_training_mode_returns_main_and_four_aux_logits_like_paddleseg():
    ps = require_paddleseg()
    ours, theirs = BiSeNetV2(19), ps.BiSeNetV2(19)
    assert_same_state_dict_layout(ours, theirs)
    ours.set_state_dict(theirs.state_dict())
    out_ours, out_theirs = (_train_mode_outputs(net, (2, 3, 64, 80)) for net in (ours, theirs))

    assert len(out_ours) == len(out_theirs) == 5
    for a, b in zip(out_ours, out_theirs):
        assert a.shape == b.shape == [2, 19, 64, 80]
        # Dropout is off and batch-norm uses batch statistics on both sides: same values.
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=0, atol=1e-4 * float(b.abs().max()))


def test_eval_mode_returns_only_the_main_logit():
    net = BiSeNetV2(3)
    net.eval()
    out = net(paddle.rand([1, 3, 32, 32]))
    assert len(out) == 1 and out[0].shape == [1, 3, 32, 32]


@pytest.mark.parametrize("kwargs, argument", [
    ({"num_classes": 0}, "num_classes"),
    ({"num_classes": -3}, "num_classes"),
    ({"num_classes": 2.0}, "num_classes"),
    ({"num_classes": "19"}, "num_classes"),
    ({"num_classes": True}, "num_classes"),
    ({"num_classes": 2, "in_channels": 0}, "in_channels"),
    ({"num_classes": 2, "lambd": 0}, "lambd"),
    ({"num_classes": 2, "lambd": 0.01}, "lambd"),
])
def test_bad_arguments_raise_value_error(kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        BiSeNetV2(**kwargs)


def _train_mode_outputs(net, input_shape):
    net.train()
    for layer in net.sublayers():
        if isinstance(layer, paddle.nn.Dropout):
            layer.eval()  # dropout off, so that values (not only shapes) can be compared
    x = paddle.to_tensor(np.random.RandomState(1).uniform(-1, 1, input_shape).astype("float32"))
    with paddle.no_grad():
        return net(x)
