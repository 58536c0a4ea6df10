"""Shared fixtures. The MNIST files come from $MNIST_HPC_DATA or ../shared/data/mnist; without
them the suite fails loudly instead of skipping what it was meant to test."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

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
