"""The pins: one place per stack (stacks/*.txt), and everything a user installs from agrees with it."""

import os
import re
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from conftest import REPO
from mnist_hpc import stack

STACKS = sorted((REPO / "stacks").glob("*.txt"))


def stack_pins(path: Path) -> dict[str, str]:
    return dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)$", path.read_text(), re.M))


def stack_field(path: Path, key: str) -> str:
    return re.search(rf"^# {key}: *(.+)$", path.read_text(), re.M).group(1).strip()


def test_the_two_stacks_exist():
    assert [p.stem for p in STACKS] == ["default", "tf2.15"]


@pytest.mark.parametrize("path", STACKS, ids=lambda p: p.stem)
def test_stack_pins_satisfy_pyproject(path):
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pins = stack_pins(path)
    required = [Requirement(s) for s in project["dependencies"] + project["optional-dependencies"]["test"]]
    if stack_field(path, "keras") == "tf-keras":  # the default stack is what the cpu extra installs
        required += [Requirement(s) for s in project["optional-dependencies"]["cpu"]]
    for req in required:
        assert req.name in pins, f"{path.name} does not pin {req.name}"
        assert req.specifier.contains(pins[req.name]), f"{path.name}: {req.name}=={pins[req.name]} not in {req}"
    assert pins["tensorflow"] == pins["tensorflow-cpu"]
    python_ok = [v for v in stack_field(path, "python").split()]
    assert all(Requirement(f"python{project['requires-python']}").specifier.contains(f"{v}.0") for v in python_ok)


def test_default_stack_is_current_and_keras2():
    pins = stack_pins(REPO / "stacks" / "default.txt")
    assert stack_field(REPO / "stacks" / "default.txt", "python").split()[0] == "3.12"
    assert pins["tf-keras"].split(".")[:2] == pins["tensorflow"].split(".")[:2]  # the matching Keras 2
    patch = REPO / stack_field(REPO / "stacks" / "default.txt", "horovod-patch")
    assert patch.is_file() and pins["horovod"] in patch.name


def test_environment_yml_pins_equal_the_default_stack():
    env = (REPO / "environment.yml").read_text()
    pins = stack_pins(REPO / "stacks" / "default.txt")
    conda_pins = dict(re.findall(r"^\s+- ([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?==(\S+)$", env, re.M))
    assert conda_pins, "no pinned pip packages found in environment.yml"
    for name, version in conda_pins.items():
        assert pins.get(name) == version, f"environment.yml pins {name}=={version}, stacks/default.txt {pins.get(name)}"
    assert f"python={stack_field(REPO / 'stacks' / 'default.txt', 'python').split()[0]}" in env
    assert "scripts/horovod/build.sh" in env


def test_setup_script_pins_nothing_itself():
    """Exact versions live in stacks/*.txt only: the scripts read them."""
    for script in ("scripts/setup.sh", "scripts/horovod/build.sh", "scripts/horovod/cuda_env.sh", "Makefile"):
        text = (REPO / script).read_text()
        assert not re.search(r"(tensorflow|numpy|mpi4py|horovod|keras)[a-z-]*==\d", text), script


def test_fallback_check_runs_the_fallback_tests_on_the_tf2_15_stack():
    """`make fallback-check` (make -n: printed, not run) sets up STACK=tf2.15 in .venv-tf2.15 and runs the
    tests marked `fallback` with that venv's Python; .ci/run runs it after `make test`."""
    outer = ("STACK", "VENV", "MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES")  # `make test` runs this test
    dry = subprocess.run(["make", "-n", "fallback-check"], cwd=REPO, capture_output=True, text=True, timeout=60,
                         env={k: v for k, v in __import__("os").environ.items() if k not in outer})
    assert dry.returncode == 0, dry.stderr
    commands = [line for line in dry.stdout.splitlines() if not line.startswith("make[")]  # not make's own lines
    assert "make STACK=tf2.15 VENV=.venv-tf2.15 setup" in commands and "bash scripts/setup.sh" in commands, commands
    assert commands[-1] == ".venv-tf2.15/bin/python -m pytest -m fallback", commands
    ci = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines() if line.startswith("step ")]
    assert ci == ["step make test", "step make fallback-check"]  # each within CI's time budget (test below)


@pytest.mark.fallback
def test_installed_versions_are_the_stacks():
    """This interpreter runs one of the stacks exactly, with Keras 2 as tf.keras."""
    from importlib.metadata import version

    import horovod
    import tensorflow as tf

    tf_version = tf.__version__
    (path,) = [p for p in STACKS if stack_pins(p)["tensorflow"] == tf_version]
    pins = stack_pins(path)
    assert f"{sys.version_info[0]}.{sys.version_info[1]}" in stack_field(path, "python").split()
    assert horovod.__version__ == pins["horovod"]
    for name in ("numpy", "mpi4py", "submitit", "pytest", "hypothesis", "pytest-timeout"):
        assert version(name) == pins[name], name
    distribution, keras_version = stack.keras_of(tf)
    assert keras_version.startswith("2.")  # Keras 2, never 3
    if "tf-keras" in pins:
        assert (distribution, keras_version) == ("tf-keras", pins["tf-keras"])


def fake_tool(folder: Path, name: str, output: str = "") -> Path:
    """An executable ``folder/name`` that prints ``output`` whatever it is asked (a stand-in that
    answers only the question a script asks it, e.g. a Python's version)."""
    folder.mkdir(parents=True, exist_ok=True)
    tool = folder / name
    tool.write_text(f"#!/bin/sh\necho '{output}'\n")
    tool.chmod(0o755)
    return tool


@pytest.mark.parametrize("env,expect", [
    ({"STACK": "tf9"}, "STACK=tf9: no such stack (allowed: default tf2.15)"),
    ({"PYTHON": "/nonexistent/python3.12"}, "PYTHON=/nonexistent/python3.12 does not run"),
    ({"PYTHON": "{fake}/python3.10"}, "is Python 3.10; stack 'default' needs 3.12 or 3.13 or 3.11"),
    ({"STACK": "tf2.15", "PYTHON": "{fake}/python3.12"}, "stack 'tf2.15' needs 3.11"),
    ({"GPU": "yes"}, "GPU=yes: use GPU=1 for a GPU (NCCL) environment or GPU=0 for CPU only"),
])
def test_setup_refuses_a_wrong_stack_or_python_in_one_line(tmp_path, env, expect):
    """Before anything is installed: one line naming the value and what is allowed. The interpreters
    are fakes that print their version, so no particular Python install (pyenv or other) is needed."""
    fake = tmp_path / "bin"
    for version in ("3.10", "3.12"):
        fake_tool(fake, f"python{version}", version)
    for tool in ("mpicc", "cmake", "g++", "patch"):  # present as far as setup's tool check looks (`command -v`)
        fake_tool(fake, tool)
    env = {k: v.format(fake=fake) for k, v in env.items()}
    clean = {k: v for k, v in __import__("os").environ.items() if k not in ("STACK", "VENV", "PYTHON", "GPU")}
    result = subprocess.run(["bash", str(REPO / "scripts" / "setup.sh")], capture_output=True, text=True, timeout=120,
                            env={**clean, "PATH": f"{fake}:{clean.get('PATH', '/usr/bin:/bin')}",
                                 "VENV": str(tmp_path / "venv"), **env})
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("[setup] error: ") and expect in lines[0], result.stderr
    assert not (tmp_path / "venv").exists()


@pytest.mark.parametrize("env,expect", [
    ({"CUDA_HOME": "/nonexistent/cuda"}, "CUDA_HOME=/nonexistent/cuda has no bin/nvcc: point it at a CUDA toolkit"),
    ({"CUDA_HOME": "{cuda13}"}, "is CUDA 13.0; TensorFlow's wheels use CUDA 12: load a CUDA 12.x toolkit"),
    ({"NCCL_HOME": "/nonexistent/nccl"}, "NCCL_HOME=/nonexistent/nccl has no include/nccl.h"),
    ({}, "no NCCL in"),  # this CPU venv has no NCCL wheel
])
def test_gpu_build_settings_refuse_a_wrong_toolkit_in_one_line(env, expect, tmp_path):
    """scripts/horovod/cuda_env.sh (make setup GPU=1) names the bad variable before any download or build."""
    cuda13 = tmp_path / "cuda-13.0"  # a toolkit folder whose nvcc says what a CUDA 13 nvcc says
    fake_tool(cuda13 / "bin", "nvcc", "Cuda compilation tools, release 13.0, V13.0.88")
    env = {k: v.format(cuda13=cuda13) for k, v in env.items()}
    clean = {k: v for k, v in __import__("os").environ.items() if not k.startswith(("CUDA", "NCCL", "HOROVOD_"))}
    result = subprocess.run(["bash", str(REPO / "scripts" / "horovod" / "cuda_env.sh"), sys.executable,
                             str(REPO / "stacks" / "default.txt")], capture_output=True, text=True, timeout=60,
                            env={**clean, **env})
    assert result.returncode == 1 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("[cuda] error: ") and expect in lines[0], result.stderr


def test_gpu_build_compiler_wheels_are_pinned_in_the_default_stack():
    path = REPO / "stacks" / "default.txt"
    wheels = stack_field(path, "gpu-build").split()
    pins = stack_pins(path)
    assert wheels and all(name in pins for name in wheels), wheels
    assert {pins[n].split(".")[0] for n in ("nvidia-cuda-nvcc", "nvidia-cuda-crt", "nvidia-nvvm")} == {"13"}


def path_without(folder: Path, leave_out) -> str:
    """``folder`` holding links to the programs of /usr/bin and /bin except those ``leave_out(name)`` is true of."""
    folder.mkdir(parents=True, exist_ok=True)
    for directory in ("/usr/bin", "/bin"):
        for program in Path(directory).iterdir():
            if not leave_out(program.name) and not (folder / program.name).exists():
                (folder / program.name).symlink_to(program)
    return str(folder)


@pytest.mark.parametrize("versions,chosen", [(["3.11", "3.12", "3.13"], "3.12"), (["3.11", "3.13"], "3.13"),
                                             (["3.11"], "3.11"), (["3.10"], None)])
def test_setup_looks_up_python_312_first_then_the_newest_other(tmp_path, versions, chosen):
    """docs/setup.md: PYTHON, else python3.12, else the newest of 3.13 and 3.11 (on PATH and in pyenv);
    none of them is one line. Fake interpreters print their version; the real ones are left off PATH."""
    fake = tmp_path / "fake"
    for version in versions:
        fake_tool(fake, f"python{version}", version)
    system = path_without(tmp_path / "system", lambda name: name.startswith("python"))
    clean = {k: v for k, v in __import__("os").environ.items() if k not in ("STACK", "VENV", "PYTHON", "GPU")}
    result = subprocess.run(["bash", str(REPO / "scripts" / "setup.sh"), "--check"], capture_output=True, text=True,
                            timeout=120, env={**clean, "PATH": f"{fake}:{system}", "PYENV_ROOT": str(tmp_path / "none"),
                                              "VENV": str(tmp_path / "venv")})
    assert result.returncode == 1, result.stdout + result.stderr
    if chosen:
        assert f"[setup] would create {tmp_path / 'venv'} with Python {chosen} " in result.stdout, result.stdout
    else:
        assert result.stderr.strip().splitlines() == [
            "[setup] error: no Python 3.12, 3.13, 3.11 found on PATH or in pyenv: install one (e.g. apt-get install "
            "python3.12-venv, 'pyenv install 3.12', or 'module load python/3.12') or set PYTHON=/path/to/python3.12"]


def test_setup_names_a_missing_build_tool_in_one_line(tmp_path):
    """Without apt-get (MNIST_HPC_SETUP_APT=0, as on a cluster) a missing cmake is one line saying what to load."""
    fake = tmp_path / "fake"
    fake_tool(fake, "python3.12", "3.12")
    system = path_without(tmp_path / "system", lambda name: name == "cmake" or name.startswith("python"))
    clean = {k: v for k, v in __import__("os").environ.items() if k not in ("STACK", "VENV", "PYTHON", "GPU")}
    result = subprocess.run(["bash", str(REPO / "scripts" / "setup.sh")], capture_output=True, text=True, timeout=120,
                            env={**clean, "PATH": f"{fake}:{system}", "MNIST_HPC_SETUP_APT": "0",
                                 "VENV": str(tmp_path / "venv")})
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "[setup] error: missing cmake: on a cluster run e.g. 'module load openmpi cmake gcc' so that mpicc, cmake and "
        "g++ are on PATH (or install them as root: apt-get install libopenmpi-dev openmpi-bin cmake g++ patch)"]
    assert not (tmp_path / "venv").exists()


def test_ci_interrupts_a_step_that_outruns_its_budget(tmp_path):
    """.ci/run's steps share one time budget; a step that outruns it gets SIGINT (pytest's summary and slowest
    tests then reach the log) and the run fails with 124 instead of being cut off by CI without output."""
    script = (REPO / ".ci" / "run").read_text()
    steps = [line for line in script.splitlines() if line.startswith("step ")]
    probe = (f"step {sys.executable} -c 'import time\ntry: time.sleep(60)\n"
             "except KeyboardInterrupt: print(\"interrupted-cleanly\"); raise SystemExit(2)'\n"  # as pytest does
             "echo never-reached\n")
    ci_dir = tmp_path / ".ci"
    ci_dir.mkdir()
    (ci_dir / "run").write_text(script.replace("\n".join(steps) + "\n", probe))
    started = time.monotonic()
    result = subprocess.run(["bash", str(ci_dir / "run")], capture_output=True, text=True, timeout=60,
                            env=dict(os.environ, CI_SECONDS="2"))
    assert time.monotonic() - started < 30
    assert result.returncode == 124, (result.stdout, result.stderr)
    assert "interrupted-cleanly" in result.stdout and "never-reached" not in result.stdout
    assert "ran out of the 2-second budget" in result.stderr
