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
from dataclasses import dataclass, field
from typing import Sequence

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
TIME_RE = re.compile(r"^(?:(\d+)-)?(\d{1,2}):(\d{2})(?::(\d{2}))?$|^(\d+)$")


class JobSpecError(ValueError):
    """A job option of the wrong type or form; one line."""


def parse_time(text: str) -> int:
    """SLURM time ``[D-]HH:MM[:SS]`` or minutes -> seconds."""
    match = TIME_RE.match(text.strip())
    if not match:
        raise JobSpecError(f"--time: {text!r} is not a SLURM time (MINUTES, HH:MM:SS or D-HH:MM:SS)")
    days, hours, minutes, seconds, plain = match.groups()
    if plain is not None:
        return int(plain) * 60
    if int(minutes) > 59 or (seconds and int(seconds) > 59):
        raise JobSpecError(f"--time: {text!r} has minutes or seconds above 59")
    return ((int(days or 0) * 24 + int(hours)) * 60 + int(minutes)) * 60 + int(seconds or 0)


def format_time(seconds: int) -> str:
    days, rest = divmod(seconds, 86_400)
    return f"{days}-{rest // 3600:02d}:{rest % 3600 // 60:02d}:{rest % 60:02d}"


def check_name(option: str, value: str | None) -> None:
    if value is not None and not NAME_RE.match(value):
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
        return ["srun", "--mpi=pmix", f"--cpus-per-task={self.cpus_per_task}", "--kill-on-bad-exit=1",
                *self.command()]

    def mpirun_command(self) -> list[str]:
        """A local launch of ``world_size`` ranks on this machine."""
        return ["mpirun", "-np", str(self.world_size), "--bind-to", "core", "--map-by", "core",
                *(["--oversubscribe"] if self.world_size > (os.cpu_count() or 1) else []),
                *self.command()]

    def shell(self, argv: Sequence[str]) -> str:
        return shlex.join(argv)
