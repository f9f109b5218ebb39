"""analyze_sensitivity → prune → train → quant_aware_train → load_model, through the model API."""
import os

import numpy as np
import pytest

import paddlex_seg as seg
from paddlex_seg import segmenter
from paddlex_seg import transforms as T
from paddlex_seg.slim import prune as P


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("compress")
    d = seg.make_synthetic_dataset(str(root / "data"), num_train=8, num_val=2, image_size=(64, 64),
                                   num_classes=3, seed=1)
    train_ds = seg.SegDataset(d.root, d.train_list, d.label_list,
                              transforms=T.Compose([T.RandomHorizontalFlip(), T.Normalize()]),
                              shuffle=True, num_workers=0)
    eval_ds = seg.SegDataset(d.root, d.val_list, d.label_list, transforms=T.Compose([T.Normalize()]),
                             num_workers=0)
    return root, train_ds, eval_ds


@pytest.fixture(scope="module")
def trained(data):
    root, train_ds, eval_ds = data
    model = seg.UNet(num_classes=3)
    model.train(num_epochs=1, train_dataset=train_ds, eval_dataset=eval_ds, train_batch_size=4,
                pretrain_weights=None, save_dir=str(root / "float"), use_vdl=False)
    return model


@pytest.fixture()
def short_ratios(monkeypatch):
    monkeypatch.setattr(segmenter, "SENSITIVITY_RATIOS", (0.2, 0.5))
    # FLOPs counted at 128 px: the prune's FLOPs search runs UNet ~30 times (8 s, not 30 s at
    # 256); model.yml records the shape and load_model replays at it.
    monkeypatch.setattr(segmenter, "PRUNE_INPUT_SHAPE", [1, 3, 128, 128])


def test_sensitivity_prune_retrain_reload(data, trained, short_ratios, tmp_path):
    root, train_ds, eval_ds = data
    sens_dir = tmp_path / "prune"
    sens = trained.analyze_sensitivity(eval_ds, batch_size=2, save_dir=str(sens_dir))
    path = sens_dir / "model.sensi.data"
    assert path.is_file()
    assert sens == P.load_sensitivities(str(path))
    assert all(sorted(points) == [0.2, 0.5] for points in sens.values())
    # The classifier (out channels = num_classes) is never a candidate.
    assert not any(name.startswith("cls") for name in sens)

    # A second analysis reads the file back instead of recomputing it.
    mtime = os.path.getmtime(path)
    again = trained.analyze_sensitivity(eval_ds, batch_size=2, save_dir=str(sens_dir))
    assert again == sens and os.path.getmtime(path) == mtime

    import copy
    model = copy.deepcopy(trained)
    base = P.flops(model.net, segmenter.PRUNE_INPUT_SHAPE)
    model.prune(pruned_flops=0.3, save_dir=str(tmp_path / "pruned"))
    after = P.flops(model.net, segmenter.PRUNE_INPUT_SHAPE)
    assert abs((1 - after / base) - 0.3) <= 0.02, (base, after)
    assert model.status == "Pruned" and model.pruning["input_shape"] == [1, 3, 128, 128]
    assert model.pruning["pruned_flops_measured"] == pytest.approx(1 - after / base)

    # load_model rebuilds the pruned shapes from model.yml.
    loaded = seg.load_model(str(tmp_path / "pruned"))
    assert loaded.status == "Pruned"
    shapes = {k: list(v.shape) for k, v in model.net.state_dict().items()}
    assert {k: list(v.shape) for k, v in loaded.net.state_dict().items()} == shapes

    # The same object fine-tunes with the shared engine, as PaddleX's tutorial does.
    model.train(num_epochs=1, train_dataset=train_ds, eval_dataset=eval_ds, train_batch_size=4,
                pretrain_weights=None, save_dir=str(tmp_path / "finetune"), use_vdl=False)
    image = eval_ds.samples[0][0]
    reloaded = seg.load_model(str(tmp_path / "finetune" / "epoch_1"))
    np.testing.assert_array_equal(reloaded.predict(image)["label_map"], model.predict(image)["label_map"])
    np.testing.assert_allclose(reloaded.predict(image)["score_map"], model.predict(image)["score_map"], atol=1e-6)


def test_quant_aware_train_and_reload(data, trained, tmp_path):
    root, train_ds, eval_ds = data
    model = seg.load_model(str(root / "float" / "best_model"))
    model.quant_aware_train(num_epochs=1, train_dataset=train_ds, train_batch_size=4,
                            eval_dataset=eval_ds, learning_rate=0.001, save_dir=str(tmp_path / "qat"),
                            use_vdl=False)
    assert model.status == "Quantized"
    info = __import__("yaml").safe_load(open(tmp_path / "qat" / "best_model" / "model.yml"))
    assert info["status"] == "Quantized" and info["quant_config"]["weight_bits"] == 8
    loaded = seg.load_model(str(tmp_path / "qat" / "best_model"))
    image = eval_ds.samples[0][0]
    np.testing.assert_allclose(loaded.predict(image)["score_map"], model.predict(image)["score_map"], atol=1e-6)
    metrics = loaded.evaluate(eval_ds)
    assert 0 <= metrics["miou"] <= 1


def test_compression_arguments_rejected(data, trained):
    root, train_ds, eval_ds = data
    with pytest.raises(ValueError, match="criterion"):
        trained.analyze_sensitivity(eval_ds, criterion="l2")
    for bad in (0, 1, 1.5, -0.1, "0.3", True):
        with pytest.raises(ValueError, match="pruned_flops"):
            trained.prune(pruned_flops=bad)
    fresh = seg.UNet(num_classes=3)
    with pytest.raises(ValueError, match="analyze_sensitivity"):
        fresh.prune(pruned_flops=0.2)
    with pytest.raises(ValueError, match="not_a_key"):
        seg.UNet(num_classes=3).quant_aware_train(
            num_epochs=1, train_dataset=train_ds, quant_config={"not_a_key": 1})
