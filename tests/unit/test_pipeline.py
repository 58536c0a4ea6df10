"""The training input pipeline: shard batches, per-image shift augmentation, determinism."""

import numpy as np
import tensorflow as tf

from mnist_hpc import data, distributed, pipeline


def test_random_shift_moves_each_image_by_its_own_offset():
    images = np.zeros((64, 28, 28, 1), np.float32)
    images[:, 14, 14, 0] = 1.0  # one bright pixel in the middle of every image
    shifted = pipeline.random_shift(tf.constant(images), 2, tf.constant([7, 3], tf.int64)).numpy()
    assert shifted.shape == images.shape
    positions = [tuple(np.argwhere(s[..., 0] == 1.0)[0]) for s in shifted]
    assert all(np.sum(s) == 1.0 for s in shifted)  # moved, not lost or blurred
    assert all(12 <= r <= 16 and 12 <= c <= 16 for r, c in positions)  # at most 2 pixels either way
    assert len(set(positions)) > 10  # per image, not one shift for the batch
    again = pipeline.random_shift(tf.constant(images), 2, tf.constant([7, 3], tf.int64)).numpy()
    np.testing.assert_array_equal(shifted, again)  # stateless: same seed, same shifts


def test_random_shift_fills_with_zeros_and_keeps_the_flat_layout():
    images = np.ones((8, 784), np.float32)
    shifted = pipeline.random_shift(tf.constant(images), 3, tf.constant([1, 2], tf.int64)).numpy()
    assert shifted.shape == (8, 784)
    kept = shifted.reshape(8, 28, 28).sum(axis=(1, 2))
    assert np.all(kept >= 25 * 25) and np.any(kept < 28 * 28)  # border pixels shifted out became 0


def test_augmented_pipeline_is_deterministic_and_resumes_at_the_same_step():
    rng = np.random.default_rng(0)
    split = data.Split(rng.random((300, 28, 28, 1), dtype=np.float32), rng.integers(0, 10, 300).astype(np.int32))
    world = distributed.World(rank=1, size=2, local_rank=1, local_size=2)
    plan = pipeline.shard_plan(len(split), world.size, 32)

    def batches(first_epoch: int):
        dataset = pipeline.training_dataset(split, world, plan, first_epoch, 3, seed=5, augment=2)
        return [(x.numpy(), y.numpy(), w.numpy()) for x, y, w in dataset]

    full, resumed = batches(0), batches(1)
    assert len(full) == 3 * plan.steps_per_epoch
    for (x1, y1, w1), (x2, y2, w2) in zip(full[plan.steps_per_epoch:], resumed):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)
    plain = [x.numpy() for x, _, _ in pipeline.training_dataset(split, world, plan, 0, 1, seed=5)]
    assert not np.array_equal(plain[0], full[0][0])  # augment=2 changed the images
    assert plain[0].sum() > full[0][0].sum()  # shifting only ever drops border mass
