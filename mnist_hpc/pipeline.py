"""The sharded training input: shard plan, step budget, epoch batches, shift augmentation, tf.data.

Every rank runs the same number of steps per epoch (short shards are padded with weight-0 repeats),
so the all-reduces of all ranks line up. Training and ``bench throughput`` both read through
:func:`training_dataset`: the benchmark times the input training uses.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, replace

import numpy as np
import tensorflow as tf

from . import data, distributed, models


@dataclass(frozen=True)
class ShardPlan:
    """A rank's epoch: ``steps_per_epoch`` batches (backward passes) of ``batch_size``, a whole
    number of optimizer updates of ``backward_passes`` batches each."""

    steps_per_epoch: int  # batches (backward passes) per rank and epoch: what optimizer.iterations counts
    batch_size: int
    backward_passes: int = 1  # K: batches accumulated into one update (--backward-passes-per-step)

    @property
    def updates_per_epoch(self) -> int:
        return self.steps_per_epoch // self.backward_passes

    def global_batch(self, world_size: int) -> int:
        """Images per optimizer update over all ranks: ranks x batch x K."""
        return world_size * self.batch_size * self.backward_passes


def shard_plan(n_items: int, world_size: int, batch_size: int, backward_passes: int = 1) -> ShardPlan:
    """Every rank runs the same number of batches: enough for the largest shard, rounded up to whole
    updates of ``backward_passes`` batches (the extra batches are weight-0 padding)."""
    batches = math.ceil(math.ceil(n_items / world_size) / batch_size)
    return ShardPlan(backward_passes * math.ceil(batches / backward_passes), batch_size, backward_passes)


def step_budget(recipe: models.Recipe, plan: ShardPlan, world_size: int) -> tuple[int, int]:
    """(epochs, backward passes per rank). A step budget counts updates at world size 1 without
    accumulation; N ranks accumulating K batches share it: ceil(steps / (N K)) updates of K passes."""
    if recipe.steps:
        updates = math.ceil(recipe.steps / (world_size * plan.backward_passes))
        total_steps = updates * plan.backward_passes
        return math.ceil(total_steps / plan.steps_per_epoch), total_steps
    return recipe.epochs, recipe.epochs * plan.steps_per_epoch


def evaluation_interval(plan: ShardPlan, fraction: float) -> int:
    """Backward passes between two mid-epoch test evaluations: ``fraction`` of an epoch in whole
    updates (at least one), so every evaluation sees the weights of a finished update."""
    return max(1, round(fraction * plan.updates_per_epoch)) * plan.backward_passes


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


def fit_batch_to_shard(recipe: models.Recipe, n_items: int, world: distributed.World,
                       backward_passes: int = 1) -> models.Recipe:
    """A batch whose K accumulated passes exceed a rank's shard is lowered to ceil(shard / K) (else one
    giant update per epoch, mostly padding); rank 0 says so."""
    shard_size = math.ceil(n_items / world.size)
    if recipe.batch_size * backward_passes <= shard_size:
        return recipe
    lowered = math.ceil(shard_size / backward_passes)
    if world.is_root:
        times = f" x --backward-passes-per-step {backward_passes}" if backward_passes > 1 else ""
        print(f"warning: --batch-size {recipe.batch_size}{times} is more than each rank's shard of {shard_size} "
              f"images on {world.size} ranks: using {lowered}", file=sys.stderr)
    return replace(recipe, batch_size=lowered)
