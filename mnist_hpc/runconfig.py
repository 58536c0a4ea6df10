"""A run's settings on disk: a directory of its own, ``RUN_DIR/config.toml``, and the resume rule.

Every training run lives in its own directory. Without ``--out`` it gets a new one,
``runs/<model>/<YYYYmmdd-HHMMSS>`` (or ``runs/<model>/slurm-<job id>`` inside a SLURM job, so a
requeued job finds its own). A directory remembers the settings that produced it: each checkpoint
carries its run's config, and rank 0 writes the resolved config to ``RUN_DIR/config.toml``.
Resuming with other settings is refused in one line naming each differing setting; only the
settings in :data:`MAY_CHANGE_ON_RESUME` (and the world size) may differ. No TensorFlow here.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any, Mapping

import tomli_w

from . import models, precision, quiet, rundir
from .config import TrainConfig
from .distributed import HorovodKnobs

CONFIG_FILE = "config.toml"
RUNS_ROOT = Path("runs")  # where new run directories go, relative to the working directory
# What a resumed run may change: a longer budget, a target, where the data and the run live, how
# many checkpoints to keep, threads and Horovod tuning. The world size may change too (the
# learning rate follows it). Everything else decides what the weights become.
MAY_CHANGE_ON_RESUME = ("epochs", "steps", "target_accuracy", "out", "resume", "data_dir", "keep_checkpoints",
                        "intra_op_threads", "inter_op_threads", "knobs")
# Settings whose default comes from the recipe: compared by the value the recipe resolves them to,
# so `--lr 0.001` and the recipe's own 0.001 are the same run.
RECIPE_SETTINGS = ("batch_size", "lr", "warmup_epochs", "augment", "init", "dropout", "adam_beta1")
OPTION_NAMES = {"intra_op_threads": "--threads", "scale_lr": "--no-scale-lr"}  # where a flag is not --field-name


class RunConfigError(ValueError):
    """A run directory or a resume that cannot be used as asked; the message is one line."""


def option_name(field_name: str) -> str:
    return OPTION_NAMES.get(field_name, "--" + field_name.replace("_", "-"))


# ------------------------------------------------------------------ a directory of its own
def new_run_dir(parent: Path, now: float | None = None) -> Path:
    """``parent/<YYYYmmdd-HHMMSS>``, with ``-2``, ``-3``... if a run of the same second exists."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    candidate, n = parent / stamp, 1
    while candidate.exists():
        n += 1
        candidate = parent / f"{stamp}-{n}"
    return candidate


def default_out(model: str, environ: Mapping[str, str] | None = None) -> Path:
    """The run directory of a run started without ``--out``: every rank of a job must name the same one."""
    environ = os.environ if environ is None else environ
    if environ.get("SLURM_JOB_ID", "").isdigit():  # the same for every task, and again after a requeue
        return RUNS_ROOT / model / f"slurm-{environ['SLURM_JOB_ID']}"
    ranks = rundir.launcher_world_size(environ)
    if ranks > 1:  # each rank would pick its own time stamp
        raise RunConfigError(f"--out: required when a launcher starts {ranks} ranks outside SLURM (each rank would "
                             "name its own new run directory): give --out DIR, or start the ranks with "
                             "launchers/local.py, which names one for them")
    return new_run_dir(RUNS_ROOT / model)


def holds_a_run(run_dir: Path) -> bool:
    return (run_dir / "metrics.json").exists() or any((run_dir / "checkpoints").glob("ckpt-*.npz"))


# ------------------------------------------------------------------ config.toml
def to_toml(config: TrainConfig) -> str:
    """The run's resolved settings as TOML (recipe defaults written out; unset values left out;
    ``out`` and ``resume`` left out, so ``--config RUN_DIR/config.toml`` repeats the run in a new directory)."""
    recipe = config.resolved_recipe()
    values = asdict(config) | {name: getattr(recipe, name) for name in RECIPE_SETTINGS}
    values |= {"epochs": recipe.epochs, "steps": recipe.steps}
    values.pop("out"), values.pop("resume")
    values["knobs"] = {k: v for k, v in values["knobs"].items() if v is not None}
    header = "# mnist-hpc train settings of this run; repeat it with: mnist-hpc train --config THIS_FILE\n"
    return header + tomli_w.dumps({k: v for k, v in values.items() if v is not None and v != {}})


def from_saved(saved: Mapping[str, Any]) -> TrainConfig:
    """The TrainConfig a checkpoint's ``meta["config"]`` records (unknown keys of other versions ignored)."""
    known = {f.name for f in fields(TrainConfig)}
    values = {k: v for k, v in saved.items() if k in known}
    if isinstance(values.get("knobs"), Mapping):
        values["knobs"] = HorovodKnobs(**values["knobs"])
    return TrainConfig(**values)


# ------------------------------------------------------------------ the resume rule
def resolved_here(requested: str, trained_in: str, model: str) -> str:
    """``--precision`` as this node resolves it, before TensorFlow is imported: ``auto`` on a node
    without a GPU device is the CPU's choice; on a GPU node only TensorFlow knows the device, so
    ``auto`` is taken to be what the run trained in (training logs what it picks)."""
    if requested != "auto":
        return requested
    if quiet.gpu_device():
        return trained_in
    return precision.choose_precision("auto", None, allowed=models.spec(model).precisions)


def identity(config: TrainConfig) -> dict[str, Any]:
    """The settings that decide what a run's weights become (what a resume must repeat)."""
    values = {f.name: getattr(config, f.name) for f in fields(config) if f.name not in MAY_CHANGE_ON_RESUME}
    try:
        recipe = config.resolved_recipe()
    except KeyError:  # a recipe this version no longer has: compare what was given
        return values
    return values | {name: getattr(recipe, name) for name in RECIPE_SETTINGS}


def check_resumable(meta: Mapping[str, Any], config: TrainConfig, where: str) -> None:
    """Refuse (one line) to resume the checkpoint ``meta`` describes with other settings, or with a
    budget shorter than what it has trained. ``where`` names the run directory or checkpoint."""
    if "config" not in meta:  # a checkpoint from before run configs were recorded
        return
    saved, now = identity(from_saved(meta["config"])), identity(config)
    # what it trained in (auto resolved; a checkpoint from before that was recorded: as this node resolves it)
    saved["precision"] = meta.get("precision") or resolved_here(saved["precision"], saved["precision"], config.model)
    now["precision"] = resolved_here(config.precision, saved["precision"], config.model)
    changed = [f"{option_name(k)} {saved[k]} there, {now[k]} now" for k in now if k in saved and saved[k] != now[k]]
    if changed:
        raise RunConfigError(
            f"{where} holds a run with other settings: {'; '.join(changed)}. A resumed run may change only "
            f"{', '.join(option_name(k) for k in ('epochs', 'steps', 'target_accuracy'))}, paths, threads and "
            "the world size: omit --out for a new run directory, choose another --out, or resume with the "
            f"run's settings ({Path(where) / CONFIG_FILE if Path(where).is_dir() else 'its config'})")
    budget = config.resolved_recipe()
    if budget.epochs is not None and not budget.steps and budget.epochs < int(meta.get("epoch", 0)):
        raise RunConfigError(f"--epochs: {budget.epochs} is fewer than the {meta['epoch']} epochs {where} has "
                             f"trained (allowed: {meta['epoch']} or more, to resume it)")
