"""The run directory: private permissions and one job at a time.

Rank 0 of a job takes an exclusive ``flock`` on ``RUN_DIR/.lock`` before MPI starts and holds it
until it exits. The kernel drops the lock when the process dies, so a crashed job never leaves it
stuck; a second job pointed at the same directory is refused with the holder's host and pid.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Iterator, Mapping

PRIVATE_UMASK = 0o027  # directories 0750, files 0640: nothing for other users
PRIVATE_FILE_MODE = 0o640  # for files created with an explicit mode (mkstemp makes 0600)
RANK_VARIABLES = ("HOROVOD_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK", "SLURM_PROCID")
SIZE_VARIABLES = ("OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "PMI_SIZE", "HOROVOD_SIZE", "SLURM_NTASKS")

_held: list[IO[str]] = []  # keeps the lock file open for the life of the process


class RunDirInUse(RuntimeError):
    """Another live job holds the run directory; one line."""


def _announced(names: tuple[str, ...], default: int, environ: Mapping[str, str] | None) -> int:
    """The first of ``names`` a launcher (horovodrun, mpirun, srun) set to a number, before MPI init."""
    environ = os.environ if environ is None else environ
    return next((int(environ[name]) for name in names if environ.get(name, "").isdigit()), default)


def launcher_rank(environ: Mapping[str, str] | None = None) -> int:
    """This process's rank as the launcher announces it; 0 without one."""
    return _announced(RANK_VARIABLES, 0, environ)


def launcher_world_size(environ: Mapping[str, str] | None = None) -> int:
    """The number of ranks the launcher started; 1 without one."""
    return _announced(SIZE_VARIABLES, 1, environ)


def _in_use(run_dir: Path, lock_file: IO[str]) -> RunDirInUse:
    """The refusal, naming the holder the lock file records."""
    holder = lock_file.read().strip() or "another process"
    return RunDirInUse(f"--out: {run_dir} is in use by {holder}; wait for it or choose another --out")


def check_free(run_dir: Path) -> None:
    """Raise :class:`RunDirInUse` if a live job holds ``run_dir``; creates and changes nothing (for
    validation before any rank starts; ``claim`` still takes the lock race-free at start-up)."""
    try:
        handle = open(run_dir / ".lock")
    except OSError:
        return  # no lock file (or none we may read): nobody to wait for, claim() decides
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            raise _in_use(run_dir, handle) from None
        fcntl.flock(handle, fcntl.LOCK_UN)


def claim(run_dir: Path) -> None:
    """Create ``run_dir`` (mode 0750) and lock it for this process (call on rank 0 only)."""
    run_dir.mkdir(mode=0o750, parents=True, exist_ok=True)
    handle = os.fdopen(os.open(run_dir / ".lock", os.O_RDWR | os.O_CREAT, PRIVATE_FILE_MODE), "r+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        error = _in_use(run_dir, handle)
        handle.close()
        raise error from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
    handle.flush()
    _held.append(handle)


@contextmanager
def atomic_path(path: Path, mode: int = PRIVATE_FILE_MODE) -> Iterator[Path]:
    """The toolkit's one way to write a file (checkpoints, metrics, models, reports, downloads).

    A temporary file next to ``path`` for the caller to write. When the block ends, the file is
    fsynced, given ``mode`` (private 0640 by default) and renamed to ``path``, and the folder fsynced: readers never
    see half a file. On any error (a full disk, an exception) the temporary file is removed,
    ``path`` keeps what it had, and an OSError names ``path``, not the temporary file."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb") as written:
            os.fsync(written.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
        _fsync(path.parent)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise _naming(err, path) from err
        raise


def _naming(err: OSError, path: Path) -> OSError:
    """``err`` (about a temporary name) as an OSError naming ``path``, the name the user knows."""
    return OSError(err.errno, err.strerror or str(err), str(path))


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_dir(path: Path, mode: int = 0o750) -> Iterator[Path]:
    """:func:`atomic_path` for a folder (an exported SavedModel): a new temporary folder next to
    ``path`` for the caller to fill. When the block ends, every file in it is fsynced and it takes
    ``path``'s name. An older ``path`` is renamed aside first (``.NAME.*.old``) and removed after, or
    put back if the rename fails: readers find the old folder or the new one, never half of one (a
    crash between the two renames leaves the old one under its ``.old`` name). On any error the
    temporary folder is removed, ``path`` keeps what it had, and an OSError names ``path``."""
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    except OSError as err:
        raise _naming(err, path) from err
    old = path.parent / f"{tmp.name}.old"
    try:
        yield tmp
        for folder, _, files in os.walk(tmp):
            for name in files:
                _fsync(Path(folder) / name)
            _fsync(Path(folder))
        os.chmod(tmp, mode)
        replacing = path.exists()
        if replacing:
            os.rename(path, old)
        try:
            os.rename(tmp, path)
        except OSError:
            if replacing:
                os.rename(old, path)
            raise
        _fsync(path.parent)
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(err, OSError):
            raise _naming(err, path) from err
        raise
    shutil.rmtree(old, ignore_errors=True)


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    """``path`` holds ``payload`` as JSON (strict: no NaN), written atomically."""
    write_text_atomic(path, json.dumps(payload, indent=2, allow_nan=False) + "\n")


def write_text_atomic(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def save_figure_atomic(figure: Any, path: Path) -> Path:
    """A matplotlib figure as PNG at ``path``, atomically, then closed (its memory freed)."""
    import matplotlib.pyplot as plt

    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=100, format="png")
    plt.close(figure)
    return path


def save_model_atomic(model: Any, path: Path) -> None:
    """``model.save(path)``, atomically: a full disk or a crash never leaves a damaged ``.keras``."""
    with atomic_path(path) as tmp:
        model.save(tmp)
