"""Quiet ranks (mnist_hpc/quiet.py) in real 2-rank runs: no TensorFlow C++ start-up line reaches the
console, MNIST_HPC_VERBOSE=1 brings them back, and a real error still comes through."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from conftest import REPO, launch, metrics_of
from mnist_hpc import quiet
from mnist_hpc.jobspec import launch_environment

# a C++ log line (absl's "I0000 00:00:..." form or TensorFlow's "2025-...: I file.cc:12]"), and absl's notice
CPP_LINE = re.compile(r"^(?:[IWEF]\d{4} \d\d:\d\d:[\d.]+ +\d+ \S+:\d+\]|\d{4}-\d\d-\d\d [\d:.]+: [IWEF] \S+:\d+\])", re.M)
ABSL_NOTICE = "before absl::InitializeLog"


def train_two_ranks(run_dir, mnist_dir, *extra, verbose: bool = False, check: bool = True):
    env = {k: v for k, v in os.environ.items() if k != quiet.VERBOSE_ENV} | ({quiet.VERBOSE_ENV: "1"} if verbose else {})
    return launch(2, "train", "--model", "simple", "--epochs", "1", "--out", str(run_dir), "--resume", "never",
                  "--data-dir", str(mnist_dir), *extra, env=env, check=check)


def test_a_two_rank_run_prints_no_tensorflow_cpp_line(tmp_path, mnist_dir):
    result = train_two_ranks(tmp_path / "run", mnist_dir)
    console = result.stdout + result.stderr
    assert not CPP_LINE.findall(console), console
    assert ABSL_NOTICE not in console, console
    assert metrics_of(tmp_path / "run")["world_size"] == 2  # ... and it trained, on both ranks


def test_mnist_hpc_verbose_brings_the_lines_back_from_every_rank(tmp_path, mnist_dir):
    result = train_two_ranks(tmp_path / "run", mnist_dir, verbose=True)
    console = result.stdout + result.stderr
    assert console.count(ABSL_NOTICE) >= 2, console  # at least one per rank
    # TensorFlow's C++ start-up lines are back, at least one per rank (which ones depends on the CPU: oneDNN's
    # notice only shows where oneDNN is on by default, e.g. AVX-512; an AVX2-only VM prints none)
    assert len(CPP_LINE.findall(console)) >= 2, console


# Each rank runs `mnist-hpc train` as usual, but its training imports TensorFlow and writes an error
# line of the C++ kind that is not in quiet.py's list. Rank 0 then ends (status 0); rank 1 waits for
# that (so mpirun has no reason to kill either early), then fails with a Python exception.
FAILING_RANK = """
import os, sys, time
from pathlib import Path
from mnist_hpc import cli

def failing_train(args):
    import tensorflow as tf  # its harmless C++ lines are printed now, after cli.main installed the filter
    tf.constant(1.0) * 2  # (and cuInit's, at the first op)
    rank = os.environ["OMPI_COMM_WORLD_RANK"]
    os.write(2, f"E0000 00:00:1796178427.702681    4242 rank_check.cc:7] rank {rank}: a real C++ error\\n".encode())
    rank0 = Path(args.out).parent / "rank0.pid"
    if rank == "0":
        Path(f"{rank0}.tmp").write_text(str(os.getpid()))
        os.replace(f"{rank0}.tmp", rank0)
        return 0
    while not rank0.exists() or Path("/proc", rank0.read_text()).exists():
        time.sleep(0.05)
    raise RuntimeError(f"rank {rank} failed in Python")

cli.cmd_train = failing_train
sys.exit(cli.main(sys.argv[1:]))
"""


def test_a_real_error_on_a_rank_still_reaches_the_console(tmp_path, mnist_dir):
    command = ["mpirun", "-np", "2", "--oversubscribe", sys.executable, "-c", FAILING_RANK, "train", "--model", "simple",
               "--out", str(tmp_path / "run"), "--data-dir", str(mnist_dir)]
    env = {k: v for k, v in launch_environment().items() if k != quiet.VERBOSE_ENV}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, cwd=REPO)
    console = result.stdout + result.stderr
    assert result.returncode != 0, console
    assert "rank 0: a real C++ error" in console and "rank 1: a real C++ error" in console, console
    assert "Traceback (most recent call last):" in console and "RuntimeError: rank 1 failed in Python" in console
    assert ABSL_NOTICE not in console and "oneDNN custom operations" not in console, console
    assert CPP_LINE.findall(console) == ["E0000 00:00:1796178427.702681    4242 rank_check.cc:7]"] * 2, console
