"""The training run as a few named steps, readable top to bottom.

Flow: data.load -> pipeline (sharded input) -> compiled.compile_model (Horovod-wrapped optimizer)
-> fit with callbacks (exact validation, rank-0 checkpoints, stop agreement) -> evaluate.aggregated
on the test set -> RUN_DIR/metrics.json + model.keras + saved_model/ (rank 0).
Imported only after the command line is validated: it imports TensorFlow.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import tensorflow as tf

from . import checkpoint, compiled, data, distributed, evaluate, export, models, pipeline, precision, stack
from .callbacks import (ExactValidation, ProgressLine, RootCheckpoint, RunState, StepBudget, StopAgreement,
                        TensorBoardLogs, TimeToTarget)
from .config import DIVERGED_EXIT, INTERRUPTED_EXIT, Recipe, TrainConfig
from .exitcode import ExitCode
from .rundir import save_model_atomic, write_json_atomic
from .stop import StopRequest


@dataclass
class RunMetrics:
    """RUN_DIR/metrics.json, field by field (the same on every rank; rank 0 writes it)."""

    model: str
    recipe: str
    precision: str
    world_size: int
    status: str  # completed | interrupted (a signal; resumable) | diverged | ranks_disagree
    rank_weight_digests: list[str]
    epochs_completed: int
    history: list[dict[str, Any]]
    test_accuracy: float | None
    test_loss: float | None
    test_correct: int | None
    divergence: dict[str, Any] | None
    images_per_second: float  # images trained by this run / fit seconds
    wall_seconds: float  # in fit
    startup_seconds: float  # before fit: imports, Horovod init, data, model
    global_batch_size: int  # ranks x batch x backward_passes_per_step: images per optimizer update
    steps: int  # optimizer updates so far (each of backward_passes_per_step batches per rank)
    recipe_settings: dict[str, Any]
    versions: dict[str, Any]
    slurm_job_id: str | None
    target_accuracy: float | None
    time_to_target: dict[str, Any] | None
    hosts: list[str]
    # what Horovod read at init: the knobs (--fusion-threshold-mb, --cycle-time-ms, --timeline)
    # and the CPU-rank defaults, as this rank's environment held them
    horovod_environment: dict[str, str]
    backward_passes_per_step: int  # K: local batches accumulated into one all-reduce and one update
    learning_rate_scale: float  # global batch / the recipe's batch (1 with --no-scale-lr)
    # with --target-accuracy: every test evaluation (each epoch, or each --eval-every fraction of one)
    test_evaluations: list[dict[str, Any]]


@dataclass(frozen=True)
class Schedule:
    """What a run trains, decided before the model exists (the same on every rank)."""

    recipe: Recipe  # the config's, with a batch larger than a shard lowered to it
    plan: pipeline.ShardPlan  # batches per epoch, the batch of each rank, batches per update (K)
    epochs: int
    total_steps: int  # backward passes per rank (optimizer.iterations at the end): updates x K
    precision: str  # --precision with auto resolved for this hardware, among the model's precisions
    eval_interval: int | None = None  # --eval-every in backward passes: mid-epoch test evaluations


def schedule_for(config: TrainConfig, n_train: int, world: distributed.World) -> Schedule:
    spec = models.spec(config.model)
    passes = config.backward_passes_per_step
    recipe = pipeline.fit_batch_to_shard(config.resolved_recipe(), n_train, world, passes)
    plan = pipeline.shard_plan(n_train, world.size, recipe.batch_size, passes)
    epochs, total_steps = pipeline.step_budget(recipe, plan, world.size)
    chosen = precision.choose_precision(config.precision, precision.gpu_compute_capability(tf), allowed=spec.precisions)
    evaluations = config.eval_every and config.target_accuracy
    interval = pipeline.evaluation_interval(plan, config.eval_every) if evaluations else None
    return Schedule(recipe, plan, epochs, total_steps, chosen, interval)


def model_and_input(config: TrainConfig, schedule: Schedule, world: distributed.World, train_split: data.Split,
                    first_epoch: int = 0, horovod: bool = True) -> tuple[tf.keras.Model, tf.data.Dataset]:
    """The compiled model and its sharded input from ``first_epoch`` on: what ``train`` fits and
    ``bench throughput`` times (``horovod=False``: the plain-Keras baseline)."""
    # a graph call ends at each mid-epoch evaluation (a step budget already ends one at each update)
    per_call = schedule.eval_interval if schedule.eval_interval and not schedule.recipe.steps else None
    model = compiled.compile_model(config, schedule.recipe, schedule.precision, world, schedule.plan,
                                   schedule.total_steps, steps_per_execution=per_call, horovod=horovod)
    dataset = pipeline.training_dataset(train_split, world, schedule.plan, first_epoch, schedule.epochs, config.seed,
                                        schedule.recipe.augment)
    return model, dataset


def restore(model: tf.keras.Model, found: checkpoint.Checkpoint | None, start_epoch: int,
            steps_per_epoch: int) -> None:
    """Rank 0 loads ``found`` by variable name; every rank then gets rank 0's weights and optimizer state."""
    optimizer = model.optimizer
    if found:
        checkpoint.assign(model.weights, found.model_weights, "model", found.path)
        checkpoint.assign(optimizer.variables, found.optimizer_variables, "optimizer state", found.path)
    # Horovod: rank 0's state on every rank, so the ranks start (and stay) identical
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
    spec = models.spec(config.model)
    run_dir, ckpt_dir = Path(config.out), Path(config.out) / "checkpoints"

    # 1. join the job. Horovod: init first (it pins this rank's GPU and threads before TF runs anything)
    world = distributed.init(config.knobs, config.intra_op_threads, config.inter_op_threads, spec.cpu_cycle_time_ms)
    if not world.is_root:  # console output comes from rank 0 only
        tf.get_logger().setLevel("ERROR")
    tf.keras.utils.set_random_seed(config.seed + world.rank)

    # 2. data, and each rank's share of it
    mnist = data.load(config.data_dir, layout=spec.layout)
    schedule = schedule_for(config, len(mnist.train), world)

    # 3. the compiled model, restored from the checkpoint --resume names (read on rank 0, broadcast)
    found = checkpoint.resolve(config.resume, ckpt_dir, config.model) if world.is_root else None
    start_epoch, history = resume_point(distributed.broadcast_object(found.meta if found else None, "resume_meta"))
    model, dataset = model_and_input(config, schedule, world, mnist.train, start_epoch)
    restore(model, found, start_epoch, schedule.plan.steps_per_epoch)
    if found:
        print(f"resumed from {found.path} (epoch {start_epoch})")
    scorer = models.build(config.model)  # float32, no Horovod optimizer: saved, loads with plain tf.keras

    # 4. fit
    state = RunState(start_epoch, history)
    callbacks = fit_callbacks(config, schedule, world, mnist, scorer, stop, state, run_dir)
    startup_seconds = time.perf_counter() - t_start
    state.fit_start = time.perf_counter()
    if start_epoch < schedule.epochs and int(model.optimizer.iterations) < schedule.total_steps:
        model.fit(dataset, epochs=schedule.epochs, initial_epoch=start_epoch,  # rank 0's ProgressLine says each epoch
                  steps_per_epoch=schedule.plan.steps_per_epoch, callbacks=callbacks, verbose=0)
    fit_seconds = time.perf_counter() - state.fit_start

    # 5. evaluate: the test set, every image once over the ranks
    scorer.set_weights(model.get_weights())  # also when fit had nothing left to train
    test = None if state.diverged else evaluate.aggregated(scorer, mnist.test, world, "test")[0]
    # Horovod: averaged gradients keep every rank's weights bit-identical. If they differ, the
    # gradients were not averaged (e.g. Keras 3 as tf.keras): the run is reported as broken.
    digests = distributed.gather_object(distributed.weights_digest(model.get_weights()), "weights_digest")

    # 6. report (rank 0)
    metrics = run_metrics(config, schedule, world, state, test, digests, model, fit_seconds, startup_seconds)
    return report(metrics, test, config, schedule.recipe, world, scorer, run_dir, ckpt_dir)


def fit_callbacks(config: TrainConfig, schedule: Schedule, world: distributed.World, mnist: data.Mnist,
                  scorer: tf.keras.Model, stop: StopRequest, state: RunState,
                  run_dir: Path) -> list[tf.keras.callbacks.Callback]:
    """In the order Keras must run them at an epoch end (see mnist_hpc/callbacks.py)."""
    plan = schedule.plan
    hvd_callbacks = distributed.hvd_module().callbacks
    callbacks = [
        hvd_callbacks.BroadcastGlobalVariablesCallback(0),  # Horovod: rank 0's initial state everywhere
        hvd_callbacks.MetricAverageCallback(),  # Horovod: the logged loss/accuracy averaged over ranks
        ExactValidation(world, mnist.validation, plan, len(mnist.train), scorer, state),
    ]
    if world.is_root:  # console output comes from rank 0 only
        callbacks.append(ProgressLine(schedule.epochs, schedule.total_steps, plan.backward_passes, state))
    if config.target_accuracy:
        callbacks.append(TimeToTarget(config.target_accuracy, world, mnist.test, scorer, state, plan,
                                      len(mnist.train), schedule.eval_interval))
    if world.is_root:
        meta = {"model": config.model, "world_size": world.size, "precision": schedule.precision,  # auto resolved
                "config": json.loads(json.dumps(asdict(config), default=str))}
        callbacks.append(RootCheckpoint(run_dir / "checkpoints", meta, plan, config.keep_checkpoints, state))
    callbacks.append(StopAgreement(stop, world, state))
    if schedule.recipe.steps:
        callbacks.append(StepBudget(schedule.total_steps))
    if world.is_root:
        callbacks.append(TensorBoardLogs(run_dir / "tensorboard", profile_batch=0))
    return callbacks


def run_metrics(config: TrainConfig, schedule: Schedule, world: distributed.World, state: RunState,
                test: evaluate.Scores | None, digests: list[str], model: tf.keras.Model, fit_seconds: float,
                startup_seconds: float) -> RunMetrics:
    recipe = schedule.recipe
    trained = sum(h["images"] for h in state.history if h["epoch"] > state.start_epoch)
    status = "diverged" if state.diverged else "interrupted" if state.stopped_by_signal else "completed"
    return RunMetrics(
        model=config.model, recipe=config.recipe, precision=schedule.precision, world_size=world.size,
        status=status if len(set(digests)) == 1 else "ranks_disagree", rank_weight_digests=digests,
        epochs_completed=len(state.history), history=state.history,
        test_accuracy=test.accuracy if test else None, test_loss=test.loss if test else None,
        test_correct=test.correct if test else None, divergence=state.diverged,
        images_per_second=trained / fit_seconds if fit_seconds > 0 else 0.0,
        wall_seconds=fit_seconds, startup_seconds=startup_seconds,
        global_batch_size=schedule.plan.global_batch(world.size),
        steps=int(model.optimizer.iterations) // schedule.plan.backward_passes,
        recipe_settings=asdict(recipe), versions=stack.versions(), slurm_job_id=os.environ.get("SLURM_JOB_ID"),
        target_accuracy=config.target_accuracy, time_to_target=state.time_to_target,
        hosts=distributed.gather_hostnames(),
        horovod_environment={k: v for k, v in sorted(os.environ.items()) if k.startswith("HOROVOD_")},
        backward_passes_per_step=schedule.plan.backward_passes,
        learning_rate_scale=compiled.lr_scale(config, schedule.plan, world.size),
        test_evaluations=[e for h in state.history for e in h.get("test_evaluations", [])])


def report(metrics: RunMetrics, test: evaluate.Scores | None, config: TrainConfig, recipe: Recipe,
           world: distributed.World, scorer: tf.keras.Model, run_dir: Path, ckpt_dir: Path) -> int:
    """Rank 0 writes model.keras, saved_model/ and metrics.json and prints the outcome; every rank
    returns the exit code."""
    ranks_agree = metrics.status != "ranks_disagree"
    if world.is_root:
        if metrics.divergence:  # model.keras and the checkpoints keep the last good weights
            write_json_atomic(run_dir / "metrics.json", asdict(metrics))
            print(divergence_message(metrics.divergence, recipe, world.size, metrics.learning_rate_scale, ckpt_dir),
                  file=sys.stderr)
            return DIVERGED_EXIT
        save_model_atomic(scorer, run_dir / "model.keras")
        export.write(scorer, run_dir / export.NAME)  # the same weights for Keras 3 and plain TensorFlow
        write_json_atomic(run_dir / "metrics.json", asdict(metrics))
        print(f"{config.model}: test accuracy {metrics.test_accuracy:.4f} ({test.correct}/{test.count}) "
              f"on {world.size} rank(s) in {metrics.wall_seconds:.1f} s; run directory {run_dir.resolve()}")
        if not ranks_agree:
            print(f"error: the {world.size} ranks ended with different weights, so gradients were not averaged "
                  "(run 'mnist-hpc doctor': is tf.keras Keras 2?)", file=sys.stderr)
    if metrics.divergence:
        return DIVERGED_EXIT
    if not ranks_agree:
        return ExitCode.FAILED
    return INTERRUPTED_EXIT if metrics.status == "interrupted" else ExitCode.OK


def divergence_message(diverged: dict[str, Any], recipe: Recipe, world_size: int, lr_scale: float,
                       ckpt_dir: Path) -> str:
    """One line: where training diverged, the likely cause and the option to change."""
    peak = recipe.lr * lr_scale
    newest = checkpoint.candidates(ckpt_dir)
    kept = f"the last good checkpoint is {newest[0]}" if newest else "no checkpoint was written"
    return (f"error: training diverged in epoch {diverged['epoch']} (training loss {diverged['loss']}, validation loss "
            f"{diverged['val_loss']}): the learning rate is likely too high (--lr {recipe.lr:g}, {peak:g} at its peak "
            f"on {world_size} rank(s)); lower --lr or lengthen --warmup-epochs; {kept}")
