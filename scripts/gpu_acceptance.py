#!/usr/bin/env python3
"""GPU acceptance: what a new GPU node or allocation must show before real runs, in one report.

    bash scripts/gpu_acceptance.sh [--out DIR] [--steps N] [--target 0.9925] [--tta-epochs N]

Steps (each one passed, failed or skipped with its reason; a skipped step is never counted passed):
  1. doctor            every rank reports; Keras 2; Horovod built with NCCL when GPUs are visible
  2. train-1gpu        the CNN on 1 GPU
  3. train-ngpu        the CNN on every GPU of this node, NCCL all-reduce (needs 2 or more GPUs)
  4. evaluate-exact    the N-GPU model evaluated on 1 and on N ranks: equal correct counts
  5. bench-bf16        bf16 training throughput (images/s per rank and total) on every GPU
  6. time-to-target    the default CNN recipe on every GPU until --target test accuracy
  7. signal-resume     SIGTERM mid-run (what SLURM's --signal sends): checkpoint, exit 75, resume

On a machine without GPUs every GPU step is reported skipped ("no GPU visible to TensorFlow"),
the doctor step still runs, and the exit status is 0; any failed step makes it 1.
Writes DIR/report.json and DIR/report.md, and keeps every step's run folder and log in DIR.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from mnist_hpc import cli  # parse + validate only: no TensorFlow
from mnist_hpc.exitcode import ExitCode

REPO = Path(__file__).resolve().parents[1]
LOCAL = [sys.executable, str(REPO / "launchers" / "local.py")]
NO_GPU = "no GPU visible to TensorFlow"
SIGNAL_EPOCHS = 1_000_000  # signal-resume: a budget no machine finishes, so TERM always lands mid-run


@dataclass
class Step:
    name: str
    status: str = "skipped"  # passed | failed | skipped
    reason: str = ""
    seconds: float = 0.0
    results: dict = field(default_factory=dict)
    command: str = ""


class StepFailed(Exception):
    """A check inside a step did not hold: the step is failed with this message."""


def run(command: list[str], log: Path, timeout: float, **kwargs) -> subprocess.CompletedProcess:
    """Run one command, its output kept in LOG; a non-zero status fails the step."""
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, **kwargs)
    log.write_text(f"$ {' '.join(command)}\n{result.stdout}\n--- stderr ---\n{result.stderr}")
    if result.returncode != ExitCode.OK:
        tail = [line for line in result.stderr.splitlines() if line.strip()][-1:] or ["no output"]
        raise StepFailed(f"exit status {result.returncode}: {tail[0]} (log: {log})")
    return result


def metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def last_json(text: str) -> dict:
    return json.loads(text[text.index("{"):])


def rank_pids(run_dir: Path) -> list[int]:
    """The training ranks (python -m mnist_hpc train ... RUN_DIR), not the launcher or mpirun."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            argv = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if Path(argv[0]).name.startswith("python") and "mnist_hpc" in argv and "train" in argv \
                and str(run_dir) in argv:
            found.append(int(proc.name))
    return found


class Acceptance:
    def __init__(self, out: Path, steps: int, target: float, data_dir: str | None, timeout: float,
                 tta_epochs: int | None = None, cpu_stand_in: int = 0, model: str = "cnn", train_args=()):
        self.out, self.steps, self.target, self.timeout = out, steps, target, timeout
        self.model, self.train_args = model, list(train_args)  # another model/batch: the test seam's speed-up
        self.tta_epochs = tta_epochs
        self.data = ["--data-dir", data_dir] if data_dir else []
        self.gpus = 0
        # Test seam (tests/integration/test_gpu_acceptance.py, never a command-line option): run the GPU steps on
        # this many CPU ranks so that their logic is tested before a GPU allocation is spent on it.
        # The report then says so in its summary and in every step.
        self.cpu_stand_in = cpu_stand_in
        self.report: list[Step] = []

    def step(self, name: str, needs_gpus: int, body) -> Step:
        """Run BODY as step NAME unless this node has fewer than NEEDS_GPUS GPUs."""
        step = Step(name)
        self.report.append(step)
        if self.cpu_stand_in and needs_gpus:
            step.reason = f"{self.cpu_stand_in} CPU ranks standing in for GPUs (test seam)"
        if self.gpus < needs_gpus:
            step.reason = NO_GPU if self.gpus == 0 else f"needs {needs_gpus} GPUs, this node has {self.gpus}"
        else:
            start = time.monotonic()
            try:
                body(step)
                step.status = "passed"
            except (StepFailed, subprocess.TimeoutExpired, OSError, ValueError, KeyError) as err:
                step.status, step.reason = "failed", str(err).splitlines()[0] if str(err) else type(err).__name__
            step.seconds = round(time.monotonic() - start, 1)
        print(f"[acceptance] {step.name}: {step.status}{f' ({step.reason})' if step.reason else ''}", flush=True)
        return step

    # ---------------------------------------------------------------- the steps
    def doctor(self, step: Step) -> None:
        command = [*LOCAL, "--np", "1", "doctor", "--json"]
        step.command = " ".join(command)
        report = last_json(run(command, self.out / "doctor.log", self.timeout).stdout)
        rank = report["ranks"][0]
        self.gpus = len(rank["gpus"])
        step.results = {"summary": report["summary"], "gpus": rank["gpus"], "versions": rank["versions"],
                        "horovod_built": rank["horovod_built"], "precision_auto": rank["precision_auto"],
                        "tensorflow_build": rank["tensorflow_build"]}
        if not rank["keras2"]:
            raise StepFailed("tf.keras is Keras 3: Horovod would not average gradients (set TF_USE_LEGACY_KERAS=1)")
        if self.gpus and not rank["horovod_built"]["nccl"]:
            raise StepFailed(f"{self.gpus} GPUs visible but Horovod has no NCCL: rebuild with `make setup GPU=1`")
        if self.gpus > 1:  # every local rank must see the node's GPUs and pin its own
            report = last_json(run([*LOCAL, "--np", str(self.gpus), "doctor", "--json"],
                                   self.out / "doctor-all.log", self.timeout).stdout)
            step.results["summary"] = report["summary"]

    def train(self, np: int, name: str, *extra: str) -> dict:
        run_dir = self.out / name
        command = [*LOCAL, "--np", str(np), "train", "--model", self.model, "--out", str(run_dir), *self.data,
                   *self.train_args, *extra]
        run(command, self.out / f"{name}.log", self.timeout)
        return metrics(run_dir)

    def train_1gpu(self, step: Step) -> None:
        result = self.train(1, "train-1gpu", "--steps", str(self.steps))
        step.results = {k: result[k] for k in ("test_accuracy", "images_per_second", "precision", "wall_seconds")}

    def train_ngpu(self, step: Step) -> None:
        result = self.train(self.gpus, "train-ngpu", "--steps", str(self.steps))
        if len(set(result["rank_weight_digests"])) != 1:
            raise StepFailed("the ranks ended with different weights")
        step.results = {k: result[k] for k in ("world_size", "test_accuracy", "images_per_second", "precision",
                                               "wall_seconds", "horovod_environment")}

    def evaluate_exact(self, step: Step) -> None:
        model_dir = self.out / "train-ngpu"
        if not (model_dir / "model.keras").is_file():
            raise StepFailed("train-ngpu left no model.keras")
        counts = {}
        for np in (1, self.gpus):
            printed = run([*LOCAL, "--np", str(np), "evaluate", str(model_dir), "--json", *self.data],
                          self.out / f"evaluate-np{np}.log", self.timeout).stdout
            if "{" not in printed:
                raise StepFailed(f"evaluate printed no JSON: {printed.strip()[-200:]}")
            counts[np] = last_json(printed)["correct"]
        step.results = {"test_correct": counts}
        if len(set(counts.values())) != 1:
            raise StepFailed(f"correct counts differ across world sizes: {counts}")

    def bench_bf16(self, step: Step) -> None:
        from mnist_hpc import models  # the registry: no TensorFlow

        # bf16 where the model has it (the CNN); the test seam's softmax model trains in fp32 only
        precision = "bf16" if "bf16" in models.spec(self.model).precisions else "fp32"
        command = [*LOCAL, "--np", str(self.gpus), "bench", "throughput", "--model", self.model, "--precision",
                   precision, "--batch-size", "256", *self.data]
        result = last_json(run(command, self.out / "bench-bf16.log", self.timeout).stdout)
        step.results = {"images_per_second": result["images_per_second"], "precision": precision,
                        "images_per_second_per_rank": result["horovod"]["images_per_second_per_rank"],
                        "world_size": self.gpus}

    def time_to_target(self, step: Step) -> None:
        epochs = ["--epochs", str(self.tta_epochs)] if self.tta_epochs else []
        result = self.train(self.gpus, "time-to-target", "--target-accuracy", str(self.target), *epochs)
        step.results = {"target_accuracy": self.target, "time_to_target": result.get("time_to_target"),
                        "test_accuracy": result["test_accuracy"], "world_size": result["world_size"]}
        if not result.get("time_to_target"):
            raise StepFailed(f"test accuracy {result['test_accuracy']} never reached {self.target}")

    def signal_resume(self, step: Step) -> None:
        run_dir = self.out / "signal-resume"
        def command(epochs: int) -> list[str]:
            return [*LOCAL, "--np", str(self.gpus), "train", "--model", self.model, "--epochs", str(epochs),
                    "--out", str(run_dir), *self.data, *self.train_args]
        with open(self.out / "signal-resume-1.log", "w") as log:
            job = subprocess.Popen(command(SIGNAL_EPOCHS), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            deadline = time.monotonic() + self.timeout
            while not (run_dir / "checkpoints" / "ckpt-00001.npz").exists():  # signal in epoch 2
                if job.poll() is not None or time.monotonic() > deadline:
                    raise StepFailed(f"training ended before the signal (log: {log.name})")
                time.sleep(0.5)
            ranks = rank_pids(run_dir)
            if len(ranks) != self.gpus:
                raise StepFailed(f"found {len(ranks)} rank processes of {run_dir}, expected {self.gpus}")
            for pid in ranks:  # what SLURM's --signal / preemption does: TERM to every task
                os.kill(pid, signal.SIGTERM)
            status = job.wait(timeout=self.timeout)
        if status != ExitCode.INTERRUPTED:
            raise StepFailed(f"after SIGTERM the run exited {status}, not {ExitCode.INTERRUPTED:d} (checkpointed, "
                             "requeue me)")
        first = metrics(run_dir)["epochs_completed"]
        # what the requeued job runs: the same run, one epoch more than the signal left (a budget may change)
        resumed = run(command(first + 1) + ["--resume", "auto"], self.out / "signal-resume-2.log", self.timeout)
        if "resumed from" not in resumed.stdout + resumed.stderr:
            raise StepFailed("the second run did not resume from the checkpoint")
        if metrics(run_dir)["epochs_completed"] != first + 1:
            raise StepFailed(f"the resumed run ended at epoch {metrics(run_dir)['epochs_completed']}, not {first + 1}")
        step.results = {"epochs_before_signal": first, "epochs_after_resume": metrics(run_dir)["epochs_completed"]}

    # ---------------------------------------------------------------- report
    def run_all(self) -> int:
        self.step("doctor", 0, self.doctor)
        if self.cpu_stand_in:
            self.gpus = self.cpu_stand_in
        self.step("train-1gpu", 1, self.train_1gpu)
        self.step("train-ngpu", 2, self.train_ngpu)
        self.step("evaluate-exact", 2, self.evaluate_exact)
        self.step("bench-bf16", 1, self.bench_bf16)
        self.step("time-to-target", 1, self.time_to_target)
        self.step("signal-resume", 1, self.signal_resume)
        return self.write()

    def write(self) -> int:
        counts = {s: sum(step.status == s for step in self.report) for s in ("passed", "failed", "skipped")}
        summary = f"GPU acceptance on {platform.node()}: {counts['passed']} passed, {counts['failed']} failed, " \
                  f"{counts['skipped']} skipped" + (f" ({NO_GPU})" if self.gpus == 0 else f" ({self.gpus} GPUs)")
        if self.cpu_stand_in:
            summary += f" - TEST SEAM: {self.cpu_stand_in} CPU ranks stood in for GPUs, nothing ran on a GPU"
        report = {"summary": summary, "host": platform.node(), "gpus": self.gpus, "counts": counts,
                  "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "steps": [asdict(s) for s in self.report]}
        (self.out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
        lines = [f"# {summary}", "", "| step | status | seconds | results / reason |", "|---|---|---|---|"]
        for s in self.report:
            detail = s.reason if s.status != "passed" else json.dumps(s.results)[:300]
            lines.append(f"| {s.name} | {s.status.upper() if s.status == 'failed' else s.status} | {s.seconds} | "
                         f"{detail.replace('|', '/')} |")
        (self.out / "report.md").write_text("\n".join(lines) + "\n")
        print(summary)
        print(f"report: {self.out / 'report.md'} and report.json")
        return ExitCode.FAILED if counts["failed"] else ExitCode.OK


def build_parser() -> cli.Parser:
    parser = cli.Parser(prog="gpu_acceptance.py", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(f"runs/gpu-acceptance-{time.strftime('%Y%m%d-%H%M%S')}"),
                        help="a new or empty folder for report.json, report.md and every step's logs "
                        "(default: runs/gpu-acceptance-DATE-TIME)")
    parser.add_argument("--steps", type=cli.positive_int, default=300,
                        help="steps of the 1- and N-GPU trainings (default: %(default)s)")
    parser.add_argument("--target", type=cli.accuracy, default=0.9925,
                        help="test accuracy for time-to-target (default: %(default)s)")
    parser.add_argument("--tta-epochs", type=cli.positive_int,
                        help="epochs of time-to-target (default: the CNN recipe's)")
    parser.add_argument("--data-dir", help="MNIST folder (default: $MNIST_HPC_DATA, then ~/.cache/mnist_hpc)")
    parser.add_argument("--step-timeout", type=cli.positive_float, default=3600,
                        help="seconds each command may take (default: %(default)s)")
    return parser


def parse(argv: list[str] | None) -> argparse.Namespace:
    """The options, validated: a bad one is a cli.UsageError (one line, exit 2), before any step runs."""
    args = build_parser().parse_args(argv)
    cli.check_writable_dir(args.out, "--out")
    if args.out.exists() and any(args.out.iterdir()):
        raise cli.UsageError(f"--out: {args.out} is not empty: choose a new folder (nothing is overwritten)")
    return args


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse(argv)
    except cli.UsageError as err:
        cli.print_error(err)
        return ExitCode.USAGE
    try:
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as err:  # what os.access could not foresee (e.g. /proc): one line, as mnist-hpc does
        cli.print_error(cli.os_error_line(err))
        return ExitCode.FAILED
    return Acceptance(args.out.resolve(), args.steps, args.target, args.data_dir, args.step_timeout,
                      args.tta_epochs).run_all()


if __name__ == "__main__":
    sys.exit(main())
