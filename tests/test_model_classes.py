"""The model classes against the API contract (seed 001, the PaddleX 2.x reference):
signatures parsed from the seed's code blocks, net/loss composition, argument errors,
and parameter counts equal to the PaddleSeg networks PaddleX builds."""
import ast
import glob
import inspect
import os
import re
from pathlib import Path

import numpy as np
import paddle
import pytest

import paddlex_seg as seg
from oracle import assert_same_state_dict_layout, require_paddleseg
from paddlex_seg.models.losses import (CrossEntropyLoss, DiceLoss, LovaszSoftmaxLoss,
                                       MixedLoss, MultiLogitLoss)

CLASSES = ["DeepLabV3P", "BiSeNetV2", "UNet", "HRNet", "FastSCNN"]
METHODS = ["train", "evaluate", "predict"]
COMPRESSION_METHODS = ["analyze_sensitivity", "prune", "quant_aware_train"]
# Added to PaddleX's train, after all of its arguments.
TRAIN_ADDITIONS = {"resume_checkpoint": None, "use_amp": False, "class_weights": None}
# Keyword arguments we add after the seed's, by method (test-time augmentation, issue #11).
METHOD_ADDITIONS = {"train": TRAIN_ADDITIONS, "evaluate": {"aug": None}, "predict": {"aug": None}}


# --- the contract, read from seed 001 -----------------------------------------------

def find_seed():
    """Seed 001 (the API reference), beside the repository in ../shared/seeds/."""
    if os.environ.get("PADDLEX_SEG_API_SEED"):
        return os.environ["PADDLEX_SEG_API_SEED"]
    repo = Path(__file__).resolve().parents[1]
    found = sorted(glob.glob(str(repo.parent / "shared" / "seeds" / "001_*.txt")))
    return found[0] if found else None


def parse_seed_signatures(text):
    """{name: [(argument, default or inspect.Parameter.empty), ...]} from every
    top-level ```python block of the form ``[module.]name(args)`` (``self`` dropped)."""
    signatures = {}
    for block in re.findall(r"^```python\n(.*?)^```", text, flags=re.M | re.S):
        match = re.fullmatch(r"(?:[\w.]+\.)?(\w+)\((.*)\):?", block.strip(), flags=re.S)
        if not match:
            continue
        name, args = match.groups()
        func = ast.parse(f"def {name}({args}): pass").body[0]
        positional = func.args.args
        defaults = [inspect.Parameter.empty] * (len(positional) - len(func.args.defaults)) + [
            ast.literal_eval(d) for d in func.args.defaults]
        signatures[name] = [(a.arg, d) for a, d in zip(positional, defaults) if a.arg != "self"]
    return signatures


SEED_PATH = find_seed()
SEED = parse_seed_signatures(Path(SEED_PATH).read_text(encoding="utf-8")) if SEED_PATH else {}
needs_seed = pytest.mark.skipif(
    not SEED, reason="seed 001 not found in ../shared/seeds/ (set PADDLEX_SEG_API_SEED)")


def our_signature(func):
    params = [p for p in inspect.signature(func).parameters.values() if p.name != "self"]
    for p in params:
        assert p.kind == p.POSITIONAL_OR_KEYWORD, f"{func.__qualname__}: {p.name} is {p.kind}"
    return [(p.name, p.default) for p in params]


def typed(signature):
    """Compare defaults by type too: (0, 3) is not [0, 3], 1 is not 1.0 or True."""
    # A str subclass (train's default pretrain_weights, which tells the default from the
    # same name passed) is a str to the caller.
    return [(name, "str" if isinstance(default, str) else type(default).__name__, default)
            for name, default in signature]


@needs_seed
def test_seed_parsing_finds_every_documented_signature():
    assert set(CLASSES + METHODS + COMPRESSION_METHODS) <= set(SEED)
    assert SEED["DeepLabV3P"][:2] == [("num_classes", 2), ("backbone", "ResNet50_vd")]
    assert SEED["train"][0] == ("num_epochs", inspect.Parameter.empty)
    assert SEED["evaluate"][0] == ("eval_dataset", inspect.Parameter.empty)


@needs_seed
@pytest.mark.parametrize("name", CLASSES)
def test_constructor_signature_equals_the_seed(name):
    cls = getattr(seg, name)
    assert typed(our_signature(cls.__init__)) == typed(SEED[name])


@needs_seed
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("name", CLASSES)
def test_method_signature_starts_with_the_seed_arguments(name, method):
    ours = our_signature(getattr(getattr(seg, name), method))
    expected = SEED[method]
    assert typed(ours[:len(expected)]) == typed(expected)
    extra = dict(ours[len(expected):])
    assert extra == METHOD_ADDITIONS.get(method, {})


@needs_seed
@pytest.mark.parametrize("method", COMPRESSION_METHODS)
@pytest.mark.parametrize("name", CLASSES)
def test_compression_method_signature_starts_with_the_seed_arguments(name, method):
    cls = getattr(seg, name)
    if not hasattr(cls, method):
        pytest.skip(f"{name}.{method} is not implemented yet (slim/ is being wired in)")
    ours = our_signature(getattr(cls, method))
    expected = SEED[method]
    assert typed(ours[:len(expected)]) == typed(expected)
    assert all(default is not inspect.Parameter.empty for _, default in ours[len(expected):])


# --- net and loss ---------------------------------------------------------------------

# Loss weight of every logit each network returns in training mode (PaddleX 2.x values).
LOGIT_COEFS = {"DeepLabV3P": [1.0], "BiSeNetV2": [1.0] * 5, "UNet": [1.0], "HRNet": [1.0],
               "FastSCNN": [1.0, 0.4]}
SMALL = {"BiSeNetV2": {}, "UNet": {}, "HRNet": {"width": 18}, "FastSCNN": {}}


def loss_terms(model):
    """[(loss class name, weight)] of the per-logit loss."""
    loss = model.loss.loss
    if isinstance(loss, MixedLoss):
        return [(type(l).__name__, c) for l, c in zip(loss.losses, loss.coefs)]
    return [(type(loss).__name__, 1.0)]


def check_forward_and_loss(model, batch):
    assert isinstance(model.net, paddle.nn.Layer)
    assert isinstance(model.loss, MultiLogitLoss)
    assert list(model.loss.coefs) == LOGIT_COEFS[type(model).__name__]
    x = paddle.to_tensor(np.random.RandomState(0).uniform(-1, 1, (batch, 3, 64, 64)).astype("float32"))
    label = paddle.to_tensor(np.random.RandomState(1).randint(0, 3, (batch, 64, 64)).astype("int64"))
    model.net.train()
    logits = model.net(x)
    assert len(logits) == len(model.loss.coefs), "one loss weight per training logit"
    assert all(list(l.shape) == [batch, 3, 64, 64] for l in logits)
    loss = model.loss(logits, label)
    assert loss.shape == [] and np.isfinite(float(loss)) and float(loss) > 0
    loss.backward()
    model.net.eval()
    with paddle.no_grad():
        logits = model.net(x)
    assert len(logits) == 1 and list(logits[0].shape) == [batch, 3, 64, 64]


@pytest.mark.parametrize("name", list(SMALL))
def test_net_and_loss_of_small_models(name):
    check_forward_and_loss(getattr(seg, name)(num_classes=3, **SMALL[name]), batch=2)


@pytest.mark.parametrize("name, kwargs", [("DeepLabV3P", {}), ("HRNet", {})])
def test_net_and_loss_of_big_models_at_default_arguments(name, kwargs):
    check_forward_and_loss(getattr(seg, name)(num_classes=3, **kwargs), batch=1)


@pytest.mark.parametrize("name", CLASSES)
def test_use_mixed_loss_false_true_and_list(name):
    cls = getattr(seg, name)
    with paddle.LazyGuard():
        plain = cls()
        mixed = cls(use_mixed_loss=True)
        custom = cls(use_mixed_loss=[("CrossEntropyLoss", 0.7), ("DiceLoss", 0.3)])
        single = cls(use_mixed_loss=[("LovaszSoftmaxLoss", 1.0)])
    assert loss_terms(plain) == [("CrossEntropyLoss", 1.0)]
    assert loss_terms(mixed) == [("CrossEntropyLoss", 0.8), ("LovaszSoftmaxLoss", 0.2)]
    assert loss_terms(custom) == [("CrossEntropyLoss", 0.7), ("DiceLoss", 0.3)]
    assert loss_terms(single) == [("LovaszSoftmaxLoss", 1.0)]
    for model in (plain, mixed, custom, single):
        assert list(model.loss.coefs) == LOGIT_COEFS[name]
    assert mixed.init_params["use_mixed_loss"] is True
    assert custom.init_params["use_mixed_loss"] == [("CrossEntropyLoss", 0.7), ("DiceLoss", 0.3)]


def test_mixed_loss_value_is_the_weighted_sum():
    with paddle.LazyGuard():
        model = seg.UNet(num_classes=3, use_mixed_loss=[("CrossEntropyLoss", 0.7), ("DiceLoss", 0.3)])
    rng = np.random.RandomState(0)
    logit = paddle.to_tensor(rng.normal(size=(2, 3, 8, 8)).astype("float32"))
    label = paddle.to_tensor(rng.randint(0, 3, (2, 8, 8)).astype("int64"))
    expected = 0.7 * float(CrossEntropyLoss()(logit, label)) + 0.3 * float(DiceLoss()(logit, label))
    np.testing.assert_allclose(float(model.loss([logit], label)), expected, rtol=1e-6)
    assert isinstance(seg.UNet(use_mixed_loss=True).loss.loss.losses[1], LovaszSoftmaxLoss)


# --- argument errors ----------------------------------------------------------------

def assert_value_error(call, *fragments):
    with pytest.raises(ValueError) as info:
        with paddle.LazyGuard():
            call()
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


@pytest.mark.parametrize("backbone", ["resnet50_vd", "ResNet50", "VGG16", 50])
def test_unknown_backbone_names_the_argument_and_the_choices(backbone):
    # Any registered name is accepted (see test_custom_backbone.py); others list what exists.
    assert_value_error(lambda: seg.DeepLabV3P(backbone=backbone),
                       "backbone", repr(backbone), "ResNet50_vd", "ResNet101_vd")


@pytest.mark.parametrize("backbone, indices", [("ResNet18_vd", (0, 3)), ("MobileNetV3_large_x1_0", (0, 3)),
                                               ("Xception65_deeplab", (0, 1))])
def test_any_registered_backbone_name_is_accepted(backbone, indices):
    with paddle.LazyGuard():
        model = seg.DeepLabV3P(backbone=backbone, backbone_indices=indices)
    assert model.init_params["backbone"] == backbone


@pytest.mark.parametrize("width", [17, 20, 0, "W48", None])
def test_unsupported_hrnet_width_names_the_argument_and_the_choices(width):
    assert_value_error(lambda: seg.HRNet(width=width), "width", repr(width), "18", "48")


def test_hrnet_width_as_a_string_of_digits():
    # PaddleX builds f"HRNet_W{width}", so '18' means 18.
    with paddle.LazyGuard():
        model, reference = seg.HRNet(width="18"), seg.HRNet(width=18)
    assert model.width == 18 and model.init_params["width"] == 18
    assert count(model.net) == count(reference.net)


@pytest.mark.parametrize("output_stride", [4, 32, "8", None])
def test_output_stride_not_8_or_16(output_stride):
    assert_value_error(lambda: seg.DeepLabV3P(output_stride=output_stride),
                       "output_stride", repr(output_stride), "8", "16")


@pytest.mark.parametrize("name", CLASSES)
@pytest.mark.parametrize("num_classes", [1, 0, -2, 2.0, 2.5, "3", True, None])
def test_invalid_num_classes(name, num_classes):
    assert_value_error(lambda: getattr(seg, name)(num_classes=num_classes),
                       "num_classes", repr(num_classes), ">= 2")


@pytest.mark.parametrize("name", CLASSES)
def test_num_classes_accepts_numpy_integers(name):
    with paddle.LazyGuard():
        model = getattr(seg, name)(num_classes=np.int64(4))
    assert model.num_classes == 4 and type(model.num_classes) is int


@pytest.mark.parametrize("use_mixed_loss", ["yes", [], [("FocalLoss", 1.0)], [("DiceLoss", 0)],
                                            [("DiceLoss",)], 1])
def test_invalid_use_mixed_loss(use_mixed_loss):
    assert_value_error(lambda: seg.HRNet(use_mixed_loss=use_mixed_loss), "use_mixed_loss",
                       "'CrossEntropyLoss', 'DiceLoss', 'LovaszSoftmaxLoss'")


@pytest.mark.parametrize("call, fragments", [
    (lambda: seg.UNet(use_deconv="no"), ("use_deconv", "'no'")),
    (lambda: seg.FastSCNN(align_corners=None), ("align_corners", "None")),
    (lambda: seg.DeepLabV3P(backbone_indices=3), ("backbone_indices", "3")),
    (lambda: seg.DeepLabV3P(backbone_indices=(0, 7)), ("backbone_indices", "(0, 7)")),
    (lambda: seg.DeepLabV3P(aspp_out_channels=0), ("aspp_out_channels", "0")),
])
def test_other_invalid_arguments(call, fragments):
    assert_value_error(call, *fragments)


# --- sizes equal PaddleSeg's networks as PaddleX 2.x builds them ---------------------

def paddleseg_counterpart(name, num_classes=2):
    psm = require_paddleseg()
    if name == "DeepLabV3P":
        return psm.DeepLabV3P(num_classes, psm.backbones.ResNet50_vd(output_stride=8),
                              backbone_indices=(0, 3), aspp_ratios=(1, 12, 24, 36),
                              aspp_out_channels=256)
    if name == "HRNet":
        return psm.FCN(num_classes, psm.backbones.HRNet_W48())
    return getattr(psm, name)(num_classes)


def count(layer):
    return (sum(int(np.prod(p.shape)) for p in layer.parameters()),
            sum(int(np.prod(v.shape)) for v in layer.state_dict().values()))


# Trainable parameters at default arguments, for the record (and to catch both
# libraries changing together).
PARAMS_AT_DEFAULTS = {"DeepLabV3P": 26_789_874}


@pytest.mark.parametrize("name", CLASSES)
def test_parameter_count_at_default_arguments_equals_paddleseg(name):
    with paddle.LazyGuard():
        ours = getattr(seg, name)().net
        theirs = paddleseg_counterpart(name)
    assert count(ours) == count(theirs)
    assert_same_state_dict_layout(ours, theirs)
    if name in PARAMS_AT_DEFAULTS:
        assert count(ours)[0] == PARAMS_AT_DEFAULTS[name]
