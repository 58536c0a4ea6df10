"""Recipes and the Horovod-wrapped Keras fit loop.

Flow: data.load -> models.build -> fit (sharded input, DistributedOptimizer, exact validation each
epoch, rank-0 checkpoints) -> aggregated test evaluation -> RUN_DIR/metrics.json + model.keras.
Imported only after the command line is validated: it imports TensorFlow.
"""

from __future__ import annotations

import errno
import json
import math
import os
import re
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from . import checkpoint, data, distributed, evaluate, models, stack
from .rundir import save_model_atomic, write_json_atomic
from .stop import StopRequest
from .config import (CPU_CYCLE_TIME_MS, DIVERGED_EXIT, DTYPE_POLICIES, INTERRUPTED_EXIT, LAYOUTS, Recipe,
                     TrainConfig)


# ------------------------------------------------------------------ precision
def cpu_supports_bf16(cpuinfo: str | None = None) -> bool:
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return False
    return bool(set(cpuinfo.split()) & {"avx512_bf16", "amx_bf16"})


def choose_precision(requested: str, gpu_compute_capability: tuple[int, int] | None,
                     cpuinfo: str | None = None) -> str:
    """Resolve ``auto``: bf16 on Ampere+ GPUs and bf16-capable CPUs, fp16 on older GPUs, else fp32."""
    if requested != "auto":
        return requested
    if gpu_compute_capability is not None:
        return "bf16" if gpu_compute_capability >= (8, 0) else "fp16"
    return "bf16" if cpu_supports_bf16(cpuinfo) else "fp32"


def _gpu_compute_capability() -> tuple[int, int] | None:
    gpus = tf.config.get_visible_devices("GPU")
    if not gpus:
        return None
    return tf.config.experimental.get_device_details(gpus[0]).get("compute_capability")


# ------------------------------------------------------------------ input pipeline
@dataclass(frozen=True)
class ShardPlan:
    steps_per_epoch: int
    batch_size: int


def shard_plan(n_items: int, world_size: int, batch_size: int) -> ShardPlan:
    """Every rank runs the same number of steps: enough for the largest shard."""
    return ShardPlan(math.ceil(math.ceil(n_items / world_size) / batch_size), batch_size)


def step_budget(recipe: Recipe, plan: ShardPlan, world_size: int) -> tuple[int, int]:
    """(epochs, optimizer steps per rank). A step budget counts at world size 1; N ranks share it."""
    if recipe.steps:
        total_steps = math.ceil(recipe.steps / world_size)
        return math.ceil(total_steps / plan.steps_per_epoch), total_steps
    return recipe.epochs, recipe.epochs * plan.steps_per_epoch


def epoch_batches(n_items: int, world: distributed.World, plan: ShardPlan, epoch: int,
                  seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(indices, weights), each (steps, batch): the rank's shard, padded with weight-0 repeats."""
    shard = data.epoch_shard(n_items, world.rank, world.size, epoch, seed)
    total = plan.steps_per_epoch * plan.batch_size
    weights = np.zeros(total, np.float32)
    weights[: len(shard)] = 1.0
    indices = np.resize(shard, total)
    return indices.reshape(-1, plan.batch_size), weights.reshape(-1, plan.batch_size)


def random_shift(images: tf.Tensor, max_shift: int, seed: tf.Tensor) -> tf.Tensor:
    """Shift each image of a batch by its own (dy, dx) in [-max_shift, max_shift], filling with 0.

    ``images`` is (batch, 28, 28, 1) or (batch, 784); ``seed`` a stateless-RNG seed of shape (2,),
    so the same step gets the same shifts whatever the pipeline's parallelism or a resume.
    """
    batch = tf.shape(images)[0]
    pad = [[0, 0], [max_shift, max_shift], [max_shift, max_shift]]
    padded = tf.pad(tf.reshape(images, (batch, 28, 28)), pad)
    offsets = tf.random.stateless_uniform((2, batch), seed, 0, 2 * max_shift + 1, dtype=tf.int32)
    window = tf.range(28)
    rows = tf.gather(padded, offsets[0][:, None] + window, axis=1, batch_dims=1)  # (batch, 28, 28 + 2 m)
    shifted = tf.gather(rows, offsets[1][:, None] + window, axis=2, batch_dims=1)  # (batch, 28, 28)
    return tf.reshape(shifted, tf.shape(images))


def training_dataset(split: data.Split, world: distributed.World, plan: ShardPlan, first_epoch: int,
                     last_epoch: int, seed: int, augment: int = 0) -> tf.data.Dataset:
    """tf.data over epochs [first_epoch, last_epoch): in-memory gathers, no per-step Python.

    Each epoch's shard is drawn when the pipeline reaches that epoch, so memory is that of one
    epoch whatever the epoch count.
    """
    steps_per_epoch = plan.steps_per_epoch

    def one_epoch(epoch):  # (indices, weights, global step) rows of one epoch, drawn when reached
        def draw(e):
            indices, weights = epoch_batches(len(split), world, plan, int(e), seed)
            return indices.astype(np.int64), weights

        indices, weights = tf.numpy_function(draw, [epoch], (tf.int64, tf.float32), stateful=False)
        indices.set_shape((steps_per_epoch, plan.batch_size))
        weights.set_shape((steps_per_epoch, plan.batch_size))
        steps = tf.range(epoch * steps_per_epoch, (epoch + 1) * steps_per_epoch, dtype=tf.int64)
        return tf.data.Dataset.from_tensor_slices((indices, weights, steps))

    with tf.device("/CPU:0"):
        images = tf.convert_to_tensor(split.images)
        labels = tf.convert_to_tensor(split.labels)

    def gather(idx, w, step):
        batch = tf.gather(images, idx)
        if augment:
            batch = random_shift(batch, augment, tf.stack([tf.constant(seed * 1_000_003 + world.rank, tf.int64), step]))
        return batch, tf.gather(labels, idx), w

    options = tf.data.Options()
    options.autotune.enabled = False
    epochs = tf.data.Dataset.range(first_epoch, last_epoch).with_options(options)
    return epochs.flat_map(one_epoch).map(gather, num_parallel_calls=2).prefetch(2)


# ------------------------------------------------------------------ optimiser
# Horovod's DistributedOptimizer re-creates the optimizer from its config, so the schedule must
# round-trip through get_config/from_config: hence a registered class.
@tf.keras.utils.register_keras_serializable(package="mnist_hpc")
class WarmupThenDecay(tf.keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from ``base_lr`` to ``peak``, then constant or cosine decay to 0 at ``total``."""

    def __init__(self, base_lr: float, peak: float, warmup: int, total: int, schedule: str):
        self.base_lr, self.peak, self.warmup, self.total, self.schedule = base_lr, peak, warmup, total, schedule

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        warm = self.base_lr + (self.peak - self.base_lr) * tf.minimum(step / max(self.warmup, 1), 1.0)
        if self.schedule == "cosine":
            progress = tf.clip_by_value((step - self.warmup) / max(self.total - self.warmup, 1), 0.0, 1.0)
            decayed = self.peak * 0.5 * (1.0 + tf.cos(math.pi * progress))
        else:
            decayed = tf.constant(self.peak, tf.float32)
        return tf.where(step < self.warmup, warm, decayed)

    def get_config(self) -> dict[str, Any]:
        return {"base_lr": self.base_lr, "peak": self.peak, "warmup": self.warmup, "total": self.total,
                "schedule": self.schedule}


def learning_rate_schedule(base_lr: float, world_size: int, scale: bool, warmup_steps: int,
                           total_steps: int, schedule: str) -> WarmupThenDecay:
    """Scaled by world size (Goyal et al. 2017) with a linear warm-up; without scaling, no warm-up."""
    peak = base_lr * (world_size if scale else 1)
    warmup = warmup_steps if scale and world_size > 1 else 0
    return WarmupThenDecay(base_lr, peak, warmup, total_steps, schedule)


def make_optimizer(recipe: Recipe, lr_schedule: WarmupThenDecay) -> tf.keras.optimizers.Optimizer:
    if recipe.optimizer == "sgd":
        return tf.keras.optimizers.SGD(lr_schedule)
    return tf.keras.optimizers.Adam(lr_schedule)


# ------------------------------------------------------------------ outputs
# ------------------------------------------------------------------ the fit loop's epoch end
class EpochEnd(tf.keras.callbacks.Callback):
    """Exact validation (and test, for time-to-accuracy), agreement on stopping, history, rank-0 checkpoint.

    Scores come from ``scorer``, a float32 twin of the trained model given its weights first: the
    numbers are those of the model as it is saved, whatever the training precision.
    """

    def __init__(self, config: TrainConfig, world: distributed.World, mnist: data.Mnist, plan: ShardPlan,
                 history: list[dict[str, Any]], start_epoch: int, stop: StopRequest, save,
                 scorer: tf.keras.Model) -> None:
        super().__init__()
        self.config, self.world, self.mnist, self.plan, self.scorer = config, world, mnist, plan, scorer
        self.history, self.start_epoch, self.stop, self.save = history, start_epoch, stop, save
        self.stopped_by_signal = False
        self.diverged: dict[str, Any] | None = None  # set at the first epoch with a non-finite loss or weight
        self.time_to_target: dict[str, Any] | None = None
        self.fit_start = time.perf_counter()

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.perf_counter() - self.epoch_start
        optimizer = self.model.optimizer
        weights = self.model.get_weights()
        self.scorer.set_weights(weights)
        # Divergence: a non-finite training loss or weight on any rank, or a non-finite validation
        # loss, stops every rank here. The votes travel in the validation all-reduce, so all ranks
        # decide alike and none waits for another.
        finite_here = math.isfinite(float(logs["loss"])) and all(np.isfinite(w).all() for w in weights)
        scores, (stop_votes, nonfinite_votes) = evaluate.aggregated(
            self.scorer, self.mnist.validation, self.world, f"val_{epoch}",
            (float(self.stop.received is not None), float(not finite_here)))
        if nonfinite_votes or not math.isfinite(scores.loss):
            self.diverged = {"epoch": epoch + 1, "loss": str(float(logs["loss"])), "val_loss": str(scores.loss),
                             "ranks_with_nonfinite_loss_or_weights": int(nonfinite_votes)}
            self.model.stop_training = True  # the newest checkpoint stays the last good one
            return
        steps_done = int(optimizer.iterations) - epoch * self.plan.steps_per_epoch
        images = min(steps_done * self.plan.batch_size * self.world.size, len(self.mnist.train))
        record = {"epoch": epoch + 1, "steps": steps_done, "images": images, "loss": float(logs["loss"]),
                  "accuracy": float(logs["accuracy"]), "val_loss": scores.loss, "val_accuracy": scores.accuracy,
                  "val_correct": scores.correct, "seconds": seconds, "images_per_second": images / seconds,
                  "learning_rate": float(optimizer.learning_rate)}  # the rate of the last step
        if self.config.target_accuracy:
            self._check_target(epoch, record)
        self.history.append(record)
        logs.update(val_loss=scores.loss, val_accuracy=scores.accuracy)
        if self.world.is_root:
            self.save(epoch + 1)
        if stop_votes:
            self.model.stop_training = True
            self.stopped_by_signal = True

    def _check_target(self, epoch: int, record: dict[str, Any]) -> None:
        test, _ = evaluate.aggregated(self.scorer, self.mnist.test, self.world, f"test_{epoch}")
        record["test_accuracy"] = test.accuracy
        if test.accuracy >= self.config.target_accuracy and self.time_to_target is None:
            trained = sum(h["seconds"] for h in self.history if h["epoch"] > self.start_epoch) + record["seconds"]
            self.time_to_target = {"epoch": epoch + 1, "training_seconds": trained,
                                   "wall_seconds": time.perf_counter() - self.fit_start}
            self.model.stop_training = True


class TensorBoardLogs(tf.keras.callbacks.TensorBoard):
    """Keras's TensorBoard callback, whose file errors (full disk, no permission) are OSErrors naming
    the log folder, reported in one line like every other file the run writes."""

    def _writing(self, hook, *args, **kwargs):
        try:
            return hook(*args, **kwargs)
        except tf.errors.OpError as err:
            detail = re.sub(r"\{\{.*?\}\}\s*", "", err.message or type(err).__name__).strip().splitlines()[0]
            raise OSError(errno.EIO, f"TensorBoard log not written: {detail}", str(self.log_dir)) from None

    def set_model(self, model):  # writes the graph: the first write
        return self._writing(super().set_model, model)

    def on_train_begin(self, logs=None):
        return self._writing(super().on_train_begin, logs)

    def on_train_batch_begin(self, batch, logs=None):
        return self._writing(super().on_train_batch_begin, batch, logs)

    def on_train_batch_end(self, batch, logs=None):
        return self._writing(super().on_train_batch_end, batch, logs)

    def on_epoch_begin(self, epoch, logs=None):
        return self._writing(super().on_epoch_begin, epoch, logs)

    def on_epoch_end(self, epoch, logs=None):
        return self._writing(super().on_epoch_end, epoch, logs)

    def on_train_end(self, logs=None):
        return self._writing(super().on_train_end, logs)


class StepBudget(tf.keras.callbacks.Callback):
    """Stops ``fit`` once the optimizer has made ``total_steps`` steps (same step on every rank)."""

    def __init__(self, total_steps: int) -> None:
        super().__init__()
        self.total_steps = total_steps

    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.optimizer.iterations) >= self.total_steps:
            self.model.stop_training = True


# ------------------------------------------------------------------ the run
def compile_model(config: TrainConfig, recipe: Recipe, precision: str, world: distributed.World,
                  plan: ShardPlan, total_steps: int) -> tf.keras.Model:
    hvd = distributed.hvd_module()
    model = models.build(config.model, DTYPE_POLICIES[precision], seed=config.seed, init=recipe.init)
    lr = learning_rate_schedule(recipe.lr, world.size, config.scale_lr,
                                int(recipe.warmup_epochs * plan.steps_per_epoch), total_steps, recipe.schedule)
    compression = hvd.Compression.fp16 if config.fp16_allreduce else hvd.Compression.none
    optimizer = hvd.DistributedOptimizer(make_optimizer(recipe, lr), compression=compression)
    if precision == "fp16":  # float16 gradients underflow without dynamic loss scaling (bf16 needs none)
        optimizer = tf.keras.mixed_precision.LossScaleOptimizer(optimizer)
    # a whole epoch per graph call: no Python between steps (a step budget needs a check after each step)
    steps_per_execution = 1 if recipe.steps else plan.steps_per_epoch
    model.compile(optimizer=optimizer, loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  weighted_metrics=["accuracy"], steps_per_execution=steps_per_execution)
    model.optimizer.build(model.trainable_variables)
    return model


def restore(model: tf.keras.Model, found: checkpoint.Checkpoint | None, start_epoch: int,
            steps_per_epoch: int) -> None:
    """Rank 0 loads ``found``; every rank then gets rank 0's weights and optimizer state."""
    optimizer = model.optimizer
    if found:
        model.set_weights(found.model_weights)
        for variable, value in zip(optimizer.variables, found.optimizer_variables):
            variable.assign(value)
    distributed.broadcast_variables(model.variables + optimizer.variables)
    optimizer.iterations.assign(start_epoch * steps_per_epoch)  # the schedule follows this world size


def resume_point(meta: dict[str, Any] | None) -> tuple[int, list[dict[str, Any]]]:
    """(first epoch to train, history so far) from a checkpoint's metadata.

    An epoch cut short by a step budget is trained again from its start (the weights keep its
    progress) and its history entry is dropped, so no epoch appears twice.
    """
    if not meta:
        return 0, []
    if meta.get("partial"):
        return meta["epoch"] - 1, meta["history"][:-1]
    return meta["epoch"], meta["history"]


def run(config: TrainConfig, stop: StopRequest | None = None) -> int:
    """Train on every rank; rank 0 writes RUN_DIR. Returns the process exit code. ``stop`` is the
    stop request installed at start-up (mnist_hpc/stop.py), else one installed now."""
    t_start = time.perf_counter()
    stop = stop or StopRequest()
    world = distributed.init(config.knobs, config.intra_op_threads, config.inter_op_threads,
                             CPU_CYCLE_TIME_MS[config.model])
    if not world.is_root:  # console output comes from rank 0 only
        tf.get_logger().setLevel("ERROR")
    tf.keras.utils.set_random_seed(config.seed + world.rank)
    run_dir, ckpt_dir = Path(config.out), Path(config.out) / "checkpoints"
    recipe = config.resolved_recipe()
    precision = choose_precision(config.precision, _gpu_compute_capability()) if config.model == "cnn" else "fp32"

    mnist = data.load(config.data_dir, layout=LAYOUTS[config.model])
    shard_size = math.ceil(len(mnist.train) / world.size)
    if recipe.batch_size > shard_size:  # one giant step per epoch otherwise, mostly padding
        if world.is_root:
            print(f"warning: --batch-size {recipe.batch_size} is more than each rank's shard of {shard_size} images "
                  f"on {world.size} ranks: using {shard_size}", file=sys.stderr)
        recipe = replace(recipe, batch_size=shard_size)
    plan = shard_plan(len(mnist.train), world.size, recipe.batch_size)
    epochs, total_steps = step_budget(recipe, plan, world.size)

    found = checkpoint.resolve(config.resume, ckpt_dir, config.model) if world.is_root else None
    meta = distributed.broadcast_object(found.meta if found else None, name="resume_meta")
    start_epoch, history = resume_point(meta)
    model = compile_model(config, recipe, precision, world, plan, total_steps)
    restore(model, found, start_epoch, plan.steps_per_epoch)
    if found:
        print(f"resumed from {found.path} (epoch {start_epoch})")

    def save(epoch: int) -> None:
        partial = history[-1]["steps"] < plan.steps_per_epoch  # a step budget ended this epoch early
        meta = {"model": config.model, "epoch": epoch, "partial": partial, "history": history,
                "world_size": world.size, "config": json.loads(json.dumps(asdict(config), default=str))}
        checkpoint.save(ckpt_dir, meta, model.get_weights(), [v.numpy() for v in model.optimizer.variables],
                        keep=config.keep_checkpoints)

    scorer = models.build(config.model)  # float32, no Horovod optimizer: saved, loads with plain tf.keras
    epoch_end = EpochEnd(config, world, mnist, plan, history, start_epoch, stop, save, scorer)
    hvd_callbacks = distributed.hvd_module().callbacks
    callbacks = [hvd_callbacks.BroadcastGlobalVariablesCallback(0), hvd_callbacks.MetricAverageCallback(), epoch_end]
    if recipe.steps:
        callbacks.append(StepBudget(total_steps))
    if world.is_root:
        callbacks.append(TensorBoardLogs(run_dir / "tensorboard", profile_batch=0))

    startup_seconds = time.perf_counter() - t_start
    t_fit = epoch_end.fit_start = time.perf_counter()
    if start_epoch < epochs and int(model.optimizer.iterations) < total_steps:
        model.fit(training_dataset(mnist.train, world, plan, start_epoch, epochs, config.seed, recipe.augment),
                  epochs=epochs, initial_epoch=start_epoch, steps_per_epoch=plan.steps_per_epoch,
                  callbacks=callbacks, verbose=2 if world.is_root else 0)
    fit_seconds = time.perf_counter() - t_fit

    diverged = epoch_end.diverged  # the same on every rank (decided in an all-reduce)
    scorer.set_weights(model.get_weights())  # also when fit had nothing left to train
    test = None if diverged else evaluate.aggregated(scorer, mnist.test, world, "test")[0]
    trained = sum(h["images"] for h in history if h["epoch"] > start_epoch)
    # Horovod: averaged gradients keep every rank's weights bit-identical. If they differ, the
    # gradients were not averaged (e.g. Keras 3 as tf.keras): the run is reported as broken.
    digests = distributed.gather_object(distributed.weights_digest(model.get_weights()), "weights_digest")
    ranks_agree = len(set(digests)) == 1
    status = "diverged" if diverged else "interrupted" if epoch_end.stopped_by_signal else "completed"
    metrics = {
        "model": config.model, "recipe": config.recipe, "precision": precision, "world_size": world.size,
        "status": status if ranks_agree else "ranks_disagree", "rank_weight_digests": digests,
        "epochs_completed": len(history), "history": history,
        "test_accuracy": test.accuracy if test else None, "test_loss": test.loss if test else None,
        "test_correct": test.correct if test else None,
        "divergence": diverged,
        "images_per_second": trained / fit_seconds if fit_seconds > 0 else 0.0,
        "wall_seconds": fit_seconds, "startup_seconds": startup_seconds,
        "global_batch_size": recipe.batch_size * world.size, "steps": int(model.optimizer.iterations),
        "recipe_settings": asdict(recipe), "versions": stack.versions(),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "target_accuracy": config.target_accuracy, "time_to_target": epoch_end.time_to_target,
        "hosts": distributed.gather_hostnames(),
        # what Horovod read at init: the knobs (--fusion-threshold-mb, --cycle-time-ms, --timeline)
        # and the CPU-rank defaults, as this rank's environment held them
        "horovod_environment": {k: v for k, v in sorted(os.environ.items()) if k.startswith("HOROVOD_")},
    }
    if world.is_root:
        if diverged:  # model.keras and the checkpoints keep the last good weights
            write_json_atomic(run_dir / "metrics.json", metrics)
            print(divergence_message(diverged, recipe, world.size, config.scale_lr, ckpt_dir), file=sys.stderr)
            return DIVERGED_EXIT
        save_model_atomic(scorer, run_dir / "model.keras")
        write_json_atomic(run_dir / "metrics.json", metrics)
        print(f"{config.model}: test accuracy {test.accuracy:.4f} ({test.correct}/{test.count}) "
              f"on {world.size} rank(s) in {fit_seconds:.1f} s; run directory {run_dir.resolve()}")
        if not ranks_agree:
            print(f"error: the {world.size} ranks ended with different weights, so gradients were not averaged "
                  "(run 'mnist-hpc doctor': is tf.keras Keras 2?)", file=sys.stderr)
    if diverged:
        return DIVERGED_EXIT
    if not ranks_agree:
        return 1
    return INTERRUPTED_EXIT if epoch_end.stopped_by_signal else 0


def divergence_message(diverged: dict[str, Any], recipe: Recipe, world_size: int, scale_lr: bool,
                       ckpt_dir: Path) -> str:
    """One line: where training diverged, the likely cause and the option to change."""
    peak = recipe.lr * (world_size if scale_lr else 1)
    newest = checkpoint.candidates(ckpt_dir)
    kept = f"the last good checkpoint is {newest[0]}" if newest else "no checkpoint was written"
    return (f"error: training diverged in epoch {diverged['epoch']} (training loss {diverged['loss']}, validation loss "
            f"{diverged['val_loss']}): the learning rate is likely too high (--lr {recipe.lr:g}, {peak:g} at its peak "
            f"on {world_size} rank(s)); lower --lr or lengthen --warmup-epochs; {kept}")
