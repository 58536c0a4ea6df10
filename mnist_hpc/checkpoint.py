"""Rank-0 checkpoints: atomic save, newest-loadable lookup, restore.

A checkpoint is one ``.npz`` file: model weights and optimizer variables, each under its variable
name (restored by name, never by position), and a JSON ``meta`` record (model name, epoch, config,
history). It is written to a temporary file in the same folder,
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


State = dict[str, np.ndarray]  # variable name -> value


@dataclass
class Checkpoint:
    path: Path
    meta: dict[str, Any]
    model_weights: State
    optimizer_variables: State

    @property
    def epoch(self) -> int:
        return int(self.meta["epoch"])


def state_of(variables: list[Any]) -> State:
    """``{name: value}`` of TensorFlow variables (``model.weights``, ``optimizer.variables``)."""
    return {variable.name: variable.numpy() for variable in variables}


def assign(variables: list[Any], saved: State, what: str, path: Path) -> None:
    """Assign ``saved`` to ``variables`` by name; any missing, extra or reshaped variable is one line."""
    if all(name.startswith("#") for name in saved):  # written before names were kept: by position
        saved = {variable.name: value for variable, value in zip(variables, saved.values())} \
            if len(saved) == len(variables) else saved
    names = [variable.name for variable in variables]
    missing, extra = sorted(set(names) - set(saved)), sorted(set(saved) - set(names))
    if missing or extra:
        raise CheckpointError(f"{path}: its {what} does not match this model's (missing {missing[:3]}, "
                              f"unexpected {extra[:3]}); resume it with the settings that wrote it, or --resume never")
    for variable in variables:
        if tuple(variable.shape) != saved[variable.name].shape:
            raise CheckpointError(f"{path}: {what} variable {variable.name} has shape {saved[variable.name].shape}, "
                                  f"the model's is {tuple(variable.shape)}; resume with the settings that wrote it")
        variable.assign(saved[variable.name])


def path_for(directory: Path, epoch: int) -> Path:
    return directory / f"ckpt-{epoch:05d}.npz"


def save(directory: Path, meta: dict[str, Any], model_weights: State, optimizer_variables: State, keep: int = 3,
         write: Callable[..., None] = np.savez) -> Path:
    """Atomically write ``ckpt-<epoch>.npz`` and keep only the newest ``keep`` checkpoints.

    On any failure the temporary file is removed and the existing checkpoints are untouched.
    """
    directory.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR_MODE)
    target = path_for(directory, int(meta["epoch"]))
    arrays = {"meta": np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)}
    names = {"model": list(model_weights), "optimizer": list(optimizer_variables)}
    arrays["names"] = np.frombuffer(json.dumps(names).encode(), dtype=np.uint8)
    arrays |= {f"model_{i:04d}": w for i, w in enumerate(model_weights.values())}
    arrays |= {f"opt_{i:04d}": v for i, v in enumerate(optimizer_variables.values())}
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
            names = json.loads(arrays.pop("names").tobytes().decode()) if "names" in arrays else {}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path}: unreadable checkpoint ({type(err).__name__}: {err})") from None

    def named(prefix: str, kind: str) -> State:
        values = [arrays[k] for k in sorted(arrays) if k.startswith(prefix)]
        keys = names.get(kind) or [f"#{i}" for i in range(len(values))]  # "#i": an older file, by position
        if len(keys) != len(values):
            raise CheckpointError(f"{path}: damaged checkpoint ({len(values)} {kind} arrays for {len(keys)} names)")
        return dict(zip(keys, values))

    return Checkpoint(path, meta, named("model_", "model"), named("opt_", "optimizer"))


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


def resolve(resume: str, directory: Path, model_name: str, arrays: bool = True,
            warn: Callable[[str], None] | None = None) -> Checkpoint | None:
    """The one resume rule, for validation (``arrays=False``: metadata only) and for training.

    ``never``: none. ``auto``: the newest checkpoint in ``directory`` that reads (damaged newer ones
    are skipped with a warning), or none. A path: that file, fully verified. The checkpoint must be
    of ``model_name``. Raises :class:`CheckpointError` with one line.
    """
    if resume == "never":
        return None
    if resume != "auto":
        if not Path(resume).is_file():
            raise CheckpointError(f"--resume: {resume} is not a file (allowed: auto, never or a checkpoint path)")
        found = load(Path(resume))
    elif arrays:
        found = latest_valid(directory, warn)
    else:
        found = next((Checkpoint(path, meta, {}, {}) for path in candidates(directory)
                      if (meta := _meta_or_none(path)) is not None), None)
    if found is not None and found.meta["model"] != model_name:
        raise CheckpointError(f"--resume: {found.path} is a checkpoint of model {found.meta['model']!r}, "
                              f"not {model_name!r} (use another --out or --resume never)")
    return found


def _meta_or_none(path: Path) -> dict[str, Any] | None:
    try:
        return read_meta(path)
    except CheckpointError:
        return None  # auto skips it (training warns when it does)
