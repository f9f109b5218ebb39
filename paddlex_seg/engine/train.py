"""The one training loop, shared by ``train``, pruned fine-tuning and QAT.

They differ only in the network and optimizer handed in. ``Trainer.run`` is::

    while not self.done():
        self.train_one_epoch()
        self.evaluate_and_checkpoint()

Everything that varies (device, AMP, rank, paths) is an argument or is set once in
``__init__``; nothing is read from globals during the loop.
"""
import math
import os
import time
from dataclasses import dataclass, field

import paddle

from ..data.dataset import collate, unpack_batch
from ..checkpoint import OPTIMIZER_STATE, ModelDirError, read_model_yml, read_state
from ..log import logger
from .evaluate import evaluate_net


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


@dataclass
class TrainState:
    """What a checkpoint must hold for training to continue where it stopped."""
    epoch: int = 0                # completed epochs
    global_step: int = 0
    best_accuracy: float = -1.0   # best eval mIoU so far
    best_model_epoch: int = -1
    epochs_without_improvement: int = 0

    def to_dict(self):
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, d):
        return cls(**{k: v for k, v in (d or {}).items() if k in cls.__dataclass_fields__})


@dataclass
class TrainConfig:
    num_epochs: int
    train_batch_size: int = 2
    save_interval_epochs: int = 1
    log_interval_steps: int = 2
    save_dir: str = "output"
    early_stop: bool = False
    early_stop_patience: int = 5
    use_vdl: bool = True
    use_amp: bool = False
    amp_dtype: str = "float16"
    eval_batch_size: int = 1
    extra_log: dict = field(default_factory=dict)


def world_info():
    """(rank, world size) of this process; (0, 1) when not launched distributed."""
    return paddle.distributed.get_rank(), paddle.distributed.get_world_size()


class Trainer:
    """Trains ``model.net`` with ``model.loss``; saves checkpoints through ``save_fn``.

    Args:
        model: a BaseSegmenter (uses ``net``, ``loss``, ``num_classes``).
        train_dataset, eval_dataset: SegDatasets (eval may be None).
        optimizer (paddle.optimizer.Optimizer | callable): built over
            ``model.net.parameters()``, or a function ``steps_per_epoch -> optimizer``
            (the default optimizer's LR schedule needs the number of steps). A
            learning rate that is an LRScheduler is stepped once per iteration.
        config (TrainConfig): loop settings.
        save_fn (callable): ``save_fn(path, optimizer, train_state, metrics)`` writes a
            checkpoint directory atomically.
        state (TrainState): where to start (a fresh state, or one read by resume).
    """

    def __init__(self, model, train_dataset, eval_dataset, optimizer, config, save_fn, state=None):
        self.model = model
        self.train_dataset = train_dataset
        self.eval_dataset = eval_dataset
        self.optimizer = optimizer
        self.config = config
        self.save_fn = save_fn
        self.state = state or TrainState()
        self.rank, self.world_size = world_info()
        self.is_main = self.rank == 0
        self.stop_reason = None

        self.net = model.net
        if self.world_size > 1:
            paddle.distributed.init_parallel_env()
            self.net = paddle.DataParallel(model.net)
        self.loader = self._build_loader()
        self.steps_per_epoch = len(self.loader)
        if self.steps_per_epoch == 0:
            raise ValueError(
                f"train_dataset has {len(train_dataset)} samples, fewer than one batch of "
                f"train_batch_size={config.train_batch_size} per process; lower train_batch_size")
        if not isinstance(optimizer, paddle.optimizer.Optimizer):
            self.optimizer = optimizer(self.steps_per_epoch)
        self.scaler = self._build_amp_scaler()
        self.vdl = self._open_visualdl()

    # === Setup ===
    def _build_loader(self):
        cfg, ds = self.config, self.train_dataset
        if self.world_size > 1:
            sampler = paddle.io.DistributedBatchSampler(
                ds, batch_size=cfg.train_batch_size, shuffle=ds.shuffle, drop_last=True)
        else:
            sampler = paddle.io.BatchSampler(
                ds, batch_size=cfg.train_batch_size, shuffle=ds.shuffle, drop_last=True)
        workers = ds.num_workers
        return paddle.io.DataLoader(
            ds, batch_sampler=sampler, num_workers=workers, return_list=True,
            collate_fn=collate,
            persistent_workers=workers > 0, use_shared_memory=workers > 0)

    def _build_amp_scaler(self):
        if not self.config.use_amp:
            return None
        if self.config.amp_dtype == "float16":
            # Dynamic loss scaling keeps small fp16 gradients from flushing to zero.
            return paddle.amp.GradScaler(init_loss_scaling=2.0 ** 15)
        return None  # bfloat16 has fp32's exponent range: no scaling needed

    def _open_visualdl(self):
        if not (self.config.use_vdl and self.is_main):
            return None
        from visualdl import LogWriter
        return LogWriter(os.path.join(self.config.save_dir, "vdl_log"))

    def resume(self, checkpoint_dir):
        """Continue from a checkpoint: weights, optimizer (with LR position) and TrainState."""
        info = read_model_yml(checkpoint_dir)
        if "train_state" not in info:
            raise ModelDirError(f"{checkpoint_dir} holds no training state; resume from an "
                                "epoch_N or best_model directory written by train()")
        self.model.net.set_state_dict(read_state(checkpoint_dir))
        self.optimizer.set_state_dict(read_state(checkpoint_dir, OPTIMIZER_STATE))
        self.state = TrainState.from_dict(info["train_state"])
        logger.info(f"Resumed from {checkpoint_dir} at epoch {self.state.epoch}, "
                    f"step {self.state.global_step}")

    # === The loop ===
    def run(self):
        cfg = self.config
        logger.info(f"Training for {cfg.num_epochs} epochs, {self.steps_per_epoch} steps per epoch, "
                    f"batch {cfg.train_batch_size} x {self.world_size} process(es), "
                    f"starting at epoch {self.state.epoch + 1}")
        self._start_time = time.time()
        self._start_step = self.state.global_step
        try:
            while not self.done():
                self.train_one_epoch()
                self.evaluate_and_checkpoint()
        finally:
            if self.vdl is not None:
                self.vdl.close()
        logger.info(f"Training stopped: {self.stop_reason}")
        return self.state

    def done(self):
        """The one stop predicate; records why training stops."""
        if self.stop_reason is None and self.state.epoch >= self.config.num_epochs:
            self.stop_reason = f"reached num_epochs={self.config.num_epochs}"
        return self.stop_reason is not None

    def train_one_epoch(self):
        cfg, state = self.config, self.state
        self.net.train()
        epoch = state.epoch + 1
        window_loss, window_steps, window_start = 0.0, 0, time.time()
        for step, batch in enumerate(self.loader, start=1):
            images, labels = unpack_batch(batch)  # raises the real error of a bad sample
            loss = self._train_step(images, labels)
            state.global_step += 1
            window_loss += loss
            window_steps += 1
            if step % cfg.log_interval_steps == 0 or step == self.steps_per_epoch:
                elapsed = time.time() - window_start
                self._log_step(epoch, step, window_loss / window_steps, window_steps, elapsed)
                window_loss, window_steps, window_start = 0.0, 0, time.time()
        state.epoch = epoch

    def _train_step(self, images, labels):
        cfg = self.config
        with paddle.amp.auto_cast(enable=cfg.use_amp, dtype=cfg.amp_dtype, level="O1"):
            logits = self.net(images)
            loss = self.model.loss(logits, labels)
        value = float(loss)
        if not math.isfinite(value):
            raise TrainingDiverged(
                f"loss is {value} at epoch {self.state.epoch + 1}, step {self.state.global_step + 1}; "
                f"training stopped (the last good checkpoint is kept in {cfg.save_dir}). "
                "Lower learning_rate, or check the labels and the data.")
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.minimize(self.optimizer, loss)
        else:
            loss.backward()
            self.optimizer.step()
        self.optimizer.clear_grad()
        lr = self.optimizer._learning_rate
        if isinstance(lr, paddle.optimizer.lr.LRScheduler):
            lr.step()
        return value

    def _current_lr(self):
        return float(self.optimizer.get_lr())

    def _log_step(self, epoch, step, loss, steps, elapsed):
        if not self.is_main:
            return
        cfg, state = self.config, self.state
        ips = steps * cfg.train_batch_size * self.world_size / max(elapsed, 1e-9)
        done_steps = state.global_step - self._start_step
        remaining = cfg.num_epochs * self.steps_per_epoch - state.global_step
        eta = (time.time() - self._start_time) / max(done_steps, 1) * remaining
        lr = self._current_lr()
        logger.info(f"[TRAIN] Epoch={epoch}/{cfg.num_epochs}, Step={step}/{self.steps_per_epoch}, "
                    f"loss={loss:.6f}, lr={lr:.6g}, ips={ips:.2f} images/s, eta={_hms(eta)}")
        if self.vdl is not None:
            self.vdl.add_scalar("Train/loss", loss, state.global_step)
            self.vdl.add_scalar("Train/lr", lr, state.global_step)
            self.vdl.add_scalar("Train/ips", ips, state.global_step)

    def evaluate_and_checkpoint(self):
        cfg, state = self.config, self.state
        last = state.epoch >= cfg.num_epochs
        if state.epoch % cfg.save_interval_epochs != 0 and not last:
            return
        metrics = None
        if self.eval_dataset is not None:
            metrics = self._evaluate()
            improved = metrics["miou"] > state.best_accuracy
            if improved:
                state.best_accuracy = metrics["miou"]
                state.best_model_epoch = state.epoch
                state.epochs_without_improvement = 0
            else:
                state.epochs_without_improvement += 1
            if self.is_main:
                logger.info(f"[EVAL] Epoch={state.epoch}, miou={metrics['miou']:.4f}, "
                            f"oacc={metrics['oacc']:.4f}, kappa={metrics['kappa']:.4f}; best miou "
                            f"{state.best_accuracy:.4f} at epoch {state.best_model_epoch}")
                if self.vdl is not None:
                    for key in ("miou", "oacc", "kappa"):
                        self.vdl.add_scalar(f"Metrics/{key}", metrics[key], state.epoch)
            if (cfg.early_stop and not improved
                    and state.epochs_without_improvement >= cfg.early_stop_patience):
                self.stop_reason = (f"early stop: mIoU did not improve for "
                                    f"{state.epochs_without_improvement} evaluations "
                                    f"(early_stop_patience={cfg.early_stop_patience})")
        if self.is_main:
            self._save(f"epoch_{state.epoch}", metrics)
            if metrics is not None and state.best_model_epoch == state.epoch:
                self._save("best_model", metrics)

    def _evaluate(self):
        metrics, _ = evaluate_net(
            self.model.net, self.eval_dataset, self.model.num_classes,
            self.eval_dataset.transforms, batch_size=self.config.eval_batch_size,
            num_workers=self.eval_dataset.num_workers)
        return metrics

    def _save(self, name, metrics):
        path = os.path.join(self.config.save_dir, name)
        self.save_fn(path, self.optimizer, self.state, metrics)
        logger.info(f"Saved {path}")


def _hms(seconds):
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def default_optimizer(parameters, learning_rate, num_epochs, steps_per_epoch, lr_decay_power,
                      weight_decay=4e-5):
    """PaddleX's default: Momentum(0.9) with L2 weight decay and polynomial LR decay to 0."""
    schedule = paddle.optimizer.lr.PolynomialDecay(
        learning_rate=learning_rate, decay_steps=num_epochs * steps_per_epoch,
        end_lr=0.0, power=lr_decay_power)
    return paddle.optimizer.Momentum(
        learning_rate=schedule, momentum=0.9, parameters=parameters,
        weight_decay=paddle.regularizer.L2Decay(weight_decay))
