"""Helpers for the tests on the real local SLURM cluster (tests/slurm/cluster.sh)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from conftest import REPO
from mnist_hpc import checkpoint

CLUSTER = REPO / "tests" / "slurm" / "cluster.sh"

FINAL_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL",
                "DEADLINE", "PREEMPTED"}



def job_state(job_id: str, env) -> str:
    out = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True, env=env).stdout
    for field in out.split():
        if field.startswith("JobState="):
            return field.removeprefix("JobState=")
    sacct = subprocess.run(["sacct", "-j", job_id, "-n", "-P", "-o", "State"], capture_output=True, text=True, env=env)
    return sacct.stdout.split()[0] if sacct.stdout.split() else "UNKNOWN"



def wait_for(job_id: str, env, timeout: float = 600) -> str:
    deadline = time.monotonic() + timeout
    while (state := job_state(job_id, env)) not in FINAL_STATES:
        assert time.monotonic() < deadline, f"job {job_id} still {state} after {timeout} s"
        time.sleep(1)
    return state



def sbatch(script: Path, env, cwd: Path, *options: str, **extra_env) -> str:
    result = subprocess.run(["sbatch", "--parsable", *options, str(script)], capture_output=True, text=True,
                            env={**env, **extra_env}, cwd=cwd, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().split(";")[0]



def submit(*args: str, env, cwd: Path, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "launchers" / "submit.py"), *args], capture_output=True,
                          text=True, env=env, cwd=cwd, timeout=timeout)



def newest_epoch(ckpt_dir: Path) -> int:
    names = checkpoint.candidates(ckpt_dir)  # by file name: the file itself may be pruned while we look
    return int(checkpoint.PATTERN.match(names[0].name).group(1)) if names else 0

