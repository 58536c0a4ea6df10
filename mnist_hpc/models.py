"""The two classic TensorFlow MNIST networks, as Keras 2 (``tf.keras``) models returning logits."""

from __future__ import annotations

import tensorflow as tf

from .config import INITS, MODELS

INPUT_SHAPES: dict[str, tuple[int, ...]] = {"simple": (784,), "cnn": (28, 28, 1)}


def simple() -> tf.keras.Model:
    """Softmax regression 784 -> 10, zero-initialised (7,850 parameters), always float32."""
    inputs = tf.keras.Input(INPUT_SHAPES["simple"], name="pixels")
    logits = tf.keras.layers.Dense(10, kernel_initializer="zeros", bias_initializer="zeros",
                                   dtype="float32", name="logits")(inputs)
    return tf.keras.Model(inputs, logits, name="simple")


def cnn(dtype: str | tf.keras.mixed_precision.Policy = "float32", seed: int | None = None,
        dropout: float = 0.5, init: str = "tutorial") -> tf.keras.Model:
    """Deep MNIST: conv5x5/32, pool, conv5x5/64, pool, fc1024, dropout, fc10 (3,274,634 parameters).

    ``init="tutorial"``: weights truncated-normal(stddev 0.1), biases 0.1, as in the TensorFlow
    tutorial; ``"he"``: He-normal weights scaled to each layer's fan-in, biases 0 (trains faster).
    ``dtype`` may be a mixed-precision policy; the logits layer always computes in float32.
    """
    if init not in INITS:
        raise ValueError(f"unknown init {init!r}: choose one of {', '.join(INITS)}")

    def weights(offset: int) -> tf.keras.initializers.Initializer:
        layer_seed = None if seed is None else seed + offset
        if init == "he":
            return tf.keras.initializers.HeNormal(seed=layer_seed)
        return tf.keras.initializers.TruncatedNormal(stddev=0.1, seed=layer_seed)

    bias = tf.keras.initializers.Constant(0.1 if init == "tutorial" else 0.0)
    layers = tf.keras.layers
    inputs = tf.keras.Input(INPUT_SHAPES["cnn"], name="image")
    x = layers.Conv2D(32, 5, padding="same", activation="relu", kernel_initializer=weights(1),
                      bias_initializer=bias, dtype=dtype, name="conv1")(inputs)
    x = layers.MaxPool2D(2, dtype=dtype, name="pool1")(x)
    x = layers.Conv2D(64, 5, padding="same", activation="relu", kernel_initializer=weights(2),
                      bias_initializer=bias, dtype=dtype, name="conv2")(x)
    x = layers.MaxPool2D(2, dtype=dtype, name="pool2")(x)
    x = layers.Flatten(dtype=dtype, name="flatten")(x)
    x = layers.Dense(1024, activation="relu", kernel_initializer=weights(3), bias_initializer=bias,
                     dtype=dtype, name="fc1")(x)
    x = layers.Dropout(dropout, dtype=dtype, name="dropout")(x)
    logits = layers.Dense(10, kernel_initializer=weights(4), bias_initializer=bias,
                          dtype="float32", name="logits")(x)
    return tf.keras.Model(inputs, logits, name="cnn")


def build(name: str, dtype: str = "float32", seed: int | None = None, init: str = "tutorial") -> tf.keras.Model:
    """Build ``simple`` or ``cnn``; ``dtype`` (a Keras dtype policy) and ``init`` apply to the CNN."""
    if name == "simple":
        return simple()
    if name == "cnn":
        return cnn(dtype, seed=seed, init=init)
    raise ValueError(f"unknown model {name!r}: choose one of {', '.join(MODELS)}")
