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


ACTIVATE = f"source {shlex.quote(str(Path(sys.executable).parent / 'activate'))}"


def run_template(extra: str, tmp_path: Path, mnist_dir: Path, setup: str | None = ACTIVATE,
                 path: str = "") -> subprocess.CompletedProcess:
    """The sbatch template's batch step, run as SLURM would run it, without srun on PATH."""
    env = dict(os.environ, SLURM_SUBMIT_DIR=str(tmp_path), SLURM_JOB_NAME="mnist-simple", SLURM_JOB_ID="7",
               SLURM_JOB_NODELIST="node1", SLURM_CPUS_PER_TASK="1", MNIST_HPC_ARGS=extra, MNIST_HPC_DATA=str(mnist_dir),
               MNIST_HPC_SETUP=setup or "",  # no srun on PATH: reaching it would fail differently
               PATH=f"{path}{Path(sys.executable).parent}:/usr/bin:/bin")
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


def test_template_without_a_set_up_line_uses_the_venv_of_the_submit_dir(tmp_path, mnist_dir):
    """No MNIST_HPC_SETUP: the job sources .venv/bin/activate of the directory it was submitted from."""
    activate = tmp_path / ".venv" / "bin" / "activate"
    activate.parent.mkdir(parents=True)
    activate.write_text(f"touch {shlex.quote(str(tmp_path / 'activated'))}\n{ACTIVATE}\n")
    result = run_template("--lr nan", tmp_path, mnist_dir, setup=None)
    assert (tmp_path / "activated").exists(), result.stdout + result.stderr
    assert result.returncode == 2 and "argument --lr: 'nan'" in our_lines(result.stderr)[-1]


def test_a_signal_during_the_jobs_set_up_is_kept_and_requeues_before_training(tmp_path, mnist_dir):
    """USR1 (SLURM's warning signal) while the set-up line runs: the job validates, then requeues itself
    before any srun step, so the requeued job starts training afresh (scontrol is a stand-in that records)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text(f"#!/bin/sh\necho \"$@\" > {shlex.quote(str(tmp_path / 'scontrol.args'))}\n")
    (bin_dir / "scontrol").chmod(0o755)
    result = run_template("--epochs 1", tmp_path, mnist_dir, setup=f"{ACTIVATE}; kill -USR1 $$", path=f"{bin_dir}:")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "caught USR1" in result.stdout and "requeueing job 7 before training" in result.stdout, result.stdout
    assert (tmp_path / "scontrol.args").read_text().split() == ["requeue", "7"]
    assert not (tmp_path / "runs").exists()  # no srun, no training, nothing written


def test_local_dry_run_prints_the_commands_and_starts_nothing(tmp_path, mnist_dir):
    result = subprocess.run([sys.executable, str(REPO / "launchers" / "local.py"), "--np", "2", "--dry-run", "train",
                             "--model", "simple", "--out", str(tmp_path / "run"), "--data-dir", str(mnist_dir)],
                            capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("+ mpirun -np 2 ") and f"-m mnist_hpc train --model simple --out {tmp_path}" \
        in result.stdout, result.stdout
    assert not any(tmp_path.iterdir())


def test_scaling_dry_run_prints_one_benchmark_per_node_count_and_submits_nothing(tmp_path):
    result = subprocess.run([sys.executable, str(REPO / "launchers" / "scaling.py"), "--dry-run", "--node-counts", "1",
                             "2", "--out", str(tmp_path / "out"), "--", "--model", "cnn", "--synthetic"],
                            capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    planned = [line for line in result.stdout.splitlines() if " node(s): " in line]
    assert [line.split(" node(s): ")[0] for line in planned] == ["1", "2"], result.stdout
    assert all("-m mnist_hpc bench throughput --model cnn --synthetic --out" in line for line in planned)  # once
    assert planned[1].endswith(f"--out {tmp_path / 'out' / 'np2.json'}")
    assert not any(tmp_path.iterdir())  # no folder, no job


@pytest.mark.parametrize("option", ["--job-name", "--partition", "--account"])
def test_names_with_a_trailing_newline_are_refused(option):
    result = mnist_hpc("slurm", "render", "train_simple", option, "gpu\n", timeout=60)
    assert result.returncode == 2 and our_lines(result.stderr) == [
        f"error: {option}: 'gpu\\n' is not allowed (letters, digits, '.', '_', '-'; at most 64)"], result.stderr


# ------------------------------------------------------------------ divergence
# ------------------------------------------------------------------ full disks, read-only and other OS errors
# ------------------------------------------------------------------ unreadable inputs
# ------------------------------------------------------------------ memory, batch size


def test_local_names_one_new_run_directory_for_all_its_ranks(tmp_path, mnist_dir):
    """`local.py --np 2 train` without --out: one runs/MODEL/DATE-TIME, passed to every rank as --out
    (each rank would otherwise name its own)."""
    result = subprocess.run([sys.executable, str(REPO / "launchers" / "local.py"), "--np", "2", "--dry-run", "train",
                             "--model", "simple", "--data-dir", str(mnist_dir)], capture_output=True, text=True,
                            timeout=120, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr
    command = shlex.split(result.stdout.splitlines()[0][2:])
    assert command[0] == "mpirun" and command.count("--out") == 1
    out = Path(command[command.index("--out") + 1])
    assert out.parent == Path("runs/simple") and len(out.name) == len("20261202-031500")
