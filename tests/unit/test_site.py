"""site.py: every field of a site profile, its allowed forms, hostile values, unknown keys, and the
command line overriding the profile (through `mnist-hpc slurm render --site` and the launchers)."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, our_lines
from mnist_hpc import cli, jobspec, site

CANARY = "site-canary"


def write(tmp_path: Path, text: str, name: str = "site.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def render(*argv: str) -> tuple[int, str, str]:
    """``mnist-hpc slurm render ARGV`` in this process: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = cli.main(["slurm", "render", *argv])
    return status, out.getvalue(), err.getvalue()


# ------------------------------------------------------------------ every field, as it lands in the script
FIELD_CASES = [
    ("partition", 'partition = "gpu"', ["#SBATCH --partition=gpu\n"]),
    ("account", 'account = "proj-1"', ["#SBATCH --account=proj-1\n"]),
    ("qos", 'qos = "high"', ["#SBATCH --qos=high\n"]),
    ("time", 'time = "1-00:00"', ["#SBATCH --time=1-00:00\n"]),
    ("modules", 'modules = ["openmpi/4.1.6", "cuda@12.4"]',
     ["module load openmpi/4.1.6 cuda@12.4 || { echo 'error: module load openmpi/4.1.6 cuda@12.4 failed"]),
    ("venv", 'venv = "~/envs/mnist"', ['  source "$HOME/envs/mnist/bin/activate"\n']),
    ("venv", 'venv = "$HOME/mnist-hpc/.venv"', ['  source "$HOME/mnist-hpc/.venv/bin/activate"\n']),  # pmi2.toml's
    ("venv", 'venv = "envs/mnist"', ['  source "$SLURM_SUBMIT_DIR/envs/mnist/bin/activate"\n']),
    ("venv", 'venv = "/opt/mnist"', ['  source "/opt/mnist/bin/activate"\n']),
    ("conda", 'conda = "mnist-hpc"', ['  eval "$(conda shell.bash hook)"\n  conda activate mnist-hpc\n']),
    ("launcher", 'launcher = "srun --mpi=cray_shasta"',
     ['\nsrun --mpi=cray_shasta --kill-on-bad-exit=1 --cpus-per-task="$SLURM_CPUS_PER_TASK" "${command[@]}" &\n']),
    ("launcher", 'launcher = "mpirun"', ['\nmpirun -np "$SLURM_NTASKS" "${command[@]}" &\n']),
    ("gpus_per_node", "gpus_per_node = 2", ["#SBATCH --gpus-per-node=2\n", "#SBATCH --ntasks-per-node=2\n"]),
    ("gpu_request", 'gpus_per_node = 2\ngpu_request = "gres"', ["#SBATCH --gres=gpu:2\n"]),
    ("gpu_type", 'gpus_per_node = 2\ngpu_request = "gres"\ngpu_type = "a100"', ["#SBATCH --gres=gpu:a100:2\n"]),
    ("gpu_type", 'gpus_per_node = 2\ngpu_type = "h100"', ["#SBATCH --gpus-per-node=h100:2\n"]),
    ("gpu_bind", 'gpus_per_node = 2\ngpu_bind = "map_gpu:0,1"', [" --gpu-bind=map_gpu:0,1 --cpus-per-task="]),
    ("cpu_bind", 'cpu_bind = "verbose,cores"', ["--kill-on-bad-exit=1 --cpu-bind=verbose,cores --cpus-per-task="]),
    ("cpus_per_task", "cpus_per_task = 6", ["#SBATCH --cpus-per-task=6\n"]),
    ("memory", 'memory = "16G"', ["#SBATCH --mem=16G\n"]),
    ("sbatch", 'sbatch = ["--exclusive", "--constraint=a100"]', ["#SBATCH --exclusive\n", "#SBATCH --constraint=a100\n"]),
    ("environment", '[environment]\nNCCL_DEBUG = "WARN"\nOMP_PROC_BIND = "close"',
     ["\nexport NCCL_DEBUG=WARN\nexport OMP_PROC_BIND=close\n"]),
]


@pytest.mark.parametrize("field,toml,expected", FIELD_CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(FIELD_CASES)])
def test_each_field_lands_in_the_rendered_script(field, toml, expected, tmp_path):
    status, script, err = render("train_cnn", "--site", str(write(tmp_path, toml)))
    assert status == 0, err
    for fragment in expected:
        assert fragment in script, f"{fragment!r} not in\n{script}"
    baseline = render("train_cnn")[1]
    assert script != baseline


def test_the_cases_cover_every_field():
    assert {case[0] for case in FIELD_CASES} == set(site.FIELDS)


def test_gpu_bind_is_left_out_of_a_cpu_job(tmp_path):
    path = write(tmp_path, 'gpus_per_node = 4\ngpu_bind = "closest"')
    assert "--gpu-bind=closest" in render("train_cnn", "--site", str(path))[1]
    cpu = render("train_cnn", "--site", str(path), "--gpus-per-node", "0")[1]
    assert "--gpu-bind=" not in cpu and "#SBATCH --gpus-per-node" not in cpu, cpu


# ------------------------------------------------------------------ refused: one line naming file, field, form
HOSTILE = [f"$(touch {CANARY})", f"`touch {CANARY}`", f"; touch {CANARY}", f"x\ntouch {CANARY}",
           f"'; touch {CANARY}; '", f'"; touch {CANARY}; "', "gpu\n", "10\n", "a b", "", "\\"]
STRING_FIELDS = ["partition", "account", "qos", "conda", "gpu_type", "gpu_bind", "cpu_bind", "memory", "venv", "time",
                 "launcher", "gpu_request"]


def toml_for(field: str, value: str) -> str:
    quoted = json.dumps(value)  # a TOML basic string: the same escapes as JSON
    if field in ("modules", "sbatch"):
        return f"{field} = [{quoted}]"
    if field == "environment":
        return f"[environment]\nNAME = {quoted}"
    if field == "environment name":
        return f"[environment]\n{quoted} = \"1\""
    return f"{field} = {quoted}"


@pytest.mark.parametrize("field", [*STRING_FIELDS, "modules", "sbatch", "environment", "environment name"])
@pytest.mark.parametrize("value", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_values_are_refused_in_one_line(field, value, tmp_path, monkeypatch):
    if field == "environment" and value == "":
        return  # an empty value is a value (NAME= unsets nothing, it sets "")
    monkeypatch.chdir(tmp_path)
    path = write(tmp_path, toml_for(field, value))
    status, script, err = render("train_cnn", "--site", str(path))
    assert status == 2 and script == "", script
    lines = err.strip().splitlines()
    named = {"environment": "environment.NAME", "environment name": "environment"}.get(field, field)
    assert len(lines) == 1 and lines[0].startswith(f"error: --site {path}: {named}: "), err
    assert "is not allowed (" in lines[0] or "not a SLURM time" in lines[0] or "one of" in lines[0], lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["site.toml"]  # nothing ran, nothing written


@pytest.mark.parametrize("toml,fragment", [
    ("gpus_per_node = \"4\"", "gpus_per_node: '4' is not allowed (an integer from 0 to 64)"),
    ("gpus_per_node = true", "gpus_per_node: True is not allowed (an integer from 0 to 64)"),
    ("gpus_per_node = 65", "gpus_per_node: 65 is not allowed"),
    ("cpus_per_task = 0", "cpus_per_task: 0 is not allowed (an integer from 1 to 4096)"),
    ("modules = \"openmpi\"", "modules: 'openmpi' is not allowed (a list of module names"),
    ("environment = \"A=1\"", "environment: 'A=1' is not allowed (a table of NAME = \"value\")"),
    ("time = \"1:99\"", "time: '1:99' has minutes or seconds above 59"),
    ("time = 60", "time: 60 is not allowed (a SLURM time"),
    ("launcher = \"srun --mpi=pmix --export=NONE\"", "launcher: 'srun --mpi=pmix --export=NONE' is not allowed "
     "(one of 'srun --mpi=pmix', 'srun --mpi=pmi2', 'srun --mpi=cray_shasta', 'mpirun')"),
    ("memory = \"16GB\"", "memory: '16GB' is not allowed (a SLURM memory size"),
    ("gpu_bind = \"closest;reboot\"", "gpu_bind: 'closest;reboot' is not allowed (SLURM's --gpu-bind forms"),
    ("venv = \"~/a\"\nconda = \"b\"", "venv and conda: give one environment to activate, not both"),
    ("launcher = \"mpirun\"\ncpu_bind = \"cores\"", "cpu_bind applies to the srun launchers"),
    ("sbatch = [\"--partition=other\"]", "sbatch: '--partition=other' is set by partition, not by an extra"),
    ("sbatch = [\"--mem=1G\"]", "sbatch: '--mem=1G' is set by memory"),
    ("sbatch = [\"-p debug\"]", "sbatch: '-p debug' is not allowed (sbatch options as '--name' or '--name=value'"),
])
def test_wrong_forms_and_combinations_are_refused(toml, fragment, tmp_path):
    path = write(tmp_path, toml)
    status, script, err = render("train_cnn", "--site", str(path))
    assert status == 2 and script == "" and err.count("\n") == 1, err
    assert err.startswith(f"error: --site {path}: ") and fragment in err, err


def test_unknown_keys_are_named(tmp_path):
    path = write(tmp_path, 'partitoin = "gpu"\nlauncher = "srun --mpi=pmix"\n[slurm]\nnodes = 2')
    status, _, err = render("train_cnn", "--site", str(path))
    assert status == 2 and err.startswith(f"error: --site {path}: unknown keys 'partitoin', 'slurm' (allowed: "), err


@pytest.mark.parametrize("make,fragment", [
    (lambda p: p / "missing.toml", "cannot read it (No such file or directory)"),
    (lambda p: p, "cannot read it (Is a directory)"),
    (lambda p: write(p, "partition = gpu"), "not a TOML file (Invalid value (at line 1, column 13))"),
    (lambda p: write(p, "x").with_name("a\nb.toml"), "is not allowed (a file name of printable characters)"),
])
def test_unreadable_profiles_are_one_line(make, fragment, tmp_path):
    status, script, err = render("train_cnn", "--site", str(make(tmp_path)))
    assert status == 2 and script == "" and err.count("\n") == 1 and fragment in err, err


# ------------------------------------------------------------------ the command line overrides the profile
def test_command_line_options_override_the_profile():
    gpu = str(REPO / "slurm" / "sites" / "gpu4.toml")
    status, script, err = render("train_cnn", "--site", gpu, "--partition", "other", "--time", "10",
                                 "--gpus-per-node", "2", "--cpus-per-task", "3", "--account", "me", "--job-name", "j")
    assert status == 0, err
    for line in ("--partition=other", "--time=10", "--gpus-per-node=2", "--ntasks-per-node=2", "--cpus-per-task=3",
                 "--account=me", "--job-name=j"):
        assert f"#SBATCH {line}\n" in script
    assert "#SBATCH --partition=gpu" not in script and "#SBATCH --gpus-per-node=4" not in script
    assert "#SBATCH --ntasks-per-node=1\n" in render("train_cnn", "--site", gpu, "--ntasks-per-node", "1")[1]
    assert "#SBATCH --ntasks-per-node=4\n" in render("train_cnn", "--site", gpu)[1]  # one task per GPU


def load_launcher(name: str):
    spec = importlib.util.spec_from_file_location(f"launcher_{name}", REPO / "launchers" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_submitit_gets_the_profile_and_the_overrides(tmp_path):
    submit = load_launcher("submit")
    options, train_args = submit.parse(["--site", str(REPO / "slurm" / "sites" / "gpu4.toml"), "--nodes", "3",
                                        "--account", "me", "--setup", "echo mine", "--", "--model", "simple",
                                        "--out", str(tmp_path / "run")])
    spec, _ = submit.build_spec(options, train_args)
    parameters = spec.submitit_parameters(setup=options.setup)
    assert parameters["nodes"] == 3 and parameters["tasks_per_node"] == 4 and parameters["cpus_per_task"] == 8
    assert parameters["slurm_partition"] == "gpu" and parameters["slurm_account"] == "me"
    assert parameters["slurm_srun_args"] == ["--mpi=pmix", "--kill-on-bad-exit=1", "--cpu-bind=cores",
                                             "--gpu-bind=closest"]
    assert parameters["slurm_additional_parameters"] == {"gpus-per-node": "4", "mem": "0", "exclusive": True,
                                                         "constraint": "a100"}
    assert parameters["slurm_setup"][0].startswith("module load cuda/12.4 openmpi/4.1.6 || ")
    assert parameters["slurm_setup"][1:] == ["export NCCL_DEBUG=WARN", "echo mine"]
    assert parameters["timeout_min"] == 120


def test_scaling_gets_the_profile_without_its_venv():
    """scaling.py builds its jobs as submit.py does: the profile's resources and modules, not its venv
    (submitit's tasks run the submitting Python)."""
    from mnist_hpc import cli, jobspec

    scaling = load_launcher("scaling")
    options = scaling.build_parser().parse_args(["--site", str(REPO / "slurm" / "sites" / "gpu4.toml")])
    spec = cli.spec_from_options(jobspec.TEMPLATES["bench"].spec, options, python=sys.executable)
    parameters = spec.submitit_parameters(setup=options.setup)
    assert parameters["slurm_partition"] == "gpu" and parameters["tasks_per_node"] == 4
    assert parameters["slurm_setup"][0].startswith("module load cuda/12.4 openmpi/4.1.6 || ")
    assert not any("activate" in line for line in parameters["slurm_setup"]), parameters["slurm_setup"]


@pytest.mark.parametrize("launcher", ["submit", "scaling"])
def test_submitit_refuses_an_mpirun_site_in_one_line(launcher, tmp_path):
    path = write(tmp_path, 'launcher = "mpirun"')
    result = subprocess.run([sys.executable, str(REPO / "launchers" / f"{launcher}.py"), "--dry-run", "--site",
                             str(path)], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert our_lines(result.stderr) == [f"error: --site {path}: launcher 'mpirun' cannot start submitit's tasks, "
                                        "which srun starts (use an srun launcher, or the sbatch templates: "
                                        "mnist-hpc slurm render)"], result.stderr


@pytest.mark.parametrize("launcher", ["submit", "scaling"])
@pytest.mark.parametrize("text,fragment", [
    ('partition = "gpu; rm -rf ~"', "partition"), ('colour = "blue"', "colour"), (None, "cannot read")])
def test_submitit_launchers_refuse_a_bad_profile_in_one_line_before_submitting(launcher, text, fragment, tmp_path):
    """A bad value, an unknown key or a missing file: exit 2, one line naming the profile, no job."""
    path = write(tmp_path, text) if text is not None else tmp_path / "missing.toml"
    result = subprocess.run([sys.executable, str(REPO / "launchers" / f"{launcher}.py"), "--site", str(path)],
                            capture_output=True, text=True, timeout=120, cwd=tmp_path)
    lines = our_lines(result.stderr)
    assert result.returncode == 2 and len(lines) == 1, result.stdout + result.stderr
    assert lines[0].startswith(f"error: --site {path}") and fragment in lines[0], lines
    assert "submitted" not in result.stdout


# ------------------------------------------------------------------ the rendered set-up runs as written
def run_script(script: str, tmp_path: Path, mnist_dir: Path, **env: str) -> subprocess.CompletedProcess:
    """A rendered script's batch step as SLURM would run it, outside any allocation, and without python
    on PATH: the profile's environment must provide it."""
    path = tmp_path / "job.sbatch"
    path.write_text(script)
    base = {k: v for k, v in os.environ.items() if k != "MNIST_HPC_SETUP"}
    environment = dict(base, SLURM_SUBMIT_DIR=str(tmp_path), SLURM_JOB_NAME="mnist-simple", SLURM_JOB_ID="7",
                       SLURM_JOB_NODELIST="node1", SLURM_CPUS_PER_TASK="1", MNIST_HPC_ARGS="--epochs 1",
                       MNIST_HPC_DATA=str(mnist_dir), PATH="/usr/bin:/bin", **env)
    return subprocess.run(["bash", str(path)], capture_output=True, text=True, timeout=120, cwd=tmp_path,
                          env=environment)


def fake_venv(tmp_path: Path) -> Path:
    """A 'virtualenv' whose activate puts this test's Python first on PATH and leaves a mark."""
    venv = tmp_path / "env"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "activate").write_text(
        f"export PATH={shlex.quote(str(Path(sys.executable).parent))}:$PATH\ntouch {shlex.quote(str(tmp_path))}/activated\n")
    return venv


def test_the_profile_environment_is_activated_and_mnist_hpc_setup_replaces_it(tmp_path, mnist_dir):
    venv = fake_venv(tmp_path)
    path = write(tmp_path, f'venv = "{venv}"\n[environment]\nMNIST_SITE_MARK = "from-the-profile"')
    script = render("train_simple", "--site", str(path))[1]
    script = script.replace('"${command[@]}" --dry-run || exit 2',
                            'echo "mark=$MNIST_SITE_MARK"; "${command[@]}" --dry-run || exit 2')
    result = run_script(script, tmp_path, mnist_dir)
    assert (tmp_path / "activated").exists() and "mark=from-the-profile" in result.stdout, result.stdout + result.stderr
    assert "would train" in result.stdout  # the dry run found python and mnist_hpc through the profile's venv
    (tmp_path / "activated").unlink()
    own = f"export PATH={shlex.quote(str(Path(sys.executable).parent))}:$PATH"
    result = run_script(script, tmp_path, mnist_dir, MNIST_HPC_SETUP=own)
    assert "would train" in result.stdout and not (tmp_path / "activated").exists(), result.stderr


def test_a_module_that_does_not_load_ends_the_job_in_one_line(tmp_path, mnist_dir):
    path = write(tmp_path, 'modules = ["no-such-module/1.0"]')
    result = run_script(render("train_simple", "--site", str(path))[1], tmp_path, mnist_dir,
                        MNIST_HPC_SETUP=f"export PATH={shlex.quote(str(Path(sys.executable).parent))}:$PATH")
    assert result.returncode == 2, result.stdout + result.stderr
    assert our_lines(result.stderr)[-1] == f"error: module load no-such-module/1.0 failed (site profile {path})"
    assert "job 7" not in result.stdout and not (tmp_path / "runs").exists()  # nothing after the set-up ran
