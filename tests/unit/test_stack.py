"""The software stack without ranks: Keras 2 as tf.keras at every entry point, Keras 3 refused."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from mnist_hpc import stack

KERAS3_TF = stack._major_minor(stack.tensorflow_version()) >= stack.FIRST_KERAS3_TF
def fake_versions(**installed):
    return lambda name: installed.get(name.replace("-", "_"))


# ------------------------------------------------------------------ deciding without TensorFlow
@pytest.mark.parametrize("environ,installed,expect", [
    ({"TF_USE_LEGACY_KERAS": "1"}, dict(tensorflow="2.21.0", tf_keras="2.21.0"), None),
    ({"TF_USE_LEGACY_KERAS": "true"}, dict(tensorflow_cpu="2.21.0", tf_keras="2.21.1"), None),
    ({}, dict(tensorflow="2.21.0", tf_keras="2.21.0"), "Keras 3 would be tf.keras (TF_USE_LEGACY_KERAS=None)"),
    ({"TF_USE_LEGACY_KERAS": "0"}, dict(tensorflow="2.21.0", tf_keras="2.21.0"), "set TF_USE_LEGACY_KERAS=1"),
    ({"TF_USE_LEGACY_KERAS": "1"}, dict(tensorflow="2.21.0"), "pip install 'tf-keras==2.21.*'"),
    ({"TF_USE_LEGACY_KERAS": "1"}, dict(tensorflow="2.21.0", tf_keras="2.20.1"), "does not match TensorFlow 2.21.0"),
    ({}, dict(tensorflow="2.15.1", keras="2.15.0"), None),  # the fallback: Keras 2 is TensorFlow's own
    ({}, dict(tensorflow="2.15.1", keras="3.5.0"), "keras 3.5.0 is installed next to TensorFlow 2.15.1"),
    ({"TF_USE_LEGACY_KERAS": "1"}, dict(tensorflow="2.15.1", keras="2.15.0"), "unset TF_USE_LEGACY_KERAS"),
    ({}, {}, "TensorFlow is not installed"),
])
def test_keras2_problem(environ, installed, expect):
    problem = stack.keras2_problem(environ, fake_versions(**installed))
    if expect is None:
        assert problem is None
    else:
        assert expect in problem and "\n" not in problem


def test_the_package_asks_for_keras2_but_keeps_a_users_setting():
    current = fake_versions(tensorflow="2.21.0", tf_keras="2.21.0")
    environ = {}
    stack.use_keras2(environ, current)
    assert environ == {"TF_USE_LEGACY_KERAS": "1"}
    environ = {"TF_USE_LEGACY_KERAS": "0"}
    stack.use_keras2(environ, current)
    assert environ == {"TF_USE_LEGACY_KERAS": "0"}  # refused later, in one line, not silently overridden
    environ = {}
    stack.use_keras2(environ, fake_versions(tensorflow_cpu="2.15.1", keras="2.15.0"))
    assert environ == {}  # TensorFlow 2.15's own Keras is Keras 2; the variable would ask for tf-keras


def test_importing_the_package_makes_tf_keras_keras2():
    """A plain process: no variable set by hand; importing mnist_hpc first is all it takes."""
    code = ("import mnist_hpc, tensorflow as tf\n"
            "print(tf.keras.Model.__module__.split('.')[0], tf.keras.layers.Dense.__module__.split('.')[0])")
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    expected = "tf_keras" if KERAS3_TF else "keras"
    assert result.stdout.split() == [expected, expected]


# ------------------------------------------------------------------ Keras 3 refused, end to end
# ------------------------------------------------------------------ Horovod over both controllers
