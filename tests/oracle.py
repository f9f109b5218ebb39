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
