"""The time-to-accuracy study: epochs, optimizer updates and images until a test accuracy, per global batch.

For each global batch and seed, one training of ``--model`` on ``--ranks`` local ranks reaches the
batch by gradient accumulation (ranks x batch x K, batch <= ``--max-batch``), evaluates the test set
every ``--eval-every`` of an epoch and stops at ``--target-accuracy`` or after ``--max-epochs``. A
report step turns the trials' metrics.json into OUT/tta.md (table), OUT/tta.json and OUT/tta.png.

Resumable: each trial has its own run directory OUT/gb<batch>-seed<seed>; a finished one (its
metrics.json says completed or diverged) is skipped, an interrupted one resumes from its checkpoint.
No TensorFlow here: trials run as ``mnist-hpc train`` under mpirun (what launchers/local.py runs).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

from . import cli, models
from .config import INTERRUPTED_EXIT
from .jobspec import JobSpec, launch_environment
from .rundir import save_figure_atomic, write_json_atomic, write_text_atomic

DEFAULT_BATCHES = (256, 1024, 4096, 16384)
DEFAULT_SEEDS = (42, 43, 44)
FINISHED = ("completed", "diverged")  # a trial with one of these statuses is a result; others are run (again)
STUDY_FILE = "study.json"  # the settings every trial of OUT shares; a re-run must keep them
SHARED = ("model", "recipe", "ranks", "max_batch", "target_accuracy", "also_accuracy", "max_epochs", "eval_every",
          "train_args")


@dataclass(frozen=True)
class Trial:
    global_batch: int
    seed: int
    batch: int  # per rank
    passes: int  # K: backward passes per update

    @property
    def name(self) -> str:
        return f"gb{self.global_batch}-seed{self.seed}"


def split_batch(global_batch: int, ranks: int, max_batch: int) -> tuple[int, int]:
    """(per-rank batch, K) with ranks x batch x K = ``global_batch``, batch <= ``max_batch``, K smallest."""
    if global_batch % ranks:
        raise cli.UsageError(f"--global-batches: {global_batch} is not a multiple of --ranks {ranks}")
    per_rank = global_batch // ranks
    passes = next(k for k in range(1, per_rank + 1) if per_rank % k == 0 and per_rank // k <= max_batch)
    return per_rank // passes, passes


def plan(options: argparse.Namespace) -> list[Trial]:
    return [Trial(batch, seed, *split_batch(batch, options.ranks, options.max_batch))
            for batch in options.global_batches for seed in options.seeds]


def train_args(trial: Trial, options: argparse.Namespace) -> list[str]:
    """The ``mnist-hpc train`` arguments of one trial (``--resume auto``: an interrupted trial goes on)."""
    return ["train", "--model", options.model, "--recipe", options.recipe, "--epochs", str(options.max_epochs),
            "--batch-size", str(trial.batch), "--backward-passes-per-step", str(trial.passes),
            "--seed", str(trial.seed), "--target-accuracy", str(options.target_accuracy),
            "--eval-every", str(options.eval_every), "--out", str(options.out / trial.name), "--resume", "auto",
            *options.train_args]


def metrics_of(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / "metrics.json"
    return json.loads(path.read_text()) if path.is_file() else None


def finished(run_dir: Path) -> bool:
    metrics = metrics_of(run_dir)
    return bool(metrics) and metrics["status"] in FINISHED


def settings(options: argparse.Namespace) -> dict[str, Any]:
    return {key: getattr(options, key) for key in (*SHARED, "global_batches", "seeds")}


def claim_study(options: argparse.Namespace) -> None:
    """Record the shared settings in OUT/study.json, or refuse a re-run that changes them."""
    path = options.out / STUDY_FILE
    wanted = settings(options)
    if path.is_file():
        held = json.loads(path.read_text())
        changed = [key for key in SHARED if held.get(key) != wanted[key]]
        if changed:
            key = changed[0]
            raise cli.UsageError(f"--out: {options.out} holds a study with {key} {held.get(key)!r}, not "
                                 f"{wanted[key]!r}; keep its settings to resume it, or choose another --out")
    options.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, wanted)


def launch(args: list[str], ranks: int, log: Path) -> int:
    """``mnist-hpc ARGS`` on ``ranks`` local ranks (mpirun), output to ``log``; the exit status."""
    spec = JobSpec(tuple(args), ntasks_per_node=ranks)
    command = spec.mpirun_command() if ranks > 1 else spec.command()
    with open(log, "a") as out:
        return subprocess.run(command, env=launch_environment(), stdout=out, stderr=subprocess.STDOUT).returncode


def run(options: argparse.Namespace) -> int:
    """Every trial not finished yet, one after another; then the report. Returns the exit status."""
    trials = plan(options)
    for trial in trials:  # every trial's arguments refused here, in one line, before any rank starts
        if not finished(options.out / trial.name):
            cli.validate_train(train_args(trial, options)[1:])
    if options.dry_run:
        for trial in trials:
            state = "finished" if finished(options.out / trial.name) else "to run"
            print(f"{trial.name} ({state}): mnist-hpc {' '.join(train_args(trial, options))}")
        return 0
    claim_study(options)
    for number, trial in enumerate(trials, 1):
        run_dir = options.out / trial.name
        if finished(run_dir):
            print(f"[{number}/{len(trials)}] {trial.name}: finished before, skipped", flush=True)
            continue
        print(f"[{number}/{len(trials)}] {trial.name}: {options.ranks} ranks x {trial.batch} x K={trial.passes}",
              flush=True)
        status = launch(train_args(trial, options), options.ranks, options.out / f"{trial.name}.log")
        if not finished(run_dir):  # interrupted (75: requeue and run again) or failed: the study stops here
            print(f"{trial.name}: training exited {status}; see {options.out / trial.name}.log; run the same "
                  "command again to resume", file=sys.stderr)
            return status if status == INTERRUPTED_EXIT else (status or 1)
    print(report(options.out).read_text(), end="")
    return 0


# ------------------------------------------------------------------ report (from the trials' metrics.json)
def first_reaching(evaluations: list[dict[str, Any]], accuracy: float) -> dict[str, Any] | None:
    """The first test evaluation at or above ``accuracy``: its epochs, updates and images."""
    return next(({k: e[k] for k in ("epochs", "updates", "images")} for e in evaluations
                 if e["test_accuracy"] >= accuracy), None)


def trial_row(trial: Trial, metrics: dict[str, Any] | None, study: dict[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = asdict(trial) | {"ranks": study["ranks"], "status": "pending"}
    if metrics is None:
        return row
    evaluations = metrics["test_evaluations"]
    return row | {
        "status": metrics["status"], "global_batch_size": metrics["global_batch_size"],
        "epochs_trained": evaluations[-1]["epochs"] if evaluations else 0.0,
        "updates_trained": metrics["steps"], "final_test_accuracy": metrics["test_accuracy"],
        "target": first_reaching(evaluations, study["target_accuracy"]),
        "also": first_reaching(evaluations, study["also_accuracy"]),
        "training_seconds_to_target": (metrics["time_to_target"] or {}).get("training_seconds")}


def summary(study: dict[str, Any], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per global batch: trials reaching the target, and the median epochs/updates/images of those."""
    out = []
    for batch in study["global_batches"]:
        reached = [r["target"] for r in rows if r["global_batch"] == batch and r.get("target")]
        done = [r for r in rows if r["global_batch"] == batch and r["status"] != "pending"]
        entry: dict[str, Any] = {"global_batch": batch, "trials": len(done), "reached": len(reached)}
        for key in ("epochs", "updates", "images"):
            entry[f"median_{key}"] = statistics.median(t[key] for t in reached) if reached else None
        out.append(entry)
    return out


def percent(accuracy: float) -> str:
    return f"{100 * accuracy:g}%"


def markdown(study: dict[str, Any], rows: list[dict[str, Any]], by_batch: list[dict[str, Any]]) -> str:
    target, also, cap = percent(study["target_accuracy"]), percent(study["also_accuracy"]), study["max_epochs"]

    def reached(hit: dict[str, Any] | None, row: dict[str, Any]) -> str:
        if row["status"] == "pending":
            return "pending | | "
        if hit is None:
            return f"not reached within {cap} epochs | | " if row["status"] == "completed" else f"{row['status']} | | "
        return f"{hit['epochs']:.2f} | {hit['updates']} | {hit['images']}"

    lines = [f"Time to {target} test accuracy ({study['model']}, recipe {study['recipe']}, {study['ranks']} ranks, "
             f"test set every {study['eval_every']:g} epoch, at most {cap} epochs)", "",
             f"| global batch | ranks x batch x K | seed | epochs to {target} | updates | images | "
             f"epochs to {also} | updates | images | final test accuracy |", "|---" * 10 + "|"]
    for row in rows:
        final = f"{row['final_test_accuracy']:.4f}" if row.get("final_test_accuracy") is not None else ""
        lines.append(f"| {row['global_batch']} | {row['ranks']} x {row['batch']} x {row['passes']} | {row['seed']} | "
                     f"{reached(row.get('target'), row)} | {reached(row.get('also'), row)} | {final} |")
    lines += ["", f"| global batch | trials reaching {target} | median epochs | median updates | median images |",
              "|---|---|---|---|---|"]
    for entry in by_batch:
        medians = [format(entry[f"median_{key}"], form) if entry[f"median_{key}"] is not None else "-"
                   for key, form in (("epochs", ".2f"), ("updates", "g"), ("images", "g"))]
        lines.append(f"| {entry['global_batch']} | {entry['reached']}/{entry['trials']} | {' | '.join(medians)} |")
    return "\n".join(lines) + "\n"


def plot(study: dict[str, Any], rows: list[dict[str, Any]], path: Path) -> Path:
    """Epochs to the target (and to the second accuracy) against the global batch, one point per seed;
    a trial that never got there is an x at the epoch cap."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(5.5, 3.8))
    done = [r for r in rows if r["status"] != "pending"]
    for key, color, marker in (("target", "C0", "o"), ("also", "C1", "s")):
        label = percent(study[f"{key}_accuracy"])
        hits = [(r["global_batch"], r[key]["epochs"]) for r in done if r.get(key)]
        misses = [r["global_batch"] for r in done if not r.get(key)]
        if hits:  # each seed a point, the median over seeds a line
            axes.scatter(*zip(*hits), marker=marker, color=color, label=label)
            medians = [(b, statistics.median(e for gb, e in hits if gb == b)) for b in sorted({gb for gb, _ in hits})]
            axes.plot(*zip(*medians), color=color, alpha=0.6)
        if misses:
            axes.scatter(misses, [study["max_epochs"]] * len(misses), marker="x", color=color,
                         label=f"{label} not reached within {study['max_epochs']} epochs")
    axes.set_xscale("log", base=2)
    axes.set_xticks(study["global_batches"], [str(b) for b in study["global_batches"]])
    axes.set_xlabel("global batch (ranks x batch x K)")
    axes.set_ylabel("epochs to test accuracy")
    axes.set_title(f"{study['model']} ({study['recipe']}): epochs to target, one point per seed", fontsize=9)
    axes.grid(alpha=0.3)
    if done:
        axes.legend(fontsize=8)
    return save_figure_atomic(figure, path)


def report(out: Path) -> Path:
    """OUT/tta.md, tta.json and tta.png from OUT/study.json and each trial's metrics.json."""
    path = out / STUDY_FILE
    if not path.is_file():
        raise cli.UsageError(f"--out: {out} has no {STUDY_FILE}: not a time-to-accuracy study folder")
    study = json.loads(path.read_text())
    options = argparse.Namespace(**study, out=out)
    rows = [trial_row(trial, metrics_of(out / trial.name), study) for trial in plan(options)]
    by_batch = summary(study, rows)
    write_json_atomic(out / "tta.json", {"study": study, "by_global_batch": by_batch, "trials": rows})
    plot(study, rows, out / "tta.png")
    table = out / "tta.md"
    write_text_atomic(table, markdown(study, rows, by_batch))
    return table


# ------------------------------------------------------------------ command line
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, required=True,
                   help="study folder: one run directory per trial, study.json, the report (tta.md/json/png)")
    p.add_argument("--global-batches", type=cli.positive_int, nargs="+", default=list(DEFAULT_BATCHES),
                   metavar="N", help="global batches to study (default: %(default)s)")
    p.add_argument("--seeds", type=cli.non_negative_int, nargs="+", default=list(DEFAULT_SEEDS), metavar="S",
                   help="seeds of each global batch (default: %(default)s)")
    p.add_argument("--model", choices=models.names(), default="cnn", help="the model to study (default: %(default)s)")
    p.add_argument("--recipe", choices=cli.recipe_names(), default="default",
                   help="the recipe every trial trains with (default: %(default)s)")
    p.add_argument("--ranks", type=cli.bounded(int, 1, True, "a number of local ranks from 1 to 64", maximum=64),
                   default=2, help="local ranks per trial (default: %(default)s)")
    p.add_argument("--max-batch", type=cli.batch_size, default=1024,
                   help="largest per-rank batch; the rest of the global batch is accumulation (default: %(default)s)")
    p.add_argument("--target-accuracy", type=cli.accuracy, default=0.9925,
                   help="stop at this test accuracy (default: %(default)s)")
    p.add_argument("--also-accuracy", type=cli.accuracy, default=0.99,
                   help="also report when this test accuracy was first reached (default: %(default)s)")
    p.add_argument("--max-epochs", type=cli.positive_int, default=100,
                   help="give up after this many epochs (default: %(default)s)")
    p.add_argument("--eval-every", type=cli.epoch_fraction, default=0.25,
                   help="test evaluations every this fraction of an epoch (default: %(default)s)")
    p.add_argument("--report-only", action="store_true", help="write the report from the trials so far; train nothing")
    p.add_argument("--dry-run", action="store_true", help="validate and print each trial's command; start nothing")
    p.add_argument("train_args", nargs=argparse.REMAINDER, metavar="-- TRAIN_ARGS",
                   help="more `mnist-hpc train` options for every trial (e.g. -- --precision bf16)")


def build_parser() -> cli.Parser:
    parser = cli.Parser(prog="tta_study.py", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return parser


def execute(options: argparse.Namespace) -> int:
    """The study (or, with --report-only, its report) for parsed options: `mnist-hpc bench tta` and tta_study.py."""
    options.train_args = [a for a in options.train_args if a != "--"]
    if options.report_only:
        print(report(options.out).read_text(), end="")
        return 0
    return run(options)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return execute(build_parser().parse_args(argv))
    except cli.INPUT_ERRORS as err:
        cli.print_error(err)
        return 2
