"""scripts/setup.sh and scripts/horovod/build.sh on the installed environment: running the set-up again
rebuilds nothing, and the Horovod wheel it built is cached for the next set-up on this machine."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from conftest import REPO

VENV = Path(sys.executable).parent.parent  # the environment this suite runs in, as `make setup` made it


def stack_field(key: str) -> str:
    return re.search(rf"^# {key}: *(.+)$", (REPO / "stacks" / "default.txt").read_text(), re.M).group(1).strip()


def test_running_the_set_up_again_installs_and_builds_nothing():
    """`setup.sh --check` makes the checks a set-up makes before it installs anything, and installs nothing."""
    env = {k: v for k, v in os.environ.items() if k not in ("STACK", "GPU")}
    result = subprocess.run(["bash", str(REPO / "scripts" / "setup.sh"), "--check"], capture_output=True, text=True,
                            timeout=300, env={**env, "VENV": str(VENV), "PYTHON": sys.executable,
                                              "PYTHONPATH": str(REPO)})  # this checkout's mnist_hpc
    assert result.returncode == 0, result.stdout + result.stderr
    assert "would" not in result.stdout, result.stdout
    assert result.stdout.splitlines()[-1] == f"[setup] nothing to install: {VENV} is complete for stack 'default'"


def test_the_horovod_wheel_is_cached_for_the_next_set_up():
    """What a new virtualenv or a fresh clone on this machine gets: the wheel the set-up built, found
    under its key (Horovod, TensorFlow, Python, patch, MPI); --cached downloads and builds nothing."""
    import horovod

    result = subprocess.run(["bash", str(REPO / "scripts" / "horovod" / "build.sh"), sys.executable,
                             horovod.__version__, str(REPO / stack_field("horovod-patch")), "--cached"],
                            capture_output=True, text=True, timeout=120, cwd=REPO)
    assert result.returncode == 0, result.stderr
    wheel = Path(result.stdout.strip())
    assert wheel.is_file() and wheel.name.startswith(f"horovod-{horovod.__version__}-cp{sys.version_info[0]}"), wheel
    assert "reusing" in result.stderr and "building" not in result.stderr
