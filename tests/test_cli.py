"""The ``paddlex_seg`` command line: help, the whole train -> export -> predict path, errors."""
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import yaml

import paddlex_seg as seg
from paddlex_seg.cli import build_parser, main

COMMANDS = ("train", "evaluate", "predict", "export")


def run(capsys, *argv):
    """main(argv) in-process: (exit status, stdout, stderr)."""
    try:
        status = main(list(argv))
    except SystemExit as exit_:  # argparse: --help and usage errors
        status = exit_.code
    out = capsys.readouterr()
    return status, out.out, out.err


# === Help ===

def test_top_level_help_lists_the_commands(capsys):
    status, out, _ = run(capsys, "--help")
    assert status == 0
    for command in COMMANDS:
        assert command in out
    assert "--export_inference" in out


@pytest.mark.parametrize("command, options", [
    ("train", ["--model", "--dataset_dir", "--train_list", "--val_list", "--label_list",
               "--num_epochs", "--train_batch_size", "--learning_rate", "--pretrain_weights",
               "--save_dir", "--resume_checkpoint", "--early_stop", "--use_vdl", "--model_params"]),
    ("evaluate", ["--model_dir", "--dataset_dir", "--file_list", "--batch_size"]),
    ("predict", ["--model_dir", "--image", "--save_dir", "--weight", "--legend"]),
    ("export", ["--model_dir", "--save_dir", "--fixed_input_shape", "--onnx"]),
])
def test_each_command_has_help(capsys, command, options):
    status, out, _ = run(capsys, command, "--help")
    assert status == 0
    for option in options:
        assert option in out, option


def test_the_parser_mirrors_the_python_defaults():
    args = build_parser().parse_args(["train", "--model", "UNet", "--dataset_dir", "d",
                                      "--train_list", "t", "--num_epochs", "1"])
    assert (args.train_batch_size, args.learning_rate, args.lr_decay_power) == (2, 0.01, 0.9)
    assert (args.save_interval_epochs, args.log_interval_steps) == (1, 2)
    assert args.pretrain_weights == "CITYSCAPES" and args.use_vdl is True
    assert build_parser().parse_args(["train", "--model", "UNet", "--dataset_dir", "d",
                                      "--train_list", "t", "--num_epochs", "1",
                                      "--pretrain_weights", "None"]).pretrain_weights is None


def test_module_and_console_script_entry_points():
    out = subprocess.run([sys.executable, "-m", "paddlex_seg", "export", "--help"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "--fixed_input_shape" in out.stdout
    with open(os.path.join(os.path.dirname(__file__), "..", "setup.py")) as f:
        assert "paddlex_seg=paddlex_seg.cli:main" in f.read()


# === The whole path ===

@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli_data")
    return seg.make_synthetic_dataset(str(root), num_train=4, num_val=2, image_size=(64, 64),
                                      num_classes=3)


def test_train_evaluate_export_predict(capsys, data, tmp_path):
    out_dir = str(tmp_path / "fastscnn")
    status, out, err = run(
        capsys, "train", "--model", "FastSCNN", "--dataset_dir", data.root,
        "--train_list", data.train_list, "--val_list", data.val_list, "--label_list", data.label_list,
        "--num_epochs", "1", "--train_batch_size", "2", "--pretrain_weights", "None",
        "--no-use_vdl", "--num_workers", "0", "--save_dir", out_dir)
    assert status == 0, err
    assert "Training finished" in out
    best = os.path.join(out_dir, "best_model")
    assert os.path.isfile(os.path.join(best, "model.yml"))

    status, out, err = run(capsys, "evaluate", "--model_dir", best, "--dataset_dir", data.root,
                           "--file_list", data.val_list)
    assert status == 0, err
    metrics = json.loads(out[out.index("{"):])["metrics"]
    assert 0.0 <= metrics["miou"] <= 1.0 and len(metrics["category_iou"]) == 3

    # PaddleX 2.x's form of the export, with its [w,h] shape.
    infer = str(tmp_path / "inference_model")
    status, out, err = run(capsys, "--export_inference", f"--model_dir={best}",
                           f"--save_dir={infer}", "--fixed_input_shape=[64,48]")
    assert status == 0, err
    with open(os.path.join(infer, "model.yml")) as f:
        export = yaml.safe_load(f)["Export"]
    assert export["input_shape"] == [None, 3, 48, 64] and export["fixed_input_shape"] == [64, 48]

    image = os.path.join(data.root, seg.SegDataset(data.root, data.val_list).samples[0][0])
    vis = str(tmp_path / "vis")
    status, out, err = run(capsys, "predict", "--model_dir", infer, "--image", image,
                           "--save_dir", vis, "--legend", "--save_label")
    assert status == 0, err
    name = os.path.basename(image)
    assert os.path.isfile(os.path.join(vis, f"visualize_{name}")), os.listdir(vis)
    exported_labels = cv2.imread(os.path.join(vis, f"label_{os.path.splitext(name)[0]}.png"), 0)
    # The saved (not exported) model with the same fixed-size transforms gives the same labels.
    model = seg.load_model(best)
    from paddlex_seg.deploy import Predictor
    expected = model.predict(image, transforms=Predictor(infer).transforms)["label_map"]
    np.testing.assert_array_equal(exported_labels, expected)

    status, out, err = run(capsys, "predict", "--model_dir", best, "--image", image,
                           "--save_dir", vis)
    assert status == 0, err
    assert f"{image}: classes" in out


# === Errors: one line, non-zero status ===

@pytest.mark.parametrize("argv, words", [
    (["export", "--model_dir", "/no/such/model", "--save_dir", "x"], "does not exist"),
    (["export", "--model_dir", "/no/such/model", "--save_dir", "x", "--fixed_input_shape", "[1,2,3]"],
     "fixed_input_shape"),
    (["predict", "--model_dir", "/no/such/model", "--image", "a.png"], "does not exist"),
    (["evaluate", "--model_dir", "/no/such/model", "--dataset_dir", ".", "--file_list", "x.txt"],
     "does not exist"),
    (["train", "--model", "UNet", "--dataset_dir", "/no/such/dir", "--train_list", "t.txt",
      "--num_epochs", "1"], "/no/such/dir"),
])
def test_user_errors_print_one_line_and_exit_1(capsys, argv, words):
    status, out, err = run(capsys, *argv)
    assert status == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"paddlex_seg {argv[0]}: error: ") and words in lines[0], lines[0]
    assert "Traceback" not in err


def test_train_without_label_list_needs_num_classes(capsys, data):
    status, _, err = run(capsys, "train", "--model", "UNet", "--dataset_dir", data.root,
                         "--train_list", data.train_list, "--num_epochs", "1")
    assert status == 1 and "--num_classes" in err  # no label list: the classes are unknown


def test_usage_errors_exit_2(capsys):
    status, _, err = run(capsys, "export", "--save_dir", "x")
    assert status == 2 and "--model_dir" in err
    status, _, err = run(capsys, "train", "--model", "NoSuchNet")
    assert status == 2 and "invalid choice" in err
    status, _, err = run(capsys, "train", "--model", "UNet", "--dataset_dir", "d", "--train_list",
                         "t", "--num_epochs", "1", "--model_params", "[1, 2]")
    assert status == 2 and "YAML mapping" in err
