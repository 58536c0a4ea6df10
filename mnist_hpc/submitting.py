"""The submitit layer every submitit launcher shares (launchers/submit.py, scaling.py, sweep.py).

- :func:`split_argv`: the launcher's own options before ``--``, the command's after it;
- :func:`make_executor`: a JobSpec's resources -> a submitit AutoExecutor (SLURM when ``srun`` is on
  PATH; otherwise local processes, one task that starts the ranks itself with mpirun);
- :class:`Ranks`: what each task runs, Checkpointable so that preemption and time limits requeue it;
- :func:`outcomes`: each job's result or failure as it ends, with a timeout that cancels the rest.

This module lives in the package (not in launchers/) so that submitit's jobs can unpickle
:class:`Ranks` by reference on any node. No TensorFlow here (``cli.main`` imports it when it trains).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import submitit

from . import cli, jobspec, progress
from .exitcode import ExitCode


def split_argv(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """(the launcher's arguments, the arguments after ``--`` for mnist-hpc)."""
    argv = list(argv)
    split = argv.index("--") if "--" in argv else len(argv)
    return argv[:split], argv[split + 1:]


def make_executor(spec: jobspec.JobSpec, folder: Path, setup: Sequence[str] = (),
                  array_parallelism: int | None = None) -> submitit.AutoExecutor:
    """An executor with ``spec``'s resources; ``folder`` holds submitit's logs and pickles (per job id).
    ``array_parallelism``: at most this many tasks of a ``map_array`` run at once (SLURM's ``%N``)."""
    executor = submitit.AutoExecutor(folder=Path(folder) / "%j")
    parameters = spec.submitit_parameters(setup=setup)
    if executor.cluster != "slurm":  # one local task starts the ranks with mpirun
        parameters = {"timeout_min": parameters["timeout_min"], "name": spec.name, "tasks_per_node": 1}
    elif array_parallelism:
        parameters["slurm_array_parallelism"] = array_parallelism
    executor.update_parameters(**parameters)
    return executor


def cluster() -> str:
    """Where an AutoExecutor would submit: ``slurm`` or ``local`` (nothing is written)."""
    return submitit.AutoExecutor.which()


class Ranks(submitit.helpers.Checkpointable):
    """What each task runs. Under SLURM every task is one Horovod rank (srun); with submitit's local
    executor one task starts the ranks itself with mpirun. Returns rank 0's JSON ``result_file``
    (a run's metrics.json, a benchmark's result), the other ranks None. On preemption or timeout
    submitit calls ``checkpoint`` (Checkpointable) and requeues the same call: ``--resume auto``
    continues the run from its newest checkpoint."""

    def __call__(self, spec: jobspec.JobSpec, result_file: str) -> dict[str, Any] | None:
        environment = submitit.JobEnvironment()
        requeued = RequeueNotice() if environment.global_rank != 0 else None
        try:
            if environment.cluster == "local" and spec.world_size > 1:
                status = subprocess.run(spec.mpirun_command(), env=jobspec.launch_environment()).returncode
            else:
                status = cli.main(list(spec.args))
            if status != ExitCode.OK:
                raise RuntimeError(f"rank {environment.global_rank}: mnist-hpc exited with status {status}")
        except Exception:
            if requeued and requeued.received:
                requeued.leave()
            raise
        if environment.global_rank != 0:  # rank 0 writes the result; submitit returns its return value
            return None
        return json.loads(Path(result_file).read_text())


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
        os._exit(ExitCode.FAILED)  # no exception reaches submitit, so no result pickle is written


@dataclass
class Outcome:
    """A job that ended: rank 0's result, or the first line of its failure."""

    job: submitit.Job
    result: Any = None
    error: str | None = None

    @property
    def log(self) -> Path:
        return Path(self.job.paths.stderr)


class WaitTimeout(RuntimeError):
    """Jobs still unfinished after the timeout; they have been cancelled. One line per job, naming its log."""

    def __init__(self, timeout: float, jobs: Sequence[submitit.Job]) -> None:
        self.jobs = list(jobs)
        super().__init__("; ".join(f"job {job.job_id}: no result after {timeout:.0f} s, cancelled; logs: "
                                   f"{job.paths.stderr}" for job in self.jobs))


def first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def outcomes(jobs: Sequence[submitit.Job], timeout: float, labels: dict[str, str] | None = None) -> Iterator[Outcome]:
    """Each job's outcome as it ends, whatever the order, each state change said as it is seen
    (progress.watch). After ``timeout`` seconds every job still pending or running is cancelled and
    :class:`WaitTimeout` names them with their logs."""
    try:
        for job in progress.watch(list(jobs), timeout, labels=labels):
            try:
                yield Outcome(job, result=job.results()[0])  # rank 0's return value
            except Exception as err:  # noqa: BLE001 - submitit re-raises the job's failure
                yield Outcome(job, error=f"{first_line(err)} ({job.state})")
    except TimeoutError:
        left = [job for job in jobs if not job.done()]
        for job in left:
            job.cancel()
        raise WaitTimeout(timeout, left) from None
