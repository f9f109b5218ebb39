"""A user's own backbone in DeepLabV3P: registered by name, or passed as a Layer.

The registered one goes through the whole life of a built-in backbone: train,
evaluate, sensitivity analysis, pruning, retraining, quantization-aware training,
export + deployment Predictor, and save / load_model.
"""
import numpy as np
import paddle
import paddle.nn as nn
import pytest

import paddlex_seg as seg
from paddlex_seg import models, segmenter
from paddlex_seg import transforms as T
from paddlex_seg.checkpoint import ModelDirError
from paddlex_seg.models.backbones import BACKBONES
from paddlex_seg.models.layers import ConvBNReLU
from paddlex_seg.slim import prune as P

NAME = "MyTinyNet"


class TinyNet(nn.Layer):
    """Two stride-2 stages: features at 1/2 (16 channels) and 1/4 (32 channels)."""

    def __init__(self, width=16):
        super().__init__()
        self.feat_channels = [width, 2 * width]
        self.stage1 = nn.Sequential(ConvBNReLU(3, width, 3, stride=2, padding=1),
                                    ConvBNReLU(width, width, 3, padding=1))
        self.stage2 = nn.Sequential(ConvBNReLU(width, 2 * width, 3, stride=2, padding=1),
                                    ConvBNReLU(2 * width, 2 * width, 3, padding=1))

    def forward(self, x):
        low = self.stage1(x)
        return [low, self.stage2(low)]


@pytest.fixture()
def registered():
    def MyTinyNet(**kwargs):  # noqa: N802 -- the builder's name is the backbone's name
        return TinyNet(**kwargs)

    models.register(MyTinyNet)
    yield NAME
    BACKBONES.pop(NAME, None)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("custom_backbone")
    d = seg.make_synthetic_dataset(str(root / "data"), num_train=8, num_val=2, image_size=(64, 64),
                                   num_classes=3, seed=3)
    train_ds = seg.SegDataset(d.root, d.train_list, d.label_list,
                              transforms=T.Compose([T.RandomHorizontalFlip(), T.Normalize()]),
                              shuffle=True, num_workers=0)
    eval_ds = seg.SegDataset(d.root, d.val_list, d.label_list, transforms=T.Compose([T.Normalize()]),
                             num_workers=0)
    return train_ds, eval_ds


def fit(model, data, save_dir, pretrain_weights=None):
    train_ds, eval_ds = data
    return model.train(num_epochs=1, train_dataset=train_ds, eval_dataset=eval_ds, train_batch_size=4,
                       save_dir=str(save_dir), use_vdl=False, pretrain_weights=pretrain_weights)


def test_registered_backbone_trains_prunes_quantizes_exports_and_reloads(
        registered, data, tmp_path, monkeypatch):
    monkeypatch.setattr(segmenter, "SENSITIVITY_RATIOS", (0.3,))
    monkeypatch.setattr(segmenter, "PRUNE_INPUT_SHAPE", [1, 3, 64, 64])
    train_ds, eval_ds = data
    model = seg.DeepLabV3P(num_classes=3, backbone=NAME, backbone_indices=(0, 1), aspp_out_channels=32)
    assert isinstance(model.net.backbone, TinyNet)
    assert model.init_params["backbone"] == NAME
    # No published weights for a custom backbone: the error says which backbones have them.
    with pytest.raises(ValueError, match="CITYSCAPES weights only for backbone 'ResNet50_vd'"):
        fit(model, data, tmp_path / "x", pretrain_weights="CITYSCAPES")

    fit(model, data, tmp_path / "float")
    metrics = model.evaluate(eval_ds)
    assert 0.0 <= metrics["miou"] <= 1.0

    sens = model.analyze_sensitivity(eval_ds, batch_size=2, save_dir=str(tmp_path / "sens"))
    assert any(name.startswith("backbone.") for name in sens), sorted(sens)
    before = P.flops(model.net, segmenter.PRUNE_INPUT_SHAPE)
    model.prune(0.2)
    after = P.flops(model.net, segmenter.PRUNE_INPUT_SHAPE)
    assert after < 0.9 * before, (before, after)
    fit(model, data, tmp_path / "pruned")

    # Export + deployment: the float (pruned) program predicts exactly as the model does.
    from paddlex_seg.deploy import Predictor
    image = eval_ds.samples[0][0]
    exported = Predictor(model.export(str(tmp_path / "infer_float"))).predict(image)
    np.testing.assert_array_equal(exported["label_map"], model.predict(image)["label_map"])

    model.quant_aware_train(num_epochs=1, train_dataset=train_ds, eval_dataset=eval_ds,
                            train_batch_size=4, save_dir=str(tmp_path / "qat"), use_vdl=False)
    assert model.status == "Quantized"

    # The int8 program rounds every convolution's output too, so it is not bit-identical
    # to the fake-quantized network (tests/deploy/test_export.py measures >= 95 % on
    # UNet); after one epoch many pixels are near ties, hence the looser bound here.
    expected = model.predict(image)["label_map"]
    exported = Predictor(model.export(str(tmp_path / "infer_int8"))).predict(image)["label_map"]
    assert exported.shape == expected.shape
    agreement = float((exported == expected).mean())
    print(f"int8 export vs fake-quantized network: label agreement {agreement:.4f}")
    assert agreement > 0.9

    model.save(str(tmp_path / "saved"))
    loaded = seg.load_model(str(tmp_path / "saved"))
    assert loaded.status == "Quantized" and loaded.init_params["backbone"] == NAME
    np.testing.assert_array_equal(loaded.predict(image)["label_map"], expected)


def test_layer_instance_trains_and_predicts_but_load_model_explains(data, tmp_path):
    _, eval_ds = data
    backbone = TinyNet(width=8)
    model = seg.DeepLabV3P(num_classes=3, backbone=backbone, backbone_indices=(0, 1), aspp_out_channels=16)
    assert model.net.backbone is backbone
    fit(model, data, tmp_path / "run")
    result = model.predict(eval_ds.samples[0][0])
    assert result["label_map"].shape == (64, 64)

    saved = model.save(str(tmp_path / "saved"))
    with pytest.raises(ModelDirError) as info:
        seg.load_model(saved)
    message = str(info.value)
    for fragment in ("custom backbone Layer", "TinyNet", "paddlex_seg.models.register", "backbone="):
        assert fragment in message, message


@pytest.mark.parametrize("indices", [(0, 2), (-3, 1), (0,)])
def test_backbone_indices_are_checked_against_feat_channels(indices):
    with pytest.raises(ValueError) as info:
        seg.DeepLabV3P(num_classes=3, backbone=TinyNet(), backbone_indices=indices)
    assert "backbone_indices" in str(info.value) and repr(indices) in str(info.value)


def test_layer_without_feat_channels_is_refused():
    with pytest.raises(ValueError, match="feat_channels"):
        seg.DeepLabV3P(backbone=nn.Conv2D(3, 8, 3))


@pytest.mark.parametrize("name, hint", [("ResNet50vd", "'ResNet50_vd'"), ("mobilenetv2_x1_0", "'MobileNetV2_x1_0'")])
def test_misspelt_backbone_suggests_close_matches(name, hint):
    with pytest.raises(ValueError) as info:
        seg.DeepLabV3P(backbone=name)
    assert f"backbone={name!r}" in str(info.value) and "Did you mean" in str(info.value)
    assert hint in str(info.value)


@pytest.mark.parametrize("name, indices", [("MobileNetV3_small_x0_35", (0, 3)),
                                           ("HRNet_W18_Small_V1", (0, 0))])
def test_any_registered_backbone_builds(name, indices):
    # HRNet's builder takes no output_stride: it is only passed to builders that accept it.
    model = seg.DeepLabV3P(num_classes=3, backbone=name, backbone_indices=indices, aspp_out_channels=16)
    model.net.eval()
    assert model.net(paddle.rand([1, 3, 64, 64]))[0].shape == [1, 3, 64, 64]
