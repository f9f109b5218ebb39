"""analyze_sensitivity → prune → quant_aware_train → export on every model class (tiny, untrained)."""
import numpy as np
import pytest

import paddlex_seg as seg
from paddlex_seg import segmenter
from paddlex_seg import transforms as T
from paddlex_seg.deploy import Predictor
from paddlex_seg.slim import prune as P

SHAPE = [1, 3, 64, 64]
MODELS = {
    "DeepLabV3P": lambda: seg.DeepLabV3P(num_classes=3, backbone="ResNet18_vd", output_stride=16),
    "BiSeNetV2": lambda: seg.BiSeNetV2(num_classes=3),
    "UNet": lambda: seg.UNet(num_classes=3),
    "HRNet": lambda: seg.HRNet(num_classes=3, width="18_Small_V1"),
    "FastSCNN": lambda: seg.FastSCNN(num_classes=3),
}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("all_models")
    d = seg.make_synthetic_dataset(str(root / "data"), num_train=4, num_val=2, image_size=(64, 64),
                                   num_classes=3, seed=3)
    train_ds = seg.SegDataset(d.root, d.train_list, d.label_list, transforms=T.Compose([T.Normalize()]),
                              num_workers=0)
    eval_ds = seg.SegDataset(d.root, d.val_list, d.label_list, transforms=T.Compose([T.Normalize()]),
                             num_workers=0)
    return train_ds, eval_ds


@pytest.mark.parametrize("name", sorted(MODELS))
def test_compression_chain(name, data, tmp_path, monkeypatch):
    monkeypatch.setattr(segmenter, "SENSITIVITY_RATIOS", (0.5,))
    monkeypatch.setattr(segmenter, "PRUNE_INPUT_SHAPE", SHAPE)
    train_ds, eval_ds = data
    model = MODELS[name]()
    model.eval_transforms = eval_ds.transforms

    sens = model.analyze_sensitivity(eval_ds, batch_size=2, save_dir=str(tmp_path / "sens"))
    assert sens and all(list(points) == [0.5] for points in sens.values())
    assert (tmp_path / "sens" / "model.sensi.data").is_file()

    before = P.flops(model.net, SHAPE)
    model.prune(pruned_flops=0.2)
    after = P.flops(model.net, SHAPE)
    assert model.status == "Pruned"
    assert 1 - after / before > 0.1, f"{name}: only {1 - after / before:.1%} of FLOPs removed"

    model.quant_aware_train(num_epochs=1, train_dataset=train_ds, train_batch_size=2,
                            save_dir=str(tmp_path / "qat"), use_vdl=False)
    assert model.status == "Quantized"
    loaded = seg.load_model(str(tmp_path / "qat" / "epoch_1"))
    assert loaded.status == "Quantized" and loaded.pruning is not None
    image = eval_ds.samples[0][0]
    np.testing.assert_allclose(loaded.predict(image)["score_map"], model.predict(image)["score_map"], atol=1e-5)

    model.export(str(tmp_path / "infer"))
    result = Predictor(str(tmp_path / "infer")).predict(image)
    assert result["label_map"].shape == (64, 64) and result["score_map"].shape == (64, 64, 3)
