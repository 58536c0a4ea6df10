"""Quiet ranks: TensorFlow's known-harmless C++ start-up lines are dropped from this process's stderr.

On TensorFlow 2.21 every process prints 3-4 such lines (absl's "before InitializeLog" notice,
oneDNN, the CUDA stub, cuInit 303). They come from absl logging before absl::InitializeLog() is
called, which writes to stderr whatever TF_CPP_MIN_LOG_LEVEL says (tensorflow/tensorflow#100442,
open), and TF_ENABLE_ONEDNN_OPTS=0 would silence one of them only by turning oneDNN off. So there
is no setting for it: :func:`install` routes file descriptor 2 through a pipe to a small filter
process that drops the lines matching :func:`harmless_patterns` and forwards every other byte
unchanged (real errors, tracebacks, everything Python prints).

A process, not a thread: when the rank dies abruptly (abort, ``os._exit``, SIGKILL), the filter
still reads the pipe to its end, so the last lines, which say why, reach the console. At a normal
exit the process writes a flush marker into the pipe and waits until the filter has forwarded
everything before it (nothing is lost or reordered); the filter itself runs on until the pipe's
last holder is gone. The wait is for the marker, not for the pipe's end: a process this one
started may outlive it holding the pipe (Open MPI's singleton ``orted`` does, in every
one-process run), and an exit waiting for that would hang.

``MNIST_HPC_VERBOSE=1`` turns the filter off: every line comes through (the one switch; every rank
inherits it from the launcher's environment). This file runs as the filter itself with the
standard library only (``python -I -S quiet.py``).
"""

from __future__ import annotations

import atexit
import os
import re
import signal
import subprocess
import sys
from typing import BinaryIO, Callable, Iterable

VERBOSE_ENV = "MNIST_HPC_VERBOSE"  # "1": no filter, every TensorFlow line comes through

# the prefix of a C++ log line: absl's "I0000 00:00:1796178424.48 8124 " or TensorFlow's own
# "2025-09-17 14:44:05.157831: I external/local_xla/xla/tsl/cuda/", then the source file
_CPP_PREFIX = rb"(?:[IWEF]\d{4} \d\d:\d\d:[\d.]+ +\d+ |\d{4}-\d\d-\d\d \d\d:\d\d:[\d.]+: [IWEF] (?:\S*/)?)"


def _cpp_line(source: bytes, message: bytes) -> re.Pattern[bytes]:
    return re.compile(_CPP_PREFIX + re.escape(source) + rb":\d+\] " + message)


def harmless_patterns(gpu_device: bool) -> dict[str, re.Pattern[bytes]]:
    """The known-harmless lines, by name. cuInit's 303 means "no GPU driver": harmless only on a node
    without an NVIDIA device (``gpu_device``), so on a GPU node it still shows."""
    patterns = {
        "absl's notice that it logs to stderr": re.compile(
            rb"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR\s*$"),
        "oneDNN is on": _cpp_line(b"port.cc", rb"oneDNN custom operations are on\. "),
        "no CUDA driver": _cpp_line(b"cudart_stub.cc", rb"Could not find cuda drivers on your machine, GPU will not "),
        "CPU instructions (line 1)": _cpp_line(b"cpu_feature_guard.cc", rb"This TensorFlow binary is optimized to "),
        "CPU instructions (line 2)": re.compile(rb"To enable the following instructions: .*, in other operations, "
                                                rb"rebuild TensorFlow with the appropriate compiler flags\.\s*$"),
        # --fp16-allreduce casts the gradients to float16, which oneDNN leaves to Eigen without AVX512-FP16
        "no oneDNN fp16 kernels": _cpp_line(b"util.cc", rb"oneDNN supports DT_HALF only on platforms with AVX-512\. "
                                            rb"Falling back to the default Eigen-based implementation"),
    }
    if not gpu_device:
        patterns["cuInit without a GPU"] = _cpp_line(b"cuda_platform.cc", rb"failed call to cuInit: .*\(303\)\s*$")
    return patterns


def gpu_device() -> bool:
    return os.path.exists("/dev/nvidiactl")


def forward(source: Iterable[bytes], sink: BinaryIO, patterns: Iterable[re.Pattern[bytes]],
            on_marker: Callable[[], None] = lambda: None) -> None:
    """Every line of ``source`` that no pattern matches, to ``sink`` as it comes (a last line
    without a newline included). A line ending in FLUSH_MARKER calls ``on_marker`` once what came
    before the marker is forwarded (another writer's unfinished line may precede it)."""
    patterns = tuple(patterns)
    for line in source:
        marked = line.endswith(FLUSH_MARKER)
        if marked:
            line = line[:-len(FLUSH_MARKER)]
        if line and not any(p.match(line) for p in patterns):
            sink.write(line)
            sink.flush()
        if marked:
            on_marker()


# written by the exiting process after its last line; the filter answers on its acknowledgement pipe
FLUSH_MARKER = b"\0mnist-hpc-quiet-flush\0\n"
FLUSH_TIMEOUT = 30.0  # seconds an exit waits for the filter's acknowledgement at most

_filter: subprocess.Popen | None = None
_acknowledgement: int | None = None  # read end: the filter writes one byte once the marker is through


def install() -> bool:
    """Filter this process's stderr (fd 2) from now on; call it before TensorFlow is imported.
    Returns whether the filter is on. It is not with MNIST_HPC_VERBOSE=1, nor where Python's stderr
    is not fd 2 (code that captures it, e.g. a test calling ``cli.main``): it filters only a process
    of its own."""
    global _filter, _acknowledgement
    if _filter is not None:
        return True
    if os.environ.get(VERBOSE_ENV) == "1" or not _stderr_is_fd2():
        return False
    sys.stderr.flush()
    read_end, write_end = os.pipe()
    _acknowledgement, ack_write = os.pipe()  # not inheritable: only the filter gets its end (pass_fds)
    console = os.dup(2)
    _filter = subprocess.Popen([sys.executable, "-I", "-S", os.path.abspath(__file__), str(ack_write)],
                               stdin=read_end, stdout=console, stderr=console, pass_fds=(ack_write,))
    os.close(read_end)
    os.close(ack_write)
    os.dup2(write_end, 2)  # inheritable: processes this one starts are filtered too
    os.close(write_end)
    atexit.register(_restore, console)
    return True


def _stderr_is_fd2() -> bool:
    try:
        return sys.stderr.fileno() == 2
    except (AttributeError, OSError, ValueError):  # None, a StringIO, pytest's capture
        return False


def _restore(console: int) -> None:
    """At exit: the flush marker after this process's last line, fd 2 back to the console, then wait
    until the filter has forwarded everything up to the marker. It ends when the pipe's last holder does."""
    global _filter, _acknowledgement
    try:
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
    try:
        os.write(2, FLUSH_MARKER)  # shorter than PIPE_BUF: one piece, never split by another writer
    except OSError:  # the filter is gone (killed): nothing to wait for
        pass
    os.dup2(console, 2)
    os.close(console)
    wait_for_acknowledgement(_acknowledgement, FLUSH_TIMEOUT)
    os.close(_acknowledgement)
    _filter, _acknowledgement = None, None


def wait_for_acknowledgement(fd: int, timeout: float) -> bool:
    """True once the filter has written its byte (or closed its end: it ended), False after ``timeout``."""
    import select

    readable, _, _ = select.select([fd], [], [], timeout)
    return bool(readable)


def _run_filter() -> None:
    # The rank's signals are not the filter's: a Ctrl-C, SLURM's TERM, submitit's USR2 or a stop
    # request to the whole process group must not end it before the rank's last lines are through.
    for name in ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2"):
        signal.signal(getattr(signal, name), signal.SIG_IGN)
    acknowledgement = int(sys.argv[1]) if len(sys.argv) > 1 else -1  # none: a plain filter (scripts/setup.sh)

    def acknowledge() -> None:  # the exiting process may stop waiting: its lines are through
        nonlocal acknowledgement
        if acknowledgement >= 0:
            os.write(acknowledgement, b"1")
            os.close(acknowledgement)
            acknowledgement = -1

    forward(sys.stdin.buffer, sys.stdout.buffer, harmless_patterns(gpu_device()).values(), acknowledge)


if __name__ == "__main__":
    _run_filter()
