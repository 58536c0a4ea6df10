"""The single description of a job: resources + the command every rank runs.

``slurm/`` rendering, ``launchers/submit.py`` (submitit) and ``launchers/local.py`` (mpirun) all
build their command lines from a :class:`JobSpec`, so resources and arguments cannot drift apart.
Every user value is validated here and shell-quoted wherever it ends up in a script. A site profile
(site.py) adds the launcher, modules, binding and extra options; the sbatch script itself is
``templates/job.sbatch.in`` with ``@@NAME@@`` placeholders.
"""

from __future__ import annotations

import os
import re
import shlex
import string
import sys
from dataclasses import dataclass, field, replace
from importlib import resources
from typing import TYPE_CHECKING, Sequence

from .config import INTERRUPTED_EXIT

if TYPE_CHECKING:
    from .site import Site

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
    site: Site | None = None  # a site profile (mnist_hpc/site.py); None: the generic pmix site

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
    def profile(self) -> Site:
        """The site this job runs on: its profile, or the generic one (srun --mpi=pmix, no modules)."""
        from .site import GENERIC

        return self.site or GENERIC

    @property
    def world_size(self) -> int:
        return self.nodes * self.ntasks_per_node

    @property
    def time_seconds(self) -> int:
        return parse_time(self.time)

    def command(self) -> list[str]:
        """What every rank executes."""
        return [self.python, "-m", "mnist_hpc", *self.args]

    def sbatch_options(self) -> dict[str, str | None]:
        """``#SBATCH`` options (long names without dashes -> value; None: a flag without value)."""
        options: dict[str, str | None] = {
            "job-name": self.name, "nodes": str(self.nodes), "ntasks-per-node": str(self.ntasks_per_node),
            "cpus-per-task": str(self.cpus_per_task), "time": self.time, "signal": f"B:USR1@{self.signal_seconds}"}
        if self.gpus_per_node:
            options.update(self.profile.gpu_option(self.gpus_per_node))
        if self.partition:
            options["partition"] = self.partition
        if self.account:
            options["account"] = self.account
        return {**options, **self.profile.sbatch_options()}

    def sbatch_lines(self) -> list[str]:
        return [f"#SBATCH --{key}" + ("" if value is None else f"={value}")
                for key, value in self.sbatch_options().items()]

    def srun_options(self) -> list[str]:
        """What follows ``srun`` for every rank (the site's PMI, binding); srun launchers only."""
        if not self.profile.uses_srun:
            raise JobSpecError(f"--site {self.profile.path}: launcher 'mpirun' cannot start submitit's tasks, "
                               "which srun starts (use an srun launcher, or the sbatch templates: mnist-hpc slurm render)")
        return self.profile.launch(self.gpus_per_node)[1:]

    def srun_command(self) -> list[str]:
        return ["srun", *self.srun_options(), f"--cpus-per-task={self.cpus_per_task}", *self.command()]

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
        return "\n".join([*self.sbatch_lines(), *self.submitit_setup(setup),
                          f"{shlex.join(self.srun_command())}  # via submitit's task runner"])

    def submitit_setup(self, setup: Sequence[str] = ()) -> list[str]:
        """The site's modules and variables, then ``setup``: submitit's job runs this Python (sys.executable),
        so the site's venv/conda activation is not needed there."""
        return [*self.profile.setup_lines(), *setup]

    def submitit_parameters(self, setup: Sequence[str] = ()) -> dict[str, object]:
        """The same resources for ``submitit.AutoExecutor.update_parameters``."""
        parameters: dict[str, object] = {
            "name": self.name, "nodes": self.nodes, "tasks_per_node": self.ntasks_per_node,
            "cpus_per_task": self.cpus_per_task, "timeout_min": max(1, self.time_seconds // 60),
            "slurm_srun_args": self.srun_options(),
            "slurm_signal_delay_s": self.signal_seconds, "slurm_setup": self.submitit_setup(setup),
        }
        if self.gpus_per_node and "gres" in (gpus := self.profile.gpu_option(self.gpus_per_node)):
            parameters["slurm_gres"] = gpus["gres"]
        elif self.gpus_per_node:
            parameters["slurm_additional_parameters"] = dict(gpus)  # [TYPE:]N: submitit's gpus_per_node is an int
        if self.partition:
            parameters["slurm_partition"] = self.partition
        if self.account:
            parameters["slurm_account"] = self.account
        extra = {key: True if value is None else value for key, value in self.profile.sbatch_options().items()}
        if extra:  # qos, mem and the site's extra #SBATCH lines, as submitit writes them
            parameters["slurm_additional_parameters"] = {**parameters.get("slurm_additional_parameters", {}), **extra}
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


class SbatchTemplate(string.Template):
    """``mnist_hpc/templates/job.sbatch.in``: placeholders are ``@@NAME@@``, which no shell line uses."""

    delimiter = "@@"
    pattern = r"@@(?:(?P<escaped>@@)|(?P<named>[A-Z_]+)@@|(?P<braced>(?!))|(?P<invalid>))"


WHOLE_LINE = re.compile(r"@@([A-Z_]+)@@\n")


def sbatch_template() -> str:
    return resources.files(__package__).joinpath("templates", "job.sbatch.in").read_text(encoding="utf-8")


def fill(text: str, values: dict[str, str]) -> str:
    """``text`` with every placeholder replaced; a line holding only a placeholder whose value is
    empty is left out, so an empty block leaves no blank line."""
    kept = "".join(line for line in text.splitlines(keepends=True)
                   if not (m := WHOLE_LINE.fullmatch(line)) or values[m.group(1)])
    return SbatchTemplate(kept).substitute(values)


def render_sbatch(name: str, spec: JobSpec | None = None) -> str:
    """The complete sbatch script of template ``name`` (with ``spec``'s resources and site if given)."""
    template = TEMPLATES[name]
    spec = spec or template.spec
    site = spec.profile
    test, activate = site.activate_lines()
    if site.path:
        environment = f"the modules and variables of {site.path}; MNIST_HPC_SETUP, if set, replaces its venv/conda"
    else:
        environment = "MNIST_HPC_SETUP is run as shell code (module load ..., conda activate ...)"
    return fill(sbatch_template(), {
        "NAME": name, "DESCRIPTION": template.description,
        "RENDER_ARGS": shlex.join([name, *(["--site", site.path] if site.path else [])]),
        "SBATCH_LINES": "\n".join([*spec.sbatch_lines(), "#SBATCH --requeue", "#SBATCH --open-mode=append",
                                    "#SBATCH --output=slurm-%x-%j.out"]),
        "ENVIRONMENT": environment, "SITE_SETUP": "\n".join(site.setup_lines()),
        "ACTIVATE": "\n".join([test, *(f"  {line}" for line in activate)]),
        "COMMAND": shlex.join(spec.command()), "OUT": template.out, "LAUNCH": site.launch_line(spec.gpus_per_node),
        "INTERRUPTED": str(INTERRUPTED_EXIT)})


def launch_environment(base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for launching ranks: quiet TensorFlow; Open MPI allowed to run as root."""
    env = dict(os.environ if base is None else base)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if os.geteuid() == 0:
        env.setdefault("OMPI_ALLOW_RUN_AS_ROOT", "1")
        env.setdefault("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
    return env
