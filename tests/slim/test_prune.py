"""Filter pruning (paddlex_seg.slim.prune) on the five networks.

DeepLabV3P runs on ResNet18_vd and HRNet on HRNet_W18_Small_V1 to keep the file fast;
they have the same concatenations as ResNet50_vd / HRNet_W48.
"""
import contextlib
import copy
import datetime
import io
import logging
import pickle
import types

import numpy as np
import paddle
import paddle.nn.functional as F
from paddlex_seg import compat
import pytest
from paddleslim.dygraph import L1NormFilterPruner
from paddleslim.prune.prune_worker import PRUNE_WORKER

from paddlex_seg.models.backbones import get_backbone
from paddlex_seg.models.bisenetv2 import BiSeNetV2
from paddlex_seg.models.deeplab import DeepLabV3P
from paddlex_seg.models.fast_scnn import FastSCNN
from paddlex_seg.models.fcn import FCN
from paddlex_seg.models.unet import UNet
from paddlex_seg.slim import prune

NUM_CLASSES = 2
INPUT = [1, 3, 64, 64]
NETWORKS = {
    "UNet": lambda: UNet(NUM_CLASSES),
    "BiSeNetV2": lambda: BiSeNetV2(NUM_CLASSES),
    "FastSCNN": lambda: FastSCNN(NUM_CLASSES),
    "DeepLabV3P": lambda: DeepLabV3P(NUM_CLASSES, get_backbone("ResNet18_vd", output_stride=8)),
    "HRNet": lambda: FCN(NUM_CLASSES, get_backbone("HRNet_W18_Small_V1")),
}


def build(name, seed=1):
    paddle.seed(seed)
    return NETWORKS[name]()


def paddle_flops(net):
    # On a copy: paddle.flops leaves its counters as buffers on layers the eval forward skips.
    with contextlib.redirect_stdout(io.StringIO()):
        return compat.flops(copy.deepcopy(net), INPUT)


def shapes(net):
    return {key: list(value.shape) for key, value in net.state_dict().items()}


@contextlib.contextmanager
def without_our_workers():
    """PaddleSlim's worker registry as shipped (our workers taken out for the block)."""
    registry = PRUNE_WORKER.module_dict
    taken = {op: registry.pop(op) for op in prune._EXTRA_WORKERS
             if registry.get(op) is prune._EXTRA_WORKERS[op]}
    try:
        yield
    finally:
        registry.update(taken)


def plain_paddleslim_masters(net):
    """Masters of the groups PaddleSlim's own walk finds (ordinary convolutions only)."""
    with without_our_workers(), prune._modes(net, training=True):
        groups = prune._Groups(net, INPUT)
    convs = {layer.weight.name for layer in net.sublayers()
             if isinstance(layer, paddle.nn.Conv2D) and layer._groups == 1}
    return [g.master_name for g in groups if g.master_name in convs]


def synthetic_sensitivities(names):
    """Deterministic, different loss curves, so that choosing ratios has work to do."""
    return {name: {r: r * (0.3 + (i % 5) / 4) for r in (0.1, 0.3, 0.5)}
            for i, name in enumerate(names)}


@pytest.fixture(scope="module", params=list(NETWORKS))
def case(request):
    net = build(request.param)
    names = prune.prunable_params(net, INPUT)
    return types.SimpleNamespace(name=request.param, net=net, names=names,
                                 sens=synthetic_sensitivities(names))


def test_concat_support_makes_more_layers_prunable(case):
    plain = plain_paddleslim_masters(case.net)
    print(f"{case.name}: PaddleSlim alone {len(plain)}, with our workers {len(case.names)}")
    assert len(case.names) > len(plain)
    session = prune._Session(case.net, INPUT, "l1_norm")
    assert session.unsupported == []  # no "Unsupported operator" left on this network

    weights = {key: p for key, p in case.net.named_parameters()}
    layers = {layer.weight.name: layer for layer in case.net.sublayers()
              if isinstance(layer, paddle.nn.Conv2D)}
    for name in case.names:
        layer = layers[weights[name].name]
        assert layer._out_channels != NUM_CLASSES, f"classifier {name} listed"
        assert layer._groups == 1, f"depthwise {name} listed"
    classifiers = [key for key, p in weights.items()
                   if p.name in layers and layers[p.name]._out_channels == NUM_CLASSES]
    assert classifiers and not set(classifiers) & set(case.names)


def test_our_walk_without_workers_is_paddleslims():
    """plain_paddleslim_masters counts what PaddleSlim's own L1NormFilterPruner finds."""
    net = build("FastSCNN")
    with without_our_workers(), prune._paddleslim_logs(), compat.legacy_program_ir():
        theirs = [g.master_name for g in L1NormFilterPruner(net, INPUT).collections]
    assert plain_paddleslim_masters(net) == theirs


@pytest.mark.parametrize("target", [0.2, 0.4])
def test_pruned_network_reaches_flops_target_runs_and_trains(case, target):
    ratios, achieved = prune.choose_ratios(case.net, case.sens, target, INPUT)
    assert abs(achieved - target) <= 0.02
    assert set(ratios) <= set(case.names)

    pruned = copy.deepcopy(case.net)
    before, after = prune.apply_pruning(pruned, ratios, INPUT)
    counters = [key for key in pruned.state_dict() if key.endswith(("total_ops", "total_params"))]
    assert not counters, f"counting FLOPs left paddle.flops' buffers in the weights: {counters[:3]}"
    measured = 1 - paddle_flops(pruned) / paddle_flops(case.net)
    assert (before, after) == (paddle_flops(case.net), paddle_flops(pruned))
    assert abs(measured - target) <= 0.02
    assert measured == pytest.approx(achieved, abs=1e-9)
    # Every pruned group of 16+ channels keeps a multiple of 8 (oneDNN's fast layouts).
    widths = {key: p.shape[0] for key, p in case.net.state_dict().items()}
    for name in ratios:
        kept = pruned.state_dict()[name].shape[0]
        assert kept < widths[name]
        if widths[name] >= 2 * prune.CHANNEL_MULTIPLE:
            assert kept % prune.CHANNEL_MULTIPLE == 0, (name, widths[name], kept)

    pruned.train()
    optimizer = paddle.optimizer.SGD(learning_rate=0.01, parameters=pruned.parameters())
    x = paddle.rand([2] + INPUT[1:])
    label = paddle.randint(0, NUM_CLASSES, [2] + INPUT[2:] + [1]).astype("int64")
    logits = pruned(x)
    assert all(list(logit.shape) == [2, NUM_CLASSES] + INPUT[2:] for logit in logits)
    loss = sum(F.cross_entropy(logit.transpose([0, 2, 3, 1]), label) for logit in logits)
    loss.backward()
    optimizer.step()
    assert np.isfinite(float(loss))
    pruned.eval()
    assert list(pruned(x)[0].shape) == [2, NUM_CLASSES] + INPUT[2:]

    fresh = build(case.name, seed=99)  # other weights: other channels, same counts
    prune.apply_pruning(fresh, ratios, INPUT)
    assert shapes(fresh) == shapes(pruned) != shapes(case.net)


@pytest.mark.parametrize("name, master, offset", [
    ("UNet", "encode.double_conv.1._conv.weight", 64),            # skip after upsampled x
    ("DeepLabV3P", "head.decoder.conv_bn_relu1._conv.weight", 256),  # low level after ASPP
])
def test_concat_consumers_lose_the_channels_at_the_right_offset(name, master, offset):
    net = build(name)
    net.eval()
    weights = dict(net.named_parameters())
    width = weights[master].shape[0]
    dead = np.arange(1, width, 2)  # every 2nd channel outputs exactly zero (keeps 8k)
    weight = weights[master].numpy()
    weight[dead] = 0  # smallest L1 norm: these are the channels pruned
    weights[master].set_value(weight)
    for key in ("_batch_norm.weight", "_batch_norm.bias"):
        bn = weights[master.replace("_conv.weight", key)]
        value = bn.numpy()
        value[dead] = 0
        bn.set_value(value)
    x = paddle.rand(INPUT)
    expected = net(x)[0].numpy()

    consumer_inputs = {key: p.shape[1] for key, p in net.named_parameters() if len(p.shape) == 4}
    prune.apply_pruning(net, {master: len(dead) / width}, INPUT)
    assert net.state_dict()[master].shape[0] == width - len(dead)
    shrunk = [key for key, p in net.named_parameters()
              if len(p.shape) == 4 and p.shape[1] == consumer_inputs[key] - len(dead)]
    assert any(consumer_inputs[key] >= offset + width for key in shrunk)  # the concat's reader
    np.testing.assert_allclose(net(x)[0].numpy(), expected, rtol=1e-4, atol=1e-5)


def test_sensitivity_restores_the_network_and_round_trips(tmp_path, capsys):
    net = build("UNet")
    net.eval()
    x = paddle.rand(INPUT)
    reference = net(x)[0].numpy()
    before = shapes(net)

    def eval_fn():  # falls as the output moves away from the unpruned one
        return 1.0 / (1.0 + float(np.abs(net(x)[0].numpy() - reference).mean()))

    names = prune.prunable_params(net, INPUT)[:3]
    sens = prune.sensitivity(net, eval_fn, INPUT, ratios=(0.1, 0.3), params=names,
                             progress=False)
    assert list(sens) == names
    assert all(sorted(points) == [0.1, 0.3] for points in sens.values())
    assert all(loss > 0 for points in sens.values() for loss in points.values())
    assert shapes(net) == before
    np.testing.assert_array_equal(net(x)[0].numpy(), reference)

    path = tmp_path / "out" / "model.sensi.data"
    prune.save_sensitivities(sens, str(path))
    assert prune.load_sensitivities(str(path)) == sens

    fpgm = prune.sensitivity(net, eval_fn, INPUT, criterion="fpgm", ratios=[0.5],
                             params=names[:1], progress=True)
    assert list(fpgm) == names[:1] and fpgm[names[0]][0.5] > 0
    assert "sensitivity" in capsys.readouterr().err  # the progress bar


def test_load_sensitivities_rejects_what_is_not_a_sensitivities_file(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        prune.load_sensitivities(str(tmp_path / "missing.data"))
    garbage = tmp_path / "garbage.data"
    garbage.write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match="cannot be read"):
        prune.load_sensitivities(str(garbage))
    for content, message in [([1, 2], "not a non-empty dict"),
                             ({"w": {1.5: 0.1}}, "outside"),
                             ({"w": {0.1: float("nan")}}, "finite"),
                             (datetime.date(2020, 1, 1), "holds a datetime.date")]:
        path = tmp_path / "bad.data"
        path.write_bytes(pickle.dumps(content))
        with pytest.raises(ValueError, match=message):
            prune.load_sensitivities(str(path))


def test_arguments_are_checked():
    net = build("UNet")
    names = prune.prunable_params(net, INPUT)
    classifier = next(key for key, p in net.named_parameters()
                      if len(p.shape) == 4 and p.shape[0] == NUM_CLASSES)
    sens = synthetic_sensitivities(names[:2])
    for bad in (0, 1, 1.0, -0.2, 1.5, True, "0.2"):
        with pytest.raises(ValueError, match="pruned_flops"):
            prune.choose_ratios(net, sens, bad, INPUT)
    with pytest.raises(ValueError, match="criterion"):
        prune.choose_ratios(net, sens, 0.2, INPUT, criterion="l2_norm")
    with pytest.raises(ValueError, match="criterion"):
        prune.sensitivity(net, lambda: 1.0, INPUT, criterion="random")
    with pytest.raises(ValueError, match="criterion"):
        prune.apply_pruning(net, {names[0]: 0.5}, INPUT, criterion="")
    with pytest.raises(ValueError, match="does not have"):
        prune.apply_pruning(net, {"no.such.weight": 0.5}, INPUT)
    with pytest.raises(ValueError, match="does not have"):
        prune.prunable_params(net, INPUT, skip=["no.such.weight"])
    with pytest.raises(ValueError, match="does not have"):
        prune.sensitivity(net, lambda: 1.0, INPUT, params=["no.such.weight"])
    with pytest.raises(ValueError, match="does not have"):
        prune.choose_ratios(net, {"no.such.weight": {0.1: 0.0}}, 0.2, INPUT)
    with pytest.raises(ValueError, match="cannot be pruned"):
        prune.apply_pruning(net, {classifier: 0.5}, INPUT)
    with pytest.raises(ValueError, match="removes no channel"):
        prune.apply_pruning(net, {names[0]: 0.001}, INPUT)
    with pytest.raises(ValueError, match=r"ratios\["):
        prune.apply_pruning(net, {names[0]: 1.0}, INPUT)
    with pytest.raises(ValueError, match="input_shape"):
        prune.prunable_params(net, [3, 64, 64])
    with pytest.raises(ValueError, match="ratios"):
        prune.sensitivity(net, lambda: 1.0, INPUT, ratios=(0.1, 1.2))
    assert names[1] not in prune.prunable_params(net, INPUT, skip=[names[1]])
    assert shapes(net) == shapes(build("UNet"))  # nothing above changed the network


def test_kept_channels_are_rounded_to_the_channel_multiple():
    net = build("UNet")
    session = prune._Session(net, INPUT, "l1_norm")
    first = prune.prunable_params(net, INPUT)[0]  # 64 channels
    assert session.channels[first] == 64
    kept = {ratio: 64 - session.removed(first, ratio) for ratio in (0.01, 0.07, 0.3, 0.95)}
    assert kept == {0.01: 64, 0.07: 64, 0.3: 48, 0.95: 8}
    assert session.smallest_ratio(first) == 5 / 64  # keeps 59 -> 56 (60 rounds up to 64)
    assert session.snap({first: 0.3}) == {first: 16 / 64}
    with pytest.raises(ValueError, match="use at least 0.0781"):
        prune.apply_pruning(net, {first: 1 / 64}, INPUT)


def test_unreachable_request_gives_the_closest_with_a_warning(caplog):
    net = build("UNet")
    first = prune.prunable_params(net, INPUT)[0]
    log = logging.getLogger("paddlex_seg")
    log.addHandler(caplog.handler)
    try:
        ratios, achieved = prune.choose_ratios(net, {first: {0.1: 0.01, 0.5: 0.2}}, 0.9, INPUT)
    finally:
        log.removeHandler(caplog.handler)
    assert list(ratios) == [first] and 0 < achieved < 0.5
    assert "closest reachable" in caplog.text


def test_register_concat_support_is_idempotent():
    prune.register_concat_support()
    before = dict(PRUNE_WORKER.module_dict)
    prune.register_concat_support()
    assert PRUNE_WORKER.module_dict == before
    assert PRUNE_WORKER.get("concat") is prune._ConcatWorker
