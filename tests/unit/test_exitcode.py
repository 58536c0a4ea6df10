"""One exit-code convention (mnist_hpc/exitcode.py) held at every entry point a user runs.

Input errors are 2 with exactly one ``error:`` line on stderr and no argparse usage block, before any
MPI or SLURM work; runtime failures are 1; a signal after a checkpoint is 75. The runtime and
interrupted codes of training are held where real ranks produce them: tests/integration/
test_train_reliability.py (divergence, full disk: 1), test_stack.py (ranks disagree: 1),
test_train_faults.py (SIGTERM: 75).
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import REPO, our_lines
from mnist_hpc import config
from mnist_hpc.exitcode import ExitCode


def test_the_codes_are_the_documented_ones():
    """The README's exit-code table, and what the sbatch templates requeue on (75)."""
    assert {code.name: int(code) for code in ExitCode} == {"OK": 0, "FAILED": 1, "USAGE": 2, "INTERRUPTED": 75}
    assert (config.INTERRUPTED_EXIT, config.DIVERGED_EXIT) == (ExitCode.INTERRUPTED, ExitCode.FAILED)
    for template in ("train_simple", "train_cnn"):
        assert '"$status" -eq 75' in (REPO / "slurm" / f"{template}.sbatch").read_text()


MNIST_HPC = [sys.executable, "-m", "mnist_hpc"]
BAD_INPUT = {  # entry point: (argv, a fragment of its one error line)
    "mnist-hpc train": ([*MNIST_HPC, "train", "--epochs", "two", "--dry-run"], "--epochs: 'two'"),
    "mnist-hpc evaluate": ([*MNIST_HPC, "evaluate", "no/such/run"], "no/such/run"),
    "mnist-hpc data": ([*MNIST_HPC, "data", "verify", "--mirror", "http://x/"], "unrecognized arguments: --mirror"),
    "mnist-hpc bench": ([*MNIST_HPC, "bench", "peak", "--batch-size", "64", "--dry-run"], "--batch-size 64"),
    "mnist-hpc slurm": ([*MNIST_HPC, "slurm", "render", "train_gpu"], "invalid choice: 'train_gpu'"),
    "mnist-hpc doctor": ([*MNIST_HPC, "doctor", "--yaml"], "unrecognized arguments: --yaml"),
    "launchers/local.py": ([sys.executable, "launchers/local.py", "--np", "0", "train"], "--np: '0'"),
    "launchers/submit.py": ([sys.executable, "launchers/submit.py", "--dry-run", "--nodes", "0", "--", "--epochs", "1"],
                            "--nodes: '0'"),
    "launchers/scaling.py": ([sys.executable, "launchers/scaling.py", "--dry-run", "--node-counts", "0"],
                             "--node-counts: '0'"),
    "scripts/gpu_acceptance.py": ([sys.executable, "scripts/gpu_acceptance.py", "--steps", "0"], "--steps: '0'"),
    "launchers/sweep.py": ([sys.executable, "launchers/sweep.py", "submit", "no/such/sweep.toml", "--dry-run"],
                           "no/such/sweep.toml"),
    "mnist-hpc bench tta": ([*MNIST_HPC, "bench", "tta", "--out", "s", "--seeds", "-1", "--dry-run"], "--seeds: '-1'"),
    "benchmarks/tta_study.py": ([sys.executable, "benchmarks/tta_study.py", "--out", "s", "--max-epochs", "0"],
                                "--max-epochs: '0'"),
}


def run(argv: list[str], cwd) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=cwd)


@pytest.mark.parametrize("entry", list(BAD_INPUT))
def test_every_entry_point_refuses_bad_input_with_2_and_one_error_line(entry, tmp_path):
    argv, fragment = BAD_INPUT[entry]
    result = run([argv[0], *(str(REPO / a) if a.endswith(".py") else a for a in argv[1:])], tmp_path)
    assert result.returncode == ExitCode.USAGE, result.stdout + result.stderr
    lines = our_lines(result.stderr)  # stderr without TensorFlow's own C++ log lines
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], result.stderr
    assert "usage:" not in result.stdout + result.stderr
    assert not any(tmp_path.iterdir())  # nothing written, nothing submitted
