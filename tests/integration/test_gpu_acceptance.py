"""scripts/gpu_acceptance.sh: on a CPU machine every GPU step is reported skipped, never passed;
the steps' own logic runs on CPU ranks through the script's test seam."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

from conftest import REPO
from mnist_hpc.exitcode import ExitCode

GPU_STEPS = ["train-1gpu", "train-ngpu", "evaluate-exact", "bench-bf16", "time-to-target", "signal-resume"]


def load_script():
    spec = importlib.util.spec_from_file_location("gpu_acceptance", REPO / "scripts" / "gpu_acceptance.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_on_a_cpu_machine_every_gpu_step_is_skipped(tmp_path, mnist_dir):
    out = tmp_path / "report"
    result = subprocess.run(["bash", str(REPO / "scripts" / "gpu_acceptance.sh"), "--out", str(out),
                             "--data-dir", str(mnist_dir)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads((out / "report.json").read_text())
    status = {s["name"]: (s["status"], s["reason"]) for s in report["steps"]}
    assert status["doctor"][0] == "passed"
    assert all(status[name] == ("skipped", "no GPU visible to TensorFlow") for name in GPU_STEPS), status
    assert report["counts"] == {"passed": 1, "failed": 0, "skipped": 6}
    assert "1 passed, 0 failed, 6 skipped (no GPU visible to TensorFlow)" in result.stdout
    markdown = (out / "report.md").read_text()
    assert markdown.count("| skipped |") == 6 and "| passed |" in markdown


def test_a_non_empty_out_folder_is_refused(tmp_path):
    (tmp_path / "keep.txt").write_text("results")
    result = subprocess.run(["bash", str(REPO / "scripts" / "gpu_acceptance.sh"), "--out", str(tmp_path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == ExitCode.USAGE and result.stderr.splitlines() == [
        f"error: --out: {tmp_path} is not empty: choose a new folder (nothing is overwritten)"], result.stderr
    assert (tmp_path / "keep.txt").read_text() == "results"


def test_the_gpu_steps_work_on_cpu_ranks_standing_in(tmp_path, mnist_dir, capsys):
    """Each GPU step's logic (two world sizes, exact evaluation, throughput, target, signal and resume)
    runs on 2 CPU ranks; the report says a test seam stood in for GPUs."""
    script = load_script()
    acceptance = script.Acceptance(tmp_path, steps=60, target=0.5, data_dir=str(mnist_dir), timeout=600,
                                   tta_epochs=1, cpu_stand_in=2, model="simple", train_args=("--batch-size", "32"))
    assert acceptance.run_all() == 0, capsys.readouterr().out
    report = json.loads((tmp_path / "report.json").read_text())
    steps = {s["name"]: s for s in report["steps"]}
    assert all(s["status"] == "passed" for s in steps.values()), steps
    assert "TEST SEAM" in report["summary"] and "nothing ran on a GPU" in report["summary"]
    assert all("test seam" in steps[name]["reason"] for name in GPU_STEPS)
    assert len(set(steps["evaluate-exact"]["results"]["test_correct"].values())) == 1
    assert steps["train-ngpu"]["results"]["world_size"] == 2
    assert steps["time-to-target"]["results"]["time_to_target"]["epoch"] == 1
    signalled = steps["signal-resume"]["results"]  # TERM after the first checkpoint of a run no machine finishes
    assert 1 <= signalled["epochs_before_signal"] < script.SIGNAL_EPOCHS
    assert signalled["epochs_after_resume"] == signalled["epochs_before_signal"] + 1  # resumed, one epoch more


def test_a_failed_step_makes_the_exit_status_1(tmp_path, mnist_dir):
    """doctor fails here (Keras 3 asked for, which every entry point refuses): exit status 1, and the
    report names the failed step; the GPU steps are still skipped, never passed."""
    out = tmp_path / "report"
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "0", "PYTHON": sys.executable}
    result = subprocess.run(["bash", str(REPO / "scripts" / "gpu_acceptance.sh"), "--out", str(out),
                             "--data-dir", str(mnist_dir)], capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 1, result.stdout + result.stderr
    report = json.loads((out / "report.json").read_text())
    status = {s["name"]: (s["status"], s["reason"]) for s in report["steps"]}
    assert status["doctor"][0] == "failed" and "Keras 3 would be tf.keras" in status["doctor"][1], status
    assert report["counts"] == {"passed": 0, "failed": 1, "skipped": 6}
    assert "0 passed, 1 failed, 6 skipped" in result.stdout and "| doctor | FAILED |" in (out / "report.md").read_text()
