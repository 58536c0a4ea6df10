"""launchers/submit.py and scaling.py (submitit) on the real local SLURM cluster."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

from conftest import REPO, damage_data, metrics_of, rank_pids, readline_within
from slurm.helpers import await_checkpoint, await_pending, frozen, submit, wait_for

pytestmark = pytest.mark.slurm
def test_submitit_launcher_trains_on_two_nodes(slurm_env, tmp_path):
    result = submit("--nodes", "2", "--ntasks-per-node", "1", "--time", "20", "--folder", str(tmp_path / "logs"),
                    "--wait", "--", "--model", "simple", "--epochs", "2", "--out", str(tmp_path / "run"),
                    env=slurm_env, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    printed = json.loads(result.stdout[result.stdout.index("{"):])
    assert printed["world_size"] == 2 and sorted(printed["hosts"]) == ["node1", "node2"]
    assert printed["test_accuracy"] >= 0.91 and printed["slurm_job_id"]


def test_submitit_reports_a_crashed_rank(slurm_env, tmp_path):
    """Rank 1 is SIGKILLed mid-training: the job is reported failed with its log path, within bounds."""
    launcher = subprocess.Popen(
        [sys.executable, str(REPO / "launchers" / "submit.py"), "--nodes", "2", "--time", "10",
         "--folder", str(tmp_path / "logs"), "--wait", "--wait-timeout", "300", "--", "--model", "simple",
         "--epochs", "1000000", "--batch-size", "16", "--out", str(tmp_path / "run")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=slurm_env, cwd=tmp_path)
    first_line = readline_within(launcher.stdout, 120)
    job = first_line.split()[2].rstrip(";")
    deadline = time.monotonic() + 300
    victims: list[int] = []
    # rank 1 is up and training is under way (a budget it cannot finish: no race with the machine's speed)
    while not (victims and (tmp_path / "run" / "checkpoints" / "ckpt-00001.npz").exists()):
        assert time.monotonic() < deadline and launcher.poll() is None, first_line
        time.sleep(0.2)
        victims = rank_pids({"SLURM_JOB_ID": job, "SLURM_PROCID": "1"}, marker=str(tmp_path))
    killed_at = time.monotonic()
    for pid in victims:
        __import__("os").kill(pid, 9)
    assert wait_for(job, slurm_env, timeout=120) == "FAILED"
    assert time.monotonic() - killed_at < 60  # the README: FAILED within 60 s, as under sbatch
    out, err = launcher.communicate(timeout=300)
    assert launcher.returncode == 1, out + err
    # --wait learns it from submitit, which asks SLURM (sacct) at most once a minute: within a minute more
    assert time.monotonic() - killed_at < 120
    assert f"job {job} failed" in err and "logs:" in err and str(tmp_path / "logs") in err
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_wait_timeout_cancels_the_job(slurm_env, tmp_path):
    """--wait gives up after --wait-timeout seconds: it cancels the job, says so in one line and exits 1.
    The training (a step budget no machine finishes in minutes) outlasts the timeout by construction."""
    result = submit("--nodes", "2", "--time", "10", "--folder", str(tmp_path / "logs"), "--wait",
                    "--wait-timeout", "10", "--", "--model", "simple", "--steps", "100000000", "--batch-size", "16",
                    "--out", str(tmp_path / "run"), env=slurm_env, cwd=tmp_path, timeout=300)
    job = result.stdout.split()[2].rstrip(";")  # "submitted job N; ..."
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"job {job}: no result after 10 s, cancelled; logs: " in result.stderr, result.stderr
    assert wait_for(job, slurm_env, timeout=120) == "CANCELLED"
    # scancel sends SIGTERM: a run already training stops at its next step and records itself as interrupted
    # (resumable); one still starting when the job is cancelled writes nothing. Never a completed run.
    metrics = tmp_path / "run" / "metrics.json"
    assert not metrics.exists() or metrics_of(tmp_path / "run")["status"] == "interrupted"


def test_submitit_preemption_requeues_and_resumes(slurm_env, tmp_path):
    """Preemption as submitit sees it: USR2 to every task. submitit's Checkpointable requeues the job, and
    the requeued run resumes from the newest epoch checkpoint; --wait still returns the final metrics."""
    run_dir = tmp_path / "run"
    launcher = subprocess.Popen(
        [sys.executable, str(REPO / "launchers" / "submit.py"), "--nodes", "2", "--time", "10",
         "--folder", str(tmp_path / "logs"), "--wait", "--wait-timeout", "600", "--", "--model", "simple",
         "--epochs", "4", "--batch-size", "16", "--out", str(run_dir)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=slurm_env, cwd=tmp_path)
    try:
        first_line = readline_within(launcher.stdout, 120)
        job = first_line.split()[2].rstrip(";")
        await_checkpoint(run_dir / "checkpoints" / "ckpt-00001.npz", lambda: launcher.poll() is None)
        with frozen(job) as ranks:  # the tasks stopped in epoch 2: USR2 lands mid-run, not after the last epoch
            subprocess.run(["scancel", "--signal=USR2", job], check=True, env=slurm_env)
            await_pending(ranks, signal.SIGUSR2)
        out, err = launcher.communicate(timeout=600)
    finally:
        if launcher.poll() is None:
            launcher.kill()
    assert launcher.returncode == 0, out + err
    printed = json.loads(out[out.index("{"):])  # after the "submitted job" line read above
    assert printed["status"] == "completed" and printed["epochs_completed"] == 4
    logs = "".join(p.read_text(errors="replace") for p in (tmp_path / "logs").rglob("*_0_log.*"))
    # (submitit calls any USR2 within 10 minutes of a short job's limit "timed-out"; the path is the same)
    assert "Caught signal SIGUSR2" in logs and "DUE TO JOB REQUEUE" in logs and "resumed from" in logs, logs[-3000:]
    assert [h["epoch"] for h in metrics_of(run_dir)["history"]] == [1, 2, 3, 4]


def test_submitit_refuses_missing_data_before_submitting(slurm_env, tmp_path):
    result = submit("--nodes", "2", "--", "--model", "simple", "--data-dir", str(tmp_path / "nothing"),
                    env=slurm_env, cwd=tmp_path, timeout=60)
    assert result.returncode == 2 and "mnist-hpc data fetch" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_submitit_refuses_corrupted_data_before_submitting(slurm_env, tmp_path, mnist_copy):
    damaged = damage_data(mnist_copy, "truncated")
    result = submit("--job-name", "must-not-run", "--nodes", "2", "--", "--model", "simple", "--data-dir",
                    str(mnist_copy), env=slurm_env, cwd=tmp_path, timeout=60)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and str(damaged) in lines[0], result.stderr
    queue = subprocess.run(["squeue", "-h", "-n", "must-not-run"], capture_output=True, text=True, env=slurm_env)
    assert queue.returncode == 0 and queue.stdout.strip() == ""


def test_submitit_rejects_bad_resources_before_submitting(slurm_env, tmp_path):
    for option, value, fragment in (("--time", "1:99", "--time"), ("--nodes", "0", "--nodes"),
                                    ("--partition", "a;b", "--partition")):
        result = submit("--job-name", "must-not-run", option, value, "--", "--model", "simple", env=slurm_env,
                        cwd=tmp_path, timeout=60)
        assert result.returncode == 2 and fragment in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    queue = subprocess.run(["squeue", "-h", "-n", "must-not-run"], capture_output=True, text=True, env=slurm_env)
    assert queue.returncode == 0 and queue.stdout.strip() == ""


def test_submitit_scaling_sweep(slurm_env, tmp_path):
    result = subprocess.run([sys.executable, str(REPO / "launchers" / "scaling.py"), "--node-counts", "1", "2",
                             "--time", "10", "--out", str(tmp_path / "sweep"), "--", "--model", "simple", "--synthetic",
                             "--warmup-steps", "2", "--windows", "3", "--window-steps", "5"],
                            capture_output=True, text=True, env=slurm_env, cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[2/2] 2 node(s)" in result.stdout and "| workers |" in result.stdout
    rows = json.loads((tmp_path / "sweep" / "report.json").read_text())
    assert [r["workers"] for r in rows] == [1, 2]
