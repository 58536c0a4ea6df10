"""Hyper-parameter sweeps: the sweep file, its trial plan, each trial's state on disk, and the report.

A sweep file (TOML) holds a ``[base]`` table of train settings every trial shares, a ``[grid]``
table of lists (every combination) and/or a ``[random]`` table (``n`` draws from lists or
``{log_uniform = [a, b]}`` / ``{uniform = [a, b]}``, with a fixed ``sampler_seed``), ``seeds``,
the ``out`` folder and the ``[job]`` resources of each trial. Trial ``i`` is the run directory
``OUT/trial-NNN``, whose ``config.toml`` is written before it starts, so that
``mnist-hpc train --config OUT/trial-NNN/config.toml --out OUT/trial-NNN`` repeats it alone.
The scheduler side (sbatch arrays, submitit) is ``launchers/sweep.py``. No TensorFlow here.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
import random
import re
import shlex
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Mapping

from . import jobspec, options, runconfig
from .config import TrainConfig
from .options import ConfigFileError
from .rundir import save_figure_atomic, write_text_atomic

SWEEP_KEYS = ("out", "seeds", "throttle", "base", "grid", "random", "job")
# the [job] table: each key is the launchers' resource option of the same name (cli.add_resource_arguments)
JOB_KEYS = ("job_name", "nodes", "ntasks_per_node", "gpus_per_node", "cpus_per_task", "time", "partition", "account",
            "site")
OWNED = ("out", "resume")  # each trial's own: OUT/trial-NNN, resumed with --resume auto
FINISHED = ("completed", "diverged")  # a result to keep: re-submitting skips these (a diverged run diverges again)
DISTRIBUTIONS = ("log_uniform", "uniform")
MAX_ARRAY_SIZE_RE = re.compile(r"^MaxArraySize\s*=\s*(\d+)\s*$", re.M)


class SweepError(ValueError):
    """A sweep file or sweep that cannot be used; one line naming the file and the key."""


@dataclass(frozen=True)
class Trial:
    index: int
    swept: dict[str, Any]  # this trial's values of the swept settings
    config: TrainConfig  # the whole run, out = its run directory

    @property
    def name(self) -> str:
        return f"trial-{self.index:03d}"

    @property
    def run_dir(self) -> Path:
        return Path(self.config.out)

    @property
    def config_file(self) -> Path:
        return self.run_dir / runconfig.CONFIG_FILE


@dataclass(frozen=True)
class Sweep:
    path: Path
    out: Path
    trials: tuple[Trial, ...]
    swept: tuple[str, ...]  # the settings that differ between trials, in the file's order
    job: dict[str, Any]  # [job]: resource option name -> value, checked as on the command line
    throttle: int  # at most this many trials at once (the array's %N)


# ------------------------------------------------------------------ the sweep file
def load(path: Path, out: Path | None = None) -> Sweep:
    """The sweep ``path`` describes, every value checked as ``train`` checks it (``out`` overrides the file's)."""
    try:
        raw = options.read_toml(path, str(path))
    except ConfigFileError as err:
        raise SweepError(str(err)) from None
    for key in raw:
        if key not in SWEEP_KEYS:
            raise SweepError(f"{path}: unknown key {key!r} (allowed: {', '.join(SWEEP_KEYS)}; train settings go in [base])")
    where = str(path)
    base = _table(raw, "base", where)
    for key in OWNED:
        if key in base:
            raise SweepError(f"{path}: [base] {key}: each trial has its own (OUT/trial-NNN, resumed with --resume auto)")
    settings = _checked_table(base, f"{path}: [base]")
    grid = _grid(_table(raw, "grid", where), where)
    draws = _random(_table(raw, "random", where), where)
    seeds = _seeds(raw.get("seeds"), where, "seed" in grid or any("seed" in d for d in draws))
    out_dir = (out or Path(_string(raw, "out", where, "runs/sweeps/" + path.stem))).absolute()
    if "\n" in str(out_dir):
        raise SweepError(f"{path}: out: {str(out_dir)!r} holds a newline (the trials list has one path a line)")
    swept = tuple(dict.fromkeys([*grid, *(k for d in draws[:1] for k in d), *(["seed"] if len(seeds) > 1 else [])]))
    trials = []
    for values in ({**g, **d, **s} for g in _product(grid) for d in draws or [{}] for s in seeds or [{}]):
        trial_dir = out_dir / f"trial-{len(trials):03d}"
        config = _trial_config(path, settings | values, trial_dir, len(trials))
        trials.append(Trial(len(trials), {k: values.get(k, getattr(config, k)) for k in swept}, config))
    throttle = _positive(raw.get("throttle", len(trials)), where, "throttle")
    return Sweep(path, out_dir, tuple(trials), swept, _job(_table(raw, "job", where), where), throttle)


def _table(raw: Mapping[str, Any], key: str, where: str) -> dict[str, Any]:
    value = raw.get(key, {})
    if not isinstance(value, dict):
        raise SweepError(f"{where}: {key} is {value!r}, not a table ([{key}])")
    return value


def _string(raw: Mapping[str, Any], key: str, where: str, default: str) -> str:
    value = raw.get(key, default)
    if not isinstance(value, str) or not value:
        raise SweepError(f"{where}: {key} = {value!r} is not a folder name")
    return value


def _positive(value: Any, where: str, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SweepError(f"{where}: {key} = {value!r} is not a positive integer")
    return value


def _checked_table(table: Mapping[str, Any], where: str) -> dict[str, Any]:
    try:
        return options.load_table(table, TrainConfig, where)
    except ConfigFileError as err:
        raise SweepError(str(err)) from None


def _grid(table: Mapping[str, Any], where: str) -> dict[str, list[Any]]:
    """[grid]: setting -> the list of its values, each value checked."""
    grid = {}
    for key, values in table.items():
        if key in OWNED:
            raise SweepError(f"{where}: [grid] {key}: each trial has its own")
        if not isinstance(values, list) or not values:
            raise SweepError(f"{where}: [grid] {key} = {values!r} is not a non-empty list of values")
        grid[key] = [_checked_table({key: v}, f"{where}: [grid]")[key] for v in values]
    return grid


def _random(table: Mapping[str, Any], where: str) -> list[dict[str, Any]]:
    """[random]: ``n`` draws, reproducible from ``sampler_seed`` (default 0)."""
    if not table:
        return []
    table = dict(table)
    n = _positive(table.pop("n", None), where, "[random] n")
    rng = random.Random(table.pop("sampler_seed", 0))
    for key, spec in table.items():
        if key in OWNED:
            raise SweepError(f"{where}: [random] {key}: each trial has its own")
        _sampler(key, spec, where)  # checked once, before any draw
    draws = []
    for _ in range(n):
        draw = {key: _sampler(key, spec, where)(rng) for key, spec in table.items()}
        draws.append({k: _checked_table({k: v}, f"{where}: [random]")[k] for k, v in draw.items()})
    return draws


def _sampler(key: str, spec: Any, where: str):
    """A function of a random.Random giving one value of ``key``."""
    if isinstance(spec, list) and spec:
        return lambda rng: rng.choice(spec)
    if isinstance(spec, dict) and len(spec) == 1 and next(iter(spec)) in DISTRIBUTIONS:
        (kind, bounds), = spec.items()
        if (not isinstance(bounds, list) or len(bounds) != 2 or not all(isinstance(b, (int, float)) and
                not isinstance(b, bool) and math.isfinite(b) for b in bounds) or not bounds[0] < bounds[1]
                or (kind == "log_uniform" and bounds[0] <= 0)):
            raise SweepError(f"{where}: [random] {key}: {kind} = {bounds!r} is not [low, high] with low < high"
                             + (" and low > 0" if kind == "log_uniform" else ""))
        low, high = bounds
        if kind == "uniform":
            return lambda rng: float(f"{rng.uniform(low, high):.4g}")
        return lambda rng: float(f"{math.exp(rng.uniform(math.log(low), math.log(high))):.4g}")
    raise SweepError(f"{where}: [random] {key} = {spec!r} is not a list of values, {{log_uniform = [a, b]}} "
                     "or {uniform = [a, b]}")


def _seeds(value: Any, where: str, swept_elsewhere: bool) -> list[dict[str, Any]]:
    if value is None:
        return []
    if swept_elsewhere:
        raise SweepError(f"{where}: seeds: seed is also in [grid] or [random]; give it in one place")
    if not isinstance(value, list) or not value:
        raise SweepError(f"{where}: seeds = {value!r} is not a non-empty list of seeds")
    return [{"seed": _checked_table({"seed": v}, f"{where}: seeds")["seed"]} for v in value]


def _product(grid: Mapping[str, list[Any]]) -> list[dict[str, Any]]:
    return [dict(zip(grid, combination)) for combination in itertools.product(*grid.values())]


def _trial_config(path: Path, settings: Mapping[str, Any], trial_dir: Path, index: int) -> TrainConfig:
    """The trial's TrainConfig, with the checks ``train`` makes across settings (recipe, precision)."""
    from .cli import UsageError, check_model_choices

    config = replace(options.build(TrainConfig, settings), out=str(trial_dir), resume="auto")
    if config.data_dir:
        config = replace(config, data_dir=str(Path(config.data_dir).absolute()))
    try:
        check_model_choices(config)
    except UsageError as err:
        raise SweepError(f"{path}: trial-{index:03d}: {err}") from None
    return config


def _job(table: Mapping[str, Any], where: str) -> dict[str, Any]:
    """[job], through the launchers' own resource options and their checks."""
    from .cli import Parser, UsageError, add_resource_arguments

    parser = Parser(prog=f"{where}: [job]")
    add_resource_arguments(parser)
    argv = []
    for key, value in table.items():
        if key not in JOB_KEYS:
            raise SweepError(f"{where}: [job] unknown key {key!r} (allowed: {', '.join(JOB_KEYS)})")
        argv += [f"--{key.replace('_', '-')}", str(value)]
    try:
        namespace = parser.parse_args(argv)
    except UsageError as err:
        raise SweepError(str(err)) from None
    return {k: v for k, v in vars(namespace).items() if v is not None}


# ------------------------------------------------------------------ trials on disk
def write_configs(trials: list[Trial]) -> None:
    """Each trial's RUN_DIR/config.toml, before it starts. A trial whose folder already holds other
    settings (the sweep file was edited) is refused before anything is written."""
    for trial in trials:
        if trial.config_file.exists() and trial.config_file.read_text() != runconfig.to_toml(trial.config):
            raise SweepError(f"{trial.config_file} holds other settings than the sweep now gives {trial.name}: "
                             "the sweep file changed since it was submitted; keep it, or give another --out")
    for trial in trials:
        trial.run_dir.mkdir(parents=True, exist_ok=True)
        if not trial.config_file.exists():
            write_text_atomic(trial.config_file, runconfig.to_toml(trial.config))


def metrics(trial: Trial) -> dict[str, Any] | None:
    """The trial's metrics.json (the one source of its results), or None before it has one."""
    try:
        return json.loads((trial.run_dir / "metrics.json").read_text())
    except (OSError, ValueError):
        return None


def finished(trial: Trial) -> bool:
    result = metrics(trial)
    return result is not None and result.get("status") in FINISHED


def train_args(trial: Trial) -> tuple[str, ...]:
    """What trains the trial, alone or in the sweep (``--resume auto`` continues an interrupted one)."""
    return ("train", "--config", str(trial.config_file), "--out", str(trial.run_dir))


# ------------------------------------------------------------------ SLURM's array limit
def max_array_size(scontrol_config: str) -> int | None:
    """MaxArraySize from ``scontrol show config`` (None if it is not there)."""
    found = MAX_ARRAY_SIZE_RE.search(scontrol_config)
    return int(found.group(1)) if found else None


def check_array_size(count: int, maximum: int | None, where: str) -> None:
    """An array's task indices run from 0 to MaxArraySize - 1: refuse more trials than that (one line)."""
    if maximum is not None and count > maximum:
        raise SweepError(f"{where}: {count} trials to submit, more than this cluster's MaxArraySize = {maximum} "
                         f"allows in one job array (indices 0 to {maximum - 1}): split the sweep into files of at "
                         f"most {maximum} trials (fewer grid values, draws or seeds), or submit again after some finish")


# ------------------------------------------------------------------ the sbatch array script
def array_script(spec: jobspec.JobSpec, trials_file: Path, count: int, throttle: int, logs: Path) -> str:
    """One sbatch job array: task i trains the trial on line i + 1 of ``trials_file``. The script is the
    train template's (jobspec.render_sbatch: validation, the USR1 trap, exit 75 -> ``scontrol requeue``,
    which requeues this array task alone) with the array's lines before its body."""
    rendered = jobspec.render_sbatch("train_simple", spec).splitlines()
    last = max(i for i, line in enumerate(rendered) if line.startswith("#SBATCH "))
    options_ = [line for line in rendered[:last + 1] if line.startswith("#SBATCH ") and
                not line.startswith("#SBATCH --output=")]
    quoted = shlex.quote(str(trials_file))
    return "\n".join([
        "#!/bin/bash",
        f"# A sweep's job array, written by 'launchers/sweep.py submit': array task i trains the trial on",
        f"# line i + 1 of {trials_file} (mnist-hpc train --config TRIAL/config.toml --out TRIAL).",
        *options_,
        f"#SBATCH --array=0-{count - 1}%{min(throttle, count)}",
        f"#SBATCH --output={logs}/%A_%a.out",
        "# ---- this array task's trial (its settings are TRIAL/config.toml; --resume auto continues it)",
        f'trial_dir=$(sed -n "$((SLURM_ARRAY_TASK_ID + 1))p" {quoted})',
        f'[ -n "$trial_dir" ] || {{ echo "error: no trial on line $((SLURM_ARRAY_TASK_ID + 1)) of "{quoted} >&2; exit 2; }}',
        'cd "$trial_dir" || exit 2',
        'export MNIST_HPC_RUN_DIR=$trial_dir MNIST_HPC_ARGS="--config config.toml"',
        *rendered[last + 1:],
    ]) + "\n"


# ------------------------------------------------------------------ the report
def rows(sweep: Sweep, states: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    """One row a trial: its swept settings, status, and results read from its metrics.json."""
    table = []
    for trial in sweep.trials:
        result = metrics(trial) or {}
        status = result.get("status") or (states or {}).get(trial.name, "not finished")
        table.append({"trial": trial.name, **trial.swept, "status": status,
                      "test_accuracy": result.get("test_accuracy"), "epochs": result.get("epochs_completed"),
                      "wall_seconds": result.get("wall_seconds"), "startup_seconds": result.get("startup_seconds"),
                      "config": str(trial.config_file)})
    return table


def best(table: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The completed trial of highest test accuracy (the first of equals)."""
    done = [row for row in table if row["status"] == "completed" and row["test_accuracy"] is not None]
    return max(done, key=lambda row: row["test_accuracy"], default=None)


def write_report(sweep: Sweep, table: list[dict[str, Any]]) -> dict[str, Path]:
    """OUT/report.csv, report.md and report.png (test accuracy against each swept setting)."""
    written = {"csv": sweep.out / "report.csv", "md": sweep.out / "report.md", "png": sweep.out / "report.png"}
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=list(table[0]))
    writer.writeheader()
    writer.writerows(table)
    write_text_atomic(written["csv"], text.getvalue())
    write_text_atomic(written["md"], markdown(sweep, table))
    plot(sweep, table, written["png"])
    return written


def _cell(value: Any) -> str:
    if value is None:
        return ""
    return f"{value:.4f}" if isinstance(value, float) and not value.is_integer() else str(value)


def markdown(sweep: Sweep, table: list[dict[str, Any]]) -> str:
    columns = [c for c in table[0] if c != "config"]
    lines = [f"# Sweep {sweep.path.name}: {len(table)} trials in {sweep.out}", "",
             "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(row[c]) for c in columns) + " |" for row in table]
    top = best(table)
    lines += ["", f"Best: {top['trial']} (test accuracy {top['test_accuracy']:.4f}); config {top['config']}" if top
              else "Best: none yet (no trial has completed)"]
    return "\n".join(lines) + "\n"


def plot(sweep: Sweep, table: list[dict[str, Any]], path: Path) -> Path:
    """Test accuracy against each swept setting, one panel each (log x for rates spanning a decade)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [row for row in table if row["test_accuracy"] is not None]
    names = sweep.swept or ("trial",)
    figure, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 3.2), squeeze=False)
    for ax, name in zip(axes[0], names):
        values = [row[name] for row in done]
        if all(isinstance(v, (int, float)) for v in values):
            ax.scatter(values, [row["test_accuracy"] for row in done])
            if values and min(values) > 0 and max(values) >= 10 * min(values) and name != "seed":
                ax.set_xscale("log")
        else:  # names (precision, trial): one column each
            labels = list(dict.fromkeys(str(v) for v in values))
            ax.scatter([labels.index(str(v)) for v in values], [row["test_accuracy"] for row in done])
            ax.set_xticks(range(len(labels)), labels)
        ax.set_xlabel(name)
        ax.set_ylabel("test accuracy")
        ax.grid(alpha=0.3)
    figure.suptitle(f"{sweep.path.name}: {len(done)} of {len(table)} trials", fontsize=9)
    return save_figure_atomic(figure, path)
