"""The compiled training model: learning-rate schedule, optimizer, Horovod wrapper, loss scaling.

:func:`compile_model` is the one place a trainable model is made: ``train`` fits it and ``bench
throughput`` times it, so the benchmark measures the graph training runs.
"""

from __future__ import annotations

import tensorflow as tf

from . import distributed, models
from .config import DTYPE_POLICIES, TrainConfig
from .pipeline import ShardPlan


def learning_rate_schedule(base_lr: float, world_size: int, scale: bool, warmup_steps: int, total_steps: int,
                           schedule: str) -> tf.keras.optimizers.schedules.LearningRateSchedule:
    """Keras's CosineDecay: scaled by world size (Goyal et al. 2017) after a linear warm-up from
    ``base_lr``; without scaling, no warm-up. ``constant`` is the same schedule with ``alpha=1``
    (the decay's floor is the peak itself)."""
    peak = base_lr * (world_size if scale else 1)
    warmup = warmup_steps if scale and world_size > 1 else 0
    alpha = 0.0 if schedule == "cosine" else 1.0
    if warmup:  # Horovod's DistributedOptimizer re-creates the optimizer from its config: Keras's own class round-trips
        return tf.keras.optimizers.schedules.CosineDecay(base_lr, max(total_steps - warmup, 1), alpha=alpha,
                                                         warmup_target=peak, warmup_steps=warmup)
    return tf.keras.optimizers.schedules.CosineDecay(peak, max(total_steps, 1), alpha=alpha)


def make_optimizer(recipe: models.Recipe, lr_schedule) -> tf.keras.optimizers.Optimizer:
    if recipe.optimizer == "sgd":
        return tf.keras.optimizers.SGD(lr_schedule)
    return tf.keras.optimizers.Adam(lr_schedule)


def compile_model(config: TrainConfig, recipe: models.Recipe, precision: str, world: distributed.World,
                  plan: ShardPlan, total_steps: int, steps_per_execution: int | None = None,
                  horovod: bool = True) -> tf.keras.Model:
    """The model of ``config.model`` in ``precision``, compiled with the Horovod-wrapped optimizer.

    ``steps_per_execution`` defaults to a whole epoch per graph call (no Python between steps); a
    step budget needs a check after each step, and the benchmark a timestamp after each.
    ``horovod=False`` leaves the optimizer plain (``bench --compare-plain``: what Horovod costs).
    """
    hvd = distributed.hvd_module()
    model = models.build(config.model, DTYPE_POLICIES[precision], seed=config.seed, init=recipe.init)
    lr = learning_rate_schedule(recipe.lr, world.size, config.scale_lr,
                                int(recipe.warmup_epochs * plan.steps_per_epoch), total_steps, recipe.schedule)
    # Horovod: gradients are averaged over the ranks in the all-reduce, optionally sent as fp16
    optimizer = make_optimizer(recipe, lr)
    if horovod:
        compression = hvd.Compression.fp16 if config.fp16_allreduce else hvd.Compression.none
        optimizer = hvd.DistributedOptimizer(optimizer, compression=compression)
    if precision == "fp16":  # float16 gradients underflow without dynamic loss scaling (bf16 needs none)
        optimizer = tf.keras.mixed_precision.LossScaleOptimizer(optimizer)
    if steps_per_execution is None:
        steps_per_execution = 1 if recipe.steps else plan.steps_per_epoch
    model.compile(optimizer=optimizer, loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  weighted_metrics=["accuracy"], steps_per_execution=steps_per_execution)
    model.optimizer.build(model.trainable_variables)
    return model
