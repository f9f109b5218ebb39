"""model.compress: the stages, the report, reruns, resuming after SIGKILL, argument checks, CLI.

One tiny DeepLabV3P (MobileNetV3_small_x0_35, 222k parameters) on the synthetic set
(64 px, 8 train / 2 val images), 1-epoch stages and two sensitivity ratios keep the
whole file at about a minute on 2 cores.
"""
import contextlib
import hashlib
import importlib
import io
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

import paddlex_seg as seg
from paddlex_seg import cli, segmenter
from paddlex_seg import transforms as T
from paddlex_seg.engine.train import Trainer
from paddlex_seg import compress as C

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
SCRIPT = os.path.join(HERE, "compress_script.py")
RATIOS = (0.2, 0.5)
# Short stages: every argument the CLI run of the resume test must repeat.
FAST = dict(pruned_flops=0.3, finetune_epochs=1, qat_epochs=1, train_batch_size=4,
            latency_warmup=1, latency_repeats=3, num_workers=0, log_interval_steps=100, ptq_batches=4)


@contextlib.contextmanager
def collected_logs():
    """The paddlex_seg log lines emitted inside the block, as a list of strings."""
    lines = []

    class Collect(logging.Handler):
        def emit(self, record):
            lines.append(record.getMessage())

    handler = Collect()
    logger = logging.getLogger("paddlex_seg")
    logger.addHandler(handler)
    try:
        yield lines
    finally:
        logger.removeHandler(handler)


def weights_digest(model):
    h = hashlib.sha256()
    for key, value in sorted(model.net.state_dict().items()):
        h.update(key.encode() + value.numpy().tobytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def short_ratios():
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(segmenter, "SENSITIVITY_RATIOS", RATIOS)
        yield


@pytest.fixture(scope="module")
def data(tmp_path_factory, short_ratios):
    root = tmp_path_factory.mktemp("compress")
    d = seg.make_synthetic_dataset(str(root / "data"), num_train=8, num_val=2, image_size=(64, 64),
                                   num_classes=3, seed=1)
    # The CLI builds its training transforms as a flip + the model's eval transforms.
    train_ds = seg.SegDataset(d.root, d.train_list, d.label_list, shuffle=True, num_workers=0,
                              transforms=T.Compose([T.RandomHorizontalFlip(), T.Normalize()]))
    eval_ds = seg.SegDataset(d.root, d.val_list, d.label_list, num_workers=0,
                             transforms=T.Compose([T.Normalize()]))
    model = seg.DeepLabV3P(num_classes=3, backbone="MobileNetV3_small_x0_35", aspp_out_channels=16)
    model.train(num_epochs=1, train_dataset=train_ds, eval_dataset=eval_ds, train_batch_size=4,
                pretrain_weights=None, save_dir=str(root / "train"), use_vdl=False,
                log_interval_steps=100)
    model.save(str(root / "float_model"))
    return {"root": root, "synthetic": d, "train_ds": train_ds, "eval_ds": eval_ds, "model": model}


@pytest.fixture(scope="module")
def compressed(data):
    model = data["model"]
    before = weights_digest(model)
    out = io.StringIO()
    with collected_logs() as logs, contextlib.redirect_stdout(out):
        report = model.compress(data["train_ds"], data["eval_ds"], save_dir=str(data["root"] / "run"),
                                **FAST)
    assert weights_digest(model) == before and model.status == "Normal"  # the caller's model is untouched
    return {"report": report, "dir": data["root"] / "run", "stdout": out.getvalue(), "logs": logs}


def stage_files(folder):
    """{relative path: mtime_ns} of every file under the stage directories."""
    found = {}
    for stage_dir in C.STAGE_DIRS.values():
        for base, _, files in os.walk(folder / stage_dir):
            for name in files:
                path = os.path.join(base, name)
                found[os.path.relpath(path, folder)] = os.stat(path).st_mtime_ns
    return found


def table_rows(text):
    """Cells of the stage rows of the first markdown table in ``text``."""
    rows = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| stage")]
    return [[cell.strip() for cell in row.strip("|").split("|")] for row in rows]


# === One full run ===

def test_every_report_file_exists_and_agrees(data, compressed):
    folder, report = compressed["dir"], compressed["report"]
    for name in ("report.md", "report.json", "sensitivity.png", "tradeoff.png"):
        assert (folder / name).is_file(), name
    for stage, sub in C.STAGE_DIRS.items():
        assert (folder / sub / C.COMPLETE_FILE).is_file() and (folder / sub / C.INPUTS_FILE).is_file()
        if stage not in ("sensitivity", "ptq"):
            assert (folder / sub / "model" / "model.yml").is_file()
        if stage != "sensitivity":
            assert (folder / sub / "export" / "model.pdmodel").is_file()
    for name in ("model.int8.onnx", "model.int8.openvino.onnx"):
        assert (folder / "4_ptq" / "export" / name).is_file()
    assert (folder / "1_sensitivity" / "model.sensi.data").is_file()
    assert not (folder / "2_pruned" / "train").exists()  # checkpoints go once a stage is complete

    assert json.loads((folder / "report.json").read_text()) == json.loads(json.dumps(report))
    stages = report["stages"]
    assert [s["stage"] for s in stages] == ["float", "pruned", "quant", "ptq"]
    assert [s["status"] for s in stages] == ["Normal", "Pruned", "Quantized", "PTQ int8"]
    assert report["skipped_stages"] == [] and report["resumed"] == {}
    float_, pruned, quant, ptq = stages

    # The printed table, the one in report.md and report.json say the same.
    md = (folder / "report.md").read_text()
    assert C.format_table(stages) in md and C.format_table(stages) in compressed["stdout"]
    rows = table_rows(md)
    assert len(rows) == 4
    assert [cells[9] for cells in rows] == ["paddle fp32", "paddle fp32", "paddle int8",
                                            f"{ptq['backend']} int8"]
    for cells, s in zip(rows, stages):
        assert float(cells[1]) == pytest.approx(100 * s["miou"], abs=0.006)
        assert float(cells[2]) == pytest.approx(100 * s["miou_deployed"], abs=0.006)
        assert int(cells[3].replace(",", "")) == s["params"]
        assert float(cells[4].rstrip("*")) == pytest.approx(s["flops"] / 1e9, abs=6e-4)
        assert float(cells[5]) == pytest.approx(s["export_bytes"] / 2**20, abs=0.006)
        assert float(cells[6]) == pytest.approx(s["latency_ms"], abs=0.06)
        assert float(cells[8]) == pytest.approx(s["latency_total_ms"], abs=0.06)
        done = json.loads((folder / C.STAGE_DIRS[s["stage"]] / C.COMPLETE_FILE).read_text())["result"]
        assert {k: s[k] for k in done} == done  # report = marker + latency
        names = ([{"openvino": "model.int8.openvino.onnx"}.get(s["backend"], "model.int8.onnx")]
                 if s["stage"] == "ptq" else ["model.pdmodel", "model.pdiparams"])
        assert s["export_bytes"] == sum((folder / s["export_dir"] / name).stat().st_size for name in names)
        assert 0 <= s["miou"] <= 1 and 0 <= s["miou_deployed"] <= 1
        assert s["latency_ms"] > 0 and s["latency_total_ms"] >= s["latency_ms"]

    assert pruned["flops"] < float_["flops"] and pruned["params"] < float_["params"]
    assert pruned["pruned_flops_measured"] == pytest.approx(0.3, abs=0.03)
    assert quant["flops"] == pruned["flops"] and quant["quantized_from"] == "pruned"
    # int8 weights: the quantized export is smaller than the float export of the same network.
    assert quant["export_bytes"] < pruned["export_bytes"] < float_["export_bytes"]
    # PTQ: int8 of the pruned model, no retraining, on an int8 runtime, also timed in fp32 there.
    assert ptq["quantized_from"] == "pruned" and ptq["flops"] == pruned["flops"]
    assert ptq["backend"] in ("openvino", "onnxruntime") and ptq["calibration_images"] == 4
    assert ptq["export_bytes"] < pruned["export_bytes"] and ptq["latency_fp32_ms"] > 0
    assert ptq["miou"] == ptq["miou_deployed"]  # no in-process int8 model: its export's mIoU
    assert f"PTQ of the pruned model, no retraining (4 calibration images" in md
    assert f"{ptq['latency_fp32_ms']:.1f} ms in fp32 on {ptq['backend']}" in md
    # The saved stage model is the one measured.
    reloaded = seg.load_model(str(folder / pruned["model_dir"]))
    assert reloaded.status == "Pruned"
    assert reloaded.evaluate(data["eval_ds"])["miou"] == pytest.approx(pruned["miou"], abs=1e-9)

    for name, min_size in (("sensitivity.png", (500, 300)), ("tradeoff.png", (400, 300))):
        path = folder / name
        assert path.stat().st_size > 10_000
        with Image.open(path) as image:
            assert image.format == "PNG" and image.size[0] >= min_size[0] and image.size[1] >= min_size[1]
            pixels = np.asarray(image.convert("L"), dtype=np.float32)
        assert pixels.std() > 5  # something is drawn
    assert "![sensitivity](sensitivity.png)" in md and "![tradeoff](tradeoff.png)" in md


def test_rerun_skips_complete_stages(data, compressed):
    folder = compressed["dir"]
    before = stage_files(folder)
    with collected_logs() as logs, contextlib.redirect_stdout(io.StringIO()):
        report = data["model"].compress(data["train_ds"], data["eval_ds"], save_dir=str(folder), **FAST)
    assert report["skipped_stages"] == ["float", "sensitivity", "pruned", "quant", "ptq"]
    for sub in C.STAGE_DIRS.values():
        assert f"Stage {sub} is complete ({C.COMPLETE_FILE} present); skipped" in logs
    assert not [line for line in logs if line.endswith(": started")]
    assert stage_files(folder) == before  # no file of any stage was written again
    for old, new in zip(compressed["report"]["stages"], report["stages"]):
        assert {k: v for k, v in old.items() if not k.startswith("latency")} == \
               {k: v for k, v in new.items() if not k.startswith("latency")}


def test_changed_qat_setting_redoes_qat_and_a_failed_qat_resumes(data, compressed, tmp_path, monkeypatch):
    folder = tmp_path / "run"
    shutil.copytree(compressed["dir"], folder)
    before = stage_files(folder)
    settings = dict(FAST, qat_epochs=2)
    real_save = Trainer._save

    def fail_after_first_qat_epoch(self, name, metrics):
        path = real_save(self, name, metrics)
        if name == "epoch_1" and "3_quant" in self.config.save_dir:
            raise RuntimeError("injected failure after epoch_1 of QAT")
        return path

    monkeypatch.setattr(Trainer, "_save", fail_after_first_qat_epoch)
    with collected_logs() as logs, contextlib.redirect_stdout(io.StringIO()), \
            pytest.raises(RuntimeError, match="injected"):
        data["model"].compress(data["train_ds"], data["eval_ds"], save_dir=str(folder), **settings)
    # Another qat_epochs: the earlier stages are kept, the QAT stage is cleared and redone.
    assert any("3_quant was made from another model, data or settings" in line for line in logs)
    assert not (folder / "3_quant" / C.COMPLETE_FILE).exists()
    assert (folder / "3_quant" / "train" / "epoch_1" / "model.yml").is_file()
    after = stage_files(folder)
    for key, mtime in before.items():
        if not key.startswith("3_quant"):
            assert after[key] == mtime, key

    monkeypatch.setattr(Trainer, "_save", real_save)
    with collected_logs() as logs, contextlib.redirect_stdout(io.StringIO()):
        report = data["model"].compress(data["train_ds"], data["eval_ds"], save_dir=str(folder), **settings)
    assert report["skipped_stages"] == ["float", "sensitivity", "pruned", "ptq"]  # PTQ does not hang on QAT
    assert report["resumed"] == {"quant": os.path.join("3_quant", "train", "epoch_1")}
    assert any(re.match(r"Resumed from .*3_quant.*epoch_1 at epoch 1,", line) for line in logs)
    quant = report["stages"][2]
    assert quant["status"] == "Quantized" and quant["qat_epochs"] == 2
    assert quant["export_bytes"] < report["stages"][1]["export_bytes"]
    assert (folder / "3_quant" / C.COMPLETE_FILE).is_file()


# === Killed in the middle of fine-tuning ===

def test_run_killed_during_finetune_resumes_there(data, compressed, tmp_path):
    folder = tmp_path / "run"
    for sub in ("0_float", "1_sensitivity"):  # a run that got as far as fine-tuning
        shutil.copytree(compressed["dir"] / sub, folder / sub)
    d = data["synthetic"]
    args = ["--model_dir", str(data["root"] / "float_model"), "--dataset_dir", d.root,
            "--train_list", d.train_list, "--eval_list", d.val_list, "--label_list", d.label_list,
            "--save_dir", str(folder), "--pruned_flops", "0.3", "--no-quant", "--finetune_epochs", "2",
            "--train_batch_size", "4", "--num_workers", "0", "--latency_warmup", "1",
            "--latency_repeats", "3"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")]))
    log_file = tmp_path / "cli.log"
    with open(log_file, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-u", SCRIPT, "--pause_at", "2_pruned/epoch_1",
             "--ratios", *map(str, RATIOS), "--", *args],
            stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            deadline = time.time() + 120
            while "PAUSED" not in log_file.read_text():
                assert proc.poll() is None, log_file.read_text()[-3000:]
                assert time.time() < deadline, "the fine-tune never reached epoch_1"
                time.sleep(0.2)
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
    cli_log = log_file.read_text()
    assert proc.returncode == -signal.SIGKILL
    # The CLI found the stages the Python API wrote complete: both make the same fingerprints.
    assert "Stage 0_float is complete" in cli_log and "Stage 1_sensitivity is complete" in cli_log
    assert (folder / "2_pruned" / "train" / "epoch_1" / "model.yml").is_file()
    assert not (folder / "2_pruned" / "train" / "epoch_2").exists()
    assert not (folder / "2_pruned" / C.COMPLETE_FILE).exists()

    model = seg.load_model(str(data["root"] / "float_model"))
    with collected_logs() as logs, contextlib.redirect_stdout(io.StringIO()):
        report = model.compress(data["train_ds"], data["eval_ds"], save_dir=str(folder),
                                **dict(FAST, finetune_epochs=2, quant=False))
    assert report["skipped_stages"] == ["float", "sensitivity"]
    assert report["resumed"] == {"pruned": os.path.join("2_pruned", "train", "epoch_1")}
    assert any(re.match(r"Resumed from .*epoch_1 at epoch 1,", line) for line in logs)
    assert not any("Sensitivity analysis of" in line for line in logs)
    pruned = report["stages"][1]
    assert pruned["stage"] == "pruned" and pruned["finetune_epochs"] == 2
    assert (folder / "2_pruned" / C.COMPLETE_FILE).is_file() and (folder / "report.md").is_file()
    assert seg.load_model(str(folder / "2_pruned" / "model")).status == "Pruned"


# === Arguments ===

@pytest.mark.parametrize("name, value", [
    ("pruned_flops", 1.5), ("pruned_flops", 0), ("pruned_flops", True), ("quant", "yes"),
    ("finetune_epochs", 0), ("qat_epochs", 1.5), ("criterion", "l2"), ("train_batch_size", 0),
    ("train_batch_size", 100), ("eval_batch_size", -1), ("finetune_learning_rate", 0),
    ("qat_learning_rate", -1e-3), ("lr_decay_power", -1), ("latency_threads", 0),
    ("latency_warmup", -1), ("latency_repeats", 0), ("num_workers", -2),
    ("fixed_input_shape", [1, 2, 3]), ("save_dir", ""), ("quant_config", {"bogus": 1}),
    ("keep_checkpoints", "no"), ("use_vdl", 1), ("log_interval_steps", 0), ("ptq", "yes"),
    ("ptq_batches", 0),
])
def test_bad_argument_is_named(data, tmp_path, name, value):
    kwargs = dict(FAST, save_dir=str(tmp_path / "out"))
    kwargs[name] = value
    with pytest.raises(ValueError, match=name):
        data["model"].compress(data["train_ds"], data["eval_ds"], **kwargs)
    assert not (tmp_path / "out").exists()  # refused before any work


def test_nothing_to_do_and_wrong_inputs_are_refused(data, tmp_path):
    model, train_ds, eval_ds = data["model"], data["train_ds"], data["eval_ds"]
    with pytest.raises(ValueError, match="pruned_flops=None, quant=False and ptq=False"):
        model.compress(train_ds, eval_ds, pruned_flops=None, quant=False, ptq=False, save_dir=str(tmp_path))
    with pytest.raises(ValueError, match="train_dataset"):
        model.compress("data/train.txt", eval_ds, save_dir=str(tmp_path))
    with pytest.raises(ValueError, match="eval_dataset"):
        model.compress(train_ds, None, save_dir=str(tmp_path))
    quantized = seg.load_model(str(data["root"] / "float_model"))
    quantized.status = "Quantized"
    with pytest.raises(ValueError, match="already quantized"):
        quantized.compress(train_ds, eval_ds, save_dir=str(tmp_path))


def test_ptq_without_the_onnx_extra(data, tmp_path, monkeypatch):
    real_import = importlib.import_module

    def no_onnxruntime(name, *args):
        if name.split(".")[0] == "onnxruntime":
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args)

    monkeypatch.setattr(importlib, "import_module", no_onnxruntime)
    model, train_ds, eval_ds = data["model"], data["train_ds"], data["eval_ds"]
    with pytest.raises(ImportError, match=r'ptq=True: .*onnxruntime.*pip install "paddlex_seg\[onnx\]"'):
        model.compress(train_ds, eval_ds, **dict(FAST, ptq=True, save_dir=str(tmp_path / "a")))
    assert not (tmp_path / "a").exists()
    # The default leaves PTQ out, says why, and the rest runs (here: nothing else to do).
    with collected_logs() as logs, pytest.raises(ValueError, match="leave nothing to do"):
        model.compress(train_ds, eval_ds, pruned_flops=None, quant=False, save_dir=str(tmp_path / "b"))
    assert any(line.startswith("compress: no PTQ stage (post-training quantization needs onnxruntime")
               for line in logs)


def test_cli_reports_a_bad_argument(data, tmp_path, capsys):
    d = data["synthetic"]
    status = cli.main(["compress", "--model_dir", str(data["root"] / "float_model"),
                       "--dataset_dir", d.root, "--train_list", d.train_list, "--eval_list", d.val_list,
                       "--save_dir", str(tmp_path / "out"), "--pruned_flops", "1.5"])
    assert status == 1
    assert "paddlex_seg compress: error: pruned_flops must be a number" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["compress", "--model_dir", "x", "--dataset_dir", "x", "--train_list", "x",
                  "--eval_list", "x", "--pruned_flops", "lots"])
