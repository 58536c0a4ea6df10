"""RUN_DIR/saved_model after real 2-rank trainings: what a plain TensorFlow process with its default
Keras 3 (no TF_USE_LEGACY_KERAS, no tf_keras, no mnist_hpc) loads, and what `mnist-hpc evaluate` reads."""

import json
import os
import re
import subprocess
import sys

import pytest

from conftest import launch, metrics_of
from mnist_hpc import export

# A user's process: numpy + gzip for the test set (mnist_hpc would set TF_USE_LEGACY_KERAS), Keras 3's
# TFSMLayer for the model. Batches of 1,000, as the training run's evaluation scored them.
KERAS3_SCORE = r"""
import gzip, json, sys
import numpy as np
import keras, tensorflow as tf

folder, data = sys.argv[1], sys.argv[2]
with gzip.open(f"{data}/t10k-images-idx3-ubyte.gz") as f:
    images = np.frombuffer(f.read(), np.uint8, offset=16).astype(np.float32) / 255.0
with gzip.open(f"{data}/t10k-labels-idx1-ubyte.gz") as f:
    labels = np.frombuffer(f.read(), np.uint8, offset=8)
images = images.reshape((len(labels), *tf.saved_model.load(folder).serve.input_signature[0].shape[1:]))
layer = keras.layers.TFSMLayer(folder, call_endpoint="serve")
correct = sum(int(np.sum(np.argmax(np.asarray(layer(images[i:i + 1000])), axis=1) == labels[i:i + 1000]))
              for i in range(0, len(labels), 1000))
m = tf.saved_model.load(folder)  # the README's plain-TensorFlow call, no Keras at all (m kept, as it says)
served = sum(int(np.sum(np.argmax(m.serve(tf.constant(images[i:i + 1000])).numpy(), axis=1) == labels[i:i + 1000]))
             for i in range(0, len(labels), 1000))
print(json.dumps({"correct": correct, "served": served, "count": len(labels), "keras": keras.__version__,
                  "tf_keras": "tf_keras" in sys.modules, "mnist_hpc": "mnist_hpc" in sys.modules}))
"""


@pytest.fixture(scope="module")
def simple_run(tmp_path_factory, mnist_dir):
    """Two epochs of the softmax model on 2 ranks (seconds)."""
    run_dir = tmp_path_factory.mktemp("simple") / "run"
    launch(2, "train", "--model", "simple", "--epochs", "2", "--out", str(run_dir), "--data-dir", str(mnist_dir))
    return run_dir


@pytest.mark.parametrize("run", ["simple_run", "cnn_run"])
def test_keras3_loads_the_export_and_reproduces_the_runs_test_accuracy(run, request, mnist_dir):
    run_dir = request.getfixturevalue(run)
    folder = run_dir / export.NAME
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TF_USE_LEGACY_KERAS")}
    result = subprocess.run([sys.executable, "-c", KERAS3_SCORE, str(folder), str(mnist_dir)], capture_output=True,
                            text=True, timeout=300, env=env, cwd="/")
    assert result.returncode == 0, result.stderr[-3000:]
    scored = json.loads(result.stdout.strip().splitlines()[-1])
    assert not scored["tf_keras"] and not scored["mnist_hpc"], scored  # Keras 3 alone, as a user's process has it
    assert scored["keras"].startswith("3."), scored
    metrics = metrics_of(run_dir)
    assert metrics["status"] == "completed"
    assert scored["count"] == 10_000 and scored["correct"] == metrics["test_correct"] == scored["served"]
    assert scored["correct"] / scored["count"] == metrics["test_accuracy"]


def test_evaluate_reads_the_export_and_gives_the_runs_number(cnn_run, mnist_dir):
    result = launch(2, "evaluate", str(cnn_run / export.NAME), "--data-dir", str(mnist_dir))
    correct = int(re.search(r"\((\d+)/10000\)", result.stdout).group(1))
    assert correct == metrics_of(cnn_run)["test_correct"]
    assert f"test accuracy {metrics_of(cnn_run)['test_accuracy']:.4f}" in result.stdout
