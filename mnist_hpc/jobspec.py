"""The single description of a job: resources + the command every rank runs.

``slurm/`` rendering, ``launchers/submit.py`` (submitit) and ``launchers/local.py`` (mpirun) all
build their command lines from a :class:`JobSpec`, so resources and arguments cannot drift apart.
Every user value is validated here and shell-quoted wherever it ends up in a script.
"""

from __future__ import annotations

import os
import re
import shlex
import sys
from dataclasses import dataclass, field, replace
from typing import Sequence

from .config import INTERRUPTED_EXIT

# Debian's Open MPI works under srun only with PMIx; one dead rank ends the whole step
SRUN_OPTIONS = ("--mpi=pmix", "--kill-on-bad-exit=1")
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")  # fullmatch: `$` would accept a trailing newline
TIME_RE = re.compile(r"(?:(\d+)-)?(\d+(?::\d+){0,2})")


class JobSpecError(ValueError):
    """A job option of the wrong type or form; one line."""


def parse_time(text: str) -> int:
    """A SLURM time limit -> seconds: MINUTES, MINUTES:SECONDS, HOURS:MINUTES:SECONDS,
    DAYS-HOURS, DAYS-HOURS:MINUTES or DAYS-HOURS:MINUTES:SECONDS."""
    match = TIME_RE.fullmatch(text.strip())
    if not match:
        raise JobSpecError(f"--time: {text!r} is not a SLURM time "
                           "(MINUTES, MINUTES:SECONDS, HH:MM:SS or D-HH[:MM[:SS]])")
    days, clock = match.group(1), [int(part) for part in match.group(2).split(":")]
    if days is not None:
        hours, minutes, seconds = (clock + [0, 0])[:3]
    elif len(clock) == 3:
        hours, minutes, seconds = clock
    else:
        hours, minutes, seconds = 0, clock[0], (clock[1:] or [0])[0]
    if seconds > 59 or (minutes > 59 and (hours or days is not None)):
        raise JobSpecError(f"--time: {text!r} has minutes or seconds above 59")
    return ((int(days or 0) * 24 + hours) * 60 + minutes) * 60 + seconds


def check_name(option: str, value: str | None) -> None:
    if value is not None and not NAME_RE.fullmatch(value):
        raise JobSpecError(f"{option}: {value!r} is not allowed (letters, digits, '.', '_', '-'; at most 64)")


@dataclass(frozen=True)
class JobSpec:
    """Resources of a job and the ``mnist-hpc`` arguments its ranks run."""

    args: tuple[str, ...]  # e.g. ("train", "--model", "cnn", ...)
    name: str = "mnist-hpc"
    nodes: int = 1
    ntasks_per_node: int = 1
    gpus_per_node: int = 0
    cpus_per_task: int = 1
    time: str = "01:00:00"
    partition: str | None = None
    account: str | None = None
    python: str = field(default_factory=lambda: sys.executable)
    signal_seconds: int = 90  # SIGUSR1 this long before the time limit: checkpoint + requeue

    def __post_init__(self) -> None:
        for option, value in (("--nodes", self.nodes), ("--ntasks-per-node", self.ntasks_per_node),
                              ("--cpus-per-task", self.cpus_per_task)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise JobSpecError(f"{option}: {value!r} is not a positive integer")
        if not isinstance(self.gpus_per_node, int) or self.gpus_per_node < 0:
            raise JobSpecError(f"--gpus-per-node: {self.gpus_per_node!r} is not a non-negative integer")
        if self.gpus_per_node and self.ntasks_per_node > self.gpus_per_node:
            raise JobSpecError(f"--ntasks-per-node: {self.ntasks_per_node} is more than --gpus-per-node "
                               f"{self.gpus_per_node}; use one task per GPU")
        check_name("--job-name", self.name)
        check_name("--partition", self.partition)
        check_name("--account", self.account)
        parse_time(self.time)
        for arg in self.args:
            if "\n" in arg or "\0" in arg:
                raise JobSpecError(f"argument {arg!r}: newlines and NUL bytes are not allowed")

    @property
    def world_size(self) -> int:
        return self.nodes * self.ntasks_per_node

    @property
    def time_seconds(self) -> int:
        return parse_time(self.time)

    def command(self) -> list[str]:
        """What every rank executes."""
        return [self.python, "-m", "mnist_hpc", *self.args]

    def sbatch_options(self) -> dict[str, str]:
        """``#SBATCH`` options (long names without dashes -> value)."""
        options = {"job-name": self.name, "nodes": str(self.nodes),
                   "ntasks-per-node": str(self.ntasks_per_node),
                   "cpus-per-task": str(self.cpus_per_task), "time": self.time,
                   "signal": f"B:USR1@{self.signal_seconds}"}
        if self.gpus_per_node:
            options["gpus-per-node"] = str(self.gpus_per_node)
        if self.partition:
            options["partition"] = self.partition
        if self.account:
            options["account"] = self.account
        return options

    def srun_command(self) -> list[str]:
        return ["srun", *SRUN_OPTIONS, f"--cpus-per-task={self.cpus_per_task}", *self.command()]

    def mpirun_command(self) -> list[str]:
        """A local launch of ``world_size`` ranks on this machine."""
        if self.world_size > (os.cpu_count() or 1):  # more ranks than cores: share them
            placement = ["--oversubscribe", "--bind-to", "none"]
        else:
            placement = ["--bind-to", "core", "--map-by", "core"]
        return ["mpirun", "-np", str(self.world_size), *placement, *self.command()]

    def shell(self, argv: Sequence[str]) -> str:
        return shlex.join(argv)

    def with_resources(self, **overrides) -> "JobSpec":
        """A copy with some resources changed (``None`` values are ignored)."""
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})

    def sbatch_preview(self, setup: Sequence[str] = ()) -> str:
        """The job as submitit submits it: its #SBATCH options, set-up lines, and the step each rank
        runs (submitit's own runner then calls ``mnist-hpc`` with these arguments; it also adds
        its output and requeue lines)."""
        return "\n".join([*(f"#SBATCH --{key}={value}" for key, value in self.sbatch_options().items()),
                          *setup, f"{shlex.join(self.srun_command())}  # via submitit's task runner"])

    def submitit_parameters(self, setup: Sequence[str] = ()) -> dict[str, object]:
        """The same resources for ``submitit.AutoExecutor.update_parameters``."""
        parameters: dict[str, object] = {
            "name": self.name, "nodes": self.nodes, "tasks_per_node": self.ntasks_per_node,
            "cpus_per_task": self.cpus_per_task, "timeout_min": max(1, self.time_seconds // 60),
            "slurm_srun_args": list(SRUN_OPTIONS),
            "slurm_signal_delay_s": self.signal_seconds, "slurm_setup": list(setup),
        }
        if self.gpus_per_node:
            parameters["gpus_per_node"] = self.gpus_per_node
        if self.partition:
            parameters["slurm_partition"] = self.partition
        if self.account:
            parameters["slurm_account"] = self.account
        return parameters


# ------------------------------------------------------------------ sbatch templates
@dataclass(frozen=True)
class Template:
    spec: JobSpec
    description: str
    out: str = '"$run_dir"'  # the --out value, in shell syntax


TEMPLATES: dict[str, Template] = {
    "train_simple": Template(
        JobSpec(("train", "--model", "simple"), name="mnist-simple", nodes=1, ntasks_per_node=1,
                cpus_per_task=2, time="00:30:00", python="python"),
        "the softmax model on one CPU node"),
    "train_cnn": Template(
        JobSpec(("train", "--model", "cnn"), name="mnist-cnn", nodes=2, ntasks_per_node=1,
                cpus_per_task=1, time="02:00:00", python="python"),
        "the CNN over several nodes, one task per GPU (CPU-only unless --gpus-per-node is given)"),
    "bench": Template(
        JobSpec(("bench", "throughput", "--model", "cnn"), name="mnist-bench", nodes=1, ntasks_per_node=1,
                cpus_per_task=1, time="00:30:00", python="python"),
        "training throughput at one node count (slurm/scaling_sweep.sh submits it per count)",
        out='"$run_dir/np$SLURM_NTASKS.json"'),
}

SBATCH_BODY = r"""set -uo pipefail
# ---- the warning signal (--signal=B:USR1@...) is trapped from the start: one that arrives during
#      set-up or validation is kept, not lost (and does not kill this script)
srun_pid= stop_requested=
trap 'stop_requested=1; echo "caught USR1: checkpointing at the end of this epoch, then requeueing"; [ -n "$srun_pid" ] && kill -USR1 "$srun_pid"' USR1
# ---- environment: MNIST_HPC_SETUP is run as shell code (module load ..., conda activate ...)
if [ -n "${MNIST_HPC_SETUP:-}" ]; then
  eval "$MNIST_HPC_SETUP"
elif [ -f "$SLURM_SUBMIT_DIR/.venv/bin/activate" ]; then
  source "$SLURM_SUBMIT_DIR/.venv/bin/activate"
fi
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}
# ---- arguments: MNIST_HPC_ARGS is split on white space and never evaluated
case "${MNIST_HPC_ARGS:-}" in
  *$'\n'*) echo "error: MNIST_HPC_ARGS holds a newline; put all train arguments on one line" >&2; exit 2 ;;
esac
read -r -a extra_args <<< "${MNIST_HPC_ARGS:-}"
run_dir=${MNIST_HPC_RUN_DIR:-$SLURM_SUBMIT_DIR/runs/$SLURM_JOB_NAME-$SLURM_JOB_ID}
command=(__COMMAND__ --out __OUT__ "${extra_args[@]}")
echo "job $SLURM_JOB_ID (restart ${SLURM_RESTART_COUNT:-0}) on $SLURM_JOB_NODELIST: ${command[*]}"
# ---- validate before any MPI work: a bad argument fails here, in one line
"${command[@]}" --dry-run || exit 2
# ---- train; on the warning signal, ranks finish the epoch, checkpoint, exit 75 and we requeue
if [ -n "$stop_requested" ]; then  # signalled before training began: the checkpoints stand as they are
  echo "requeueing job $SLURM_JOB_ID before training; it resumes from $run_dir/checkpoints"
  scontrol requeue "$SLURM_JOB_ID"
  exit 0
fi
srun __SRUN_OPTIONS__ --cpus-per-task="$SLURM_CPUS_PER_TASK" "${command[@]}" &
srun_pid=$!
[ -n "$stop_requested" ] && kill -USR1 "$srun_pid"  # a signal between the check above and this line
wait "$srun_pid"
status=$?
while kill -0 "$srun_pid" 2>/dev/null; do wait "$srun_pid"; status=$?; done
if [ "$status" -eq __INTERRUPTED__ ]; then
  echo "requeueing job $SLURM_JOB_ID; it resumes from $run_dir/checkpoints"
  scontrol requeue "$SLURM_JOB_ID"
  exit 0
fi
echo "mnist-hpc exited with status $status; run directory $run_dir"
exit "$status"
"""


def render_sbatch(name: str, spec: JobSpec | None = None) -> str:
    """The complete sbatch script of template ``name`` (with ``spec``'s resources if given)."""
    template = TEMPLATES[name]
    spec = spec or template.spec
    lines = [
        "#!/bin/bash",
        f"# {name}.sbatch: {template.description}.",
        f"# Generated by 'mnist-hpc slurm render {name}' from mnist_hpc/jobspec.py: edit there, not here.",
        "#",
        "# Submit as it is, or override any option on the command line, e.g.",
        f"#   sbatch --nodes=4 --ntasks-per-node=4 --gpus-per-node=4 --partition=gpu slurm/{name}.sbatch",
        "# Environment: MNIST_HPC_SETUP (set-up shell line), MNIST_HPC_ARGS (extra train arguments),",
        "#   MNIST_HPC_DATA (MNIST folder), MNIST_HPC_RUN_DIR (default runs/<job name>-<job id>).",
        *(f"#SBATCH --{key}={value}" for key, value in spec.sbatch_options().items()),
        "#SBATCH --requeue",
        "#SBATCH --open-mode=append",
        "#SBATCH --output=slurm-%x-%j.out",
        "",
    ]
    body = (SBATCH_BODY.replace("__COMMAND__", shlex.join(spec.command())).replace("__OUT__", template.out)
            .replace("__SRUN_OPTIONS__", shlex.join(SRUN_OPTIONS)))
    return "\n".join(lines) + body.replace("__INTERRUPTED__", str(INTERRUPTED_EXIT))


def launch_environment(base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for launching ranks: quiet TensorFlow; Open MPI allowed to run as root."""
    env = dict(os.environ if base is None else base)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if os.geteuid() == 0:
        env.setdefault("OMPI_ALLOW_RUN_AS_ROOT", "1")
        env.setdefault("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
    return env
