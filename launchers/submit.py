#!/usr/bin/env python3
"""Submit mnist-hpc training with submitit: SLURM when `srun` is on PATH, local processes otherwise.

    python launchers/submit.py --nodes 2 --ntasks-per-node 1 --time 30 --wait -- --model cnn --epochs 2

Everything after ``--`` is passed to ``mnist-hpc train`` and validated before anything is submitted.
Resources come from the same JobSpec as slurm/train_cnn.sbatch, with ``--site FILE`` (a site profile,
slurm/sites/) applied first and the other options over it. The training is Checkpointable:
on timeout or preemption submitit requeues it and ``--resume auto`` continues from the newest
checkpoint in the run directory.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import submitit

from mnist_hpc import cli, jobspec, submitting
from mnist_hpc.exitcode import ExitCode


def build_parser() -> cli.Parser:
    parser = cli.Parser(prog="submit.py", description=__doc__.splitlines()[0])
    cli.add_resource_arguments(parser)
    parser.add_argument("--setup", action="append", default=[],
                        help="shell line run before the job (module load ..., source .venv/bin/activate)")
    parser.add_argument("--folder", type=Path, default=Path("runs/submitit"), help="submitit logs and pickles")
    parser.add_argument("--wait", action="store_true", help="wait for the job and print its metrics")
    parser.add_argument("--wait-timeout", type=cli.positive_int, default=3600,
                        help="with --wait: seconds before the job is cancelled (default: %(default)s)")
    parser.add_argument("--dry-run", action="store_true", help="print the sbatch script instead of submitting")
    return parser


def parse(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    """The launcher's options, and the train arguments after ``--``."""
    own, train_args = submitting.split_argv(sys.argv[1:] if argv is None else argv)
    return build_parser().parse_args(own), train_args


def build_spec(options: argparse.Namespace, train_args: list[str]) -> tuple[jobspec.JobSpec, str]:
    """Validate everything (job options and training arguments) before submitting."""
    if "--out" not in train_args:
        train_args = [*train_args, "--out", f"runs/submitit-{time.strftime('%Y%m%d-%H%M%S')}"]
    out_index = train_args.index("--out") + 1
    run_dir = str(Path(train_args[out_index]).absolute())
    train_args[out_index] = run_dir
    spec = cli.spec_from_options(jobspec.TEMPLATES["train_cnn"].spec, options, args=("train", *train_args),
                                 python=sys.executable)
    cli.validate_train(spec.args[1:])
    spec.submitit_parameters()  # a site profile submitit cannot use (launcher mpirun) fails here, in one line
    return spec, run_dir


def wait(job: submitit.Job, timeout: float) -> int:
    """Say each state change of ``job``, then print its metrics; a failure or the timeout is one line."""
    try:
        outcome = next(submitting.outcomes([job], timeout))
    except submitting.WaitTimeout as err:
        print(err, file=sys.stderr)
        return ExitCode.FAILED
    if outcome.error:
        print(f"job {job.job_id} failed: {outcome.error}; logs: {outcome.log}", file=sys.stderr)
        return ExitCode.FAILED
    print(json.dumps({k: v for k, v in outcome.result.items() if k != "history"}, indent=2))  # rank 0's metrics
    return ExitCode.OK


def main(argv: list[str] | None = None) -> int:
    try:
        options, train_args = parse(argv)
        spec, run_dir = build_spec(options, train_args)
    except (jobspec.JobSpecError, *cli.INPUT_ERRORS) as err:
        cli.print_error(err)
        return ExitCode.USAGE
    os.environ.update(jobspec.launch_environment())
    if options.dry_run:
        if submitting.cluster() == "slurm":  # the job as submitit gets it: the same JobSpec, set-up lines, what each rank runs
            print(spec.sbatch_preview(setup=options.setup))
        else:
            print(spec.shell(spec.mpirun_command() if spec.world_size > 1 else spec.command()))
        return ExitCode.OK
    executor = submitting.make_executor(spec, options.folder, options.setup)
    job = executor.submit(submitting.Ranks(), spec, str(Path(run_dir) / "metrics.json"))
    print(f"submitted job {job.job_id}; run directory {run_dir}; logs {job.paths.stdout}", flush=True)
    return wait(job, options.wait_timeout) if options.wait else ExitCode.OK


if __name__ == "__main__":
    sys.exit(main())
