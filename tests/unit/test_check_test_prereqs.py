"""scripts/check_test_prereqs.sh: `make test` names what it lacks in one line before pytest starts.

Each case runs the real script with a PATH of its own: the basic tools it uses, plus stand-ins for
mpirun, the SLURM daemons and munge, minus the one a case takes away.
"""

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from conftest import REPO

SCRIPT = REPO / "scripts" / "check_test_prereqs.sh"
BASICS = ("bash", "dirname", "id")  # what the script itself runs
STAND_INS = ("mpirun", "slurmctld", "slurmd", "sbatch", "munged", "apt-get")


def as_non_root() -> list[str]:
    """A prefix that runs a command as nobody when we are root (else we are a non-root user already)."""
    return [shutil.which("setpriv"), "--reuid=nobody", "--regid=nogroup", "--clear-groups"] if os.geteuid() == 0 else []


@pytest.fixture
def tmp_path():
    """A folder every user can read (pytest's own tmp_path is private to its user): the nobody cases run from it."""
    folder = Path(tempfile.mkdtemp(prefix="mnist-hpc-prereqs-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder)


def run(tmp_path, without=(), user=(), data="mnist"):
    """The script with only BASICS and the STAND_INS not in ``without`` on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for tool in BASICS:
        (bin_dir / tool).symlink_to(shutil.which(tool))
    for tool in set(STAND_INS) - set(without):
        (bin_dir / tool).write_text("#!/bin/sh\nexit 0\n")
        (bin_dir / tool).chmod(0o755)
    env = {"PATH": str(bin_dir), "MNIST_HPC_DATA": str(data)}
    return subprocess.run([*user, str(bin_dir / "bash"), str(SCRIPT)], capture_output=True, text=True, env=env,
                          timeout=60)


def one_line(result) -> str:
    assert result.returncode == 1 and result.stdout == "", result
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: make test needs "), result.stderr
    return lines[0]


def test_silent_when_everything_is_there(tmp_path, mnist_dir):
    """As root: nothing printed, status 0. As any other user, root is all that is missing."""
    result = run(tmp_path, data=mnist_dir)
    if os.geteuid() == 0:
        assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    else:
        line = one_line(result)
        assert line.startswith("error: make test needs root (") and line.endswith("as any user)"), line


def test_no_slurmctld_and_no_way_to_install_it_is_named(tmp_path, mnist_dir):
    line = one_line(run(tmp_path, without=("slurmctld", "apt-get"), data=mnist_dir))
    assert "slurmctld (apt-get install slurmctld; tests/slurm/cluster.sh does that itself when run as root)" in line
    assert "mpirun" not in line and "MNIST" not in line


def test_a_missing_slurm_is_fine_as_root_with_apt_get_which_cluster_sh_uses(tmp_path, mnist_dir):
    result = run(tmp_path, without=("slurmctld", "slurmd", "sbatch", "munged"), data=mnist_dir)
    if os.geteuid() == 0:
        assert result.returncode == 0, result.stderr
    else:
        assert "slurmctld slurmd sbatch munged (apt-get install slurmctld slurmd slurm-client munge" in one_line(result)


def test_a_non_root_user_is_told_root_is_needed(tmp_path, mnist_dir):
    line = one_line(run(tmp_path, user=as_non_root(), data=mnist_dir))
    assert "make test needs root (tmpfs mounts and the local SLURM cluster" in line and "make test-fast" in line


def test_everything_missing_is_still_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    line = one_line(run(tmp_path, without=STAND_INS, user=as_non_root(), data=tmp_path / "empty"))
    for fragment in ("root (", "mpirun (apt-get install openmpi-bin", "slurmctld slurmd sbatch munged",
                     f"the MNIST data (MNIST_HPC_DATA={tmp_path / 'empty'} lacks some of train-images-idx3-ubyte"):
        assert fragment in line, line
