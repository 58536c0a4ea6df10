"""Site profiles: how one cluster wants its jobs, in a TOML file (examples in ``slurm/sites/``).

A profile names the partition, account, QOS and time limit; the modules to load and the
environment to activate; the launcher (``srun --mpi=pmix|pmi2|cray_shasta`` or ``mpirun`` inside
the allocation); GPUs per node and how to ask for them; CPU and GPU binding, cpus per task and
memory; extra ``#SBATCH`` options and environment variables. Every value is checked against its
allowed form when the file is read and refused in one line naming the file, the field and what is
allowed: nothing in a profile is ever run as shell code. Command-line options override it.
"""

from __future__ import annotations

import re
import shlex
import tomllib
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING

from .jobspec import NAME_RE, JobSpecError, parse_time

if TYPE_CHECKING:
    from .jobspec import JobSpec

# the launchers a profile may name -> what goes before the rank command; srun's own flags follow
LAUNCHERS = ("srun --mpi=pmix", "srun --mpi=pmi2", "srun --mpi=cray_shasta", "mpirun")
GPU_REQUESTS = ("gpus-per-node", "gres")
MAX_GPUS = 64

NAME = "letters, digits, '.', '_', '-'; at most 64"
# (pattern to fullmatch, what is allowed) per string field; fullmatch, so a trailing newline fails
FORMS: dict[str, tuple[re.Pattern[str], str]] = {
    "partition": (NAME_RE, NAME), "account": (NAME_RE, NAME), "qos": (NAME_RE, NAME), "conda": (NAME_RE, NAME),
    "gpu_type": (NAME_RE, NAME),
    "modules": (re.compile(r"[A-Za-z0-9][A-Za-z0-9._+@/-]{0,127}"),
                "module names: letters, digits, '.', '_', '+', '@', '/', '-'"),
    "venv": (re.compile(r"(?:~/|\$HOME/)?[A-Za-z0-9._+/-]{1,255}"),
             "a path of letters, digits, '.', '_', '+', '/', '-', optionally starting with ~/ or $HOME/"),
    "gpu_bind": (re.compile(r"(?:verbose,)?(?:closest|none|single:\d+|per_task:\d+|map_gpu:[0-9*,]+"
                            r"|mask_gpu:[0-9a-fA-Fx*,]+)"),
                 "SLURM's --gpu-bind forms: closest, none, single:N, per_task:N, map_gpu:LIST, mask_gpu:LIST, "
                 "optionally after 'verbose,'"),
    "cpu_bind": (re.compile(r"(?:verbose,)?(?:none|sockets|cores|threads|ldoms|rank|rank_ldom"
                            r"|(?:map|mask)_(?:cpu|ldom):[0-9a-fA-Fx*,]+)"),
                 "SLURM's --cpu-bind forms: none, sockets, cores, threads, ldoms, rank, rank_ldom, "
                 "map_cpu:LIST, mask_cpu:LIST, map_ldom:LIST, mask_ldom:LIST, optionally after 'verbose,'"),
    "memory": (re.compile(r"[0-9]{1,9}[KMGT]?"), "a SLURM memory size: a number with an optional K, M, G or T, e.g. 64G"),
    "sbatch": (re.compile(r"--([a-z][a-z0-9-]{0,40})(?:=[A-Za-z0-9._:,/@+%=-]{1,200})?"),
               "sbatch options as '--name' or '--name=value' (value: letters, digits, '.', '_', ':', ',', '/', "
               "'@', '+', '%', '=', '-')"),
    "environment": (re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}"), "variable names: letters, digits, '_'"),
    "environment value": (re.compile(r"[A-Za-z0-9._:,/@+%=-]{0,1000}"),
                          "values of letters, digits, '.', '_', ':', ',', '/', '@', '+', '%', '=', '-'"),
}
# #SBATCH options a profile sets through its own fields (or the job sets itself): not in `sbatch`
OWN_OPTIONS = {"partition": "partition", "account": "account", "qos": "qos", "time": "time", "mem": "memory",
               "gres": "gpus_per_node", "gpus-per-node": "gpus_per_node", "gpus": "gpus_per_node",
               "cpus-per-task": "cpus_per_task", "job-name": "--job-name", "nodes": "--nodes",
               "ntasks-per-node": "--ntasks-per-node", "ntasks": "--ntasks-per-node", "signal": "the template",
               "output": "the template", "requeue": "the template", "open-mode": "the template"}


class SiteError(JobSpecError):
    """A site profile that cannot be used; one line naming the file and the field."""


@dataclass(frozen=True)
class Site:
    """One cluster's way of running jobs. The default instance is the generic site the committed
    ``slurm/*.sbatch`` are rendered for: ``srun --mpi=pmix``, no modules, the submit folder's .venv."""

    path: str = ""  # the file it was read from ("" for the generic site)
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time: str | None = None
    modules: tuple[str, ...] = ()
    venv: str | None = None  # None: $SLURM_SUBMIT_DIR/.venv when it exists
    conda: str | None = None
    launcher: str = LAUNCHERS[0]
    gpus_per_node: int = 0
    gpu_request: str = GPU_REQUESTS[0]
    gpu_type: str | None = None
    gpu_bind: str | None = None
    cpu_bind: str | None = None
    cpus_per_task: int | None = None
    memory: str | None = None
    sbatch: tuple[str, ...] = ()
    environment: tuple[tuple[str, str], ...] = ()

    # ---------------------------------------------------------------- what the job gets
    def apply(self, spec: JobSpec, **overrides) -> JobSpec:
        """``spec`` with this site's resources, then the command line's ``overrides`` (None: not
        given). With GPUs, a site runs one task per GPU unless --ntasks-per-node says otherwise."""
        given = {key: value for key, value in overrides.items() if value is not None}
        own = {"partition": self.partition, "account": self.account, "time": self.time,
               "cpus_per_task": self.cpus_per_task, "gpus_per_node": self.gpus_per_node or None}
        merged = {**{key: value for key, value in own.items() if value is not None}, **given}
        if merged.get("gpus_per_node") and "ntasks_per_node" not in given:
            merged["ntasks_per_node"] = merged["gpus_per_node"]
        return replace(spec, site=self, **merged)

    @property
    def uses_srun(self) -> bool:
        return self.launcher.startswith("srun ")

    def gpu_option(self, gpus: int) -> dict[str, str]:
        """How this site asks for ``gpus`` GPUs per node: --gpus-per-node=[TYPE:]N or --gres=gpu:[TYPE:]N."""
        count = f"{self.gpu_type}:{gpus}" if self.gpu_type else str(gpus)
        return {"gres": f"gpu:{count}"} if self.gpu_request == "gres" else {"gpus-per-node": count}

    def sbatch_options(self) -> dict[str, str | None]:
        """The site's own ``#SBATCH`` options beyond the job's resources (None: a flag without value)."""
        options: dict[str, str | None] = {}
        if self.qos:
            options["qos"] = self.qos
        if self.memory:
            options["mem"] = self.memory
        for line in self.sbatch:
            key, _, value = line.removeprefix("--").partition("=")
            options[key] = value or None
        return options

    def launch(self, gpus: int) -> list[str]:
        """The launcher and its options, before ``--cpus-per-task`` and the rank command.
        Horovod: every task is one rank; srun wires them up through the site's PMI, mpirun through
        its own launch inside the allocation (Open MPI and Intel MPI read SLURM's node list)."""
        if not self.uses_srun:
            return ["mpirun"]
        # Horovod: one dead rank ends the whole step instead of leaving the others in an all-reduce
        options = [*self.launcher.split(), "--kill-on-bad-exit=1"]
        if self.cpu_bind:
            options.append(f"--cpu-bind={self.cpu_bind}")
        if self.gpu_bind and gpus:
            options.append(f"--gpu-bind={self.gpu_bind}")
        return options

    def launch_line(self, gpus: int) -> str:
        """The template's launch, in shell: srun takes the job's cpus per task (srun >= 22.05 does not
        inherit sbatch's); mpirun starts one rank per task of the allocation."""
        if self.uses_srun:
            return shlex.join(self.launch(gpus)) + ' --cpus-per-task="$SLURM_CPUS_PER_TASK"'
        return 'mpirun -np "$SLURM_NTASKS"'

    def setup_lines(self) -> list[str]:
        """Modules and environment variables, as shell lines (every value checked when read)."""
        lines = []
        if self.modules:  # a module that will not load ends the job here, before any rank starts
            load = "module load " + " ".join(self.modules)
            failed = shlex.quote(f"error: {load} failed (site profile {self.path})")
            lines.append(f"{load} || {{ echo {failed} >&2; exit 2; }}")
        lines += [f"export {name}={value}" for name, value in self.environment]
        return lines

    def activate_lines(self) -> tuple[str, list[str]]:
        """(the shell test, the lines) that activate the Python environment when MNIST_HPC_SETUP is
        not set: the profile's venv or conda environment, else the submit folder's .venv if any."""
        if self.conda:
            return "else", ['eval "$(conda shell.bash hook)"', f"conda activate {self.conda}"]
        if self.venv is None:
            activate = '"$SLURM_SUBMIT_DIR/.venv/bin/activate"'
            return f"elif [ -f {activate} ]; then", ["# shellcheck source=/dev/null", f"source {activate}"]
        if self.venv.startswith(("~/", "$HOME/")):
            where = "$HOME/" + self.venv.split("/", 1)[1]
        else:
            where = self.venv if self.venv.startswith("/") else f"$SLURM_SUBMIT_DIR/{self.venv}"
        return "else", ["# shellcheck source=/dev/null", f'source "{where}/bin/activate"']


GENERIC = Site()
FIELDS = tuple(f.name for f in fields(Site) if f.name != "path")


# ------------------------------------------------------------------ reading a profile
def load(path: str | Path) -> Site:
    """Read and check the profile at ``path``; any problem is one line (SiteError)."""
    where = f"--site {path}"
    if not str(path).isprintable():  # the path is named in the rendered script's comments and messages
        raise SiteError(f"--site: {str(path)!r} is not allowed (a file name of printable characters)")
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as err:
        raise SiteError(f"{where}: cannot read it ({err.strerror or err})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise SiteError(f"{where}: not a TOML file ({err})") from None
    return parse(data, str(path))


def parse(data: dict, path: str) -> Site:
    """A Site from a profile's TOML table; ``path`` names the file in every error."""
    where = f"--site {path}"
    unknown = sorted(set(data) - set(FIELDS))
    if unknown:
        raise SiteError(f"{where}: unknown key{'s' * (len(unknown) > 1)} {', '.join(map(repr, unknown))} "
                        f"(allowed: {', '.join(FIELDS)})")

    def refuse(key: str, value: object, allowed: str) -> SiteError:
        return SiteError(f"{where}: {key}: {value!r} is not allowed ({allowed})")

    def text(key: str, value: object, form: str | None = None) -> str:
        pattern, allowed = FORMS[form or key]
        if not isinstance(value, str) or not pattern.fullmatch(value):
            raise refuse(key, value, allowed)
        return value

    def texts(key: str, value: object) -> tuple[str, ...]:
        if not isinstance(value, list):
            raise refuse(key, value, f"a list of {FORMS[key][1]}")
        return tuple(text(key, item) for item in value)

    def count(key: str, value: object, minimum: int, maximum: int) -> int:
        if not isinstance(value, int) or isinstance(value, bool) or not minimum <= value <= maximum:
            raise refuse(key, value, f"an integer from {minimum} to {maximum}")
        return value

    def choice(key: str, value: object, allowed: tuple[str, ...]) -> str:
        if value not in allowed:
            raise refuse(key, value, "one of " + ", ".join(map(repr, allowed)))
        return value

    values: dict[str, object] = {}
    for key, value in data.items():
        if key == "time":
            if not isinstance(value, str) or value != value.strip():
                raise refuse(key, value, "a SLURM time: MINUTES, MINUTES:SECONDS, HH:MM:SS or D-HH[:MM[:SS]]")
            try:
                parse_time(value)
            except JobSpecError as err:
                raise SiteError(f"{where}: time: {str(err).removeprefix('--time: ')}") from None
            values[key] = value
        elif key in ("modules", "sbatch"):
            values[key] = texts(key, value)
        elif key == "environment":
            if not isinstance(value, dict):
                raise refuse(key, value, "a table of NAME = \"value\"")
            values[key] = tuple((text(key, name), text(f"environment.{name}", item, "environment value"))
                                for name, item in value.items())
        elif key == "launcher":
            values[key] = choice(key, value, LAUNCHERS)
        elif key == "gpu_request":
            values[key] = choice(key, value, GPU_REQUESTS)
        elif key == "gpus_per_node":
            values[key] = count(key, value, 0, MAX_GPUS)
        elif key == "cpus_per_task":
            values[key] = count(key, value, 1, 4096)
        else:
            values[key] = text(key, value)
    site = Site(path=path, **values)
    check_consistent(site, where)
    return site


def check_consistent(site: Site, where: str) -> None:
    """Fields that are each fine but not together."""
    if site.venv and site.conda:
        raise SiteError(f"{where}: venv and conda: give one environment to activate, not both")
    if not site.uses_srun:
        for key in ("cpu_bind", "gpu_bind"):
            if getattr(site, key):
                raise SiteError(f"{where}: {key} applies to the srun launchers; launcher 'mpirun' binds by its own "
                                "rules (set them in [environment], e.g. OMPI_MCA_hwloc_base_binding_policy)")
    for line in site.sbatch:
        name = FORMS["sbatch"][0].fullmatch(line).group(1)
        if name in OWN_OPTIONS:
            raise SiteError(f"{where}: sbatch: {line!r} is set by {OWN_OPTIONS[name]}, not by an extra #SBATCH line")
