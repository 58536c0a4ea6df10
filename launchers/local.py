#!/usr/bin/env python3
"""Run mnist-hpc with N local ranks through mpirun, the 2-rank smoke training, or a scaling sweep.

    python launchers/local.py --np 2 train --model cnn --epochs 1 --out runs/cnn
    python launchers/local.py smoke [--np 2] [--out runs/smoke]
    python launchers/local.py --np 2 [--global-batch 256] sweep [--out runs/sweep] [-- bench throughput options]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from mnist_hpc import checkpoint, cli, stack
from mnist_hpc.jobspec import JobSpec, launch_environment

SMOKE_BUDGETS = {"simple": ["--epochs", "3"], "cnn": ["--steps", "600"]}


def validate(args: list[str]) -> None:
    """What the ranks would refuse, refused once here, before mpirun starts any of them."""
    if args[:1] == ["train"]:
        cli.validate_train(args[1:])
    elif args[:1] in (["evaluate"], ["bench"], ["doctor"]):
        stack.require_keras2()


def run_local(args: list[str], ranks: int) -> int:
    """Launch ``mnist-hpc ARGS`` on ``ranks`` local ranks; return their exit status."""
    try:
        validate(args)
    except (cli.UsageError, stack.StackError, checkpoint.CheckpointError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    spec = JobSpec(tuple(args), ntasks_per_node=ranks)
    command = spec.mpirun_command() if ranks > 1 else spec.command()
    print("+", spec.shell(command), flush=True)
    return subprocess.run(command, env=launch_environment()).returncode


def smoke(ranks: int, out: Path) -> int:
    """Train both models briefly on ``ranks`` ranks; print aggregated test accuracies."""
    results = {}
    for model, budget in SMOKE_BUDGETS.items():
        run_dir = out / model
        status = run_local(["train", "--model", model, *budget, "--out", str(run_dir), "--resume", "never"], ranks)
        if status != 0:
            print(f"smoke: {model} training failed with exit status {status}", file=sys.stderr)
            return status
        results[model] = (json.loads((run_dir / "metrics.json").read_text()), run_dir)
    print("\nsmoke training finished:")
    for model, (metrics, run_dir) in results.items():
        print(f"  {model:6s} test accuracy {metrics['test_accuracy']:.4f} on {metrics['world_size']} ranks, "
              f"{metrics['wall_seconds']:.1f} s training -> {run_dir.resolve()}")
    return 0


def sweep(max_ranks: int, out: Path, bench_args: list[str], global_batch: int | None = None) -> int:
    """Throughput at 1..max_ranks local ranks, then a report (CSV, JSON, Markdown, PNG).

    With ``global_batch`` (strong scaling) N ranks get ``global_batch / N`` images each, and the
    1-rank run also times plain tf.keras at the full batch, so every row compares with it.
    """
    for ranks in range(1, max_ranks + 1):
        print(f"sweep: {ranks}/{max_ranks} ranks", flush=True)
        args = ["bench", "throughput", *bench_args, "--out", str(out / f"np{ranks}.json")]
        if global_batch:
            args += ["--batch-size", str(global_batch // ranks)] + (["--compare-plain"] if ranks == 1 else [])
        status = run_local(args, ranks)
        if status != 0:
            return status
    return subprocess.run([sys.executable, "-m", "mnist_hpc", "bench", "report", str(out)]).returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--np", type=int, default=2, help="number of local ranks (default: 2)")
    parser.add_argument("--out", type=Path, default=Path("runs/smoke"), help="smoke: parent run directory")
    parser.add_argument("--global-batch", type=int,
                        help="sweep: split this batch among the ranks and compare with plain tf.keras")
    parser.add_argument("command", help="'smoke', or an mnist-hpc subcommand (train, evaluate, ...)")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="its arguments")
    options = parser.parse_args(argv)
    if options.np < 1:
        parser.error(f"--np: {options.np} is not a positive integer")
    if options.command == "smoke":
        return smoke(options.np, options.out)
    if options.global_batch is not None and (options.global_batch < 1 or options.global_batch % options.np):
        parser.error(f"--global-batch: {options.global_batch} is not a positive multiple of --np {options.np}")
    if options.command == "sweep":
        return sweep(options.np, options.out, [a for a in options.args if a != "--"], options.global_batch)
    return run_local([options.command, *options.args], options.np)


if __name__ == "__main__":
    sys.exit(main())
