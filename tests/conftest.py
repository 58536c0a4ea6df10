"""Shared fixtures. The MNIST files come from $MNIST_HPC_DATA or ../shared/data/mnist; without
them the suite fails loudly instead of skipping what it was meant to test."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import mnist_hpc  # noqa: F401 - first, as every entry point: makes tf.keras Keras 2 (mnist_hpc/stack.py)

REPO = Path(__file__).resolve().parent.parent


def _mnist_dir() -> Path:
    candidates = [os.environ.get("MNIST_HPC_DATA"), REPO.parent / "shared" / "data" / "mnist"]
    for candidate in filter(None, candidates):
        path = Path(candidate).resolve()
        if (path / "train-images-idx3-ubyte.gz").is_file() or (path / "train-images-idx3-ubyte").is_file():
            return path
    raise RuntimeError("MNIST data not found: set MNIST_HPC_DATA to the folder with the four IDX files "
                       f"(looked in {[c for c in candidates if c]})")


def pytest_configure(config):
    """Commands the tests run in-process or as children find the data the same way as the fixtures
    do: $MNIST_HPC_DATA, else ../shared/data/mnist (a plain `pytest` run, without the Makefile's export)."""
    if not os.environ.get("MNIST_HPC_DATA"):
        try:
            os.environ["MNIST_HPC_DATA"] = str(_mnist_dir())
        except RuntimeError:
            pass  # the tests that need the data fail loudly through the mnist_dir fixture


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
        shutil.copyfile(f, target / f.name)  # not its mode: the shared files may be read-only
    return target


def launch(np_: int, *args: str, timeout: float = 600, check: bool = True, **popen) -> subprocess.CompletedProcess:
    """``launchers/local.py --np N ARGS`` as a user runs it (mpirun for N > 1)."""
    command = [sys.executable, str(REPO / "launchers" / "local.py"), "--np", str(np_), *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=REPO, **popen)
    if check and result.returncode != 0:
        raise AssertionError(f"{command} exited {result.returncode}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def readline_within(stream, timeout: float) -> str:
    """One line from a child's pipe, or a failure naming the wait: a silent child never hangs the suite."""
    import selectors

    with selectors.DefaultSelector() as selector:
        selector.register(stream, selectors.EVENT_READ)
        if not selector.select(timeout):
            raise AssertionError(f"no output line within {timeout} s")
    return stream.readline()


def metrics_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


@pytest.fixture(scope="session")
def cnn_run(tmp_path_factory, mnist_dir) -> Path:
    """A short 2-rank CNN training shared by several tests."""
    run_dir = tmp_path_factory.mktemp("cnn") / "run"
    launch(2, "train", "--model", "cnn", "--steps", "400", "--out", str(run_dir), "--data-dir", str(mnist_dir))
    return run_dir


def rank_pids(match: dict[str, str], marker: str = "python") -> list[int]:
    """PIDs of processes whose environment has all of ``match`` (e.g. one MPI rank) and whose
    command line contains ``marker``."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            environ = dict(item.split("=", 1) for item in (proc / "environ").read_text().split("\0") if "=" in item)
            cmdline = (proc / "cmdline").read_text()
        except (OSError, ValueError):
            continue
        if all(environ.get(k) == v for k, v in match.items()) and marker in cmdline:
            found.append(int(proc.name))
    return found


# ------------------------------------------------------------------ CI cannot quietly test less
MINIMUM_TESTS = 772  # the whole suite collects at least this many; fewer means something was dropped


def _whole_suite(config) -> bool:
    """`make test` / .ci/run: no -k, no -m, and no paths but the configured tests folder."""
    selected = config.getoption("keyword") or config.getoption("markexpr")
    paths = [(config.invocation_params.dir / a).resolve() for a in config.args]
    return not selected and paths in ([], [REPO / "tests"])


def pytest_collection_finish(session):
    if _whole_suite(session.config) and len(session.items) < MINIMUM_TESTS:
        raise pytest.UsageError(f"collected {len(session.items)} tests, fewer than the {MINIMUM_TESTS} the whole "
                                "suite has: a test file failed to import or tests were dropped")


def pytest_sessionfinish(session, exitstatus):
    """A skipped test is a test that did not run: fail the run instead of reporting green."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter else []
    if skipped and exitstatus == 0:
        reporter.ensure_newline()
        reporter.write_line(f"error: {len(skipped)} test(s) skipped; the suite runs everything or fails", red=True)
        session.exitstatus = 1


# ------------------------------------------------------------------ shared by the lanes
NOISE = ("WARNING: All log messages before absl::InitializeLog", "I0000 ", "W0000 ", "E0000 ")  # TensorFlow's C++ log



def our_lines(stderr: str) -> list[str]:
    """stderr without TensorFlow's own C++ log lines (which TF_CPP_MIN_LOG_LEVEL no longer silences)."""
    return [line for line in stderr.strip().splitlines() if line and not line.startswith(NOISE)]



def damage_data(folder: Path, how: str) -> Path:
    """Truncate, or flip one byte of, the training images (the gzip stays valid: only the SHA-256 can tell)."""
    path = folder / "train-images-idx3-ubyte.gz"
    if how == "truncated":
        path.write_bytes(path.read_bytes()[:100_000])
    else:
        content = bytearray(gzip.decompress(path.read_bytes()))
        content[5000] ^= 0xFF
        path.write_bytes(gzip.compress(bytes(content)))
    return path



def cli(*args, timeout=60) -> subprocess.CompletedProcess:
    """``python -m mnist_hpc ARGS`` as a user runs it."""
    return subprocess.run([sys.executable, "-m", "mnist_hpc", *args], capture_output=True, text=True, timeout=timeout)


def assert_one_line_error(result, *fragments):
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture
def http_root(tmp_path):
    """Serves tmp_path/www on 127.0.0.1; yields (root folder, base URL)."""
    import http.server
    import threading
    from functools import partial

    root = tmp_path / "www"
    root.mkdir()
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
