#!/usr/bin/env python3
"""The bar of issue 7: plain tf.keras in one process (no Horovod, no mnist-hpc training code).

    python benchmarks/plain_keras.py --model cnn --precision bf16 --epochs 8 --out plain.json

The recipes the issue measured: CNN batch 128, Adam 1e-3 with cosine decay over the run;
softmax batch 256, SGD 1.0 with cosine decay, 30 epochs. Trains on all 60,000 training images
(as ``tf.keras.datasets.mnist`` would) and prints the test accuracy and time of every epoch.
Only the IDX reader and the network definitions come from mnist_hpc.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np

from mnist_hpc import cli, data, models  # first: makes tf.keras Keras 2 (mnist_hpc/stack.py)
from mnist_hpc.exitcode import ExitCode

RECIPES = {"cnn": ("adam", 1e-3, 128, 8), "simple": ("sgd", 1.0, 256, 30)}  # optimizer, lr, batch, epochs


def build_parser() -> cli.Parser:
    parser = cli.Parser(prog="plain_keras.py", description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=RECIPES, default="cnn", help="the network (default: %(default)s)")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                        help="Keras mixed-precision policy (default: %(default)s)")
    parser.add_argument("--epochs", type=cli.positive_int, help="passes over the 60,000 images (default: the recipe's)")
    parser.add_argument("--data-dir", help="MNIST folder (default: $MNIST_HPC_DATA or ~/.cache/mnist_hpc/mnist)")
    parser.add_argument("--out", help="write the per-epoch results as JSON here")
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except cli.UsageError as err:
        cli.print_error(err)
        return ExitCode.USAGE
    import tensorflow as tf  # after parsing: a bad option costs no TensorFlow start-up

    optimizer_name, lr, batch, epochs = RECIPES[args.model]
    epochs = args.epochs or epochs

    raw = data.read_raw(args.data_dir)
    shape = (-1, *models.spec(args.model).input_shape)
    x_train = (raw["x_train"].reshape(shape) / 255.0).astype(np.float32)
    x_test = (raw["x_test"].reshape(shape) / 255.0).astype(np.float32)
    y_train, y_test = raw["y_train"].astype(np.int32), raw["y_test"].astype(np.int32)

    tf.keras.utils.set_random_seed(0)
    policy = {"fp32": "float32", "bf16": "mixed_bfloat16"}[args.precision]
    model = models.build(args.model, policy, seed=0)
    steps = epochs * int(np.ceil(len(x_train) / batch))
    schedule = tf.keras.optimizers.schedules.CosineDecay(lr, steps)
    optimizer = (tf.keras.optimizers.Adam if optimizer_name == "adam" else tf.keras.optimizers.SGD)(schedule)
    model.compile(optimizer, tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    train = tf.data.Dataset.from_tensor_slices((x_train, y_train)).shuffle(len(x_train), seed=0)
    train = train.batch(batch).prefetch(tf.data.AUTOTUNE)

    history: list[dict] = []

    class EpochLog(tf.keras.callbacks.Callback):
        """Times each epoch, then scores the test set outside the timed part."""

        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            seconds = time.perf_counter() - self.start
            _, accuracy = self.model.evaluate(x_test, y_test, batch_size=1000, verbose=0)
            history.append({"epoch": epoch + 1, "seconds": seconds, "images_per_second": len(x_train) / seconds,
                            "test_accuracy": accuracy})
            print(f"epoch {epoch + 1}: {seconds:.1f} s, {len(x_train) / seconds:.0f} img/s, test {accuracy:.4f}",
                  flush=True)

    model.fit(train, epochs=epochs, verbose=0, callbacks=[EpochLog()])
    result = {"model": args.model, "precision": args.precision, "recipe": [optimizer_name, lr, batch, epochs],
              "history": history, "training_seconds": sum(h["seconds"] for h in history),
              "median_images_per_second": float(np.median([h["images_per_second"] for h in history[1:] or history]))}
    if args.out:
        with open(args.out, "w") as out:
            json.dump(result, out, indent=2)
    return ExitCode.OK


if __name__ == "__main__":
    sys.exit(main())
