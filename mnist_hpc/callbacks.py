"""The fit loop's callbacks, each with one job, and the run state they record.

Keras runs them in list order at each epoch end: exact validation (and the divergence vote),
time to target, rank-0 checkpoint, then the agreement on stopping for a signal, so a stopped run
has always checkpointed the epoch it stops after.
"""

from __future__ import annotations

import errno
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from . import checkpoint, data, distributed, evaluate, progress
from .pipeline import ShardPlan
from .stop import StopRequest


@dataclass
class RunState:
    """What fit leaves behind: the same on every rank (each decision is made in an all-reduce)."""

    start_epoch: int  # the first epoch this run trains (0, or the resumed checkpoint's)
    history: list[dict[str, Any]] = field(default_factory=list)  # one record per finished epoch
    fit_start: float = 0.0
    diverged: dict[str, Any] | None = None  # set at the first epoch with a non-finite loss or weight
    time_to_target: dict[str, Any] | None = None
    stopped_by_signal: bool = False
    epoch_start: float = 0.0  # when the current epoch began
    paused_seconds: float = 0.0  # spent this epoch in mid-epoch test evaluations (not training)

    def epoch_recorded(self, epoch: int) -> bool:  # Keras's 0-based epoch
        return bool(self.history) and self.history[-1]["epoch"] == epoch + 1


class ExactValidation(tf.keras.callbacks.Callback):
    """Validation on every image once, summed over ranks; a non-finite loss or weight stops all ranks.

    Scores come from ``scorer``, a float32 twin of the trained model given its weights first: the
    numbers are those of the model as it is saved, whatever the training precision.
    """

    def __init__(self, world: distributed.World, validation: data.Split, plan: ShardPlan, n_train: int,
                 scorer: tf.keras.Model, state: RunState) -> None:
        super().__init__()
        self.world, self.validation, self.plan, self.n_train = world, validation, plan, n_train
        self.scorer, self.state = scorer, state

    def on_epoch_begin(self, epoch, logs=None):
        self.state.epoch_start, self.state.paused_seconds = time.perf_counter(), 0.0

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.perf_counter() - self.state.epoch_start - self.state.paused_seconds
        weights = self.model.get_weights()
        self.scorer.set_weights(weights)
        # The divergence votes travel in the validation all-reduce, so all ranks decide alike.
        finite_here = math.isfinite(float(logs["loss"])) and all(np.isfinite(w).all() for w in weights)
        scores, (nonfinite_votes,) = evaluate.aggregated(self.scorer, self.validation, self.world, f"val_{epoch}",
                                                         (float(not finite_here),))
        if nonfinite_votes or not math.isfinite(scores.loss):
            self.state.diverged = {"epoch": epoch + 1, "loss": str(float(logs["loss"])),
                                   "val_loss": str(scores.loss), "ranks_with_nonfinite_loss_or_weights": int(nonfinite_votes)}
            self.model.stop_training = True  # the newest checkpoint stays the last good one
            return
        optimizer = self.model.optimizer
        passes = int(optimizer.iterations) - epoch * self.plan.steps_per_epoch  # Horovod counts every backward pass
        images = min(passes * self.plan.batch_size * self.world.size, self.n_train)
        self.state.history.append({
            "epoch": epoch + 1, "steps": passes // self.plan.backward_passes, "images": images,
            "loss": float(logs["loss"]),
            "accuracy": float(logs["accuracy"]), "val_loss": scores.loss, "val_accuracy": scores.accuracy,
            "val_correct": scores.correct, "seconds": seconds, "images_per_second": images / seconds,
            "learning_rate": float(optimizer.learning_rate)})  # the rate of the last step
        logs.update(val_loss=scores.loss, val_accuracy=scores.accuracy)


class ProgressLine(tf.keras.callbacks.Callback):
    """Rank 0's one line per recorded epoch: epoch k/N, images/s, loss, validation accuracy and the
    run's ETA (progress.epoch_line). Keras's own epoch line is off (fit's verbose=0)."""

    def __init__(self, epochs: int, total_steps: int, backward_passes: int, state: RunState) -> None:
        super().__init__()
        self.epochs, self.total_steps, self.backward_passes, self.state = epochs, total_steps, backward_passes, state

    def on_epoch_end(self, epoch, logs=None):
        if not self.state.epoch_recorded(epoch):
            return
        # optimizer.iterations counts backward passes; the history's steps (the ETA's unit) are updates
        remaining_updates = -(-(self.total_steps - int(self.model.optimizer.iterations)) // self.backward_passes)
        eta = progress.eta_seconds(self.state.history, self.state.start_epoch, remaining_updates)
        print(progress.epoch_line(self.state.history[-1], self.epochs, eta), flush=True)


class TimeToTarget(tf.keras.callbacks.Callback):
    """Time-to-accuracy: the aggregated test accuracy at each epoch end and, with ``every``, after
    every ``every`` backward passes (a whole number of updates; fit's steps_per_execution divides
    it); stops once it reaches ``target``. Each epoch's evaluations go into its history record."""

    def __init__(self, target: float, world: distributed.World, test: data.Split, scorer: tf.keras.Model,
                 state: RunState, plan: ShardPlan, n_train: int, every: int | None = None) -> None:
        super().__init__()
        self.target, self.world, self.test, self.scorer, self.state = target, world, test, scorer, state
        self.plan, self.n_train, self.every = plan, n_train, every
        self.pending: list[dict[str, Any]] = []  # this epoch's evaluations so far

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch, self.pending = epoch, []

    def on_train_batch_end(self, batch, logs=None):
        passes = int(self.model.optimizer.iterations) - self.epoch * self.plan.steps_per_epoch
        if not self.every or passes % self.every or passes >= self.plan.steps_per_epoch:
            return  # the epoch's end is evaluated after its validation, in on_epoch_end
        paused = time.perf_counter()
        self.scorer.set_weights(self.model.get_weights())
        self.check(self.epoch, passes)
        self.state.paused_seconds += time.perf_counter() - paused

    def on_epoch_end(self, epoch, logs=None):
        if not self.state.epoch_recorded(epoch):
            return
        record = self.state.history[-1]
        passes = int(self.model.optimizer.iterations) - epoch * self.plan.steps_per_epoch
        if not (self.pending and self.pending[-1]["passes"] == passes):  # not evaluated at this step yet
            self.check(epoch, passes)  # weights: set by ExactValidation
        record["test_accuracy"] = self.pending[-1]["test_accuracy"]
        record["test_evaluations"] = [{k: v for k, v in e.items() if k != "passes"} for e in self.pending]

    def check(self, epoch: int, passes: int) -> None:
        """Evaluate after ``passes`` backward passes of (0-based) ``epoch``; stop at the target."""
        scores, _ = evaluate.aggregated(self.scorer, self.test, self.world, f"test_{epoch}_{passes}")
        earlier = sum(h["images"] for h in self.state.history if h["epoch"] <= epoch)  # the epochs before
        trained = sum(h["seconds"] for h in self.state.history if h["epoch"] > self.state.start_epoch)
        if not self.state.epoch_recorded(epoch):  # mid-epoch: this epoch's training time so far
            trained += time.perf_counter() - self.state.epoch_start - self.state.paused_seconds
        evaluation = {"epochs": epoch + passes / self.plan.steps_per_epoch, "passes": passes,
                      "updates": int(self.model.optimizer.iterations) // self.plan.backward_passes,
                      "images": earlier + min(passes * self.plan.batch_size * self.world.size, self.n_train),
                      "test_accuracy": scores.accuracy, "test_loss": scores.loss}
        self.pending.append(evaluation)
        if scores.accuracy >= self.target and self.state.time_to_target is None:
            self.state.time_to_target = {"epoch": epoch + 1, "epochs": evaluation["epochs"],
                                         "updates": evaluation["updates"], "images": evaluation["images"],
                                         "training_seconds": trained,
                                         "wall_seconds": time.perf_counter() - self.state.fit_start}
            self.model.stop_training = True


class RootCheckpoint(tf.keras.callbacks.Callback):
    """Rank 0 saves each recorded epoch: weights and optimizer state by name, with the history so far."""

    def __init__(self, directory: Path, meta: dict[str, Any], plan: ShardPlan, keep: int, state: RunState) -> None:
        super().__init__()
        self.directory, self.meta, self.plan, self.keep, self.state = directory, meta, plan, keep, state

    def on_epoch_end(self, epoch, logs=None):
        if not self.state.epoch_recorded(epoch):
            return
        history = self.state.history
        partial = history[-1]["steps"] < self.plan.updates_per_epoch  # a step budget or the target ended it early
        meta = {**self.meta, "epoch": epoch + 1, "partial": partial, "history": history}
        checkpoint.save(self.directory, meta, checkpoint.state_of(self.model.weights),
                        checkpoint.state_of(self.model.optimizer.variables), keep=self.keep)


class StopAgreement(tf.keras.callbacks.Callback):
    """A TERM/USR1 on any rank stops every rank after this epoch (its checkpoint is written)."""

    def __init__(self, stop: StopRequest, world: distributed.World, state: RunState) -> None:
        super().__init__()
        self.stop, self.world, self.state = stop, world, state

    def on_epoch_end(self, epoch, logs=None):
        if self.state.diverged:  # every rank stops already
            return
        (votes,) = distributed.allreduce_sum([float(self.stop.received is not None)], name=f"stop_{epoch}")
        if votes:
            self.model.stop_training = True
            self.state.stopped_by_signal = True


class StepBudget(tf.keras.callbacks.Callback):
    """Stops ``fit`` once the optimizer has made ``total_steps`` steps (same step on every rank)."""

    def __init__(self, total_steps: int) -> None:
        super().__init__()
        self.total_steps = total_steps

    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.optimizer.iterations) >= self.total_steps:
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
