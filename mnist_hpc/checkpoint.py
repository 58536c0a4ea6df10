"""Rank-0 checkpoints: atomic save, newest-loadable lookup, restore.

A checkpoint is one ``.npz`` file: model weights, optimizer variables and a JSON ``meta`` record
(model name, epoch, config, history). It is written to a temporary file in the same folder,
fsync'ed, then renamed, so a crash or a full disk never leaves a half-written checkpoint under a
checkpoint's name; a damaged file is detected by the zip CRCs and skipped on lookup.
"""

from __future__ import annotations

import json
import re
import warnings
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .rundir import atomic_path

PATTERN = re.compile(r"^ckpt-(\d{5})\.npz$")
PRIVATE_DIR_MODE = 0o750


class CheckpointError(ValueError):
    """A checkpoint cannot be used; the message is one line."""


@dataclass
class Checkpoint:
    path: Path
    meta: dict[str, Any]
    model_weights: list[np.ndarray]
    optimizer_variables: list[np.ndarray]

    @property
    def epoch(self) -> int:
        return int(self.meta["epoch"])


def path_for(directory: Path, epoch: int) -> Path:
    return directory / f"ckpt-{epoch:05d}.npz"


def save(directory: Path, meta: dict[str, Any], model_weights: list[np.ndarray],
         optimizer_variables: list[np.ndarray], keep: int = 3,
         write: Callable[..., None] = np.savez) -> Path:
    """Atomically write ``ckpt-<epoch>.npz`` and keep only the newest ``keep`` checkpoints.

    On any failure the temporary file is removed and the existing checkpoints are untouched.
    """
    directory.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR_MODE)
    target = path_for(directory, int(meta["epoch"]))
    arrays = {"meta": np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)}
    arrays |= {f"model_{i:04d}": w for i, w in enumerate(model_weights)}
    arrays |= {f"opt_{i:04d}": v for i, v in enumerate(optimizer_variables)}
    with atomic_path(target) as tmp, open(tmp, "wb") as out:
        write(out, **arrays)
    for old in candidates(directory)[keep:]:
        old.unlink(missing_ok=True)
    return target


def candidates(directory: Path) -> list[Path]:
    """Checkpoint files in ``directory``, newest epoch first."""
    if not directory.is_dir():
        return []
    found = [p for p in directory.iterdir() if PATTERN.match(p.name)]
    return sorted(found, key=lambda p: int(PATTERN.match(p.name).group(1)), reverse=True)


def read_meta(path: Path) -> dict[str, Any]:
    """Only the metadata of a checkpoint (cheap: the weight arrays are not read)."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            meta = json.loads(npz["meta"].tobytes().decode())
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, UnicodeDecodeError, zlib.error) as err:
        raise CheckpointError(f"{path}: unreadable checkpoint ({type(err).__name__}: {err})") from None
    if not {"epoch", "model"} <= meta.keys():
        raise CheckpointError(f"{path}: checkpoint metadata lacks epoch/model")
    return meta


def load(path: Path) -> Checkpoint:
    """Read and fully verify one checkpoint (every array is read, so CRCs are checked)."""
    meta = read_meta(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files if key != "meta"}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as err:
        raise CheckpointError(f"{path}: unreadable checkpoint ({type(err).__name__}: {err})") from None
    model = [arrays[k] for k in sorted(arrays) if k.startswith("model_")]
    opt = [arrays[k] for k in sorted(arrays) if k.startswith("opt_")]
    return Checkpoint(path, meta, model, opt)


def latest_valid(directory: Path, warn: Callable[[str], None] | None = None) -> Checkpoint | None:
    """The newest checkpoint that loads; damaged newer ones are skipped with a warning naming them."""
    warn = warn or (lambda message: warnings.warn(message, stacklevel=2))
    for path in candidates(directory):
        try:
            return load(path)
        except CheckpointError as err:
            warn(f"skipping damaged checkpoint: {err}")
    return None


def verify_model_file(path: Path) -> None:
    """A saved ``.keras`` model reads back intact: a zip whose members pass their CRCs, holding a
    Keras config (no TensorFlow needed). Raises :class:`CheckpointError` in one line."""
    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
            names = set(archive.namelist())
    except (OSError, zipfile.BadZipFile, EOFError, ValueError, zlib.error) as err:
        raise CheckpointError(f"{path}: unreadable Keras model ({type(err).__name__}: {err})") from None
    if damaged is not None:
        raise CheckpointError(f"{path}: damaged Keras model ({damaged} fails its CRC check)")
    if not {"config.json", "model.weights.h5"} <= names:
        raise CheckpointError(f"{path}: not a Keras model file (no config.json and model.weights.h5 inside)")


def resolve(resume: str, directory: Path, model_name: str) -> Checkpoint | None:
    """The checkpoint ``--resume`` asks for (``auto``, ``never`` or a path), checked against the model."""
    if resume == "never":
        return None
    found = latest_valid(directory) if resume == "auto" else load(Path(resume))
    if found is not None and found.meta["model"] != model_name:
        raise CheckpointError(f"--resume: {found.path} is a checkpoint of model "
                              f"{found.meta['model']!r}, not {model_name!r}")
    return found
