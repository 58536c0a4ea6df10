"""The model registry: one entry per model, and every fact about that model lives in its entry.

An entry holds the builder (a Keras 2 ``tf.keras`` model returning logits), the input layout the
data is read in, the precisions it may train in, the Horovod cycle time for its CPU ranks, its
training cost in FLOPs per image, the smoke run's budget and its recipes. Adding a model is one
builder and one :func:`register` call (tests/unit/test_models.py adds a tiny third one).

No TensorFlow at import time: the command line asks the registry for choices before TensorFlow's
seconds of import (builders import it when called).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from .distributed import DEFAULT_CPU_CYCLE_TIME_MS

INITS = ("tutorial", "he")  # CNN weight initialisations (see cnn())
ADAM_BETA1 = 0.9  # Keras's default beta_1, an Adam recipe's unless it sets its own (the speed records use less)
INPUT_SHAPES = {"flat": (784,), "image": (28, 28, 1)}  # per input layout, as data.load(layout=...) gives it


@dataclass(frozen=True)
class Recipe:
    """Optimiser, batch and budget. ``lr`` is per rank-batch; ``steps`` counts at world size 1."""

    optimizer: str  # "sgd" | "adam"
    lr: float
    batch_size: int  # per rank
    epochs: int | None = None
    steps: int | None = None  # reference budget at world size 1, divided among ranks
    schedule: str = "constant"  # "constant" | "cosine" (to 0 at the end)
    warmup_epochs: float = 1.0  # linear warm-up to the world-size-scaled rate (only with > 1 rank)
    augment: int = 0  # shift each training image by up to this many pixels (0: no augmentation)
    init: str = "tutorial"  # weight initialisation, one of INITS (models that have one choice ignore it)
    # how the rate grows with the global batch: "linear" (x global / batch_size, Goyal et al. 2017) or
    # "sqrt" (x its square root, the rule for Adam at large batches; benchmarks/RESULTS.md measured it)
    lr_rule: str = "linear"
    adam_beta1: float | None = None  # Adam's first-moment decay; None: ADAM_BETA1 (an SGD recipe has none)
    dropout: float | None = None  # the dropout rate of a model that has a dropout layer; None: the model's own


@dataclass(frozen=True)
class ModelSpec:
    name: str
    build: Callable[..., Any]  # build(dtype_policy, seed, init) -> tf.keras.Model returning logits
    layout: str  # "flat" (784,) or "image" (28, 28, 1): how data.load reads the images
    recipes: dict[str, Recipe]  # at least "default"; "seed" is the TensorFlow tutorial as published
    precisions: tuple[str, ...] = ("fp32",)  # what --precision may choose (auto picks among these)
    cpu_cycle_time_ms: float = DEFAULT_CPU_CYCLE_TIME_MS  # Horovod's cycle on CPU ranks
    mflop_per_image: float = 0.0  # forward + backward per training image (a multiply-add is 2 FLOP)
    smoke_budget: tuple[str, ...] = ("--epochs", "1")  # train options of `launchers/local.py smoke`
    parameters: int = 0  # trainable parameters (the scaling model's all-reduce payload)
    dropout: float | None = None  # its dropout layer's rate (the builder takes ``dropout=``); None: it has none

    @property
    def input_shape(self) -> tuple[int, ...]:
        return INPUT_SHAPES[self.layout]


REGISTRY: dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> ModelSpec:
    """Add (or replace) a model; its name becomes a ``--model`` choice everywhere."""
    if spec.layout not in INPUT_SHAPES:
        raise ValueError(f"model {spec.name}: layout {spec.layout!r} is not one of {', '.join(INPUT_SHAPES)}")
    if "default" not in spec.recipes:
        raise ValueError(f"model {spec.name}: a 'default' recipe is required")
    REGISTRY[spec.name] = spec
    return spec


def names() -> tuple[str, ...]:
    return tuple(REGISTRY)


def spec(name: str) -> ModelSpec:
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}: choose one of {', '.join(REGISTRY)}") from None


def layout_of(model) -> str:
    """The input layout of a saved model: its registry entry's, else the layout of its input shape."""
    if model.name in REGISTRY:
        return REGISTRY[model.name].layout
    shape = tuple(model.input_shape[1:])
    for layout, layout_shape in INPUT_SHAPES.items():
        if shape == layout_shape:
            return layout
    raise ValueError(f"model {model.name}: input shape {shape} is none of {', '.join(map(str, INPUT_SHAPES.values()))}")


def build(name: str, dtype: str = "float32", seed: int | None = None, init: str = "tutorial",
          dropout: float | None = None):
    """The model ``name`` as a Keras model; ``dtype`` is a Keras dtype policy; ``dropout`` (a model
    with a dropout layer only) replaces its own rate."""
    return spec(name).build(dtype, seed, init, **({} if dropout is None else {"dropout": dropout}))


# ------------------------------------------------------------------ the two classic networks
def simple(dtype: str = "float32", seed: int | None = None, init: str = "tutorial"):
    """Softmax regression 784 -> 10, zero-initialised (7,850 parameters), always float32."""
    import tensorflow as tf

    inputs = tf.keras.Input(INPUT_SHAPES["flat"], name="pixels")
    logits = tf.keras.layers.Dense(10, kernel_initializer="zeros", bias_initializer="zeros",
                                   dtype="float32", name="logits")(inputs)
    return tf.keras.Model(inputs, logits, name="simple")


def cnn(dtype: str = "float32", seed: int | None = None, init: str = "tutorial", dropout: float = 0.5):
    """Deep MNIST: conv5x5/32, pool, conv5x5/64, pool, fc1024, dropout, fc10 (3,274,634 parameters).

    ``init="tutorial"``: weights truncated-normal(stddev 0.1), biases 0.1, as in the TensorFlow
    tutorial; ``"he"``: He-normal weights scaled to each layer's fan-in, biases 0 (trains faster).
    ``dtype`` may be a mixed-precision policy; the logits layer always computes in float32.
    """
    import tensorflow as tf

    if init not in INITS:
        raise ValueError(f"unknown init {init!r}: choose one of {', '.join(INITS)}")

    def weights(offset: int) -> tf.keras.initializers.Initializer:
        layer_seed = None if seed is None else seed + offset
        if init == "he":
            return tf.keras.initializers.HeNormal(seed=layer_seed)
        return tf.keras.initializers.TruncatedNormal(stddev=0.1, seed=layer_seed)

    bias = tf.keras.initializers.Constant(0.1 if init == "tutorial" else 0.0)
    layers = tf.keras.layers
    inputs = tf.keras.Input(INPUT_SHAPES["image"], name="image")
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


register(ModelSpec(
    "simple", simple, layout="flat", precisions=("fp32",),
    cpu_cycle_time_ms=0.2,  # its steps take well under 1 ms (benchmarks/RESULTS.md)
    mflop_per_image=0.047, smoke_budget=("--epochs", "3"), parameters=7_850,
    recipes={
        "seed": Recipe("sgd", 0.5, 100, steps=1_000),  # the TensorFlow tutorial, as published
        "default": Recipe("sgd", 1.0, 256, epochs=30, schedule="cosine"),  # tuned for time to accuracy
    }))
register(ModelSpec(
    "cnn", cnn, layout="image", precisions=("fp32", "bf16", "fp16"),
    cpu_cycle_time_ms=DEFAULT_CPU_CYCLE_TIME_MS,
    mflop_per_image=82.0, smoke_budget=("--steps", "600"), parameters=3_274_634, dropout=0.5,
    recipes={
        "seed": Recipe("adam", 1e-4, 50, steps=20_000),
        "default": Recipe("adam", 1e-3, 128, epochs=15, schedule="cosine", warmup_epochs=0.25, augment=2,
                          init="he"),
        # for global batches of thousands (many GPUs, or accumulation): the rate grows with the square root
        # of the global batch after a 3-epoch warm-up, and the cosine ends at 12 epochs. At global batch
        # 4,096 it reached 99.25% in 6.6 epochs where the default recipe had not in 45 (RESULTS.md)
        "large-batch": Recipe("adam", 1e-3, 128, epochs=12, schedule="cosine", warmup_epochs=3.0, augment=2,
                              init="he", lr_rule="sqrt"),
    }))
