"""Property-based: random argument vectors to every command and launcher, in validation mode.

Each call either validates (exit 0) or is refused with exit status 2 and at most one line on
stderr; no traceback ever escapes, nothing a hostile string says is executed, and nothing is
written outside the temporary directory the calls run in.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import REPO
from mnist_hpc import cli

CANARY = "mnist-hpc-fuzz-canary"


def load_launcher(name: str):
    spec = importlib.util.spec_from_file_location(f"launcher_{name}", REPO / "launchers" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


LAUNCHERS = {name: load_launcher(name) for name in ("local", "submit", "scaling")}
TRAIN_FLAGS = ["--model", "--recipe", "--epochs", "--steps", "--batch-size", "--lr", "--out", "--resume",
               "--data-dir", "--seed", "--precision", "--no-scale-lr", "--warmup-epochs", "--init", "--augment",
               "--fp16-allreduce", "--keep-checkpoints", "--threads", "--fusion-threshold-mb", "--cycle-time-ms",
               "--timeline", "--target-accuracy"]
RESOURCE_FLAGS = ["--job-name", "--nodes", "--ntasks-per-node", "--gpus-per-node", "--cpus-per-task", "--time",
                  "--partition", "--account", "--site"]
BENCH_FLAGS = ["--model", "--batch-size", "--synthetic", "--warmup-steps", "--windows", "--window-steps",
               "--precision", "--threads", "--fusion-threshold-mb", "--cycle-time-ms", "--fp16-allreduce",
               "--timeline", "--data-dir", "--out", "throughput", "peak", "allreduce", "report"]
HOSTILE = ["nan", "NaN", "inf", "-inf", "Infinity", "1e400", "-1", "0", "1", "2", "3", "55000", "55001",
           "2147483648", "99999999999999999999", "0x10", "1_000", "", " ", "\t", "\n", "gpu\n",
           f"$(touch {CANARY})", f"`touch {CANARY}`", f"; touch {CANARY}", f"&& touch {CANARY} #", "a|b", "'", '"',
           "\\", "--", "-", "ünïcødé", "💥", "../..", ".", "simple", "cnn", "seed", "default", "auto", "never",
           "fp32", "bf16", "he", "10:00", "1-00:00:00", "\x00"]
values = st.one_of(st.sampled_from(HOSTILE), st.integers(-10**12, 10**12).map(str),
                   st.floats(allow_nan=True, allow_infinity=True).map(repr), st.text(max_size=12))


def argv_of(flags: list[str]):
    return st.lists(st.one_of(st.sampled_from(flags), values), max_size=8)


# Every entry point a user types, in its validation mode: (name, argv strategy, call)
ENTRY_POINTS = {
    "train": (argv_of(TRAIN_FLAGS), lambda argv: cli.main(["train", *argv, "--dry-run"])),
    "bench": (argv_of(BENCH_FLAGS), lambda argv: cli.main(["bench", *argv, "--dry-run"])),
    "evaluate": (argv_of(["--data-dir"]), lambda argv: cli.main(["evaluate", *argv])),
    "slurm render": (argv_of(["train_simple", "train_cnn", "bench", *RESOURCE_FLAGS]),
                     lambda argv: cli.main(["slurm", "render", *argv])),
    "local.py": (argv_of(["--np", "--global-batch", "--out", "train", "smoke", "sweep", "bench", "evaluate", "slurm",
                          *TRAIN_FLAGS]),
                 lambda argv: LAUNCHERS["local"].main(["--dry-run", *argv])),
    "submit.py": (argv_of([*RESOURCE_FLAGS, "--setup", "--folder", "--wait", "--wait-timeout", "--", *TRAIN_FLAGS]),
                  lambda argv: LAUNCHERS["submit"].main(["--dry-run", *argv])),
    "scaling.py": (argv_of([*RESOURCE_FLAGS, "--node-counts", "--out", "--setup", "--wait-timeout", "--",
                            *BENCH_FLAGS]),
                   lambda argv: LAUNCHERS["scaling"].main(["--dry-run", *argv])),
}


def call(entry, argv) -> tuple[int, str]:
    """Run one entry point in this process; (exit status, stderr). SystemExit(0) is --help."""
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        try:
            status = entry(argv)
        except SystemExit as exit_:
            status = exit_.code
    return status, err.getvalue()


def repository_state() -> list[str]:
    status = subprocess.run(["git", "status", "--porcelain", "--ignored"], cwd=REPO, capture_output=True, text=True)
    return [line for line in status.stdout.splitlines() if ".hypothesis" not in line]  # hypothesis's own cache


@pytest.fixture
def in_scratch(tmp_path, monkeypatch, mnist_dir):
    """Calls run in a scratch folder, with the data where a user would point at it."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MNIST_HPC_DATA", str(mnist_dir))
    before = repository_state()
    yield tmp_path
    assert repository_state() == before, "a validation call wrote into the repository"
    for place in (tmp_path, Path("/tmp"), Path.home(), REPO):
        assert not (place / CANARY).exists(), f"a hostile string was executed ({place})"


@pytest.mark.parametrize("name", list(ENTRY_POINTS))
def test_random_arguments_validate_or_fail_in_one_line(name, in_scratch):
    strategy, entry = ENTRY_POINTS[name]

    @settings(max_examples=150, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(argv=strategy)
    def check(argv):
        status, stderr = call(entry, argv)
        lines = stderr.strip().splitlines()
        assert status in (0, 2), (argv, status, stderr)
        assert len(lines) <= 1, (argv, stderr)
        assert "Traceback" not in stderr, (argv, stderr)
        if status == 2:
            assert lines and lines[0].startswith("error: "), (argv, stderr)
        written = [p for p in in_scratch.rglob("*")]
        assert not written, (argv, written)  # validation writes nothing, even where --out points

    check()
