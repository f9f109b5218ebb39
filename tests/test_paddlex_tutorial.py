"""A PaddleX 2.x tutorial, with only its import lines changed, runs end to end (issue 13).

The script in ``test_paddlex_tutorial_end_to_end`` is written the way PaddleX 2.x's
segmentation tutorials are (``pdx.datasets``, ``pdx.seg``, ``pdx.load_model``,
``pdx.deploy.Predictor``, relative paths from the current directory, a
``JPEGImages``/``Annotations`` data set with palette PNG labels), on a 64x64 data set:
train → load best_model → analyze_sensitivity → prune → retrain → QAT → predict →
visualize → export (PaddleX command line) → Predictor.
"""
import os
import shutil

import numpy as np
import pytest
from PIL import Image

import paddlex_seg
from paddlex_seg import cli, segmenter


def _make_optic_disc_like(root):
    """A tiny data set laid out like PaddleX's optic_disc_seg: JPEGImages/, Annotations/,
    train_list.txt, val_list.txt, test_list.txt, labels.txt; labels are palette PNGs."""
    staging = paddlex_seg.make_synthetic_dataset(os.path.join(root, "_staging"), num_train=8, num_val=2,
                                                 image_size=(64, 64), num_classes=2, seed=3,
                                                 palette_labels=True)
    data = os.path.join(root, "optic_disc_seg")
    os.makedirs(os.path.join(data, "JPEGImages"))
    os.makedirs(os.path.join(data, "Annotations"))
    for src_list, dst_list in ((staging.train_list, "train_list.txt"), (staging.val_list, "val_list.txt")):
        lines = []
        for line in open(src_list).read().split("\n"):
            if not line.strip():
                continue
            image, label = line.split()
            new_image = "JPEGImages/" + os.path.basename(image)
            new_label = "Annotations/" + os.path.basename(label)
            shutil.copy(os.path.join(staging.root, image), os.path.join(data, new_image))
            shutil.copy(os.path.join(staging.root, label), os.path.join(data, new_label))
            lines.append(f"{new_image} {new_label}")
        with open(os.path.join(data, dst_list), "w") as f:
            f.write("\n".join(lines) + "\n")
    shutil.copy(staging.label_list, os.path.join(data, "labels.txt"))
    shutil.rmtree(staging.root)
    return data


def test_paddlex_tutorial_end_to_end(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # analyze_sensitivity evaluates every prunable layer at 8 ratios; one is enough here.
    monkeypatch.setattr(segmenter, "SENSITIVITY_RATIOS", (0.3,))
    # FLOPs are counted on a 256x256 input by default; at 64x64 prune() takes 5 s, not 45.
    monkeypatch.setattr(segmenter, "PRUNE_INPUT_SHAPE", [1, 3, 64, 64])
    _make_optic_disc_like(str(tmp_path))
    assert Image.open("optic_disc_seg/Annotations/" + sorted(os.listdir("optic_disc_seg/Annotations"))[0]).mode == "P"

    # ---- the tutorial, as a PaddleX 2.x user writes it (only the imports changed) ----
    import paddlex_seg as pdx
    from paddlex_seg import transforms as T

    train_transforms = T.Compose([
        T.Resize(target_size=64), T.RandomHorizontalFlip(),
        T.Normalize(mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5])])
    eval_transforms = T.Compose([
        T.Resize(target_size=64), T.Normalize(mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5])])

    train_dataset = pdx.datasets.SegDataset(
        data_dir='optic_disc_seg', file_list='optic_disc_seg/train_list.txt',
        label_list='optic_disc_seg/labels.txt', transforms=train_transforms, shuffle=True)
    eval_dataset = pdx.datasets.SegDataset(
        data_dir='optic_disc_seg', file_list='optic_disc_seg/val_list.txt',
        label_list='optic_disc_seg/labels.txt', transforms=eval_transforms, shuffle=False)

    num_classes = len(train_dataset.labels)
    model = pdx.seg.UNet(num_classes=num_classes)
    model.train(num_epochs=1, train_dataset=train_dataset, train_batch_size=4,
                eval_dataset=eval_dataset, learning_rate=0.01, pretrain_weights=None,
                save_dir='output/unet', use_vdl=False)

    # Pruning tutorial: sensitivities, prune 20% of the FLOPs, fine-tune the same object.
    model = pdx.load_model('output/unet/best_model')
    model.analyze_sensitivity(dataset=eval_dataset, batch_size=1, save_dir='output/unet/prune')
    sensi = 'output/unet/prune/model.sensi.data'
    assert os.path.isfile(sensi)
    mtime = os.path.getmtime(sensi)
    model.analyze_sensitivity(dataset=eval_dataset, batch_size=1, save_dir='output/unet/prune')
    assert os.path.getmtime(sensi) == mtime  # the second run reads the file back
    model.prune(pruned_flops=.2)
    assert model.status == "Pruned"
    assert model.pruning["pruned_flops_measured"] > 0.1
    pruned_shapes = {k: list(v.shape) for k, v in model.net.state_dict().items()}
    model.train(num_epochs=1, train_dataset=train_dataset, train_batch_size=4,
                eval_dataset=eval_dataset, learning_rate=0.01, pretrain_weights=None,
                save_dir='output/unet/prune', use_vdl=False)
    assert {k: list(v.shape) for k, v in model.net.state_dict().items()} == pruned_shapes
    assert pdx.load_model('output/unet/prune/best_model').status == "Pruned"

    # Quantization tutorial, on a freshly loaded model.
    model = pdx.load_model('output/unet/best_model')
    model.quant_aware_train(num_epochs=1, train_dataset=train_dataset, train_batch_size=4,
                            eval_dataset=eval_dataset, learning_rate=0.001,
                            save_dir='output/unet/quant', use_vdl=True)
    assert os.path.isdir('output/unet/quant/vdl_log')
    assert pdx.load_model('output/unet/quant/best_model').status == "Quantized"

    # Prediction and visualisation.
    shutil.copy(eval_dataset.samples[0][0], 'test.jpg')
    model = pdx.load_model('output/unet/best_model')
    result = model.predict('test.jpg')
    assert result['label_map'].shape == (64, 64)
    assert result['score_map'].shape == (64, 64, num_classes)
    pdx.seg.visualize('test.jpg', result, weight=0.0, save_dir='./')
    assert os.path.isfile('./visualize_test.jpg')

    # Export with PaddleX's command line, then deploy.
    # (shell: paddlex_seg --export_inference --model_dir=./output/unet/best_model/ --save_dir=./inference_model)
    assert cli.main(['--export_inference', '--model_dir=./output/unet/best_model/',
                     '--save_dir=./inference_model']) == 0
    predictor = pdx.deploy.Predictor('./inference_model')
    deployed = predictor.predict(img_file='test.jpg', warmup_iters=2, repeats=2)
    assert set(deployed) == set(result)
    np.testing.assert_array_equal(deployed['label_map'], result['label_map'])
    np.testing.assert_allclose(deployed['score_map'], result['score_map'], atol=1e-4)

    assert cli.main(['--export_inference', '--model_dir=./output/unet/best_model/',
                     '--save_dir=./inference_model_224', '--fixed_input_shape=[224,224]']) == 0
    fixed = pdx.deploy.Predictor('./inference_model_224').predict(img_file='test.jpg')
    assert fixed['label_map'].shape == (64, 64)  # back at the image's size


def test_paddlex_namespaces_are_the_same_objects():
    import paddlex_seg as pdx
    import sys
    from paddlex_seg import data, deploy, segmenter
    from paddlex_seg import transforms as T
    from paddlex_seg.data import transforms as data_transforms
    for name in ("DeepLabV3P", "BiSeNetV2", "UNet", "HRNet", "FastSCNN"):
        assert getattr(pdx.seg, name) is getattr(segmenter, name)
    assert pdx.seg.visualize is sys.modules['paddlex_seg.visualize'].visualize is pdx.visualize
    assert pdx.datasets.SegDataset is data.dataset.SegDataset
    assert pdx.deploy.Predictor is deploy.predictor.Predictor
    assert pdx.utils.download_and_decompress is sys.modules['paddlex_seg.utils.download'].download_and_decompress
    assert pdx.load_model is segmenter.load_model
    assert T.Normalize is data_transforms.Normalize
    with pytest.raises(AttributeError, match="Unet"):
        pdx.seg.Unet


def test_paddlex_tutorial_transforms_construct():
    """The operators and argument names of PaddleX 2.x's segmentation tutorials."""
    from paddlex_seg import transforms as T
    train = T.Compose([
        T.Resize(target_size=512), T.RandomHorizontalFlip(),
        T.Normalize(mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5])])
    assert [type(t).__name__ for t in train.transforms] == ["Resize", "RandomHorizontalFlip", "Normalize"]
    augment = T.Compose([
        T.ResizeStepScaling(min_scale_factor=0.5, max_scale_factor=2.0, scale_step_size=0.25),
        T.RandomPaddingCrop(crop_size=512, im_padding_value=(127.5, 127.5, 127.5), label_padding_value=255),
        T.RandomHorizontalFlip(prob=0.5), T.RandomVerticalFlip(prob=0.1), T.RandomBlur(prob=0.1),
        T.RandomDistort(brightness_range=0.4, brightness_prob=0.5, contrast_range=0.4, contrast_prob=0.5,
                        saturation_range=0.4, saturation_prob=0.5, hue_range=18, hue_prob=0.5),
        T.ResizeByShort(short_size=512, max_size=-1), T.ResizeByLong(long_size=512),
        T.Padding(target_size=512), T.Normalize()])
    for defaults in (T.ResizeStepScaling(), T.RandomPaddingCrop(crop_size=512), T.RandomDistort(),
                     T.RandomBlur()):
        assert callable(defaults)
    rng = np.random.RandomState(0)
    sample = {"image": rng.randint(0, 256, (300, 400, 3)).astype("uint8"),
              "label": rng.randint(0, 2, (300, 400)).astype("uint8"), "trans_info": []}
    out = augment(sample)
    assert out["image"].shape == (3, 512, 512) and out["label"].shape == (512, 512)
    with pytest.raises(ValueError, match="crop_size"):
        T.RandomPaddingCrop(crop_size=-1)


def _write_voc_style(root, label_mode):
    """One 32x32 sample: JPEGImages/a.jpg, Annotations/a.png (a square of class 1)."""
    os.makedirs(os.path.join(root, "JPEGImages"))
    os.makedirs(os.path.join(root, "Annotations"))
    Image.fromarray(np.full((32, 32, 3), 90, "uint8")).save(os.path.join(root, "JPEGImages", "a.jpg"))
    ids = np.zeros((32, 32), "uint8")
    ids[8:24, 8:24] = 1
    if label_mode == "P":
        label = Image.fromarray(ids, mode="P")
        label.putpalette([0, 0, 0, 128, 0, 0] + [0] * (254 * 3))  # class 1 is dark red
    else:  # a colour mask, as some annotation tools write
        label = Image.fromarray(np.stack([ids * 128, ids * 0, ids * 0], axis=2))
    label.save(os.path.join(root, "Annotations", "a.png"))
    with open(os.path.join(root, "train_list.txt"), "w") as f:
        f.write("JPEGImages/a.jpg Annotations/a.png\n")
    with open(os.path.join(root, "labels.txt"), "w") as f:
        f.write("background\noptic_disc\n")


def test_paddlex_dataset_paths_labels_and_palette(tmp_path, monkeypatch):
    import paddlex_seg as pdx
    monkeypatch.chdir(tmp_path)
    _write_voc_style("optic_disc_seg", "P")
    # Lists given relative to the current directory (as the tutorials do) ...
    from_cwd = pdx.datasets.SegDataset(data_dir='optic_disc_seg', file_list='optic_disc_seg/train_list.txt',
                                       label_list='optic_disc_seg/labels.txt', num_workers=0)
    # ... or relative to data_dir.
    from_dir = pdx.datasets.SegDataset(data_dir='optic_disc_seg', file_list='train_list.txt',
                                       label_list='labels.txt', num_workers=0)
    for ds in (from_cwd, from_dir):
        assert ds.labels == ["background", "optic_disc"]
        assert ds.samples == [(str(tmp_path / "optic_disc_seg" / "JPEGImages" / "a.jpg"),
                               str(tmp_path / "optic_disc_seg" / "Annotations" / "a.png"))]
        image, label = ds[0]
        assert image.shape == (32, 32, 3)
        # The palette indices are the class ids (not the palette colour's grey level).
        assert sorted(np.unique(label).tolist()) == [0, 1] and label[16, 16] == 1


def test_paddlex_dataset_refuses_colour_mask_naming_the_file(tmp_path):
    import paddlex_seg as pdx
    _write_voc_style(str(tmp_path), "RGB")
    with pytest.raises(ValueError, match=r"Annotations/a\.png.*colour mask|colour mask.*Annotations/a\.png"):
        pdx.datasets.SegDataset(data_dir=str(tmp_path), file_list=str(tmp_path / "train_list.txt"),
                                label_list=str(tmp_path / "labels.txt"), num_workers=0)
