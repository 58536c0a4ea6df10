"""RUN_DIR/saved_model: the trained model for a process without this package or Keras 2.

``model.keras`` is written by tf-keras (Keras 2), and TensorFlow 2.16+'s default Keras 3 cannot
load it ("Could not locate class 'Functional'"). Next to it, rank 0 exports the same float32
weights with tf-keras's ``model.export()``: a SavedModel holding the forward pass only, which plain
TensorFlow (``tf.saved_model.load(DIR).serve(x)``) and Keras 3 (``keras.layers.TFSMLayer(DIR,
call_endpoint="serve")``) load with no Keras 2 and no mnist_hpc. ``SHA256SUMS`` in the folder
(``sha256sum -c`` reads it) lets ``mnist-hpc evaluate`` refuse a damaged export in one line before
any rank starts. TensorFlow is imported inside the functions that need it: the CLI validates
without it.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import re
from pathlib import Path
from typing import Any

from .checkpoint import CheckpointError
from .rundir import atomic_dir

NAME = "saved_model"  # RUN_DIR/saved_model
SUMS = "SHA256SUMS"
ENDPOINT = "serve"  # what model.export() names the forward pass


def is_export(path: Path) -> bool:
    """``path`` is a SavedModel folder (as opposed to a run directory or a ``.keras`` file)."""
    return (path / "saved_model.pb").is_file()


def _digest(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _sums(folder: Path) -> str:
    """``sha256sum``'s lines for every file under ``folder``."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != SUMS)
    return "".join(f"{_digest(p)}  {p.relative_to(folder)}\n" for p in files)


def verify(folder: Path) -> None:
    """Every file of an export reads back as written (no TensorFlow needed). Raises
    :class:`CheckpointError` in one line naming the folder and the first bad file."""
    try:
        listed = (folder / SUMS).read_text()
    except OSError as err:
        raise CheckpointError(f"{folder}: not an export of mnist-hpc (no readable {SUMS}: {err.strerror})") from None
    for line in listed.splitlines():
        expected, _, name = line.partition("  ")
        try:
            actual = _digest(folder / name)
        except OSError as err:
            raise CheckpointError(f"{folder}: damaged SavedModel ({name}: {err.strerror})") from None
        if actual != expected:
            raise CheckpointError(f"{folder}: damaged SavedModel ({name} does not match its SHA-256 in {SUMS})")


def _os_error(err: Exception, path: Path) -> OSError:
    """A TensorFlow file-system error (a full disk is ResourceExhaustedError) as the OSError of
    ``path`` every other writer of the run directory raises."""
    message = getattr(err, "message", str(err))
    reason = re.search(r";\s*([^;]+?)(?:\s*\[Op:\w+\])?\s*$", message)
    return OSError(None, reason.group(1) if reason else message.strip().splitlines()[0], str(path))


def write(model: Any, path: Path) -> None:
    """``model.export(path)`` plus ``SHA256SUMS``, atomically (see :func:`rundir.atomic_dir`)."""
    import tensorflow as tf

    with atomic_dir(path) as tmp:
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # tf-keras prints every endpoint's signature
                model.export(str(tmp))
        except tf.errors.OpError as err:
            raise _os_error(err, path) from None
        (tmp / SUMS).write_text(_sums(tmp))


class Exported:
    """An export, called the way :func:`evaluate.local_scores` calls a Keras model."""

    def __init__(self, folder: Path):
        import tensorflow as tf

        self.name = f"SavedModel {folder}"  # never a registry name: models.layout_of reads the input shape
        self._loaded = tf.saved_model.load(str(folder))  # keep it: the endpoint's variables live in it
        self._serve = getattr(self._loaded, ENDPOINT)
        self.input_shape = tuple(self._serve.input_signature[0].shape)

    def __call__(self, images, training: bool = False):
        return self._serve(images)

