"""The real local SLURM cluster, started once for the slurm lane (fails loudly when it cannot)."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from mnist_hpc import jobspec

from .helpers import CLUSTER

@pytest.fixture(scope="session")
def slurm_env(tmp_path_factory, mnist_dir):
    """Start the cluster (fails loudly when it cannot), yield the client environment, stop it."""
    started = subprocess.run([str(CLUSTER), "start"], capture_output=True, text=True, timeout=600)
    assert started.returncode == 0, f"SLURM cluster did not start:\n{started.stdout}\n{started.stderr}"
    exports = subprocess.run([str(CLUSTER), "env"], capture_output=True, text=True, check=True).stdout
    env = dict(os.environ)
    for assignment in shlex.split(exports.removeprefix("export ")):
        key, _, value = assignment.partition("=")
        env[key] = value.replace("$PATH", env["PATH"])
    env.update(jobspec.launch_environment({}), MNIST_HPC_DATA=str(mnist_dir),
               MNIST_HPC_SETUP=f"source {shlex.quote(str(Path(sys.executable).parent / 'activate'))}")
    yield env
    subprocess.run([str(CLUSTER), "stop"], capture_output=True, timeout=120)

