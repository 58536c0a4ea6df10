"""The stack with real ranks: Keras 3 refused before Horovod starts; Gloo and MPI agree; averaging is checked."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, launch, metrics_of
from mnist_hpc import stack
from mnist_hpc.exitcode import ExitCode

KERAS3_TF = stack._major_minor(stack.tensorflow_version()) >= stack.FIRST_KERAS3_TF
needs_keras3_tf = pytest.mark.skipif(not KERAS3_TF, reason="TensorFlow < 2.16 has no Keras 3 to refuse "
                                     "(run on the default stack by make test; the fallback runs -m fallback only)")


# ------------------------------------------------------------------ deciding without TensorFlow
# ------------------------------------------------------------------ Keras 3 refused, end to end
@needs_keras3_tf
def test_training_with_keras3_active_fails_in_one_line(tmp_path, mnist_dir):
    run_dir = tmp_path / "keras3"
    result = launch(2, "train", "--model", "simple", "--epochs", "1", "--out", str(run_dir), "--data-dir",
                    str(mnist_dir), check=False, env=dict(os.environ, TF_USE_LEGACY_KERAS="0"), timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Keras 3 would be tf.keras (TF_USE_LEGACY_KERAS='0')" in lines[0], result.stderr
    assert not run_dir.exists()  # refused before any rank started or anything was written


@needs_keras3_tf
def test_keras3_resolved_before_the_package_is_refused_before_horovod_starts(tmp_path):
    """tf.keras already resolved to Keras 3 (TensorFlow used before mnist_hpc was imported): the rank's
    Horovod init refuses it rather than training ranks apart."""
    code = ("import os\n"
            "os.environ['TF_USE_LEGACY_KERAS'] = '0'\n"
            "import tensorflow as tf\n"
            "tf.keras.Model\n"
            "os.environ['TF_USE_LEGACY_KERAS'] = '1'\n"
            "from mnist_hpc import distributed, stack\n"
            "try:\n"
            "    distributed.init()\n"
            "except stack.StackError as err:\n"
            "    print('refused:', err)\n"
            "import sys; print('horovod' in sys.modules and __import__('horovod.tensorflow').tensorflow.is_initialized())\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "refused: tf.keras is keras 3." in result.stdout and "(Keras 3)" in result.stdout
    assert result.stdout.split()[-1] == "False"  # Horovod never initialised


@needs_keras3_tf
def test_doctor_reports_keras2_and_the_horovod_build():
    result = subprocess.run([sys.executable, "-m", "mnist_hpc", "doctor", "--json"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    (found,) = json.loads(result.stdout)["ranks"]
    assert found["keras2"] and found["versions"]["keras"].startswith("tf-keras 2.")
    assert found["horovod_built"]["mpi"] and found["horovod_built"]["gloo"]
    refused = subprocess.run([sys.executable, "-m", "mnist_hpc", "doctor"], capture_output=True, text=True,
                             timeout=120, env=dict(os.environ, TF_USE_LEGACY_KERAS="0"))
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr


# ------------------------------------------------------------------ Horovod over both controllers
@pytest.mark.fallback
def test_gloo_and_mpi_runs_end_with_identical_weights_on_both_ranks(tmp_path, mnist_dir):
    """The same 2-rank training over Gloo (horovodrun --gloo) and over MPI (mpirun): in each, both ranks
    hold bit-identical weights at the end (gradients averaged), and the two runs agree."""
    common = ["train", "--model", "simple", "--epochs", "1", "--data-dir", str(mnist_dir)]
    horovodrun = os.path.join(os.path.dirname(sys.executable), "horovodrun")
    gloo = subprocess.run([horovodrun, "--gloo", "-np", "2", "-H", "localhost:2", sys.executable, "-m", "mnist_hpc",
                           *common, "--out", str(tmp_path / "gloo")],
                          capture_output=True, text=True, timeout=300, cwd=REPO)
    assert gloo.returncode == 0, gloo.stderr[-3000:]
    launch(2, *common, "--out", str(tmp_path / "mpi"))
    weights = {}
    for name in ("gloo", "mpi"):
        metrics = metrics_of(tmp_path / name)
        assert metrics["world_size"] == 2 and metrics["status"] == "completed"
        digests = metrics["rank_weight_digests"]
        assert len(digests) == 2 and digests[0] == digests[1], f"{name}: ranks ended with different weights"
        weights[name] = np.load(tmp_path / name / "checkpoints" / "ckpt-00001.npz", allow_pickle=False)
    for key in weights["gloo"].files:
        if key.startswith("model_"):
            np.testing.assert_allclose(weights["gloo"][key], weights["mpi"][key], atol=1e-6, err_msg=key)


def test_ranks_that_do_not_average_gradients_fail_the_run(tmp_path, mnist_dir):
    """What Keras 3 does silently, forced here: each rank's optimizer left unwrapped (the test replaces
    hvd.DistributedOptimizer inside the real ranks). The run must not pass as a success."""
    from mnist_hpc.jobspec import JobSpec, launch_environment

    run_dir = tmp_path / "unaveraged"
    code = ("import sys, horovod.tensorflow.keras as hvd\n"
            "hvd.DistributedOptimizer = lambda optimizer, **kwargs: optimizer\n"
            "from mnist_hpc.cli import main\n"
            "sys.exit(main(sys.argv[1:]))")
    # 2 epochs: with a whole epoch per graph call, Horovod's broadcast callback fires after epoch 1
    spec = JobSpec(("train", "--model", "simple", "--epochs", "2", "--out", str(run_dir), "--data-dir",
                    str(mnist_dir)), ntasks_per_node=2)
    command = spec.mpirun_command()
    python_at = command.index(sys.executable)
    command[python_at + 1: python_at + 3] = ["-c", code]  # python -m mnist_hpc ARGS -> python -c CODE ARGS
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=launch_environment(), cwd=REPO)
    assert result.returncode == ExitCode.FAILED, result.stdout[-2000:]
    assert "ranks ended with different weights, so gradients were not averaged" in result.stderr
    metrics = metrics_of(run_dir)
    assert metrics["status"] == "ranks_disagree" and len(set(metrics["rank_weight_digests"])) == 2
