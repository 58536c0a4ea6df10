"""The description of a training run: its configuration and the choices it allows (no TensorFlow).

Each model's facts (recipes, precisions, layout, costs) are in its models.REGISTRY entry."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from . import models
from .distributed import HorovodKnobs
from .models import Recipe

PRECISIONS = ("auto", "fp32", "bf16", "fp16")  # what each model allows: models.ModelSpec.precisions
DTYPE_POLICIES = {"fp32": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}
RESUME_MODES = ("auto", "never")
MAX_SHIFT = 8  # pixels: the largest --augment shift (images are 28x28)
INTERRUPTED_EXIT = 75  # EX_TEMPFAIL: stopped by a signal after a checkpoint; requeue to resume
DIVERGED_EXIT = 1  # a failed run, not to be requeued: the same settings would diverge again


@dataclass(frozen=True)
class TrainConfig:
    model: str = "simple"
    recipe: str = "default"
    epochs: int | None = None
    steps: int | None = None
    batch_size: int | None = None  # per rank
    lr: float | None = None  # base learning rate (world size 1)
    out: str = "runs/latest"
    resume: str = "auto"  # auto | never | PATH
    data_dir: str | None = None
    seed: int = 42
    precision: str = "auto"
    scale_lr: bool = True
    warmup_epochs: float | None = None  # recipe's unless set
    augment: int | None = None  # recipe's unless set
    init: str | None = None  # recipe's unless set
    fp16_allreduce: bool = False
    keep_checkpoints: int = 3
    intra_op_threads: int | None = None
    inter_op_threads: int = 2
    knobs: HorovodKnobs = field(default_factory=HorovodKnobs)
    target_accuracy: float | None = None  # time-to-accuracy: stop once the aggregated test accuracy reaches it

    def resolved_recipe(self) -> Recipe:
        base = models.spec(self.model).recipes[self.recipe]
        budget = {"epochs": self.epochs, "steps": None} if self.epochs else {}
        if self.steps:
            budget = {"epochs": None, "steps": self.steps}
        overrides = {k: v for k, v in {"batch_size": self.batch_size, "lr": self.lr, "init": self.init,
                                         "warmup_epochs": self.warmup_epochs, "augment": self.augment}.items()
                     if v is not None}
        return replace(base, **budget, **overrides)
