#!/usr/bin/env python3
"""The softmax recipe search behind benchmarks/results/recipe-search/softmax-validation.txt.

    python benchmarks/softmax_search.py '[{}, {"epochs": 60}, {"wd": 1e-4}]'

One process, plain tf.keras, mnist_hpc's softmax model, trained on the 55,000 training images;
prints validation accuracy (what choices are made on) and test accuracy (reported only).
"""

from __future__ import annotations

import ast
import sys
import time

import numpy as np

from mnist_hpc import data, models, pipeline  # first: makes tf.keras Keras 2 (mnist_hpc/stack.py)

import tensorflow as tf


def run(mnist: data.Mnist, lr: float = 1.0, batch: int = 256, epochs: int = 30, wd: float = 0.0,
        momentum: float = 0.0, augment: int = 0, seed: int = 0, full: bool = False, ls: float = 0.0,
        std: bool = False) -> None:
    """SGD with cosine decay; wd: decoupled weight decay, full: train on train + validation,
    ls: label smoothing, std: per-pixel standardised inputs, augment: random shifts (pixels)."""
    tf.keras.utils.set_random_seed(seed)
    xs, ys = mnist.train.images, mnist.train.labels
    if full:
        xs, ys = np.concatenate([mnist.validation.images, xs]), np.concatenate([mnist.validation.labels, ys])
    mean, scale = (xs.mean(0), xs.std(0) + 0.1) if std else (0.0, 1.0)

    def prepare(images: np.ndarray) -> np.ndarray:
        return (images - mean) / scale

    model = models.build("simple")
    schedule = tf.keras.optimizers.schedules.CosineDecay(lr, epochs * int(np.ceil(len(xs) / batch)))
    optimizer = tf.keras.optimizers.SGD(schedule, momentum=momentum, weight_decay=wd or None)
    model.compile(optimizer, tf.keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=ls),
                  metrics=["accuracy"], steps_per_execution=200)
    dataset = tf.data.Dataset.from_tensor_slices((prepare(xs), tf.one_hot(ys, 10))).shuffle(len(xs), seed=seed)
    dataset = dataset.batch(batch)
    if augment:
        dataset = dataset.enumerate().map(lambda step, b: (
            pipeline.random_shift(b[0], augment, tf.stack([tf.constant(seed, tf.int64), step])), b[1]))
    start = time.perf_counter()
    model.fit(dataset.prefetch(2), epochs=epochs, verbose=0)
    seconds = time.perf_counter() - start
    scores = [model.evaluate(prepare(split.images), tf.one_hot(split.labels, 10), batch_size=len(split), verbose=0)[1]
              for split in (mnist.validation, mnist.test)]
    print(f"lr={lr} batch={batch} epochs={epochs} wd={wd} mom={momentum} aug={augment} full={full} ls={ls} "
          f"std={std}: val {scores[0]:.4f} test {scores[1]:.4f} ({seconds:.1f} s)", flush=True)


if __name__ == "__main__":
    tf.config.threading.set_intra_op_parallelism_threads(1)
    mnist = data.load(layout="flat")
    for settings in ast.literal_eval(sys.argv[1]) if len(sys.argv) > 1 else [{}]:
        run(mnist, **settings)
