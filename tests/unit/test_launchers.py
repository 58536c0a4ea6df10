"""launchers/ and the sbatch templates refuse hostile numbers and names in one line, before any rank."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, our_lines

def mnist_hpc(*args: str, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mnist_hpc", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, **kwargs)


# ------------------------------------------------------------------ hostile numbers beyond the CLI
@pytest.mark.parametrize("argv,fragment", [
    (["launchers/local.py", "--np", "0", "train"], "--np: '0' is not a number of local ranks from 1 to 64"),
    (["launchers/local.py", "--np", "nan", "train"], "'nan'"),
    (["launchers/local.py", "--np", "65", "train"], "from 1 to 64"),
    (["launchers/local.py", "--np", "2", "--global-batch", "inf", "sweep"], "--global-batch"),
    (["launchers/local.py", "--np", "2", "train", "--lr", "nan"], "--lr: 'nan' is not a positive finite number"),
    (["launchers/local.py", "--np", "2", "bench", "throughput", "--batch-size", "-1"], "--batch-size: '-1'"),
    (["launchers/submit.py", "--dry-run", "--nodes", "nan", "--", "--model", "simple"], "--nodes"),
    (["launchers/submit.py", "--dry-run", "--wait-timeout", "inf", "--", "--model", "simple"], "--wait-timeout"),
    (["launchers/submit.py", "--dry-run", "--", "--lr", "inf"], "--lr: 'inf'"),
    (["launchers/scaling.py", "--dry-run", "--node-counts", "1", "nan"], "--node-counts: 'nan'"),
    (["launchers/scaling.py", "--dry-run", "--", "--batch-size", "1e9"], "--batch-size: '1e9'"),
])
def test_launchers_refuse_hostile_numbers_in_one_line(argv, fragment, tmp_path):
    result = subprocess.run([sys.executable, str(REPO / argv[0]), *argv[1:]], capture_output=True, text=True,
                            timeout=120, cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = our_lines(result.stderr)
    assert len(lines) == 1 and fragment in lines[0], result.stderr
    assert not any(tmp_path.iterdir())  # nothing submitted, nothing written


def run_template(extra: str, tmp_path: Path, mnist_dir: Path) -> subprocess.CompletedProcess:
    """The sbatch template's batch step, run as SLURM would run it, without srun on PATH."""
    env = dict(os.environ, SLURM_SUBMIT_DIR=str(tmp_path), SLURM_JOB_NAME="mnist-simple", SLURM_JOB_ID="7",
               SLURM_JOB_NODELIST="node1", SLURM_CPUS_PER_TASK="1", MNIST_HPC_ARGS=extra, MNIST_HPC_DATA=str(mnist_dir),
               MNIST_HPC_SETUP=f"source {shlex.quote(str(Path(sys.executable).parent / 'activate'))}",
               PATH=f"{Path(sys.executable).parent}:/usr/bin:/bin")  # no srun on PATH: reaching it would fail differently
    return subprocess.run(["bash", str(REPO / "slurm" / "train_simple.sbatch")], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path, env=env)


@pytest.mark.parametrize("extra,option,value", [("--lr nan", "--lr", "nan"), ("--epochs inf", "--epochs", "inf"),
                                                ("--seed 1e400", "--seed", "1e400"),
                                                ("--warmup-epochs=-inf", "--warmup-epochs", "-inf")])
def test_template_validation_refuses_hostile_numbers_before_srun(extra, option, value, tmp_path, mnist_dir):
    result = run_template(extra, tmp_path, mnist_dir)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = our_lines(result.stderr)
    assert len(lines) == 1 and f"{option}: {value!r}" in lines[0], result.stderr
    assert "srun" not in result.stderr and not (tmp_path / "runs").exists()


def test_template_refuses_a_newline_in_its_arguments(tmp_path, mnist_dir):
    """read -r -a would keep the first line only and silently drop the rest."""
    result = run_template("--epochs 1\n--lr nan", tmp_path, mnist_dir)
    assert result.returncode == 2 and our_lines(result.stderr) == [
        "error: MNIST_HPC_ARGS holds a newline; put all train arguments on one line"], result.stderr


@pytest.mark.parametrize("option", ["--job-name", "--partition", "--account"])
def test_names_with_a_trailing_newline_are_refused(option):
    result = mnist_hpc("slurm", "render", "train_simple", option, "gpu\n", timeout=60)
    assert result.returncode == 2 and our_lines(result.stderr) == [
        f"error: {option}: 'gpu\\n' is not allowed (letters, digits, '.', '_', '-'; at most 64)"], result.stderr


# ------------------------------------------------------------------ divergence
# ------------------------------------------------------------------ full disks, read-only and other OS errors
# ------------------------------------------------------------------ unreadable inputs
# ------------------------------------------------------------------ memory, batch size
