"""launchers/sweep.py on the real local SLURM cluster: one job array, a killed trial, re-submission, report, submitit."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, metrics_of
from slurm.helpers import await_checkpoint, frozen

pytestmark = pytest.mark.slurm
EXAMPLE = REPO / "slurm" / "sweeps" / "softmax-lr.toml"  # 2 learning rates x 3 seeds, softmax, 3 epochs


def sweep(*args, env, cwd, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "launchers" / "sweep.py"), *map(str, args)],
                          capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)


def submitted_array(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    return re.search(r"submitted job array (\d+)", result.stdout).group(1)


def wait_for_array(array: str, env, timeout: float = 900) -> None:
    """Until no task of the array is queued or running (squeue forgets it, or lists none)."""
    deadline = time.monotonic() + timeout
    while (queued := subprocess.run(["squeue", "-h", "-r", "-j", array, "-o", "%i %T"], capture_output=True,
                                    text=True, env=env)).returncode == 0 and queued.stdout.strip():
        assert time.monotonic() < deadline, f"array {array} still queued after {timeout} s:\n{queued.stdout}"
        time.sleep(1)


def task_state(task: str, env) -> str:
    queued = subprocess.run(["squeue", "-h", "-r", "-j", task, "-o", "%T"], capture_output=True, text=True, env=env)
    return queued.stdout.strip() or "GONE"


def snapshot(run_dir: Path) -> tuple[bytes, int]:
    path = run_dir / "metrics.json"
    return path.read_bytes(), path.stat().st_mtime_ns


def test_a_sweep_is_one_array_a_killed_trial_recovers_by_resubmission_and_the_report_names_the_best(slurm_env, tmp_path):
    out = tmp_path / "sweep"
    array = submitted_array(sweep("submit", EXAMPLE, "--out", out, env=slurm_env, cwd=tmp_path))
    # ONE job: every record SLURM holds for it is a task of array `array`
    records = subprocess.run(["scontrol", "show", "job", "-o", array], capture_output=True, text=True,
                             env=slurm_env).stdout.splitlines()
    assert records and all(f"ArrayJobId={array} " in r for r in records), records
    victim = out / "trial-001"  # array task 1: among the first two (throttle 2)
    await_checkpoint(victim / "checkpoints" / "ckpt-00001.npz",  # mid-run: 2 more epochs to go
                     lambda: task_state(f"{array}_1", slurm_env) in {"PENDING", "RUNNING"}, timeout=600)
    task_job = re.search(r"JobId=(\d+) .*ArrayTaskId=1 ", "\n".join(subprocess.run(
        ["scontrol", "show", "job", "-o", array], capture_output=True, text=True, env=slurm_env).stdout.splitlines()))
    with frozen(task_job.group(1)):  # stopped in epoch 2: the cancel lands mid-run however fast the machine is
        subprocess.run(["scancel", f"{array}_1"], check=True, env=slurm_env)
    wait_for_array(array, slurm_env)
    assert sorted(p.name for p in (out / "logs").iterdir()) == [f"{array}_{i}.out" for i in range(6)]

    status = sweep("status", EXAMPLE, "--out", out, env=slurm_env, cwd=tmp_path)
    lines = status.stdout.splitlines()
    assert status.returncode == 0 and sum(": completed" in line for line in lines) == 5, status.stdout
    killed = next(line for line in lines if line.startswith("trial-001 "))
    assert "failed (" in killed and f"log: {out / 'logs' / f'{array}_1.out'}" in killed, status.stdout
    finished = {p.parent.name: snapshot(p.parent) for p in out.glob("trial-*/metrics.json")
                if metrics_of(p.parent)["status"] == "completed"}
    assert sorted(finished) == ["trial-000", "trial-002", "trial-003", "trial-004", "trial-005"]

    again = sweep("submit", EXAMPLE, "--out", out, env=slurm_env, cwd=tmp_path)
    assert "6 trials: 5 finished, 0 queued or running, 1 to run" in again.stdout, again.stdout
    second = submitted_array(again)
    wait_for_array(second, slurm_env)
    assert "resumed from" in (out / "logs" / f"{second}_0.out").read_text()
    assert [h["epoch"] for h in metrics_of(victim)["history"]] == [1, 2, 3]
    assert metrics_of(victim)["status"] == "completed"
    assert {name: snapshot(out / name) for name in finished} == finished  # the finished trials untouched

    report = sweep("report", EXAMPLE, "--out", out, env=slurm_env, cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    best = re.search(r"Best: (trial-\d+) \(test accuracy ([0-9.]+)\); config (\S+)", report.stdout)
    accuracies = {p.parent.name: metrics_of(p.parent)["test_accuracy"] for p in out.glob("trial-*/metrics.json")}
    assert best.group(1) == max(accuracies, key=accuracies.get) and best.group(3) == str(out / best.group(1) / "config.toml")
    assert float(best.group(2)) == round(accuracies[best.group(1)], 4) and accuracies[best.group(1)] >= 0.9
    rows = (out / "report.csv").read_text().splitlines()
    assert len(rows) == 7 and all(",completed," in row for row in rows[1:])
    assert (out / "report.png").stat().st_size > 0


def test_the_same_sweep_runs_through_submitit(slurm_env, tmp_path):
    out = tmp_path / "sweep"
    result = sweep("submit", EXAMPLE, "--out", out, "--backend", "submitit", "--wait", "--wait-timeout", "900",
                   env=slurm_env, cwd=tmp_path, timeout=1000)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count(": completed, test accuracy") == 6, result.stdout
    record, = json.loads((out / "submissions.json").read_text())["submissions"]
    array = record["job"]
    assert record["backend"] == "submitit" and record["cluster"] == "slurm"
    assert sorted(t["job_id"] for t in record["trials"].values()) == [f"{array}_{i}" for i in range(6)]
    assert all(metrics_of(out / f"trial-{i:03d}")["status"] == "completed" for i in range(6))
    again = sweep("submit", EXAMPLE, "--out", out, "--backend", "submitit", env=slurm_env, cwd=tmp_path)
    assert again.returncode == 0 and "nothing to submit: 6 trials: 6 finished" in again.stdout, again.stdout


def test_a_sweep_larger_than_max_array_size_is_refused_before_anything_is_written(slurm_env, tmp_path):
    config = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, env=slurm_env).stdout
    maximum = int(re.search(r"MaxArraySize\s*=\s*(\d+)", config).group(1))
    big = tmp_path / "big.toml"
    big.write_text(f'out = "{tmp_path / "big"}"\n[base]\nmodel = "simple"\n[job]\njob_name = "must-not-run"\n'
                   f"[random]\nn = {maximum + 1}\nlr = {{ log_uniform = [0.01, 1.0] }}\n")
    result = sweep("submit", big, env=slurm_env, cwd=tmp_path)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert f"{maximum + 1} trials to submit, more than this cluster's MaxArraySize = {maximum}" in lines[0]
    assert not (tmp_path / "big").exists()
    queue = subprocess.run(["squeue", "-h", "-n", "must-not-run"], capture_output=True, text=True, env=slurm_env)
    assert queue.returncode == 0 and queue.stdout.strip() == ""
