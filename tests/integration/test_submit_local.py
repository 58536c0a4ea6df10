"""launchers/submit.py where submitit finds no SLURM (no `srun` on PATH): its local executor runs one
task, which starts the ranks with mpirun; --wait prints the run's metrics as under SLURM."""

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import REPO, metrics_of

SLURM_CLIENTS = {"srun", "sbatch", "squeue", "scancel", "sacct", "scontrol", "sinfo", "salloc"}


def path_without_slurm(folder: Path) -> str:
    """A PATH whose programs are those of the current PATH, the SLURM clients left out."""
    folder.mkdir()
    for directory in os.environ["PATH"].split(os.pathsep):
        for program in Path(directory).glob("*") if Path(directory).is_dir() else ():
            if program.name not in SLURM_CLIENTS and not (folder / program.name).exists():
                (folder / program.name).symlink_to(program)
    return str(folder)


def test_submit_without_slurm_runs_the_ranks_locally_under_mpirun(tmp_path, mnist_dir):
    env = {**os.environ, "PATH": path_without_slurm(tmp_path / "bin"), "MNIST_HPC_DATA": str(mnist_dir)}
    result = subprocess.run([sys.executable, str(REPO / "launchers" / "submit.py"), "--nodes", "1", "--ntasks-per-node",
                             "2", "--time", "10", "--folder", str(tmp_path / "logs"), "--wait", "--", "--model", "simple",
                             "--epochs", "1", "--out", str(tmp_path / "run")],
                            capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    printed = json.loads(result.stdout[result.stdout.index("{"):])
    metrics = metrics_of(tmp_path / "run")
    assert printed == {k: v for k, v in metrics.items() if k != "history"} and metrics["status"] == "completed"
    assert metrics["world_size"] == 2 and metrics["slurm_job_id"] is None  # two ranks, and no SLURM job
