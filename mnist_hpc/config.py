"""The description of a training run: its settings, their options and the choices they allow (no TensorFlow).

Each model's facts (recipes, precisions, layout, costs) are in its models.REGISTRY entry."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field, replace

from . import data, models
from .distributed import HorovodKnobs
from .exitcode import ExitCode
from .models import Recipe
from .options import (accuracy, bounded, learning_rate, non_negative_float, non_negative_int, option, positive_int)

PRECISIONS = ("auto", "fp32", "bf16", "fp16")  # what each model allows: models.ModelSpec.precisions
DTYPE_POLICIES = {"fp32": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}
RESUME_MODES = ("auto", "never")
MAX_SHIFT = 8  # pixels: the largest --augment shift (images are 28x28)
INTERRUPTED_EXIT = ExitCode.INTERRUPTED  # stopped by a signal after a checkpoint; requeue to resume
DIVERGED_EXIT = ExitCode.FAILED  # a failed run, not to be requeued: the same settings would diverge again


def recipe_names() -> tuple[str, ...]:
    return tuple(dict.fromkeys(name for spec in models.REGISTRY.values() for name in spec.recipes))


def shift_pixels(text: str) -> int:
    value = non_negative_int(text)
    if value > MAX_SHIFT:
        raise argparse.ArgumentTypeError(f"{text!r} is not a shift in pixels from 0 to {MAX_SHIFT}")
    return value


dropout_rate = bounded(float, 0.0, True, "a dropout rate from 0 to 0.95", maximum=0.95)
adam_beta = bounded(float, 0.0, False, "a decay rate above 0 and at most 0.999", maximum=0.999)
batch_size = bounded(int, 1, True, f"a batch size from 1 to {data.TRAIN_SIZE} (the training images)",
                     maximum=data.TRAIN_SIZE)
epoch_fraction = bounded(float, 0.0, False, "a fraction of an epoch in (0, 1]", maximum=1.0)
backward_passes = bounded(int, 1, True, f"a positive integer up to {data.TRAIN_SIZE} (batches per update)",
                          maximum=data.TRAIN_SIZE)


@dataclass(frozen=True)
class TrainConfig:
    """A training run. Each field is also a ``train`` option and a ``--config`` key (options.py);
    ``None`` means the recipe's value (see :meth:`resolved_recipe`)."""

    model: str = option("cnn", "the network (the model registry, mnist_hpc/models.py)", choices=models.names)
    recipe: str = option("default", "default: tuned for time to accuracy; seed: the TensorFlow tutorial; "
                         "large-batch (cnn): for global batches of thousands", choices=recipe_names)
    epochs: int | None = option(None, "passes over the 55,000 training images (default: the recipe's)",
                                type=positive_int, group="budget")
    steps: int | None = option(None, "optimizer steps at world size 1; N ranks run ceil(steps / N) each",
                               type=positive_int, group="budget")
    batch_size: int | None = option(None, "per-rank batch size (default: the recipe's); more than a rank's shard "
                                    "is lowered to it", type=batch_size)
    lr: float | None = option(None, "base learning rate at the recipe's batch, scaled by global batch / recipe batch "
                              "(large-batch: by its square root) (default: the recipe's)", type=learning_rate)
    out: str | None = option(None, "run directory; name an existing one to resume it (default: a new "
                             "runs/MODEL/DATE-TIME, or runs/MODEL/slurm-JOBID inside a SLURM job)", type=str)
    resume: str = option("auto", "auto: the newest valid checkpoint in --out, if any; never: only into a directory "
                         "that holds no run; or a checkpoint path", type=str)
    data_dir: str | None = option(None, f"MNIST folder (default: ${data.ENV_VAR} or {data.DEFAULT_DIR})", type=str)
    seed: int = option(42, "random seed (weights, shuffling, shifts)", type=non_negative_int)
    precision: str = option("auto", "auto: bf16 where the CPU/GPU supports it, fp16 on older GPUs, else fp32",
                            choices=PRECISIONS)
    scale_lr: bool = option(True, "do not multiply the learning rate by global batch / the recipe's batch",
                            flag="--no-scale-lr")
    warmup_epochs: float | None = option(None, "linear learning-rate warm-up to the scaled rate, in epochs "
                                         "(default: the recipe's)", type=non_negative_float)
    augment: int | None = option(None, "shift training images by up to this many pixels, 0 for none "
                                 "(default: the recipe's)", type=shift_pixels)
    init: str | None = option(None, "CNN weight initialisation (default: the recipe's)", choices=models.INITS)
    dropout: float | None = option(None, "dropout rate of a model's dropout layer (the CNN's: 0.5, as in the "
                                   "tutorial) (default: the recipe's)", type=dropout_rate)
    adam_beta1: float | None = option(None, "Adam's first-moment decay, beta_1, of an Adam recipe (default: the "
                                      "recipe's, 0.9)", type=adam_beta)
    fp16_allreduce: bool = option(False, "compress gradients to fp16 for the all-reduce")
    keep_checkpoints: int = option(3, "how many of the newest epoch checkpoints to keep", type=positive_int)
    intra_op_threads: int | None = option(None, "intra-op threads per rank (default: the CPUs the rank owns)",
                                          type=positive_int, flag="--threads")
    inter_op_threads: int = option(2, "inter-op threads per rank", type=positive_int)
    knobs: HorovodKnobs = field(default_factory=HorovodKnobs)
    target_accuracy: float | None = option(None, "time-to-accuracy: evaluate the test set each epoch and stop once "
                                           "its aggregated accuracy reaches this", type=accuracy)
    eval_every: float | None = option(None, "with --target-accuracy: also evaluate the test set every FRACTION of an "
                                      "epoch (rounded to whole optimizer updates), e.g. 0.25", type=epoch_fraction)
    backward_passes_per_step: int = option(1, "gradient accumulation: K local batches per all-reduce and optimizer "
                                           "update; the global batch is ranks x batch x K", type=backward_passes)

    def resolved_recipe(self) -> Recipe:
        base = models.spec(self.model).recipes[self.recipe]
        budget = {"epochs": self.epochs, "steps": None} if self.epochs else {}
        if self.steps:
            budget = {"epochs": None, "steps": self.steps}
        overrides = {k: v for k, v in {"batch_size": self.batch_size, "lr": self.lr, "init": self.init,
                                         "warmup_epochs": self.warmup_epochs, "augment": self.augment,
                                         "dropout": self.dropout, "adam_beta1": self.adam_beta1}.items()
                     if v is not None}
        model_dropout = models.spec(self.model).dropout
        if base.dropout is None and model_dropout is not None:  # the model's own rate, written out
            base = replace(base, dropout=model_dropout)
        if base.adam_beta1 is None and base.optimizer == "adam":  # Keras's beta_1, written out (SGD has none)
            base = replace(base, adam_beta1=models.ADAM_BETA1)
        return replace(base, **budget, **overrides)


# what `bench throughput` takes of a training run's settings (the rest are train's alone)
BENCH_SETTINGS = ("model", "recipe", "batch_size", "precision", "data_dir", "seed", "augment", "init", "fp16_allreduce",
                  "intra_op_threads", "inter_op_threads", "knobs", "backward_passes_per_step")


@dataclass(frozen=True)
class BenchConfig:
    """``bench throughput``: ``run`` is the training it times (train's own settings and defaults:
    the model's recipe, one update per graph call), the other fields how it is timed."""

    run: TrainConfig = field(default_factory=TrainConfig)
    synthetic: bool = option(False, "random images instead of MNIST")
    warmup_steps: int = option(10, "updates run before timing starts", type=positive_int)
    windows: int = option(5, "timed windows; the median is reported", type=positive_int)
    window_steps: int = option(20, "updates per window", type=positive_int)
    compare_plain: bool = option(False, "also time plain tf.keras (no Horovod) in the same process; reports the ratio")

    @property
    def steps(self) -> int:
        return self.warmup_steps + self.windows * self.window_steps

    @property
    def batch_size(self) -> int:  # per rank: --batch-size, else the recipe's
        return self.run.resolved_recipe().batch_size

    @property
    def backward_passes(self) -> int:
        return self.run.backward_passes_per_step

    def train_config(self, world_size: int) -> TrainConfig:
        """The training run this benchmark times, with a budget of ``steps`` updates per rank (one
        update per graph call, timestamped)."""
        return replace(self.run, epochs=None, steps=self.steps * world_size * self.backward_passes)

    def summary(self) -> dict:
        """The settings a result file records (flat, as bench reports read them)."""
        run = self.run
        return {"model": run.model, "recipe": run.recipe, "batch_size": self.batch_size, "precision": run.precision,
                "backward_passes": self.backward_passes, "fp16_allreduce": run.fp16_allreduce, "seed": run.seed,
                "data_dir": run.data_dir, "intra_op_threads": run.intra_op_threads, "synthetic": self.synthetic,
                "warmup_steps": self.warmup_steps, "windows": self.windows, "window_steps": self.window_steps,
                "compare_plain": self.compare_plain}
