"""The software stack: Keras 2 as ``tf.keras``, and what is installed.

TensorFlow >= 2.16 resolves ``tf.keras`` to Keras 3 unless ``TF_USE_LEGACY_KERAS`` is true when
``tf.keras`` is first used; then ``tf.keras`` is tf-keras (Keras 2). Horovod's Keras layer needs
Keras 2: under Keras 3 its ``BroadcastGlobalVariablesCallback`` fails and the ranks silently end
with different weights, while a one-process run looks fine. So this package sets the variable as
it is imported (``mnist_hpc/__init__.py``: every entry point imports the package before
TensorFlow) and refuses to start when Keras 3 would be active anyway.

This module imports no TensorFlow at import time: :func:`keras2_problem` decides from the
environment and the installed distributions, so the CLI can refuse before any MPI work.
"""

from __future__ import annotations

import os
import platform
from importlib import metadata
from typing import Any, Callable, Mapping

LEGACY_KERAS = "TF_USE_LEGACY_KERAS"
LEGACY_KERAS_ON = ("1", "true", "True")  # the values TensorFlow's lazy loader accepts
FIRST_KERAS3_TF = (2, 16)  # from this TensorFlow on, tf.keras is Keras 3 unless told otherwise


class StackError(Exception):
    """The installed stack cannot run this toolkit; one line saying why and what to do."""


def uses_legacy_keras_variable(versions: Callable[[str], str | None] | None = None) -> bool:
    """True where TensorFlow (>= 2.16, or not yet installed) needs ``TF_USE_LEGACY_KERAS`` for Keras 2."""
    tf_version = tensorflow_version(versions or installed)
    return tf_version is None or _major_minor(tf_version) >= FIRST_KERAS3_TF


def use_keras2(environ: dict[str, str] | None = None,
               versions: Callable[[str], str | None] | None = None) -> None:
    """Ask TensorFlow >= 2.16 for Keras 2 (tf-keras) as ``tf.keras``, unless the user set the variable.

    Older TensorFlow's own Keras is Keras 2, and there the variable would ask for tf-keras instead.
    """
    if uses_legacy_keras_variable(versions):
        (os.environ if environ is None else environ).setdefault(LEGACY_KERAS, "1")


def installed(name: str) -> str | None:
    """The installed version of distribution ``name``, or None."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _major_minor(version: str) -> tuple[int, int]:
    major, minor = version.split(".")[:2]
    return int(major), int("".join(ch for ch in minor if ch.isdigit()) or 0)


def tensorflow_version(versions: Callable[[str], str | None] = installed) -> str | None:
    return versions("tensorflow") or versions("tensorflow-cpu")


def keras2_problem(environ: Mapping[str, str] | None = None,
                   versions: Callable[[str], str | None] = installed) -> str | None:
    """Why ``tf.keras`` would not be Keras 2 in a process with this environment; None if it would.

    ``environ`` and ``versions`` are seams for tests (default: this process and its installed
    distributions).
    """
    environ = os.environ if environ is None else environ
    tf_version = tensorflow_version(versions)
    if tf_version is None:
        return "TensorFlow is not installed: run 'make setup' (or see environment.yml)"
    tf_mm = _major_minor(tf_version)
    if tf_mm < FIRST_KERAS3_TF:
        if environ.get(LEGACY_KERAS) in LEGACY_KERAS_ON and versions("tf-keras") is None:
            return (f"{LEGACY_KERAS}={environ[LEGACY_KERAS]} asks TensorFlow {tf_version} for tf-keras, which is not "
                    f"installed: unset {LEGACY_KERAS} (TensorFlow {tf_version}'s own Keras is Keras 2)")
        keras = versions("keras")
        if keras is not None and not keras.startswith("2."):
            return (f"keras {keras} is installed next to TensorFlow {tf_version}, which needs Keras 2: "
                    f"pip install 'keras=={tf_mm[0]}.{tf_mm[1]}.*'")
        return None
    setting = environ.get(LEGACY_KERAS)
    if setting not in LEGACY_KERAS_ON:
        return (f"Keras 3 would be tf.keras ({LEGACY_KERAS}={setting!r}) and Horovod does not average "
                f"gradients under Keras 3: unset {LEGACY_KERAS} or set {LEGACY_KERAS}=1 (Keras 2, tf-keras)")
    tf_keras = versions("tf-keras")
    wanted = f"tf-keras=={tf_mm[0]}.{tf_mm[1]}.*"
    if tf_keras is None:
        return f"tf-keras is not installed: TensorFlow {tf_version} needs it for Keras 2 (pip install '{wanted}')"
    if _major_minor(tf_keras) != tf_mm:
        return f"tf-keras {tf_keras} does not match TensorFlow {tf_version} (pip install '{wanted}')"
    return None


def require_keras2() -> None:
    """Raise :class:`StackError` unless ``tf.keras`` will be Keras 2 (no TensorFlow import)."""
    problem = keras2_problem()
    if problem:
        raise StackError(problem)


def keras_of(tf: Any) -> tuple[str, str]:
    """(distribution, version) of the Keras behind an imported TensorFlow's ``tf.keras``."""
    module = tf.keras.Model.__module__.split(".")[0]  # tf_keras, or keras (2.x bundled or 3.x)
    distribution = "tf-keras" if module == "tf_keras" else "keras"
    return distribution, installed(distribution) or "unknown"


def check_runtime_keras(tf: Any) -> None:
    """After TensorFlow is imported: ``tf.keras`` really is Keras 2 (e.g. TensorFlow was imported and
    ``tf.keras`` used before this package could set the variable)."""
    distribution, version = keras_of(tf)
    if not version.startswith("2."):
        raise StackError(f"tf.keras is {distribution} {version} (Keras 3) and Horovod does not average "
                         f"gradients under Keras 3: set {LEGACY_KERAS}=1 before TensorFlow is imported "
                         "(or import mnist_hpc first)")


def versions() -> dict[str, str]:
    """The versions a run records: Python, TensorFlow, Keras, Horovod and the MPI library."""
    import horovod
    import mpi4py
    import tensorflow as tf

    mpi4py.rc.initialize = False
    from mpi4py import MPI

    distribution, keras_version = keras_of(tf)
    return {"python": platform.python_version(), "tensorflow": tf.__version__,
            "keras": f"{distribution} {keras_version}", "horovod": horovod.__version__,
            "mpi": MPI.Get_library_version().splitlines()[0].strip(" \x00")}
