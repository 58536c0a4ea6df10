"""Shared fixtures. The MNIST files come from $MNIST_HPC_DATA or ../shared/data/mnist; without
them the suite fails loudly instead of skipping what it was meant to test."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import mnist_hpc  # noqa: F401 - first, as every entry point: makes tf.keras Keras 2 (mnist_hpc/stack.py)

REPO = Path(__file__).resolve().parent.parent


def _mnist_dir() -> Path:
    candidates = [os.environ.get("MNIST_HPC_DATA"), REPO.parent / "shared" / "data" / "mnist"]
    for candidate in filter(None, candidates):
        path = Path(candidate).resolve()
        if (path / "train-images-idx3-ubyte.gz").is_file() or (path / "train-images-idx3-ubyte").is_file():
            return path
    raise RuntimeError("MNIST data not found: set MNIST_HPC_DATA to the folder with the four IDX files "
                       f"(looked in {[c for c in candidates if c]})")


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    return _mnist_dir()


@pytest.fixture(scope="session")
def mnist(mnist_dir):
    from mnist_hpc import data

    return data.load(mnist_dir)


@pytest.fixture
def mnist_copy(mnist_dir, tmp_path) -> Path:
    """A writable copy of the data folder."""
    target = tmp_path / "mnist"
    target.mkdir()
    for f in mnist_dir.glob("*-ubyte.gz"):
        shutil.copy(f, target / f.name)
    return target


def launch(np_: int, *args: str, timeout: float = 600, check: bool = True, **popen) -> subprocess.CompletedProcess:
    """``launchers/local.py --np N ARGS`` as a user runs it (mpirun for N > 1)."""
    command = [sys.executable, str(REPO / "launchers" / "local.py"), "--np", str(np_), *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=REPO, **popen)
    if check and result.returncode != 0:
        raise AssertionError(f"{command} exited {result.returncode}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def metrics_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


@pytest.fixture(scope="session")
def cnn_run(tmp_path_factory, mnist_dir) -> Path:
    """A short 2-rank CNN training shared by several tests."""
    run_dir = tmp_path_factory.mktemp("cnn") / "run"
    launch(2, "train", "--model", "cnn", "--steps", "400", "--out", str(run_dir), "--data-dir", str(mnist_dir))
    return run_dir


def rank_pids(match: dict[str, str], marker: str = "python") -> list[int]:
    """PIDs of processes whose environment has all of ``match`` (e.g. one MPI rank) and whose
    command line contains ``marker``."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            environ = dict(item.split("=", 1) for item in (proc / "environ").read_text().split("\0") if "=" in item)
            cmdline = (proc / "cmdline").read_text()
        except (OSError, ValueError):
            continue
        if all(environ.get(k) == v for k, v in match.items()) and marker in cmdline:
            found.append(int(proc.name))
    return found
