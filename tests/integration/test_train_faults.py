"""Faults during training: a dying rank, SIGTERM, a damaged newest checkpoint, a second job."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path


from conftest import REPO, launch, metrics_of, rank_pids
from mnist_hpc import checkpoint
from mnist_hpc.exitcode import ExitCode

LOCAL = [sys.executable, str(REPO / "launchers" / "local.py"), "--np", "2"]


NEVER_DONE = 100_000  # epochs: a budget no machine finishes, so a fault always lands mid-run


def start_training(run_dir: Path, mnist_dir: Path, epochs: int = NEVER_DONE) -> subprocess.Popen:
    args = ["train", "--model", "simple", "--epochs", str(epochs), "--batch-size", "16", "--out", str(run_dir),
            "--data-dir", str(mnist_dir)]
    return subprocess.Popen([*LOCAL, *args], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def wait_for_checkpoint(run_dir: Path, process: subprocess.Popen, epoch: int = 1) -> None:
    deadline = time.monotonic() + 300
    while not checkpoint.path_for(run_dir / "checkpoints", epoch).exists():
        assert process.poll() is None and time.monotonic() < deadline, "training ended before its checkpoint"
        time.sleep(0.05)


def stop_ranks(run_dir: Path) -> None:
    """SIGTERM to every rank of the training in ``run_dir``: what SLURM sends at a time limit or preemption."""
    ranks = [pid for rank in "01" for pid in rank_pids({"OMPI_COMM_WORLD_RANK": rank}, marker=str(run_dir))]
    assert len(ranks) == 2
    for pid in ranks:
        os.kill(pid, signal.SIGTERM)


def test_one_dead_rank_ends_the_whole_local_job(tmp_path, mnist_dir):
    run_dir = tmp_path / "run"
    job = start_training(run_dir, mnist_dir)
    try:
        wait_for_checkpoint(run_dir, job)
        victims = rank_pids({"OMPI_COMM_WORLD_RANK": "1"}, marker=str(run_dir))
        assert len(victims) == 1
        os.kill(victims[0], signal.SIGKILL)
        killed = time.monotonic()
        output, _ = job.communicate(timeout=60)  # no rank hangs: everything is over within 60 s
        assert time.monotonic() - killed < 60
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
    assert job.returncode != 0
    assert "rank 1" in output, output[-2000:]
    found = checkpoint.latest_valid(run_dir / "checkpoints")  # still loadable
    # running the command again resumes (one epoch more than the dead job had finished), not restarts
    again = launch(2, "train", "--model", "simple", "--epochs", str(found.epoch + 1), "--batch-size", "16", "--out",
                   str(run_dir), "--data-dir", str(mnist_dir))
    assert f"resumed from {found.path} (epoch {found.epoch})" in again.stdout, again.stdout[-2000:]
    history = metrics_of(run_dir)["history"]
    assert [h["epoch"] for h in history] == list(range(1, found.epoch + 2))
    assert history[:found.epoch] == found.meta["history"]  # the epochs before the death, kept as they were


def test_sigterm_checkpoints_and_exits_with_the_requeue_status(tmp_path, mnist_dir):
    run_dir = tmp_path / "run"
    job = start_training(run_dir, mnist_dir)
    try:
        wait_for_checkpoint(run_dir, job)
        stop_ranks(run_dir)
        output, _ = job.communicate(timeout=120)
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
    assert job.returncode == ExitCode.INTERRUPTED, output[-2000:]
    metrics = metrics_of(run_dir)
    assert metrics["status"] == "interrupted" and metrics["epochs_completed"] < NEVER_DONE
    newest = checkpoint.latest_valid(run_dir / "checkpoints")
    assert newest.epoch == metrics["epochs_completed"]  # the epoch it stopped at was checkpointed
    # what the requeued job runs: the same command resumes at the next epoch
    stopped = newest.epoch
    resumed = launch(2, "train", "--model", "simple", "--epochs", str(stopped + 1), "--batch-size", "16", "--out",
                     str(run_dir), "--data-dir", str(mnist_dir))
    assert f"resumed from {newest.path} (epoch {stopped})" in resumed.stdout
    metrics = metrics_of(run_dir)
    assert metrics["status"] == "completed" and [h["epoch"] for h in metrics["history"]] == list(range(1, stopped + 2))


def test_resume_auto_skips_a_damaged_newest_checkpoint_with_a_warning(tmp_path, mnist_dir):
    """The fault table's row through the CLI under mpirun: the warning names the damaged file and the
    run resumes from the checkpoint before it."""
    run_dir = tmp_path / "run"
    common = ["train", "--model", "simple", "--out", str(run_dir), "--data-dir", str(mnist_dir)]
    launch(2, *common, "--epochs", "2")
    damaged = checkpoint.path_for(run_dir / "checkpoints", 2)
    damaged.write_bytes(damaged.read_bytes()[: damaged.stat().st_size // 2])
    result = launch(2, *common, "--epochs", "3", "--resume", "auto")
    assert "skipping damaged checkpoint" in result.stderr and str(damaged) in result.stderr, result.stderr[-2000:]
    assert f"resumed from {checkpoint.path_for(run_dir / 'checkpoints', 1)} (epoch 1)" in result.stdout
    metrics = metrics_of(run_dir)
    assert metrics["status"] == "completed" and [h["epoch"] for h in metrics["history"]] == [1, 2, 3]


def test_a_second_real_training_on_the_same_out_is_refused(tmp_path, mnist_dir):
    """Two real trainings on one --out: the second stops in one line before any rank starts, and the
    first runs on unharmed. The first has a budget it cannot finish (a million epochs), so it is still
    running when the second starts whatever the machine's speed; it is then stopped by SIGTERM."""
    run_dir = tmp_path / "run"
    first = start_training(run_dir, mnist_dir, epochs=1_000_000)
    try:
        wait_for_checkpoint(run_dir, first)
        second = launch(2, "train", "--model", "simple", "--epochs", "1", "--out", str(run_dir), "--data-dir",
                        str(mnist_dir), check=False, timeout=120)
        assert first.poll() is None, "the first training ended while the second was refused"
        stop_ranks(run_dir)
        output, _ = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
    lines = [line for line in second.stderr.splitlines() if line.startswith("error: ")]
    assert second.returncode == 2 and len(lines) == 1 and "is in use by pid" in lines[0], second.stderr[-2000:]
    assert "mpirun" not in second.stdout
    assert first.returncode == 75, output[-2000:]  # stopped by the signal, after its checkpoint
    metrics = metrics_of(run_dir)
    done = metrics["epochs_completed"]
    assert metrics["status"] == "interrupted" and [h["epoch"] for h in metrics["history"]] == list(range(1, done + 1))
    assert checkpoint.latest_valid(run_dir / "checkpoints").epoch == done
