"""FastSCNN against PaddleSeg 2.8.0: weight layout, eval and training outputs, bad arguments."""
import numpy as np
import paddle
import pytest

from oracle import (assert_output_parity, assert_same_state_dict_layout, randomize_batch_norm_stats,
                    require_paddleseg)
from paddlex_seg.models.fast_scnn import FastSCNN


def _paddleseg_fast_scnn(ps, num_classes, **kwargs):
    """PaddleSeg's FastSCNN returns the auxiliary logit in eval mode too; ours returns it
    only while training. The flag is read in its forward only, so clearing it after
    construction keeps the auxiliary weights (same keys) but drops that extra output."""
    net = ps.FastSCNN(num_classes, **kwargs)
    net.enable_auxiliary_loss = False
    return net


@pytest.mark.parametrize("num_classes, kwargs, input_shape", [
    (2, {}, (1, 3, 64, 64)),
    (19, {}, (1, 3, 64, 64)),
    (19, {}, (1, 3, 75, 93)),       # odd sides: every stride-2 layer rounds up
    (2, {"align_corners": True, "in_channels": 4}, (1, 4, 64, 64)),
])
def test_eval_outputs_match_paddleseg(num_classes, kwargs, input_shape):
    ps = require_paddleseg()
    rel = assert_output_parity(FastSCNN(num_classes, **kwargs),
                               _paddleseg_fast_scnn(ps, num_classes, **kwargs), input_shape)
    assert rel <= 1e-4


def test_eval_outputs_match_paddleseg_without_auxiliary_head():
    ps = require_paddleseg()
    rel = assert_output_parity(FastSCNN(19, enable_auxiliary_loss=False),
                               ps.FastSCNN(19, enable_auxiliary_loss=False), (1, 3, 64, 64))
    assert rel <= 1e-4


def test_global_feature_extractor_matches_paddleseg_on_a_larger_map():
    # PaddleSeg's pyramid pooling resizes with align_corners=True. On the 2x2 or 3x3 maps
    # of the whole-network tests the two modes nearly coincide, and the fusion dilutes
    # what is left, so compare the extractor alone on a 5x7 map where they differ.
    ps = require_paddleseg()
    ours, theirs = FastSCNN(2), ps.FastSCNN(2)
    randomize_batch_norm_stats(theirs)
    ours.set_state_dict(theirs.state_dict())
    ours.eval()
    theirs.eval()
    x = paddle.to_tensor(np.random.RandomState(0).uniform(-1, 1, (1, 64, 20, 28)).astype("float32"))
    with paddle.no_grad():
        a = ours.global_feature_extractor(x).numpy()
        b = theirs.global_feature_extractor(x).numpy()
    assert a.shape == b.shape == (1, 128, 5, 7)
    assert np.abs(a - b).max() <= 1e-4 * np.abs(b).max()


@pytest.mark.parametrize("enable_auxiliary_loss, expected_count", [(True, 2), (False, 1)])
def test_training_mode_outputs_match_paddleseg(enable_auxiliary_loss, expected_count):
    ps = require_paddleseg()
    ours = FastSCNN(19, enable_auxiliary_loss=enable_auxiliary_loss)
    theirs = ps.FastSCNN(19, enable_auxiliary_loss=enable_auxiliary_loss)
    assert_same_state_dict_layout(ours, theirs)
    ours.set_state_dict(theirs.state_dict())
    out_ours, out_theirs = (_train_mode_outputs(net, (2, 3, 64, 96)) for net in (ours, theirs))

    assert len(out_ours) == len(out_theirs) == expected_count
    for a, b in zip(out_ours, out_theirs):
        assert a.shape == b.shape == [2, 19, 64, 96]
        # Dropout is off and batch-norm uses batch statistics on both sides: same values.
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=0, atol=1e-4 * float(b.abs().max()))


def test_eval_mode_returns_only_the_main_logit():
    net = FastSCNN(3)
    net.eval()
    out = net(paddle.rand([1, 3, 64, 64]))
    assert len(out) == 1 and out[0].shape == [1, 3, 64, 64]


@pytest.mark.parametrize("kwargs, argument", [
    ({"num_classes": 0}, "num_classes"),
    ({"num_classes": -2}, "num_classes"),
    ({"num_classes": 3.0}, "num_classes"),
    ({"num_classes": "2"}, "num_classes"),
    ({"num_classes": 2, "in_channels": 0}, "in_channels"),
])
def test_bad_arguments_raise_value_error(kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        FastSCNN(**kwargs)


def _train_mode_outputs(net, input_shape):
    net.train()
    for layer in net.sublayers():
        if isinstance(layer, paddle.nn.Dropout):
            layer.eval()  # dropout off, so that values (not only shapes) can be compared
    x = paddle.to_tensor(np.random.RandomState(1).uniform(-1, 1, input_shape).astype("float32"))
    with paddle.no_grad():
        return net(x)
