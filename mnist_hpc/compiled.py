"""The compiled training model: learning-rate schedule, optimizer, Horovod wrapper, loss scaling.

:func:`compile_model` is the one place a trainable model is made: ``train`` fits it and ``bench
throughput`` times it, so the benchmark measures the graph training runs.
"""

from __future__ import annotations

import tensorflow as tf

from . import distributed, models
from .config import DTYPE_POLICIES, TrainConfig
from .pipeline import ShardPlan


def lr_scale(config: TrainConfig, plan: ShardPlan, world_size: int) -> float:
    """The learning rate's multiplier: the global batch (ranks x batch x K) over the batch the recipe's
    rate was set for (Goyal et al. 2017's linear scaling rule), or its square root for a recipe whose
    ``lr_rule`` is "sqrt"; 1 with --no-scale-lr."""
    recipe = models.spec(config.model).recipes[config.recipe]
    ratio = plan.global_batch(world_size) / recipe.batch_size
    if not config.scale_lr:
        return 1.0
    return ratio ** 0.5 if recipe.lr_rule == "sqrt" else ratio


def learning_rate_schedule(base_lr: float, scale: float, warmup_steps: int, total_steps: int,
                           schedule: str) -> tf.keras.optimizers.schedules.LearningRateSchedule:
    """Keras's CosineDecay: ``base_lr`` times ``scale`` after a linear warm-up from ``base_lr``; no
    warm-up when the scaled rate is not above the base. ``constant`` is the same schedule with
    ``alpha=1`` (the decay's floor is the peak itself). Steps count optimizer.iterations."""
    peak = base_lr * scale
    warmup = warmup_steps if scale > 1 else 0
    alpha = 0.0 if schedule == "cosine" else 1.0
    if warmup:  # Horovod's DistributedOptimizer re-creates the optimizer from its config: Keras's own class round-trips
        return tf.keras.optimizers.schedules.CosineDecay(base_lr, max(total_steps - warmup, 1), alpha=alpha,
                                                         warmup_target=peak, warmup_steps=warmup)
    return tf.keras.optimizers.schedules.CosineDecay(peak, max(total_steps, 1), alpha=alpha)


def make_optimizer(recipe: models.Recipe, lr_schedule) -> tf.keras.optimizers.Optimizer:
    if recipe.optimizer == "sgd":
        return tf.keras.optimizers.SGD(lr_schedule)
    beta_1 = models.ADAM_BETA1 if recipe.adam_beta1 is None else recipe.adam_beta1
    return tf.keras.optimizers.Adam(lr_schedule, beta_1=beta_1)


def compile_model(config: TrainConfig, recipe: models.Recipe, precision: str, world: distributed.World,
                  plan: ShardPlan, total_steps: int, steps_per_execution: int | None = None,
                  horovod: bool = True) -> tf.keras.Model:
    """The model of ``config.model`` in ``precision``, compiled with the Horovod-wrapped optimizer.

    ``steps_per_execution`` defaults to a whole epoch per graph call (no Python between steps); a
    step budget needs a check after each update (K backward passes), and the benchmark a timestamp after each.
    ``horovod=False`` leaves the optimizer plain (``bench --compare-plain``: what Horovod costs).
    """
    hvd = distributed.hvd_module()
    model = models.build(config.model, DTYPE_POLICIES[precision], seed=config.seed, init=recipe.init,
                         dropout=recipe.dropout)
    # optimizer.iterations counts backward passes (Horovod's accumulation counts each), so the schedule
    # is in passes: with K > 1 it is sampled at the last pass of each update
    lr = learning_rate_schedule(recipe.lr, lr_scale(config, plan, world.size),
                                int(recipe.warmup_epochs * plan.steps_per_epoch), total_steps, recipe.schedule)
    optimizer = make_optimizer(recipe, lr)
    if horovod:
        # Horovod: gradients are averaged over the ranks in the all-reduce, optionally sent as fp16;
        # with K backward passes per step, K local gradients are summed, all-reduced once and divided by K
        compression = hvd.Compression.fp16 if config.fp16_allreduce else hvd.Compression.none
        optimizer = hvd.DistributedOptimizer(optimizer, compression=compression,
                                             backward_passes_per_step=plan.backward_passes,
                                             average_aggregated_gradients=True)
    if precision == "fp16":  # float16 gradients underflow without dynamic loss scaling (bf16 needs none)
        optimizer = tf.keras.mixed_precision.LossScaleOptimizer(optimizer)
    if steps_per_execution is None:
        steps_per_execution = plan.backward_passes if recipe.steps else plan.steps_per_epoch
    model.compile(optimizer=optimizer, loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  weighted_metrics=["accuracy"], steps_per_execution=steps_per_execution)
    model.optimizer.build(model.trainable_variables)
    return model
