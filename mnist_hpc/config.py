"""The description of a training run: recipes, choices and the run configuration (no TensorFlow)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from .distributed import DEFAULT_CPU_CYCLE_TIME_MS, HorovodKnobs

MODELS = ("simple", "cnn")
LAYOUTS = {"simple": "flat", "cnn": "image"}  # data.load(layout=...) per model
RECIPE_NAMES = ("default", "seed")
# Horovod's cycle on CPU ranks: the softmax model's steps take well under 1 ms (benchmarks/RESULTS.md)
CPU_CYCLE_TIME_MS = {"simple": 0.2, "cnn": DEFAULT_CPU_CYCLE_TIME_MS}
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DTYPE_POLICIES = {"fp32": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}
RESUME_MODES = ("auto", "never")
INITS = ("tutorial", "he")  # CNN weight initialisations (see models.cnn)
MAX_SHIFT = 8  # pixels: the largest --augment shift (images are 28x28)
INTERRUPTED_EXIT = 75  # EX_TEMPFAIL: stopped by a signal after a checkpoint; requeue to resume
DIVERGED_EXIT = 1  # a failed run, not to be requeued: the same settings would diverge again


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
    init: str = "tutorial"  # CNN weight initialisation, one of INITS


RECIPES: dict[tuple[str, str], Recipe] = {
    # the TensorFlow tutorials, as published
    ("simple", "seed"): Recipe("sgd", 0.5, 100, steps=1_000),
    ("cnn", "seed"): Recipe("adam", 1e-4, 50, steps=20_000),
    # tuned on the validation set for time to accuracy (benchmarks/RESULTS.md)
    ("simple", "default"): Recipe("sgd", 1.0, 256, epochs=30, schedule="cosine"),
    ("cnn", "default"): Recipe("adam", 1e-3, 128, epochs=15, schedule="cosine", warmup_epochs=0.25, augment=2,
                               init="he"),
}


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
        base = RECIPES[(self.model, self.recipe)]
        budget = {"epochs": self.epochs, "steps": None} if self.epochs else {}
        if self.steps:
            budget = {"epochs": None, "steps": self.steps}
        overrides = {k: v for k, v in {"batch_size": self.batch_size, "lr": self.lr, "init": self.init,
                                         "warmup_epochs": self.warmup_epochs, "augment": self.augment}.items()
                     if v is not None}
        return replace(base, **budget, **overrides)
