"""quiet.py without ranks: which lines the filter drops, and a real process whose stderr goes through it
(the 2-rank training run: tests/integration/test_quiet.py)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time

import pytest

from conftest import REPO
from mnist_hpc import quiet

# what TensorFlow 2.21 printed per process on this project's CPU machine (before this filter)
HARMLESS_LINES = [
    b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n",
    b"I0000 00:00:1796178424.482832    8124 port.cc:153] oneDNN custom operations are on. You may see slightly "
    b"different numerical results due to floating-point round-off errors from different computation orders. "
    b"To turn them off, set the environment variable `TF_ENABLE_ONEDNN_OPTS=0`.\n",
    b"I0000 00:00:1796178424.483232    8124 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will "
    b"not be used.\n",
    b"I0000 00:00:1796178424.562848    8124 cpu_feature_guard.cc:227] This TensorFlow binary is optimized to use "
    b"available CPU instructions in performance-critical operations.\n",
    b"To enable the following instructions: AVX2 AVX512F AVX512_VNNI AVX512_BF16 AVX_VNNI FMA, in other operations, "
    b"rebuild TensorFlow with the appropriate compiler flags.\n",
    # each rank of a --fp16-allreduce run (TensorFlow 2.21 on an AVX-512 CPU without AVX512-FP16)
    b"E0000 00:00:1796230283.065877   31530 util.cc:131] oneDNN supports DT_HALF only on platforms with AVX-512. "
    b"Falling back to the default Eigen-based implementation if present.\n",
    # TensorFlow's own (non-absl) format of the same kind of line
    b"2025-09-17 14:44:05.157831: I external/local_xla/xla/tsl/cuda/cudart_stub.cc:32] Could not find cuda drivers "
    b"on your machine, GPU will not be used.\n",
]
CUINIT_303 = (b"E0000 00:00:1796178427.702681    8124 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: "
              b"Failed call to cuInit: UNKNOWN ERROR (303)\n")
REAL_LINES = [
    b"E0000 00:00:1796178427.702681    8124 cuda_platform.cc:52] failed call to cuInit: CUDA_ERROR_NO_DEVICE (100)\n",
    b"E0000 00:00:1796178430.000001    8124 collective_ops.cc:88] Check failed: all-reduce shapes differ\n",
    b"W0000 00:00:1796178430.000002    8124 port.cc:153] something else port.cc says\n",
    b"Traceback (most recent call last):\n",
    b"error: --lr: 'nan' is not a positive finite number\n",
    b"\xff\xfe not UTF-8 at all\n",
    b"the last line, without a newline",
]


def filtered(lines: list[bytes], gpu_device: bool = False) -> bytes:
    sink = io.BytesIO()
    quiet.forward(iter(lines), sink, quiet.harmless_patterns(gpu_device).values())
    return sink.getvalue()


def test_the_known_harmless_lines_are_dropped_and_every_other_byte_passes_unchanged():
    mixed = [HARMLESS_LINES[0], REAL_LINES[0], *HARMLESS_LINES[1:], CUINIT_303, *REAL_LINES[1:]]
    assert filtered(mixed) == b"".join(REAL_LINES)


def test_cuinit_303_shows_on_a_node_with_a_gpu_device():
    """303 means no driver: harmless on a CPU node, the hint to read on a GPU node."""
    assert filtered([CUINIT_303], gpu_device=False) == b""
    assert filtered([CUINIT_303], gpu_device=True) == CUINIT_303


def test_every_pattern_has_a_name_and_drops_a_line_it_was_written_for():
    patterns = quiet.harmless_patterns(gpu_device=False)
    for name, pattern in patterns.items():
        assert name and any(pattern.match(line) for line in [*HARMLESS_LINES, CUINIT_303]), name


# ------------------------------------------------------------------ a real process through the filter
CHILD = """
import os, sys
from mnist_hpc import quiet
print("filter on" if quiet.install() else "filter off", flush=True)
for line in {lines!r}:
    os.write(2, line)  # as TensorFlow's C++ writes: straight to fd 2
print("python's own stderr line", file=sys.stderr)
{ending}
"""


def run_child(ending: str, env: dict | None = None) -> subprocess.CompletedProcess:
    code = CHILD.format(lines=[*HARMLESS_LINES, CUINIT_303, REAL_LINES[1]], ending=ending)
    environment = {k: v for k, v in os.environ.items() if k != quiet.VERBOSE_ENV} | (env or {})
    return subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120, env=environment, cwd=REPO)


@pytest.mark.parametrize("ending,status", [("", 0), ("raise RuntimeError('the rank failed')", 1),
                                           ("os._exit(3)", 3), ("os.abort()", -6)])
def test_a_filtered_process_shows_its_real_errors_however_it_ends(ending, status):
    """Normal exit, an uncaught exception, os._exit (no atexit), abort (a C++ crash): nothing real is lost."""
    result = run_child(ending)
    assert result.returncode == status
    assert result.stdout == b"filter on\n"
    expected = (CUINIT_303 if quiet.gpu_device() else b"") + REAL_LINES[1] + b"python's own stderr line\n"
    if "raise" in ending:
        assert result.stderr.startswith(expected + b"Traceback (most recent call last):\n")
        assert result.stderr.endswith(b"RuntimeError: the rank failed\n")
    else:
        assert result.stderr == expected


def test_mnist_hpc_verbose_brings_every_line_back():
    result = run_child("", env={quiet.VERBOSE_ENV: "1"})
    assert result.returncode == 0 and result.stdout == b"filter off\n"
    assert result.stderr == b"".join([*HARMLESS_LINES, CUINIT_303, REAL_LINES[1]]) + b"python's own stderr line\n"


def test_a_process_whose_stderr_is_captured_is_left_alone(capsys):
    """cli.main called in-process (tests, launchers) under a captured sys.stderr: no filter takes fd 2."""
    assert quiet.install() is False
    assert quiet._filter is None


# A one-process run (no mpirun) makes Open MPI start its singleton `orted`, which inherits fd 2 and
# outlives the rank: the exit must wait for the filter to pass the rank's own lines, not for the pipe's end.
HOLDER_CHILD = """
import os, subprocess, sys
from mnist_hpc import quiet
quiet.install()
quiet.FLUSH_TIMEOUT = 3600  # were the exit to wait for the pipe's end, it would wait for the holder
holder = subprocess.Popen([sys.executable, "-c", {holder!r}], stdout=subprocess.DEVNULL)  # fd 2: the pipe
print(holder.pid, flush=True)
os.write(2, {last!r})
"""
HOLDER = """
import os, pathlib, sys, time
go = pathlib.Path({go!r})
while not go.exists():  # holds the filter's pipe open until the test has seen its parent exit
    time.sleep(0.05)
os.write(2, b"the holder's line, after its parent exited\\n")
"""


def test_an_exit_does_not_wait_for_a_child_that_holds_the_pipe(tmp_path):
    go, console = tmp_path / "go", tmp_path / "console"
    last = REAL_LINES[1]
    code = HOLDER_CHILD.format(holder=HOLDER.format(go=str(go)), last=last)
    environment = {k: v for k, v in os.environ.items() if k != quiet.VERBOSE_ENV}
    with console.open("wb") as sink:
        child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=sink, env=environment,
                                 cwd=REPO)
        holder_pid = int(child.stdout.readline())
        try:
            assert child.wait(timeout=120) == 0  # ended while the holder still holds the pipe
            assert os.path.exists(f"/proc/{holder_pid}")
            assert console.read_bytes() == last  # its own last line went through before it ended
        finally:
            go.touch()
    deadline = time.monotonic() + 60  # the filter runs on for the holder's later lines
    while console.read_bytes() != last + b"the holder's line, after its parent exited\n":
        assert time.monotonic() < deadline, console.read_bytes()
        time.sleep(0.05)


def test_the_filter_runs_as_a_plain_pipe_as_scripts_setup_sh_uses_it():
    """setup.sh pipes `horovodrun --check-build`'s stderr through quiet.py with no acknowledgement fd."""
    lines = [HARMLESS_LINES[0], REAL_LINES[3], HARMLESS_LINES[2], REAL_LINES[4]]
    result = subprocess.run([sys.executable, "-I", "-S", str(REPO / "mnist_hpc" / "quiet.py")], input=b"".join(lines),
                            capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout == REAL_LINES[3] + REAL_LINES[4]
