"""The run directory: private permissions and one job at a time.

Rank 0 of a job takes an exclusive ``flock`` on ``RUN_DIR/.lock`` before MPI starts and holds it
until it exits. The kernel drops the lock when the process dies, so a crashed job never leaves it
stuck; a second job pointed at the same directory is refused with the holder's host and pid.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Iterator

PRIVATE_UMASK = 0o027  # directories 0750, files 0640: nothing for other users
PRIVATE_FILE_MODE = 0o640  # for files created with an explicit mode (mkstemp makes 0600)
RANK_VARIABLES = ("HOROVOD_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK", "SLURM_PROCID")

_held: list[IO[str]] = []  # keeps the lock file open for the life of the process


class RunDirInUse(RuntimeError):
    """Another live job holds the run directory; one line."""


def launcher_rank(environ: dict[str, str] | None = None) -> int:
    """This process's rank as the launcher (horovodrun, mpirun, srun) announces it, before MPI init."""
    environ = os.environ if environ is None else environ
    for name in RANK_VARIABLES:
        if environ.get(name, "").isdigit():
            return int(environ[name])
    return 0


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
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise OSError(err.errno, err.strerror or str(err), str(path)) from err
        raise


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    """``path`` holds ``payload`` as JSON (strict: no NaN), written atomically."""
    write_text_atomic(path, json.dumps(payload, indent=2, allow_nan=False) + "\n")


def write_text_atomic(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def save_model_atomic(model: Any, path: Path) -> None:
    """``model.save(path)``, atomically: a full disk or a crash never leaves a damaged ``.keras``."""
    with atomic_path(path) as tmp:
        model.save(tmp)
