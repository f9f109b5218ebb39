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
from ..checkpoint import (MODEL_PARAMS, OPTIMIZER_STATE, ModelDirError, read_model_yml,
                          read_state, resolve_model_dir)
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
        model: a BaseSegmenter (uses ``net``, ``loss``, ``num_classes``; sets
            ``best_accuracy`` and ``best_model_epoch`` before each save).
        train_dataset, eval_dataset: SegDatasets (eval may be None).
        optimizer (paddle.optimizer.Optimizer | callable): built over
            ``model.net.parameters()``, or a function ``steps_per_epoch -> optimizer``
            (the default optimizer's LR schedule needs the number of steps). A
            learning rate that is an LRScheduler is stepped once per iteration.
        config (TrainConfig): loop settings. ``use_amp`` on CPU logs a warning and
            trains in float32: Paddle 2.6's auto_cast has no effect there.
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
        self.last_checkpoint = None  # newest epoch_N written by this run (or resumed from)
        self.use_amp = self._amp_available()
        if config.early_stop and eval_dataset is None and self.is_main:
            logger.warning("early_stop=True needs an eval_dataset to measure mIoU; "
                           "training will run all num_epochs")

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

    def _amp_available(self):
        if not self.config.use_amp:
            return False
        device = paddle.get_device()
        if device.startswith("cpu"):
            # Measured with Paddle 2.6.2: auto_cast on a CPU place only warns and runs
            # every op in float32, whatever the dtype; say so once, in our words.
            logger.warning("use_amp=True has no effect on CPU (Paddle's auto_cast works "
                           "only on GPU, XPU and custom devices); training in float32")
            return False
        return True

    def _build_amp_scaler(self):
        if not self.use_amp:
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
        opt_state = _rename_optimizer_state(
            read_state(checkpoint_dir, OPTIMIZER_STATE), _saved_parameter_names(checkpoint_dir),
            self.model.net, checkpoint_dir)
        self.optimizer.set_state_dict(opt_state)
        schedule = self.optimizer._learning_rate
        if isinstance(schedule, paddle.optimizer.lr.PolynomialDecay):
            # The saved rate came from the old run's decay_steps; when num_epochs
            # changed, the position (last_epoch) is what must carry over.
            schedule.last_lr = schedule.get_lr()
        self.state = TrainState.from_dict(info["train_state"])
        self.last_checkpoint = checkpoint_dir
        self._info(f"Resumed from {checkpoint_dir} at epoch {self.state.epoch}, "
                    f"step {self.state.global_step}, lr {self._current_lr():.6g}")
        self._restore_best_model(info.get("metrics"))

    def _restore_best_model(self, metrics):
        """Rewrite best_model when the run was killed between epoch_N and best_model.

        The checkpoint resumed from holds exactly the weights of the best epoch then.
        """
        if not self.is_main or self.state.best_model_epoch != self.state.epoch or metrics is None:
            return
        best_dir = os.path.join(self.config.save_dir, "best_model")
        try:
            best_epoch = read_model_yml(best_dir)["train_state"]["epoch"]
        except Exception:  # missing, half-written or foreign: rewrite it
            best_epoch = None
        if best_epoch != self.state.epoch:
            logger.warning(f"{best_dir} does not hold the best epoch ({self.state.epoch}); "
                           "rewriting it from the resumed checkpoint")
            self._save("best_model", metrics)

    def _info(self, message):
        if self.is_main:  # one log for the whole job under paddle.distributed.launch
            logger.info(message)

    # === The loop ===
    def run(self):
        cfg = self.config
        self._info(f"Training for {cfg.num_epochs} epochs, {self.steps_per_epoch} steps per epoch, "
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
        self._info(f"Training stopped: {self.stop_reason}")
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
        sampler = self.loader.batch_sampler
        if hasattr(sampler, "set_epoch"):
            # Each epoch's shuffle depends on the epoch only, also after a resume.
            sampler.set_epoch(epoch)
        for step, batch in enumerate(self.loader, start=1):
            images, labels = unpack_batch(batch)  # raises the real error of a bad sample
            lr = self._current_lr()  # the rate this step uses; the schedule moves after it
            loss = self._train_step(images, labels)
            state.global_step += 1
            window_loss += loss
            window_steps += 1
            # A line every log_interval_steps, and one for the rest at the end of an epoch.
            if step % cfg.log_interval_steps == 0 or step == self.steps_per_epoch:
                elapsed = time.time() - window_start
                self._log_step(epoch, step, window_loss / window_steps, lr, window_steps, elapsed)
                window_loss, window_steps, window_start = 0.0, 0, time.time()
        state.epoch = epoch

    def _train_step(self, images, labels):
        cfg = self.config
        if labels.dtype != paddle.int64:
            # Batches carry uint8 labels (an eighth of the int64 bytes to stack and
            # pass between processes); losses index classes with int64.
            labels = labels.astype("int64")
        with paddle.amp.auto_cast(enable=self.use_amp, dtype=cfg.amp_dtype, level="O1"):
            logits = self.net(images)
            loss = self.model.loss(logits, labels)
        value = self._mean_over_processes(loss)
        if not math.isfinite(value):
            raise TrainingDiverged(
                f"loss is {value} at epoch {self.state.epoch + 1}, step {self.state.global_step + 1}; "
                f"training stopped before updating the weights. {self._last_good()} "
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

    def _mean_over_processes(self, loss):
        """The loss averaged over all processes, as a float.

        Every process must see the same value: one that stopped alone on a NaN
        would leave the others waiting forever in the next gradient all-reduce.
        """
        if self.world_size == 1:
            return float(loss)
        total = loss.detach().astype("float32")
        paddle.distributed.all_reduce(total)
        return float(total) / self.world_size

    def _last_good(self):
        if self.last_checkpoint is None:
            return "No checkpoint was written before this."
        return f"The last good checkpoint is {self.last_checkpoint}."

    def _current_lr(self):
        return float(self.optimizer.get_lr())

    def _log_step(self, epoch, step, loss, lr, steps, elapsed):
        if not self.is_main:
            return
        cfg, state = self.config, self.state
        ips = steps * cfg.train_batch_size * self.world_size / max(elapsed, 1e-9)
        done_steps = state.global_step - self._start_step
        remaining = cfg.num_epochs * self.steps_per_epoch - state.global_step
        eta = (time.time() - self._start_time) / max(done_steps, 1) * remaining
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
        self._check_finite_weights()
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
            self.last_checkpoint = self._save(f"epoch_{state.epoch}", metrics)
            if metrics is not None and state.best_model_epoch == state.epoch:
                self._save("best_model", metrics)

    def _check_finite_weights(self):
        # A finite loss can still come with an update that overflows the weights;
        # such weights must not be saved over as a checkpoint.
        for name, param in self.model.net.named_parameters():
            if not bool(paddle.isfinite(param).all()):
                raise TrainingDiverged(
                    f"parameter {name} holds NaN or infinite values after epoch "
                    f"{self.state.epoch}; training stopped without saving it. "
                    f"{self._last_good()} Lower learning_rate.")

    def _evaluate(self):
        metrics, _ = evaluate_net(
            self.model.net, self.eval_dataset, self.model.num_classes,
            self.eval_dataset.transforms, batch_size=self.config.eval_batch_size,
            num_workers=self.eval_dataset.num_workers)
        return metrics

    def _save(self, name, metrics):
        path = os.path.join(self.config.save_dir, name)
        # model.yml reads the best score from the model: keep it current, so that a
        # checkpoint loaded with load_model tells the truth before training ends.
        self.model.best_accuracy = self.state.best_accuracy
        self.model.best_model_epoch = self.state.best_model_epoch
        self.save_fn(path, self.optimizer, self.state, metrics)
        logger.info(f"Saved {path}")
        return path


def _saved_parameter_names(checkpoint_dir):
    """{structured name: parameter name} of the network that wrote a checkpoint."""
    file = os.path.join(resolve_model_dir(checkpoint_dir), MODEL_PARAMS)
    try:
        state = paddle.load(file, keep_name_table=True)
    except Exception as e:
        raise ModelDirError(f"{file} cannot be read ({type(e).__name__}: {e})") from None
    return dict(state.get("StructuredToParameterName@@", {}))


def _rename_optimizer_state(opt_state, saved_names, net, checkpoint_dir):
    """Re-key optimizer accumulators from the saved network's parameter names to ``net``'s.

    Paddle keys an accumulator ``<parameter name>_<accumulator>_<n>`` and parameter
    names come from a process-wide counter (``conv2d_0.w_0``), so the same network
    gets other names when it is not the first one built in its process. Paddle would
    then fail at the first step with an assertion; matching through the structured
    names (which never change) restores every accumulator instead.
    """
    current = {key: p.name for key, p in net.state_dict().items()}
    renamed = {saved_names[key]: current[key] for key in current if key in saved_names}
    if not renamed or all(old == new for old, new in renamed.items()):
        return opt_state
    result = {}
    for key, value in opt_state.items():
        if key == "LR_Scheduler":
            result[key] = value
            continue
        if key == "master_weights":  # AMP O2 keeps fp32 copies by parameter name
            result[key] = {renamed.get(name, name): w for name, w in value.items()}
            continue
        parts = key.split("_")
        for cut in range(len(parts) - 1, 0, -1):
            owner = "_".join(parts[:cut])
            if owner in renamed:
                result[renamed[owner] + key[len(owner):]] = value
                break
        else:
            raise ModelDirError(
                f"{checkpoint_dir}: optimizer entry {key!r} in {OPTIMIZER_STATE} belongs to "
                f"no parameter of this network; the checkpoint was written by another network")
    return result


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
