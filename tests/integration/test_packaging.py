"""The installed Horovod: built with TensorFlow, MPI and Gloo (horovodrun --check-build)."""

import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.fallback
def test_horovod_check_build_shows_tensorflow_mpi_and_gloo():
    horovodrun = Path(sys.executable).parent / "horovodrun"
    report = subprocess.run([str(horovodrun), "--check-build"], capture_output=True, text=True, timeout=120).stdout
    for line in ("[X] TensorFlow", "[X] MPI", "[X] Gloo"):
        assert line in report, report
