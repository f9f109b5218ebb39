"""PaddleSeg 2.8.0 as a test oracle: state-dict and output parity checks.

Only the tests import paddleseg; the package never does. Tests that need it call
``require_paddleseg()`` which skips them when it is missing (CI installs it).
"""
import numpy as np
import paddle
import pytest


def require_paddleseg():
    """Import paddleseg.models (skip the test when it is not installed)."""
    return pytest.importorskip("paddleseg.models")


def shapes(layer):
    return {k: list(v.shape) for k, v in layer.state_dict().items()}


def assert_same_state_dict_layout(ours, theirs):
    """Exactly the same parameter/buffer keys, each with the same shape."""
    a, b = shapes(ours), shapes(theirs)
    missing = sorted(set(b) - set(a))
    unexpected = sorted(set(a) - set(b))
    assert not missing and not unexpected, (
        f"missing (in PaddleSeg, not ours): {missing[:10]} ({len(missing)} in all); "
        f"unexpected (ours only): {unexpected[:10]} ({len(unexpected)} in all)")
    wrong = {k: (a[k], b[k]) for k in a if a[k] != b[k]}
    assert not wrong, f"shape mismatches (ours, PaddleSeg): {dict(list(wrong.items())[:10])}"


def randomize_batch_norm_stats(layer, seed=0):
    """Give every BatchNorm non-trivial statistics, so eval-mode parity means something."""
    rng = np.random.RandomState(seed)
    for sub in layer.sublayers():
        if isinstance(sub, (paddle.nn.BatchNorm2D, paddle.nn.BatchNorm, paddle.nn.SyncBatchNorm)):
            n = sub._mean.shape[0]
            sub._mean.set_value(rng.uniform(-0.1, 0.1, n).astype("float32"))
            sub._variance.set_value(rng.uniform(0.5, 1.5, n).astype("float32"))
            sub.weight.set_value(rng.uniform(0.5, 1.5, n).astype("float32"))
            sub.bias.set_value(rng.uniform(-0.1, 0.1, n).astype("float32"))


def assert_output_parity(ours, theirs, input_shape, rel_tol=1e-4, seed=0):
    """Load PaddleSeg's (randomly initialised) weights into ours and compare eval outputs.

    Both networks must return lists of logits; every logit must match within
    ``rel_tol`` times the largest absolute output value.
    Returns the relative difference of the first logit.
    """
    assert_same_state_dict_layout(ours, theirs)
    randomize_batch_norm_stats(theirs, seed)
    ours.set_state_dict(theirs.state_dict())
    ours.eval()
    theirs.eval()
    x = paddle.to_tensor(np.random.RandomState(seed).uniform(-1, 1, input_shape).astype("float32"))
    with paddle.no_grad():
        out_ours, out_theirs = ours(x), theirs(x)
    assert isinstance(out_ours, (list, tuple)), "networks return a list of logits"
    assert len(out_ours) == len(out_theirs)
    rel = []
    for a, b in zip(out_ours, out_theirs):
        a, b = a.numpy(), b.numpy()
        assert a.shape == b.shape, (a.shape, b.shape)
        assert a.shape[2:] == tuple(input_shape[2:]), "logits come back at input resolution"
        scale = max(float(np.abs(b).max()), 1e-6)
        rel.append(float(np.abs(a - b).max()) / scale)
    assert max(rel) <= rel_tol, f"relative max abs difference {rel} > {rel_tol}"
    return rel[0]


def he_init_weights(layer, seed=1, gain=2.0):
    """Give every conv / linear weight random values of std sqrt(gain / fan_in).

    Both libraries initialise convolutions with N(0, 0.001); that shrinks the signal of
    deep paths to almost nothing, and a parity check would then barely see them.
    He scaling is gain 2; networks with many residual additions (Xception's middle
    flow) need gain 1 to keep the features finite.
    """
    rng = np.random.RandomState(seed)
    for param in layer.parameters():
        if param.ndim == 4:  # conv [out, in, kh, kw]
            fan_in = int(np.prod(param.shape[1:]))
        elif param.ndim == 2:  # linear [in, out]
            fan_in = param.shape[0]
        else:
            continue
        values = rng.standard_normal(param.shape) * np.sqrt(gain / fan_in)
        param.set_value(values.astype("float32"))


def backbone_features_of_both(ours, theirs, input_shape, seed=0, gain=2.0):
    """Copy PaddleSeg's backbone (He weights, random BN statistics) into ours and return
    both lists of feature maps for the same input, as NumPy arrays."""
    assert_same_state_dict_layout(ours, theirs)
    he_init_weights(theirs, gain=gain)
    randomize_batch_norm_stats(theirs, seed=1)
    ours.set_state_dict(theirs.state_dict())
    ours.eval()
    theirs.eval()
    x = paddle.to_tensor(np.random.RandomState(seed).uniform(-1, 1, input_shape).astype("float32"))
    with paddle.no_grad():
        return [f.numpy() for f in ours(x)], [f.numpy() for f in theirs(x)]


def relative_differences(feats_a, feats_b, count=None):
    """Max abs difference of each pair of feature maps over the larger's max abs value."""
    assert len(feats_a) == len(feats_b) and (count is None or len(feats_a) == count)
    rel = []
    for a, b in zip(feats_a, feats_b):
        assert a.shape == b.shape, (a.shape, b.shape)
        rel.append(float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-6)))
    return rel


def backbone_output_strides(net, size=64):
    """Run a backbone in eval mode on a size x size input and check its contract: a list
    of feature maps whose channels equal ``feat_channels``, and nothing stored on the
    backbone by forward. Returns each map's stride."""
    net.eval()
    attributes = set(vars(net))
    with paddle.no_grad():
        feats = net(paddle.rand([1, 3, size, size]))
    assert isinstance(feats, list)
    assert [f.shape[1] for f in feats] == net.feat_channels
    assert set(vars(net)) == attributes, "forward must not store anything on the backbone"
    return [size // f.shape[2] for f in feats]


class Paddle2Promotion:
    """Run a PaddleSeg callable with Paddle 2.x's ``*`` between int and float tensors.

    PaddleSeg 2.8's CrossEntropyLoss multiplies int64 labels by float32 masks; Paddle 2.x
    casts the right operand to the left one's dtype, Paddle 3 refuses ("Type promotion only
    support calculations between floating-point numbers"). Only the oracle is run this way.
    """

    def __init__(self, fn):
        self.fn = fn

    def __call__(self, *args, **kwargs):
        original = paddle.Tensor.__mul__

        def multiply(x, y):
            if isinstance(y, paddle.Tensor) and x.dtype != y.dtype and (
                    x.is_floating_point() != y.is_floating_point()):
                y = y.astype(x.dtype)
            return original(x, y)

        paddle.Tensor.__mul__ = multiply
        try:
            return self.fn(*args, **kwargs)
        finally:
            paddle.Tensor.__mul__ = original
