"""Helpers for the tests on the real local SLURM cluster (tests/slurm/cluster.sh)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

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



def job_processes(job_id: str) -> list[int]:
    """The Python processes of a job's tasks on this machine (ranks, submitit's task processes): the
    processes whose environment says SLURM_JOB_ID=job_id and whose program is a Python interpreter."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            environ = (proc / "environ").read_bytes().split(b"\0")
        except (OSError, ValueError):
            continue
        if (f"SLURM_JOB_ID={job_id}".encode() in environ and os.path.basename(argv[0]).startswith(b"python")
                and not any(a.endswith(b"quiet.py") for a in argv)):  # (not the ranks' stderr filters: they ignore signals)
            found.append(int(proc.name))
    return found


def await_pending(pids: list[int], signum: int, timeout: float = 60) -> None:
    """Until ``signum`` is pending in every one of the (stopped) processes ``pids``: /proc/PID/status's
    SigPnd (this thread) or ShdPnd (the process)."""
    bit, deadline = 1 << (signum - 1), time.monotonic() + timeout
    while True:
        waiting = []
        for pid in pids:
            fields = dict(line.split(":\t", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                          if ":\t" in line)
            if not (int(fields["SigPnd"], 16) | int(fields["ShdPnd"], 16)) & bit:
                waiting.append(pid)
        if not waiting:
            return
        assert time.monotonic() < deadline, f"signal {signum} not delivered to {waiting} within {timeout} s"
        time.sleep(0.05)


def await_checkpoint(path: Path, alive, timeout: float = 300) -> None:
    """Until ``path`` (an epoch checkpoint) exists; ``alive()`` must hold meanwhile. Polls every 20 ms:
    the tests that follow it freeze the run at once."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline and alive(), f"no {path} after {timeout} s"
        time.sleep(0.02)


@contextmanager
def frozen(job_id: str) -> Iterator[list[int]]:
    """The job's Python processes stopped (SIGSTOP) for the block, continued after it. A signal sent
    meanwhile waits for them: it lands in the epoch that was running, however fast the machine is,
    instead of racing the run's remaining epochs."""
    pids = job_processes(job_id)
    assert pids, f"no process of job {job_id} on this machine"
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield pids
    finally:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
