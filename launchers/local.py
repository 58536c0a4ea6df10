#!/usr/bin/env python3
"""Run mnist-hpc with N local ranks through mpirun, the 2-rank smoke training, or a scaling sweep.

    python launchers/local.py --np 2 train --model cnn --epochs 1 --out runs/cnn
    python launchers/local.py smoke [--np 2] [--out runs/smoke]
    python launchers/local.py --np 2 [--global-batch 256] sweep [--out runs/sweep] [-- bench throughput options]

--dry-run validates everything and prints the commands it would run, starting nothing.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from mnist_hpc import cli, models, runconfig
from mnist_hpc.exitcode import ExitCode
from mnist_hpc.jobspec import JobSpec, launch_environment

MAX_LOCAL_RANKS = 64  # one machine; more would only oversubscribe it


def validate(args: list[str]) -> None:
    """What the ranks would refuse, refused once here, before mpirun starts any of them."""
    cli.validate(cli.build_parser().parse_args(args))


def with_run_dir(args: list[str]) -> list[str]:
    """``train`` without ``--out``: one new run directory named here, for all the ranks (each rank
    would otherwise name its own)."""
    options = cli.build_parser().parse_args(args)
    if options.command != "train":
        return args
    config = cli.config_from_args(options)
    return args if config.out is not None else [*args, "--out", str(runconfig.default_out(config.model))]


def run_local(args: list[str], ranks: int, dry_run: bool = False) -> int:
    """Launch ``mnist-hpc ARGS`` on ``ranks`` local ranks; return their exit status."""
    try:
        args = with_run_dir(args)
        validate(args)
    except cli.INPUT_ERRORS as err:
        cli.print_error(err)
        return ExitCode.USAGE
    spec = JobSpec(tuple(args), ntasks_per_node=ranks)
    command = spec.mpirun_command() if ranks > 1 else spec.command()
    print("+", spec.shell(command), flush=True)
    if dry_run:
        return ExitCode.OK
    return subprocess.run(command, env=launch_environment()).returncode


def smoke(ranks: int, out: Path, dry_run: bool = False) -> int:
    """Train both models briefly on ``ranks`` ranks; print aggregated test accuracies."""
    results = {}
    for model, spec in models.REGISTRY.items():  # each model's smoke_budget
        budget = spec.smoke_budget
        run_dir = runconfig.new_run_dir(out / model)  # a run of its own each time
        status = run_local(["train", "--model", model, *budget, "--out", str(run_dir)], ranks, dry_run)
        if dry_run and status == ExitCode.OK:
            continue
        if status != ExitCode.OK:
            print(f"smoke: {model} training failed with exit status {status}", file=sys.stderr)
            return status
        results[model] = (json.loads((run_dir / "metrics.json").read_text()), run_dir)
    print("\nsmoke training finished:")
    for model, (metrics, run_dir) in results.items():
        print(f"  {model:6s} test accuracy {metrics['test_accuracy']:.4f} on {metrics['world_size']} ranks, "
              f"{metrics['wall_seconds']:.1f} s training -> {run_dir.resolve()}")
    return ExitCode.OK


def sweep(max_ranks: int, out: Path, bench_args: list[str], global_batch: int | None = None,
          dry_run: bool = False) -> int:
    """Throughput at 1..max_ranks local ranks, then a report (CSV, JSON, Markdown, PNG).

    With ``global_batch`` (strong scaling) N ranks get ``global_batch / N`` images each, and the
    1-rank run also times plain tf.keras at the full batch, so every row compares with it.
    """
    for ranks in range(1, max_ranks + 1):
        print(f"sweep: {ranks}/{max_ranks} ranks", flush=True)
        args = ["bench", "throughput", *bench_args, "--out", str(out / f"np{ranks}.json")]
        if global_batch:
            args += ["--batch-size", str(global_batch // ranks)] + (["--compare-plain"] if ranks == 1 else [])
        status = run_local(args, ranks, dry_run)
        if status != ExitCode.OK:
            return status
    if dry_run:
        return ExitCode.OK
    return subprocess.run([sys.executable, "-m", "mnist_hpc", "bench", "report", str(out)]).returncode


def build_parser() -> cli.Parser:
    parser = cli.Parser(prog="local.py", description=__doc__.splitlines()[0])
    parser.add_argument("--np", type=cli.bounded(int, 1, True, f"a number of local ranks from 1 to {MAX_LOCAL_RANKS}",
                                                 maximum=MAX_LOCAL_RANKS), default=2,
                        help="number of local ranks (default: 2)")
    parser.add_argument("--out", type=Path, default=Path("runs/smoke"), help="smoke: parent run directory")
    parser.add_argument("--global-batch", type=cli.positive_int,
                        help="sweep: split this batch among the ranks and compare with plain tf.keras")
    parser.add_argument("--dry-run", action="store_true", help="validate and print the commands; start nothing")
    parser.add_argument("command", help="'smoke', 'sweep', or an mnist-hpc subcommand (train, evaluate, ...)")
    parser.add_argument("args", nargs=cli.argparse.REMAINDER, help="its arguments")
    return parser


def parse(argv: list[str] | None) -> cli.argparse.Namespace:
    options = build_parser().parse_args(argv)
    if options.global_batch is not None and options.global_batch % options.np:
        raise cli.UsageError(f"--global-batch: {options.global_batch} is not a multiple of --np {options.np}")
    return options


def main(argv: list[str] | None = None) -> int:
    try:
        options = parse(argv)
    except cli.UsageError as err:
        cli.print_error(err)
        return ExitCode.USAGE
    if options.command == "smoke":
        return smoke(options.np, options.out, options.dry_run)
    if options.command == "sweep":
        return sweep(options.np, options.out, [a for a in options.args if a != "--"], options.global_batch,
                     options.dry_run)
    return run_local([options.command, *options.args], options.np, options.dry_run)


if __name__ == "__main__":
    sys.exit(main())
