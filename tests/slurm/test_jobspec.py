"""jobspec.py's sbatch templates on the real local SLURM cluster (tests/slurm/cluster.sh)."""

from __future__ import annotations

import json
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, damage_data, metrics_of, rank_pids
from slurm.helpers import FINAL_STATES, await_checkpoint, await_pending, frozen, job_state, newest_epoch, sbatch, submit, wait_for
from mnist_hpc import checkpoint, jobspec

pytestmark = pytest.mark.slurm
def test_committed_templates_are_the_rendered_ones():
    for name in jobspec.TEMPLATES:
        assert (REPO / "slurm" / f"{name}.sbatch").read_text() == jobspec.render_sbatch(name), \
            f"slurm/{name}.sbatch is stale: run 'make templates'"


@pytest.mark.fallback
def test_train_simple_template(slurm_env, tmp_path):
    job = sbatch(REPO / "slurm" / "train_simple.sbatch", slurm_env, tmp_path, MNIST_HPC_ARGS="--epochs 2")
    assert wait_for(job, slurm_env) == "COMPLETED", (tmp_path / f"slurm-mnist-simple-{job}.out").read_text()
    metrics = metrics_of(tmp_path / "runs" / f"mnist-simple-{job}")
    assert metrics["slurm_job_id"] == job and metrics["world_size"] == 1
    assert metrics["test_accuracy"] >= 0.91


def cnn_job_trains_on_two_nodes(script, slurm_env, tmp_path) -> None:
    """Submit a rendered train_cnn script with a short budget: it completes with one rank on each node."""
    job = sbatch(script, slurm_env, tmp_path, MNIST_HPC_ARGS="--steps 200")
    assert wait_for(job, slurm_env) == "COMPLETED", (tmp_path / f"slurm-mnist-cnn-{job}.out").read_text()
    metrics = metrics_of(tmp_path / "runs" / f"mnist-cnn-{job}")
    assert metrics["world_size"] == 2 and sorted(metrics["hosts"]) == ["node1", "node2"]
    assert metrics["test_accuracy"] >= 0.9


def test_train_cnn_template_runs_on_two_nodes(slurm_env, tmp_path):
    """The README's quick start: render the job script with `mnist-hpc slurm render`, submit it with sbatch."""
    script = tmp_path / "train_cnn.sbatch"
    render = [sys.executable, "-m", "mnist_hpc", "slurm", "render", "train_cnn", "--time", "30"]
    script.write_text(subprocess.run(render, capture_output=True, text=True, check=True, timeout=60).stdout)
    cnn_job_trains_on_two_nodes(script, slurm_env, tmp_path)


def test_a_job_rendered_from_the_generic_site_profile_trains_on_two_nodes(slurm_env, tmp_path):
    """slurm/sites/generic-pmix.toml, rendered as a user would, submitted as it is (the local cluster's
    Open MPI speaks PMIx only: pmi2 there fails with 'OMPI was not built with SLURM's PMI support')."""
    rendered = subprocess.run([sys.executable, "-m", "mnist_hpc", "slurm", "render", "train_cnn", "--site",
                               str(REPO / "slurm" / "sites" / "generic-pmix.toml")],
                              capture_output=True, text=True, check=True, timeout=60).stdout
    assert '\nsrun --mpi=pmix --kill-on-bad-exit=1 --cpus-per-task="$SLURM_CPUS_PER_TASK" ' in rendered
    assert "#SBATCH --time=01:00:00\n" in rendered and "\nexport TF_CPP_MIN_LOG_LEVEL=2\n" in rendered
    script = tmp_path / "cnn.sbatch"
    script.write_text(rendered)
    cnn_job_trains_on_two_nodes(script, slurm_env, tmp_path)


def test_signal_checkpoints_requeues_and_resumes(slurm_env, tmp_path):
    """The warning signal (sent now instead of 90 s before the limit) makes the ranks finish the epoch,
    checkpoint and exit; the job requeues itself and the resumed run completes every epoch once."""
    job = sbatch(REPO / "slurm" / "train_simple.sbatch", slurm_env, tmp_path,
                 MNIST_HPC_ARGS="--epochs 4 --batch-size 16")
    run_dir = tmp_path / "runs" / f"mnist-simple-{job}"
    await_checkpoint(run_dir / "checkpoints" / "ckpt-00001.npz",
                     lambda: job_state(job, slurm_env) in {"PENDING", "RUNNING"})
    with frozen(job) as ranks:  # the ranks stopped in epoch 2: the signal lands mid-run, not after the last epoch
        subprocess.run(["scancel", "--batch", "--signal=USR1", job], check=True, env=slurm_env)
        await_pending(ranks, signal.SIGUSR1)  # the batch shell (not frozen) has forwarded it through srun
    assert wait_for(job, slurm_env) == "COMPLETED"
    log = (tmp_path / f"slurm-mnist-simple-{job}.out").read_text()
    assert "caught USR1" in log and "requeueing job" in log and "(restart 1)" in log, log
    metrics = metrics_of(run_dir)
    assert [h["epoch"] for h in metrics["history"]] == [1, 2, 3, 4]
    assert metrics["status"] == "completed"


def test_a_real_time_limit_signal_checkpoints_requeues_and_resumes(slurm_env, tmp_path):
    """No scancel --signal: SLURM itself sends USR1 before the 2-minute limit (`--signal=B:USR1@60`; slurmctld
    checks limits every 30 s, so it lands 30-60 s after the start). The job checkpoints, requeues itself, and
    a later start resumes from that checkpoint and trains on. The run is far longer than any time window
    (1000 epochs), so the signal lands mid-run however fast the machine is; once the resumed run has saved
    one more epoch the test cancels it (full completion after a signal is test_signal_checkpoints_...)."""
    job = sbatch(REPO / "slurm" / "train_simple.sbatch", slurm_env, tmp_path, "--time=2", "--signal=B:USR1@60",
                 MNIST_HPC_ARGS="--epochs 1000 --batch-size 16")
    log_path, ckpt_dir = tmp_path / f"slurm-mnist-simple-{job}.out", tmp_path / "runs" / f"mnist-simple-{job}" / "checkpoints"
    deadline, resumed = time.monotonic() + 600, None
    try:
        while resumed is None or newest_epoch(ckpt_dir) <= resumed:
            log = log_path.read_text() if log_path.exists() else ""
            state = job_state(job, slurm_env)
            assert time.monotonic() < deadline and state not in FINAL_STATES, f"{state}\n{log[-3000:]}"
            if resumed is None and (found := re.search(r"^resumed from .* \(epoch (\d+)\)$", log, re.M)):
                resumed = int(found.group(1))
            time.sleep(1)
    finally:
        subprocess.run(["scancel", job], env=slurm_env)
    wait_for(job, slurm_env, timeout=120)
    log = log_path.read_text()
    first_start = log[:log.index("(restart 1)")]
    assert "caught USR1" in first_start and "requeueing job" in first_start, log[-3000:]
    assert "mnist-hpc exited with status" not in log, log[-3000:]  # no run ended otherwise than by the signal
    assert 1 <= resumed < 1000
    latest = checkpoint.latest_valid(ckpt_dir)
    assert latest.meta["epoch"] > resumed
    assert [h["epoch"] for h in latest.meta["history"]] == list(range(1, latest.meta["epoch"] + 1))  # each once


@pytest.mark.parametrize("fault", ["bad argument", "corrupted data"])
def test_bad_input_fails_before_srun_with_one_line(fault, slurm_env, tmp_path, mnist_copy):
    """The template's own validation refuses it: one error line in the job log, and no srun step ran
    (on 2 nodes every rank would print the error, and the script would report srun's exit status)."""
    if fault == "bad argument":
        extra, expect = {"MNIST_HPC_ARGS": "--batch-size -3"}, "--batch-size: '-3' is not a batch size from 1 to 55000"
    else:
        damage_data(mnist_copy, "corrupted")
        extra, expect = {"MNIST_HPC_DATA": str(mnist_copy)}, "train-images-idx3-ubyte.gz: content does not match the SHA-256"
    job = sbatch(REPO / "slurm" / "train_simple.sbatch", slurm_env, tmp_path, "--nodes=2", **extra)
    assert wait_for(job, slurm_env, timeout=120) == "FAILED"
    log = (tmp_path / f"slurm-mnist-simple-{job}.out").read_text()
    errors = [line for line in log.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and expect in errors[0], log
    assert "mnist-hpc exited with status" not in log  # the line the script prints after srun
    assert not (tmp_path / "runs" / f"mnist-simple-{job}").exists()


def test_a_dead_rank_fails_the_sbatch_job_fast_and_a_resubmission_resumes(slurm_env, tmp_path):
    run_dir = tmp_path / "shared-run"
    job = sbatch(REPO / "slurm" / "train_simple.sbatch", slurm_env, tmp_path, "--nodes=2",
                 MNIST_HPC_ARGS="--epochs 20 --batch-size 16", MNIST_HPC_RUN_DIR=str(run_dir))
    deadline = time.monotonic() + 300
    while not (run_dir / "checkpoints" / "ckpt-00001.npz").exists():
        assert time.monotonic() < deadline and job_state(job, slurm_env) in {"PENDING", "RUNNING"}
        time.sleep(0.2)
    victims = rank_pids({"SLURM_JOB_ID": job, "SLURM_PROCID": "1"}, marker=str(run_dir))
    assert victims
    for pid in victims:
        __import__("os").kill(pid, 9)
    killed = time.monotonic()
    assert wait_for(job, slurm_env, timeout=120) == "FAILED"
    assert time.monotonic() - killed < 60
    log = (tmp_path / f"slurm-mnist-simple-{job}.out").read_text()
    assert "task 1" in log, log[-2000:]  # srun names the failed rank
    newest = checkpoint.latest_valid(run_dir / "checkpoints").epoch  # however far the dead job got
    again = sbatch(REPO / "slurm" / "train_simple.sbatch", slurm_env, tmp_path, "--nodes=2",
                   MNIST_HPC_ARGS=f"--epochs {newest + 1} --batch-size 16", MNIST_HPC_RUN_DIR=str(run_dir))
    assert wait_for(again, slurm_env) == "COMPLETED"
    assert "resumed from" in (tmp_path / f"slurm-mnist-simple-{again}.out").read_text()
    assert [h["epoch"] for h in metrics_of(run_dir)["history"]] == list(range(1, newest + 2))


def test_hostile_values_in_real_submissions_execute_nothing(slurm_env, tmp_path):
    p = tmp_path
    hostile_args = f"--epochs 1 $(touch {p}/dollar) `touch {p}/backtick` ; touch {p}/semicolon '\" && touch {p}/and"
    job = sbatch(REPO / "slurm" / "train_simple.sbatch", slurm_env, tmp_path, MNIST_HPC_ARGS=hostile_args)
    assert wait_for(job, slurm_env, timeout=120) == "FAILED"  # unrecognized arguments, nothing run
    strange_dir = f"{p}/run $(touch {p}/rundir) `touch {p}/rundir2`"
    job = sbatch(REPO / "slurm" / "train_simple.sbatch", slurm_env, tmp_path, MNIST_HPC_ARGS="--epochs 1",
                 MNIST_HPC_RUN_DIR=strange_dir)
    assert wait_for(job, slurm_env) == "COMPLETED"
    assert (Path(strange_dir) / "metrics.json").is_file()  # the value was used literally
    result = submit("--nodes", "1", "--time", "10", "--folder", str(p / "logs"), "--wait", "--",
                    "--model", "simple", "--epochs", "1", "--out", f"{p}/sub $(touch {p}/submitit)",
                    env=slurm_env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    created = {path.name for path in p.iterdir()}
    assert not created & {"dollar", "backtick", "semicolon", "and", "rundir", "rundir2", "submitit"}, created


def test_scaling_sweep_script_and_its_report_job(slurm_env, tmp_path):
    sweep_dir = tmp_path / "sweep"
    result = subprocess.run([str(REPO / "slurm" / "scaling_sweep.sh"), "1", "2"], capture_output=True, text=True,
                            cwd=tmp_path, timeout=60, env={**slurm_env, "MNIST_HPC_SWEEP_DIR": str(sweep_dir),
                            "MNIST_HPC_ARGS": "--model simple --synthetic --warmup-steps 2 --windows 3 --window-steps 5"})
    assert result.returncode == 0, result.stderr
    report_job = result.stdout.split("submitted report: job ")[1].split()[0]
    assert wait_for(report_job, slurm_env) == "COMPLETED", list(sweep_dir.iterdir())
    rows = json.loads((sweep_dir / "report.json").read_text())
    assert [r["workers"] for r in rows] == [1, 2]
    assert sorted(json.loads((sweep_dir / "np2.json").read_text())["hosts"]) == ["node1", "node2"]
    assert (sweep_dir / "throughput.png").is_file() and (sweep_dir / "report.md").is_file()


def test_scaling_sweep_script_with_a_site_profile(slurm_env, tmp_path):
    """--site: the benchmark script is rendered from the profile into the sweep folder, and the report job
    takes the benchmarks' partition and environment section (here the profile's venv: no MNIST_HPC_SETUP)."""
    site = tmp_path / "site.toml"
    site.write_text(f'partition = "debug"\nvenv = "{Path(sys.executable).parent.parent}"\n'  # before its [environment]
                    + (REPO / "slurm" / "sites" / "generic-pmix.toml").read_text())
    sweep_dir = tmp_path / "sweep"
    env = {k: v for k, v in slurm_env.items() if k != "MNIST_HPC_SETUP"}
    result = subprocess.run([str(REPO / "slurm" / "scaling_sweep.sh"), "--site", str(site), "1", "2"],
                            capture_output=True, text=True, cwd=tmp_path, timeout=60,
                            env={**env, "MNIST_HPC_SWEEP_DIR": str(sweep_dir), "MNIST_HPC_PYTHON": sys.executable,
                                 "MNIST_HPC_ARGS": "--model simple --synthetic --warmup-steps 2 --windows 3 --window-steps 5"})
    assert result.returncode == 0, result.stderr
    assert "#SBATCH --partition=debug\n" in (sweep_dir / "bench.sbatch").read_text()
    assert "#SBATCH --partition=debug\n" in (sweep_dir / "report.sbatch").read_text()
    report_job = result.stdout.split("submitted report: job ")[1].split()[0]
    assert wait_for(report_job, slurm_env) == "COMPLETED", list(sweep_dir.iterdir())
    assert [r["workers"] for r in json.loads((sweep_dir / "report.json").read_text())] == [1, 2]
    refused = subprocess.run([str(REPO / "slurm" / "scaling_sweep.sh"), "--site", str(tmp_path / "nope.toml"), "1"],
                             capture_output=True, text=True, cwd=tmp_path, timeout=60,
                             env={**env, "MNIST_HPC_SWEEP_DIR": str(tmp_path / "never"), "MNIST_HPC_PYTHON": sys.executable})
    assert refused.returncode == 2 and not (tmp_path / "never").exists()
    assert refused.stderr.strip().splitlines() == [f"error: --site {tmp_path / 'nope.toml'}: cannot read it "
                                                   "(No such file or directory)"], refused.stderr


def test_readme_gpu_examples_render_as_documented(slurm_env, tmp_path):
    """The GPU layouts in the README, as far as a machine without GPUs can check them."""
    rendered = subprocess.run([sys.executable, "-m", "mnist_hpc", "slurm", "render", "train_cnn", "--nodes", "4",
                               "--ntasks-per-node", "4", "--gpus-per-node", "4", "--cpus-per-task", "8",
                               "--partition", "gpu", "--account", "myproject", "--time", "01:00:00"],
                              capture_output=True, text=True, check=True).stdout
    for line in ("--nodes=4", "--ntasks-per-node=4", "--gpus-per-node=4", "--cpus-per-task=8", "--partition=gpu",
                 "--account=myproject", "--time=01:00:00", "--signal=B:USR1@90", "--requeue"):
        assert f"#SBATCH {line}\n" in rendered
    assert "srun --mpi=pmix" in rendered
    dry = submit("--dry-run", "--nodes", "4", "--ntasks-per-node", "4", "--gpus-per-node", "4", "--partition", "gpu",
                 "--account", "myproject", "--setup", "module load openmpi", "--", "--model", "cnn",
                 env=slurm_env, cwd=tmp_path, timeout=60)
    assert dry.returncode == 0, dry.stderr
    for line in ("--nodes=4", "--ntasks-per-node=4", "--gpus-per-node=4", "--partition=gpu", "--account=myproject"):
        assert f"#SBATCH {line}" in dry.stdout
    assert "module load openmpi" in dry.stdout and "--mpi=pmix" in dry.stdout
    refused = subprocess.run([sys.executable, "-m", "mnist_hpc", "slurm", "render", "train_cnn",
                              "--ntasks-per-node", "8", "--gpus-per-node", "4"], capture_output=True, text=True)
    assert refused.returncode == 2 and "one task per GPU" in refused.stderr and refused.stdout == ""


def test_doctor_under_srun_reports_both_nodes(slurm_env, tmp_path):
    """The first command an HPC user runs inside a job: every rank, aggregated on rank 0."""
    out = tmp_path / "doctor.json"
    job = subprocess.run(["sbatch", "--parsable", "--nodes=2", "--ntasks-per-node=1", "--time=5",
                          f"--output={tmp_path}/doctor-%j.out", "--wrap",
                          f"srun --mpi=pmix {shlex.quote(sys.executable)} -m mnist_hpc doctor --json > {out}"],
                         capture_output=True, text=True, env=slurm_env, cwd=tmp_path, timeout=60)
    assert job.returncode == 0, job.stderr
    job_id = job.stdout.strip().split(";")[0]
    assert wait_for(job_id, slurm_env, timeout=300) == "COMPLETED", (tmp_path / f"doctor-{job_id}.out").read_text()
    found = json.loads(out.read_text())
    assert found["summary"] == "2 ranks on 2 nodes, CPU only, MPI all-reduce"
    assert sorted(r["host"] for r in found["ranks"]) == ["node1", "node2"]
    assert all(r["slurm"]["SLURM_JOB_ID"] == job_id for r in found["ranks"])
    assert [r["slurm"]["SLURM_PROCID"] for r in found["ranks"]] == ["0", "1"]
