"""The training engine keeps its promises (paddlex_seg/engine/train.py).

CPU, FastSCNN on 64x64 synthetic images, 1-4 steps per epoch. Training runs that
must be killed or must fail inside DataLoader workers run in a subprocess
(tests/engine/train_script.py); the others run in-process.
"""
import glob
import logging
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import paddle
import pytest
import yaml

import paddlex_seg as seg
from paddlex_seg import checkpoint
from paddlex_seg import transforms as T
from paddlex_seg.engine.train import Trainer, TrainingDiverged

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "train_script.py")
SUBPROCESS_TIMEOUT = 180  # seconds; a hang fails the test instead of blocking CI
TRAIN_LINE = re.compile(
    r"\[TRAIN\] Epoch=(?P<epoch>\d+)/(?P<epochs>\d+), Step=(?P<step>\d+)/(?P<steps>\d+), "
    r"loss=(?P<loss>\S+), lr=(?P<lr>\S+), ips=(?P<ips>[\d.]+) images/s, "
    r"eta=(?P<eta>\d+:\d\d:\d\d)$")
CHECKPOINT_FILES = {checkpoint.MODEL_YML, checkpoint.MODEL_PARAMS, checkpoint.OPTIMIZER_STATE}


# === Fixtures and helpers ===

@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Synthetic data sets: 'tiny' (2 train images), 'small' (4) and 'medium' (8)."""
    root = tmp_path_factory.mktemp("engine_data")
    return {name: seg.make_synthetic_dataset(str(root / name), num_train=n, num_val=2,
                                             image_size=(64, 64), num_classes=3)
            for name, n in (("tiny", 2), ("small", 4), ("medium", 8))}


def datasets(d, num_workers=0):
    """(train, eval) SegDatasets without randomness: runs can be compared exactly."""
    train = seg.SegDataset(d.root, d.train_list, d.label_list,
                           transforms=T.Compose([T.Normalize()]), num_workers=num_workers)
    evaluation = seg.SegDataset(d.root, d.val_list, d.label_list,
                                transforms=T.Compose([T.Normalize()]), num_workers=0)
    return train, evaluation


def train(d, save_dir, **kwargs):
    """Train a fresh FastSCNN; returns the model (kwargs override the defaults)."""
    train_ds, eval_ds = datasets(d)
    model = seg.FastSCNN(num_classes=3)
    args = dict(num_epochs=1, train_dataset=train_ds, eval_dataset=eval_ds, train_batch_size=2,
                pretrain_weights=None, save_dir=str(save_dir), use_vdl=False)
    args.update(kwargs)
    model.train(**args)
    return model


class LogCapture(logging.Handler):
    """Collects the messages of the 'paddlex_seg' logger (it does not propagate)."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records = []

    def emit(self, record):
        self.records.append(record)

    @property
    def messages(self):
        return [r.getMessage() for r in self.records]

    def train_lines(self):
        return [TRAIN_LINE.search(m) for m in self.messages if "[TRAIN]" in m]


@pytest.fixture
def log():
    capture = LogCapture()
    logger = logging.getLogger("paddlex_seg")
    logger.addHandler(capture)
    yield capture
    logger.removeHandler(capture)


@pytest.fixture
def trainers(monkeypatch):
    """The Trainer objects that ran, in order (to inspect their optimizer)."""
    seen = []
    real_run = Trainer.run

    def run(self):
        seen.append(self)
        return real_run(self)

    monkeypatch.setattr(Trainer, "run", run)
    return seen


def fixed_metrics(mious):
    """A stand-in for Trainer._evaluate returning the given mIoUs in turn."""
    values = iter(mious)

    def evaluate(self):
        miou = next(values)
        return {"miou": miou, "category_iou": [miou] * 3, "oacc": 0.5, "category_acc": [0.5] * 3,
                "kappa": 0.1, "category_F1-score": [0.5] * 3}
    return evaluate


def poly_lr(base, step, total, power):
    """The default schedule: PolynomialDecay to 0 over ``total`` steps, at 0-based ``step``."""
    return base * (1 - min(step, total) / total) ** power


def epoch_dirs(save_dir):
    found = glob.glob(os.path.join(str(save_dir), "epoch_*"))
    return sorted(int(os.path.basename(p).split("_")[1]) for p in found)


def train_state(model_dir):
    with open(os.path.join(model_dir, checkpoint.MODEL_YML), encoding="utf-8") as f:
        return yaml.safe_load(f)["train_state"]


def params(model_dir):
    return {k: np.asarray(v) for k, v in checkpoint.read_state(str(model_dir)).items()}


def assert_complete_checkpoint(model_dir):
    """All three files present, readable, finite weights; load_model rebuilds it."""
    assert set(os.listdir(model_dir)) == CHECKPOINT_FILES, os.listdir(model_dir)
    weights = params(model_dir)
    assert all(np.isfinite(v).all() for v in weights.values()), f"{model_dir} holds NaN/inf"
    opt = checkpoint.read_state(str(model_dir), checkpoint.OPTIMIZER_STATE)
    assert "LR_Scheduler" in opt
    model = seg.load_model(str(model_dir))
    assert isinstance(model, seg.FastSCNN)
    return train_state(model_dir)


def leftovers(save_dir):
    """Temporary or swapped-out directories left beside the checkpoints."""
    return [n for n in os.listdir(save_dir) if ".tmp" in n or n.endswith(".old")]


def run_script(args, stdout_path, **popen_kwargs):
    out = open(stdout_path, "w")
    proc = subprocess.Popen([sys.executable, "-u", SCRIPT, *args], stdout=out,
                            stderr=subprocess.STDOUT, start_new_session=True, **popen_kwargs)
    proc.log_file = out
    return proc


def finish(proc, stdout_path):
    try:
        proc.wait(timeout=SUBPROCESS_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        pytest.fail(f"train_script.py hung for {SUBPROCESS_TIMEOUT} s:\n{read(stdout_path)[-3000:]}")
    finally:
        proc.log_file.close()
    return read(stdout_path)


def read(path):
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read()


def wait_for(condition, proc, stdout_path, what):
    deadline = time.time() + SUBPROCESS_TIMEOUT
    while not condition():
        if proc.poll() is not None:
            pytest.fail(f"training ended (status {proc.returncode}) before {what}:\n"
                        f"{read(stdout_path)[-3000:]}")
        if time.time() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


# === Resume after a killed run ===

@pytest.mark.parametrize("kill_during", ["epoch", "checkpoint_write"])
def test_resume_after_sigkill(data, tmp_path, kill_during):
    """SIGKILL mid-epoch, or while epoch_2 is half written; resume from epoch_1 and finish.

    Epochs: 3 x 4 steps (8 images, batch 2), default optimizer, lr 0.01, power 0.9.
    """
    save_dir, epochs, steps = tmp_path / "out", 3, 4
    common = ["--data", data["medium"].root, "--save-dir", str(save_dir),
              "--epochs", str(epochs), "--log-interval", "1"]
    first_log = tmp_path / "first.log"
    slow = ["--slow-save", "epoch_2"] if kill_during == "checkpoint_write" else []
    proc = run_script(common + slow, first_log)
    try:
        wait_for(lambda: os.path.isdir(save_dir / "epoch_1"), proc, first_log, "epoch_1/ exists")
        if kill_during == "epoch":
            wait_for(lambda: f"Epoch=2/{epochs}, Step=1/{steps}" in read(first_log),
                     proc, first_log, "the first step of epoch 2")
        else:
            # --slow-save pauses after each file: epoch_2's temp dir holds model.pdparams only.
            wait_for(lambda: glob.glob(str(save_dir / ".epoch_2.tmp-*" / checkpoint.MODEL_PARAMS)),
                     proc, first_log, "epoch_2 half written")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.log_file.close()
    assert proc.returncode == -signal.SIGKILL

    # Nothing half written under a final name; a killed writer can only leave a hidden temp dir.
    # (epoch_1 is normally the last one; on a very slow machine epoch_2 may have finished.)
    done = epoch_dirs(save_dir)
    last = done[-1]
    assert done == list(range(1, last + 1)) and last < epochs, done
    if kill_during == "checkpoint_write":
        assert last == 1
    temp_left = [n for n in os.listdir(save_dir) if n.startswith(f".epoch_{last + 1}.tmp-")]
    assert bool(temp_left) == (kill_during == "checkpoint_write")
    for name in os.listdir(save_dir):
        if name in temp_left:
            continue
        assert name in [f"epoch_{e}" for e in done] + ["best_model"], f"{name} after the kill"
        assert_complete_checkpoint(save_dir / name)
    assert train_state(save_dir / f"epoch_{last}")["epoch"] == last

    resume_from = save_dir / f"epoch_{last}"
    second_log = tmp_path / "second.log"
    resumed = finish(run_script(common + ["--resume", str(resume_from)], second_log), second_log)
    assert resumed.rstrip().endswith("DONE"), resumed[-3000:]
    assert f"Resumed from {resume_from} at epoch {last}, step {last * steps}" in resumed
    assert f"starting at epoch {last + 1}" in resumed
    lines = [TRAIN_LINE.search(line) for line in resumed.splitlines() if "[TRAIN]" in line]
    assert [(int(m["epoch"]), int(m["step"])) for m in lines] == [
        (e, s) for e in range(last + 1, epochs + 1) for s in range(1, steps + 1)]
    # The LR schedule continues where it was: each step's LR is the uninterrupted schedule's.
    total = epochs * steps
    for i, m in enumerate(lines):
        expected = poly_lr(0.01, last * steps + i, total, 0.9)
        assert float(m["lr"]) == pytest.approx(expected, rel=1e-5), (i, m.group(0))
    assert epoch_dirs(save_dir) == list(range(1, epochs + 1))
    for e in range(last + 1, epochs + 1):
        state = assert_complete_checkpoint(save_dir / f"epoch_{e}")
        assert (state["epoch"], state["global_step"]) == (e, e * steps)
    final_opt = checkpoint.read_state(str(save_dir / f"epoch_{epochs}"), checkpoint.OPTIMIZER_STATE)
    assert final_opt["LR_Scheduler"]["last_epoch"] == total
    assert f"Training stopped: reached num_epochs={epochs}" in resumed
    assert [n for n in leftovers(save_dir) if n not in temp_left] == []


def test_resume_reproduces_uninterrupted_run(data, tmp_path, monkeypatch):
    """Resuming from epoch_1 gives epoch_2 weights equal to an uninterrupted run's.

    Equality needs the optimizer's momentum and the LR position restored, not only
    the weights. The resumed model is built second in this process, so its parameter
    names (conv2d_<n>...) differ from the saved optimizer state's: Paddle then fails
    with an AssertionError unless the engine re-keys the state.
    """
    real_epoch = Trainer.train_one_epoch

    def seeded_epoch(self):
        paddle.seed(100 + self.state.epoch)  # dropout draws the same masks in both runs
        return real_epoch(self)

    monkeypatch.setattr(Trainer, "train_one_epoch", seeded_epoch)
    reference = tmp_path / "reference"
    train(data["small"], reference, num_epochs=2)
    resumed = tmp_path / "resumed"
    train(data["small"], resumed, num_epochs=2,
          resume_checkpoint=str(reference / "epoch_1"))

    assert epoch_dirs(resumed) == [2]
    ref, got = params(reference / "epoch_2"), params(resumed / "epoch_2")
    start = params(reference / "epoch_1")
    moved = max(np.abs(ref[k] - start[k]).max() for k in ref)
    assert moved > 1e-4, "epoch 2 did not change the weights; the comparison would be empty"
    worst = max(np.abs(ref[k] - got[k]).max() for k in ref)
    assert worst < 1e-6 * max(1.0, moved), f"resumed weights differ by {worst} (epoch moved {moved})"
    ref_opt = checkpoint.read_state(str(reference / "epoch_2"), checkpoint.OPTIMIZER_STATE)
    got_opt = checkpoint.read_state(str(resumed / "epoch_2"), checkpoint.OPTIMIZER_STATE)
    assert got_opt["LR_Scheduler"] == ref_opt["LR_Scheduler"]
    assert len(got_opt) == len(ref_opt)


def test_resume_rewrites_best_model_lost_to_a_kill(data, tmp_path):
    """A kill after epoch_N is written but before best_model: resuming restores best_model."""
    save_dir = tmp_path / "out"
    train(data["tiny"], save_dir, num_epochs=1)
    assert train_state(save_dir / "best_model")["best_model_epoch"] == 1
    shutil.rmtree(save_dir / "best_model")  # where the kill left it
    train(data["tiny"], save_dir, num_epochs=1, resume_checkpoint=str(save_dir / "epoch_1"))
    state = assert_complete_checkpoint(save_dir / "best_model")
    assert state["epoch"] == 1
    best, epoch_1 = params(save_dir / "best_model"), params(save_dir / "epoch_1")
    assert all(np.array_equal(best[k], epoch_1[k]) for k in epoch_1)
    assert seg.load_model(str(save_dir / "best_model")).eval_metrics["miou"] == pytest.approx(
        yaml.safe_load(open(save_dir / "epoch_1" / checkpoint.MODEL_YML))["metrics"]["miou"])


def test_resume_from_a_plain_saved_model_is_refused(data, tmp_path):
    model = seg.FastSCNN(num_classes=3)
    model.save(str(tmp_path / "plain"))
    with pytest.raises(checkpoint.ModelDirError, match="holds no training state"):
        train(data["tiny"], tmp_path / "out", resume_checkpoint=str(tmp_path / "plain"))


def test_resume_with_pretrain_weights_given_is_refused_default_is_not(data, tmp_path):
    """PaddleX resumes with pretrain_weights=None; passing weights as well is an error,
    even the default's own name, while leaving the argument out resumes."""
    first = tmp_path / "first"
    train(data["tiny"], first)
    resume = str(first / "epoch_1")
    for weights in ("CITYSCAPES", str(first / "best_model" / "model.pdparams")):
        with pytest.raises(ValueError) as error:
            train(data["tiny"], tmp_path / "again", num_epochs=2, pretrain_weights=weights,
                  resume_checkpoint=resume)
        assert str(error.value).startswith(
            f"train() got both pretrain_weights={weights!r} and resume_checkpoint={resume!r}: ")
        assert "pass pretrain_weights=None to resume" in str(error.value)
        assert not (tmp_path / "again").exists()
    train_ds, eval_ds = datasets(data["tiny"])
    model = seg.FastSCNN(num_classes=3)
    state = model.train(num_epochs=2, train_dataset=train_ds, eval_dataset=eval_ds, train_batch_size=2,
                        save_dir=str(tmp_path / "resumed"), use_vdl=False, resume_checkpoint=resume)
    assert state.epoch == 2 and (tmp_path / "resumed" / "epoch_2").is_dir()


def test_cli_resume_needs_no_pretrain_weights_option():
    from paddlex_seg.cli import _DEFAULT_WEIGHTS, build_parser
    common = ["train", "--model", "UNet", "--dataset_dir", "d", "--train_list", "t.txt",
              "--num_epochs", "2", "--resume_checkpoint", "out/epoch_1"]
    assert build_parser().parse_args(common).pretrain_weights is _DEFAULT_WEIGHTS
    given = build_parser().parse_args(common + ["--pretrain_weights", "CITYSCAPES"]).pretrain_weights
    assert given == "CITYSCAPES" and given is not _DEFAULT_WEIGHTS


# === Divergence ===

def test_nan_loss_stops_with_clear_error_and_keeps_checkpoints(data, tmp_path, log):
    """The loss turns NaN at the first step of epoch 2 (global step 3)."""
    save_dir = tmp_path / "out"
    train_ds, eval_ds = datasets(data["small"])
    model = seg.FastSCNN(num_classes=3)
    real_loss, calls = model.loss, []

    def loss(logits, labels):
        calls.append(1)
        value = real_loss(logits, labels)
        return value * float("nan") if len(calls) == 3 else value

    model.loss = loss
    with pytest.raises(TrainingDiverged) as info:
        model.train(num_epochs=3, train_dataset=train_ds, eval_dataset=eval_ds,
                    train_batch_size=2, pretrain_weights=None, save_dir=str(save_dir),
                    use_vdl=False)
    message = str(info.value)
    assert "loss is nan at epoch 2, step 3" in message
    assert f"last good checkpoint is {save_dir / 'epoch_1'}" in message
    assert "Lower learning_rate" in message
    assert len(calls) == 3
    assert epoch_dirs(save_dir) == [1]
    assert assert_complete_checkpoint(save_dir / "epoch_1")["epoch"] == 1
    assert assert_complete_checkpoint(save_dir / "best_model")["epoch"] == 1
    assert not leftovers(save_dir)


def test_huge_learning_rate_diverges_without_saving_broken_weights(data, tmp_path):
    """learning_rate=1e6: the weights blow up; no checkpoint may hold NaN/inf."""
    save_dir = tmp_path / "out"
    with pytest.raises(TrainingDiverged, match="NaN|nan|inf") as info:
        train(data["small"], save_dir, num_epochs=6, learning_rate=1e6)
    assert "Lower learning_rate" in str(info.value)
    for e in epoch_dirs(save_dir):
        assert_complete_checkpoint(save_dir / f"epoch_{e}")  # finite weights
    assert len(epoch_dirs(save_dir)) < 6


# === Early stop, best model, atomic writes ===

def test_early_stop_after_patience(data, tmp_path, monkeypatch, log):
    """mIoU stays 0.5: epoch 1 sets the best, epochs 2 and 3 do not improve → stop."""
    monkeypatch.setattr(Trainer, "_evaluate", fixed_metrics([0.5] * 8))
    save_dir = tmp_path / "out"
    model = train(data["tiny"], save_dir, num_epochs=8, early_stop=True, early_stop_patience=2)
    assert epoch_dirs(save_dir) == [1, 2, 3]
    stop = [m for m in log.messages if m.startswith("Training stopped")]
    assert stop == ["Training stopped: early stop: mIoU did not improve for 2 evaluations "
                    "(early_stop_patience=2)"]
    assert model.best_model_epoch == 1
    assert train_state(save_dir / "best_model")["best_model_epoch"] == 1
    assert train_state(save_dir / "epoch_3")["epochs_without_improvement"] == 2


def test_best_model_follows_miou_and_survives_a_failed_write(data, tmp_path, monkeypatch):
    """mIoU 0.3, 0.7, 0.5, 0.9; writing best_model for epoch 4 fails inside write_model_dir."""
    monkeypatch.setattr(Trainer, "_evaluate", fixed_metrics([0.3, 0.7, 0.5, 0.9]))
    real_save, saved = paddle.save, []

    def failing_save(obj, path, *args, **kwargs):
        saved.append(path)
        if ".best_model.tmp-" in path and len(epoch_dirs(save_dir)) == 4:
            raise OSError("No space left on device (simulated)")
        return real_save(obj, path, *args, **kwargs)

    monkeypatch.setattr(paddle, "save", failing_save)
    save_dir = tmp_path / "out"
    with pytest.raises(OSError, match="simulated"):
        train(data["tiny"], save_dir, num_epochs=4)
    assert ".best_model.tmp-" in saved[-1], "the failure was not in best_model"

    assert epoch_dirs(save_dir) == [1, 2, 3, 4]
    info = checkpoint.read_model_yml(str(save_dir / "best_model"))
    assert info["train_state"]["epoch"] == 2
    assert info["train_state"]["best_model_epoch"] == 2
    assert info["best_model_epoch"] == 2 and info["best_accuracy"] == pytest.approx(0.7)
    assert info["metrics"]["miou"] == pytest.approx(0.7)
    best, second, third = (params(save_dir / n) for n in ("best_model", "epoch_2", "epoch_3"))
    assert all(np.array_equal(best[k], second[k]) for k in best)
    assert not all(np.array_equal(best[k], third[k]) for k in best)
    assert_complete_checkpoint(save_dir / "best_model")
    assert not leftovers(save_dir), leftovers(save_dir)


def test_write_model_dir_crash_leaves_no_final_and_no_temp_dir(tmp_path, monkeypatch):
    net = seg.FastSCNN(num_classes=3).net
    info = {"Model": "FastSCNN", "_init_params": {"num_classes": 3}}
    target = tmp_path / "epoch_1"
    real_save, calls = paddle.save, []

    def save_then_crash(obj, path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 2:  # model.pdparams is written, model.pdopt fails
            raise KeyboardInterrupt("simulated crash")
        return real_save(obj, path, *args, **kwargs)

    monkeypatch.setattr(paddle, "save", save_then_crash)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.write_model_dir(str(target), info, net.state_dict(), {"x": np.zeros(1)})
    assert os.path.basename(os.path.dirname(calls[0])).startswith(".epoch_1.tmp-")
    assert os.listdir(tmp_path) == []


# === Logging, VisualDL, optimizers ===

def test_log_lines_and_default_optimizer(data, tmp_path, log, trainers):
    """8 images, batch 2 → 4 steps/epoch, 2 epochs, log_interval_steps=3.

    A line at steps 3 and 4 (the rest of the epoch) of each epoch; the default
    optimizer is Momentum(0.9) + L2 4e-5 with PolynomialDecay(power) over 8 steps.
    """
    train(data["medium"], tmp_path / "out", num_epochs=2, log_interval_steps=3,
          learning_rate=0.05, lr_decay_power=2.0)
    lines = log.train_lines()
    assert all(lines), [m for m in log.messages if "[TRAIN]" in m]
    assert [(int(m["epoch"]), int(m["step"])) for m in lines] == [(1, 3), (1, 4), (2, 3), (2, 4)]
    for m in lines:
        assert (m["epochs"], m["steps"]) == ("2", "4")
        assert math.isfinite(float(m["loss"])) and float(m["loss"]) > 0
        assert float(m["ips"]) > 0
    # The LR each line shows is the one its last step used (0-based global steps 2, 3, 6, 7).
    logged = [float(m["lr"]) for m in lines]
    assert logged == pytest.approx([poly_lr(0.05, s, 8, 2.0) for s in (2, 3, 6, 7)], rel=1e-5)
    assert lines[-1]["eta"] == "0:00:00"

    optimizer = trainers[0].optimizer
    assert type(optimizer) is paddle.optimizer.Momentum
    assert optimizer._momentum == pytest.approx(0.9)
    assert optimizer._regularization_method == "l2_decay"
    assert optimizer._regularization_coeff == pytest.approx(4e-5)
    schedule = optimizer._learning_rate
    assert isinstance(schedule, paddle.optimizer.lr.PolynomialDecay)
    assert (schedule.base_lr, schedule.decay_steps, schedule.power, schedule.end_lr) == (
        0.05, 8, 2.0, 0.0)
    assert schedule.last_epoch == 8  # stepped once per iteration


def test_user_optimizer_is_used_as_given(data, tmp_path, log, trainers):
    train_ds, eval_ds = datasets(data["small"])
    model = seg.FastSCNN(num_classes=3)
    schedule = paddle.optimizer.lr.StepDecay(learning_rate=0.004, step_size=2, gamma=0.5)
    optimizer = paddle.optimizer.Adam(learning_rate=schedule, parameters=model.net.parameters())
    model.train(num_epochs=2, train_dataset=train_ds, eval_dataset=eval_ds, train_batch_size=2,
                optimizer=optimizer, learning_rate=123.0, log_interval_steps=1,
                pretrain_weights=None, save_dir=str(tmp_path / "out"), use_vdl=False)
    assert trainers[0].optimizer is optimizer
    assert [float(m["lr"]) for m in log.train_lines()] == pytest.approx([0.004, 0.004, 0.002, 0.002])
    assert schedule.last_epoch == 4


def test_visualdl_scalars(data, tmp_path):
    from visualdl import LogReader
    save_dir = tmp_path / "out"
    train(data["small"], save_dir, num_epochs=2, use_vdl=True, log_interval_steps=1)
    files = glob.glob(str(save_dir / "vdl_log" / "*"))
    assert len(files) == 1 and os.path.getsize(files[0]) > 0
    reader = LogReader(file_path=files[0])
    tags = reader.get_tags()["scalar"]
    assert {"Train/loss", "Train/lr", "Metrics/miou", "Metrics/oacc", "Metrics/kappa"} <= set(tags)
    losses = reader.get_data("scalar", "Train/loss")
    assert [r.id for r in losses] == [1, 2, 3, 4]
    assert all(math.isfinite(r.value) for r in losses)
    lrs = [r.value for r in reader.get_data("scalar", "Train/lr")]
    assert lrs == pytest.approx([poly_lr(0.01, s, 4, 0.9) for s in range(4)], rel=1e-5)
    mious = reader.get_data("scalar", "Metrics/miou")
    assert [r.id for r in mious] == [1, 2]
    for r in mious:
        saved = checkpoint.read_model_yml(str(save_dir / f"epoch_{r.id}"))["metrics"]["miou"]
        assert r.value == pytest.approx(saved, rel=1e-6)


def test_pretrain_weights_file_is_loaded(data, tmp_path):
    source = seg.FastSCNN(num_classes=3)
    path = str(tmp_path / "init.pdparams")
    paddle.save(source.net.state_dict(), path)

    def trainable(net):  # BatchNorm statistics move in training whatever the LR
        return {k: v.numpy() for k, v in net.named_parameters() if not v.stop_gradient}

    expected = trainable(source.net)
    model = train(data["tiny"], tmp_path / "out", learning_rate=1e-12, pretrain_weights=path)
    got = trainable(model.net)
    assert got.keys() == expected.keys() and len(got) > 100
    worst = max(np.abs(got[k] - expected[k]).max() for k in got)
    assert worst < 1e-6, f"trained weights are {worst} away from the pretrain file"


# === Data loading workers, AMP ===

def test_num_workers_trains_and_reports_a_corrupt_image(data, tmp_path):
    """num_workers=2: training works; a corrupt image gives SegDataError naming it, no hang."""
    d = data["small"]
    good_log = tmp_path / "good.log"
    out = finish(run_script(["--data", d.root, "--save-dir", str(tmp_path / "good"),
                             "--epochs", "1", "--num-workers", "2"], good_log), good_log)
    assert "LOADER num_workers=2" in out
    assert out.rstrip().endswith("DONE"), out[-3000:]
    assert epoch_dirs(tmp_path / "good") == [1]

    # A copy of the data set where one training image is garbage.
    root = tmp_path / "bad_data"
    shutil.copytree(d.root, root)
    with open(root / "train.txt", encoding="utf-8") as f:
        victim = f.readline().split()[0]
    with open(root / victim, "wb") as f:
        f.write(b"this is not an image" * 10)
    bad_log = tmp_path / "bad.log"
    start = time.time()
    proc = run_script(["--data", str(root), "--save-dir", str(tmp_path / "bad"),
                       "--epochs", "1", "--num-workers", "2"], bad_log)
    out = finish(proc, bad_log)
    assert proc.returncode == 3, out[-3000:]
    error = [line for line in out.splitlines() if line.startswith("SegDataError:")]
    assert error and str(root / victim) in error[0], out[-3000:]
    assert time.time() - start < 120
    assert epoch_dirs(tmp_path / "bad") == []


def test_batches_carry_uint8_labels_and_the_loss_gets_int64(data, tmp_path, monkeypatch):
    """Labels cross the DataLoader as uint8 (small batches); the step casts them."""
    seen = {"batch": [], "loss": []}
    real_step = Trainer._train_step

    def step(self, images, labels):
        seen["batch"].append(labels.dtype)
        if not seen["loss"]:
            real_loss = self.model.loss

            def loss(logits, labels):
                seen["loss"].append((labels.dtype, labels.numpy().copy()))
                return real_loss(logits, labels)

            self.model.loss = loss
            seen["expected"] = labels.numpy().astype(np.int64)
        return real_step(self, images, labels)

    monkeypatch.setattr(Trainer, "_train_step", step)
    train(data["small"], tmp_path / "out", num_epochs=1)
    assert seen["batch"] == [paddle.uint8, paddle.uint8]
    assert [dtype for dtype, _ in seen["loss"]] == [paddle.int64, paddle.int64]
    np.testing.assert_array_equal(seen["loss"][0][1], seen["expected"])
    assert set(np.unique(seen["expected"])) <= {0, 1, 2}


def test_paddle_cpu_autocast_is_a_no_op():
    """Why use_amp falls back on CPU: Paddle 2.6.2's auto_cast runs fp32 there.

    If a Paddle upgrade makes this fail, CPU bfloat16 may work: revisit
    Trainer._amp_available.
    """
    conv = paddle.nn.Conv2D(3, 4, 3)
    with pytest.warns(UserWarning, match="amp_guard can only be enabled on"):
        with paddle.amp.auto_cast(enable=True, dtype="bfloat16", level="O1"):
            out = conv(paddle.ones([1, 3, 8, 8]))
    assert out.dtype == paddle.float32


def test_use_amp_on_cpu_warns_and_trains_in_float32(data, tmp_path, log, trainers):
    save_dir = tmp_path / "out"
    train(data["tiny"], save_dir, num_epochs=1, use_amp=True, log_interval_steps=1)
    warnings = [r.getMessage() for r in log.records if r.levelno == logging.WARNING]
    assert any("use_amp=True has no effect on CPU" in w and "float32" in w for w in warnings)
    assert trainers[0].use_amp is False and trainers[0].scaler is None
    lines = log.train_lines()
    assert len(lines) == 1 and math.isfinite(float(lines[0]["loss"]))
    assert_complete_checkpoint(save_dir / "epoch_1")
