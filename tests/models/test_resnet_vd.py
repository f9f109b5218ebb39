"""ResNet_vd backbone: PaddleSeg 2.8.0 parity, the backbone contract, arguments."""
import numpy as np
import paddle
import pytest

from oracle import backbone_output_strides, assert_same_state_dict_layout, randomize_batch_norm_stats, require_paddleseg
from paddlex_seg.models.backbones import BACKBONES, list_backbones
from paddlex_seg.models.backbones.resnet_vd import ResNetVd

DEPTHS = (18, 34, 50, 101, 152, 200)


def paddleseg_resnet(layers, **kwargs):
    # ResNet152_vd/ResNet200_vd are not exported from paddleseg.models.backbones.
    require_paddleseg()
    from paddleseg.models.backbones import resnet_vd
    return resnet_vd.ResNet_vd(layers=layers, **kwargs)


@pytest.mark.parametrize("output_stride", [8, 16])
@pytest.mark.parametrize("layers", DEPTHS)
def test_state_dict_layout_matches_paddleseg(layers, output_stride):
    # Layout only: LazyGuard skips parameter initialisation, shapes are still known.
    with paddle.LazyGuard():
        ours = ResNetVd(layers=layers, output_stride=output_stride)
        theirs = paddleseg_resnet(layers, output_stride=output_stride)
    assert_same_state_dict_layout(ours, theirs)


@pytest.mark.parametrize("layers, output_stride, multi_grid, input_shape", [
    (18, 8, (1, 1), (1, 3, 64, 64)),
    (18, 16, (1, 1), (1, 3, 64, 64)),
    (50, 8, (1, 1, 1), (1, 3, 64, 64)),
    (50, 16, (1, 1, 1), (1, 3, 64, 64)),
    (18, 8, (1, 2), (1, 3, 64, 64)),
    # Odd sizes exercise the ceil-mode average pooling of the "vd" shortcuts.
    (18, None, (1, 1), (1, 3, 65, 47)),
])
def test_features_match_paddleseg(layers, output_stride, multi_grid, input_shape):
    ours = ResNetVd(layers=layers, output_stride=output_stride, multi_grid=multi_grid)
    theirs = paddleseg_resnet(layers, output_stride=output_stride, multi_grid=multi_grid)
    randomize_batch_norm_stats(theirs, seed=1)
    ours.set_state_dict(theirs.state_dict())
    ours.eval()
    theirs.eval()
    x = paddle.to_tensor(np.random.RandomState(0).uniform(-1, 1, input_shape).astype("float32"))
    with paddle.no_grad():
        feats_ours, feats_theirs = ours(x), theirs(x)
    assert len(feats_ours) == len(feats_theirs) == 4
    for stage, (a, b) in enumerate(zip(feats_ours, feats_theirs)):
        a, b = a.numpy(), b.numpy()
        assert a.shape == b.shape, (stage, a.shape, b.shape)
        rel = np.abs(a - b).max() / max(np.abs(b).max(), 1e-6)
        assert rel <= 1e-4, f"stage {stage}: relative max abs difference {rel}"


def test_every_resnet_builder_is_registered():
    assert list_backbones("ResNet*_vd") == sorted(f"ResNet{d}_vd" for d in DEPTHS)


# Every depth at the default stride; the dilated variant for the cheaper ones.
@pytest.mark.parametrize("name, output_stride, last_strides", [
    *[(f"ResNet{d}_vd", None, (16, 32)) for d in DEPTHS],
    *[(f"ResNet{d}_vd", 8, (8, 8)) for d in (18, 34, 50)],
    ("ResNet50_vd", 16, (16, 16)),
])
def test_feat_channels_and_strides_match_outputs(name, output_stride, last_strides):
    net = BACKBONES[name](output_stride=output_stride)
    strides = backbone_output_strides(net)
    basic = name in ("ResNet18_vd", "ResNet34_vd")
    expected = [64, 128, 256, 512] if basic else [256, 512, 1024, 2048]
    assert net.feat_channels == expected
    assert strides == [4, 8, *last_strides]


@pytest.mark.parametrize("kwargs, argument", [
    (dict(layers=42), "layers=42"),
    (dict(output_stride=4), "output_stride=4"),
    (dict(output_stride=32), "output_stride=32"),
    (dict(multi_grid=(1, 2)), "multi_grid=(1, 2)"),
    (dict(lr_mult_list=(0.1, 0.2)), "lr_mult_list=(0.1, 0.2)"),
    (dict(in_channels=0), "in_channels=0"),
])
def test_bad_arguments_raise_value_error_naming_them(kwargs, argument):
    with pytest.raises(ValueError, match=argument.replace("(", r"\(").replace(")", r"\)")):
        ResNetVd(**kwargs)


def _learning_rates(net):
    # BatchNorm's running statistics are parameters too, but never trained.
    return {name: p.optimize_attr["learning_rate"] for name, p in net.named_parameters()
            if not p.stop_gradient}


def test_lr_mult_list_sets_each_stage_learning_rate():
    mults = (0.1, 0.25, 0.5, 2.0)
    rates = _learning_rates(ResNetVd(layers=18, lr_mult_list=mults))
    for name, rate in rates.items():
        stage = int(name[3]) if name.startswith("bb_") else 0  # the stem follows stage 0
        assert rate == pytest.approx(mults[stage]), name
    assert {round(r, 6) for r in _learning_rates(ResNetVd(layers=18)).values()} == {0.1, 0.2}


def test_unit_lr_mult_list_equals_paddleseg_learning_rates():
    # PaddleSeg 2.8.0's ResNet_vd has no lr_mult_list: all its parameters train at 1.0.
    ours = _learning_rates(ResNetVd(layers=18, lr_mult_list=(1, 1, 1, 1)))
    theirs = _learning_rates(paddleseg_resnet(18))
    assert ours == theirs


def test_optimizer_applies_the_multipliers():
    mults = (0.1, 0.1, 0.2, 0.5)
    net = ResNetVd(layers=18, lr_mult_list=mults)
    stem, last = net.conv1_1._conv.weight, net.bb_3_1.conv1._conv.weight
    before = [stem.numpy().copy(), last.numpy().copy()]
    sum(f.mean() for f in net(paddle.rand([1, 3, 64, 64]))).backward()
    grads = [stem.grad.numpy().copy(), last.grad.numpy().copy()]
    paddle.optimizer.SGD(learning_rate=1.0, parameters=net.parameters()).step()
    for param, old, grad, mult in zip((stem, last), before, grads, (mults[0], mults[3])):
        assert np.abs(grad).max() > 0
        np.testing.assert_allclose(old - param.numpy(), mult * grad, rtol=1e-4, atol=1e-7)


def test_registry_default_stride_is_documented_and_deeplab_keeps_paddleseg_stride():
    """The registry's ResNet50_vd() is undilated (stride 32) where PaddleSeg's defaults to 8:
    a documented deviation. DeepLabV3P passes output_stride=8 itself, PaddleSeg's stride."""
    import os
    import paddlex_seg as seg
    from paddlex_seg.models.backbones import get_backbone
    assert backbone_output_strides(get_backbone("ResNet18_vd"))[-1] == 32
    assert backbone_output_strides(get_backbone("ResNet18_vd", output_stride=8))[-1] == 8
    model = seg.DeepLabV3P(num_classes=2, backbone="ResNet18_vd")
    assert backbone_output_strides(model.net.backbone)[-1] == 8
    doc = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "backbones.md")
    with open(doc, encoding="utf-8") as f:
        text = " ".join(f.read().split())
    assert ("**Default output stride of the ResNet_vd builders: 32, not PaddleSeg's 8.**" in text
            and "get_backbone('ResNet50_vd', output_stride=8)" in text)
    require_paddleseg()
    from paddleseg.models.backbones import ResNet50_vd
    theirs = ResNet50_vd()
    theirs.eval()
    with paddle.no_grad():
        assert 64 // theirs(paddle.rand([1, 3, 64, 64]))[-1].shape[2] == 8  # the deviation is real
    assert backbone_output_strides(get_backbone("ResNet50_vd"))[-1] == 32
