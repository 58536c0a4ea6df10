#!/usr/bin/env python3
"""Submit mnist-hpc training with submitit: SLURM when `srun` is on PATH, local processes otherwise.

    python launchers/submit.py --nodes 2 --ntasks-per-node 1 --time 30 --wait -- --model cnn --epochs 2

Everything after ``--`` is passed to ``mnist-hpc train`` and validated before anything is submitted.
Resources come from the same JobSpec as slurm/train_cnn.sbatch. The training is Checkpointable:
on timeout or preemption submitit requeues it and ``--resume auto`` continues from the newest
checkpoint in the run directory.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import submitit

from mnist_hpc import cli, jobspec


class Training(submitit.helpers.Checkpointable):
    """What each task runs. Under SLURM every task is one Horovod rank (srun --mpi=pmix);
    with submitit's local executor one task starts the ranks itself with mpirun."""

    def __call__(self, spec: jobspec.JobSpec, run_dir: str) -> dict | None:
        environment = submitit.JobEnvironment()
        requeued = RequeueNotice() if environment.global_rank != 0 else None
        try:
            if environment.cluster == "local" and spec.world_size > 1:
                status = subprocess.run(spec.mpirun_command(), env=jobspec.launch_environment()).returncode
            else:
                status = cli.main(list(spec.args))
            if status != 0:
                raise RuntimeError(f"rank {environment.global_rank}: mnist-hpc exited with status {status}")
        except Exception:
            if requeued and requeued.received:
                requeued.leave()
            raise
        if environment.global_rank != 0:  # rank 0 writes the metrics; submitit returns its result
            return None
        return json.loads((Path(run_dir) / "metrics.json").read_text())


class RequeueNotice:
    """Preemption or timeout on a task other than rank 0. submitit's signal handler on rank 0 checkpoints
    (Checkpointable) and requeues the job, which ends every rank mid-epoch; the other ranks then fail
    in Horovod. Such a task must leave without a result file: submitit would read a stale failure
    from it and report the requeued job as failed. (Rank 0's handler only logs on other ranks.)"""

    def __init__(self) -> None:
        self.received = False
        signal.signal(getattr(signal, "SIG" + submitit.JobEnvironment.USR_SIG), self._handle)  # SUBMITIT_PREEMPT_SIGNAL

    def _handle(self, signum, frame) -> None:
        self.received = True

    @staticmethod
    def leave() -> None:
        print("preempted: this task leaves without a result; the requeued job resumes from the newest checkpoint",
              file=sys.stderr, flush=True)
        os._exit(1)  # no exception reaches submitit, so no result pickle is written


def parse(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    parser = cli.Parser(prog="submit.py", description=__doc__.splitlines()[0])
    cli.add_resource_arguments(parser)
    parser.add_argument("--setup", action="append", default=[],
                        help="shell line run before the job (module load ..., source .venv/bin/activate)")
    parser.add_argument("--folder", type=Path, default=Path("runs/submitit"), help="submitit logs and pickles")
    parser.add_argument("--wait", action="store_true", help="wait for the job and print its metrics")
    parser.add_argument("--wait-timeout", type=cli.positive_int, default=3600, help="seconds (default: %(default)s)")
    parser.add_argument("--dry-run", action="store_true", help="print the sbatch script instead of submitting")
    argv = sys.argv[1:] if argv is None else argv
    split = argv.index("--") if "--" in argv else len(argv)
    return parser.parse_args(argv[:split]), argv[split + 1:]


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
    return spec, run_dir


def make_executor(spec: jobspec.JobSpec, options: argparse.Namespace) -> submitit.AutoExecutor:
    executor = submitit.AutoExecutor(folder=options.folder / "%j")
    parameters = spec.submitit_parameters(setup=options.setup)
    if executor.cluster != "slurm":  # one local task starts the ranks with mpirun
        parameters = {"timeout_min": parameters["timeout_min"], "name": spec.name, "tasks_per_node": 1}
    executor.update_parameters(**parameters)
    return executor


def wait(job: submitit.Job, timeout: float) -> int:
    try:
        next(submitit.helpers.as_completed([job], timeout=timeout, poll_frequency=2))
    except TimeoutError:
        job.cancel()
        print(f"job {job.job_id}: no result after {timeout:.0f} s, cancelled; logs: {job.paths.stderr}",
              file=sys.stderr)
        return 1
    try:
        metrics = job.results()[0]  # rank 0 returns the metrics
    except Exception as err:  # noqa: BLE001 - submitit re-raises the job's failure
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(f"job {job.job_id} failed ({job.state}): {first_line}; logs: {job.paths.stderr}", file=sys.stderr)
        return 1
    print(json.dumps({k: v for k, v in metrics.items() if k != "history"}, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        options, train_args = parse(argv)
        spec, run_dir = build_spec(options, train_args)
    except (jobspec.JobSpecError, *cli.INPUT_ERRORS) as err:
        cli.print_error(err)
        return 2
    os.environ.update(jobspec.launch_environment())
    if options.dry_run:
        with tempfile.TemporaryDirectory() as scratch:  # a dry run leaves no submitit folder behind
            cluster = submitit.AutoExecutor(folder=scratch).cluster
        if cluster == "slurm":  # the job as submitit gets it: the same JobSpec, set-up lines, what each rank runs
            print(spec.sbatch_preview(setup=options.setup))
        else:
            print(spec.shell(spec.mpirun_command() if spec.world_size > 1 else spec.command()))
        return 0
    executor = make_executor(spec, options)
    job = executor.submit(Training(), spec, run_dir)
    print(f"submitted job {job.job_id}; run directory {run_dir}; logs {job.paths.stdout}", flush=True)
    return wait(job, options.wait_timeout) if options.wait else 0


if __name__ == "__main__":
    sys.exit(main())
