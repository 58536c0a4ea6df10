"""MNIST data: locate, verify, fetch, read, split and shard.

Reads the four original IDX files (gzip-compressed or raw) or a Keras-style ``mnist.npz``.
Every file is checked against the SHA-256 of its decompressed IDX content, so a truncated or
corrupted file raises :class:`DataError` naming the file instead of returning a wrong array.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
import sys
import time
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Literal

import numpy as np

from .rundir import atomic_path

ENV_VAR = "MNIST_HPC_DATA"
DEFAULT_DIR = Path("~/.cache/mnist_hpc/mnist")
VALIDATION_SIZE = 5_000  # the tutorial split: the FIRST 5,000 training images
TRAIN_SIZE = 60_000 - VALIDATION_SIZE  # what training draws from


@dataclass(frozen=True)
class IdxFile:
    """One of the four original files: its name, shape and checksums."""

    stem: str  # e.g. "train-images-idx3-ubyte"
    shape: tuple[int, ...]
    sha256: str  # of the decompressed IDX bytes
    served_md5: str  # of the .gz as the usual mirrors serve it


FILES: dict[str, IdxFile] = {
    f.stem: f
    for f in (
        IdxFile("train-images-idx3-ubyte", (60_000, 28, 28),
                "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
                "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
        IdxFile("train-labels-idx1-ubyte", (60_000,),
                "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
                "d53e105ee54ea40749a09fcbcd1e9432"),
        IdxFile("t10k-images-idx3-ubyte", (10_000, 28, 28),
                "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
                "9fb629c4189551a2d022fa330f9573f3"),
        IdxFile("t10k-labels-idx1-ubyte", (10_000,),
                "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
                "ec29112dd5afa0611ce80d1b7f02629c"),
    )
}

MIRRORS: tuple[str, ...] = (
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)

Layout = Literal["image", "flat"]


class DataError(ValueError):
    """A data file is missing, truncated or corrupted; the message is one line."""


class FetchError(DataError):
    """No mirror served a good copy of a file (unreachable, 404, wrong bytes): a runtime failure of
    ``data fetch``, not bad input; the message is one line."""


@dataclass(frozen=True)
class Split:
    images: np.ndarray  # float32 in [0, 1]: (n, 28, 28, 1) or (n, 784)
    labels: np.ndarray  # int32 in 0..9

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class Mnist:
    train: Split  # 55,000
    validation: Split  # 5,000
    test: Split  # 10,000


# ------------------------------------------------------------------ locating
def resolve_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """``data_dir`` > ``$MNIST_HPC_DATA`` > ``~/.cache/mnist_hpc/mnist``."""
    chosen = data_dir or os.environ.get(ENV_VAR) or DEFAULT_DIR
    return Path(chosen).expanduser()


def _find(directory: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem):
        if (directory / name).is_file():
            return directory / name
    return None


def missing_files(directory: Path) -> list[str]:
    """Stems of the IDX files absent from ``directory`` (empty when an mnist.npz is there)."""
    if (directory / "mnist.npz").is_file():
        return []
    return [stem for stem in FILES if _find(directory, stem) is None]


# ------------------------------------------------------------------ reading + verifying
def _idx_header(shape: tuple[int, ...]) -> bytes:
    return struct.pack(">I", 0x0800 | len(shape)) + struct.pack(f">{len(shape)}I", *shape)


def _decompressed_bytes(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
        return gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
    except (OSError, EOFError, zlib.error, gzip.BadGzipFile) as err:
        raise DataError(f"{path}: unreadable or truncated ({err})") from None


def read_idx(path: str | os.PathLike, expected: IdxFile | None = None) -> np.ndarray:
    """Read one IDX file (gzip or raw) into a uint8 array, verifying it when ``expected`` is known."""
    path = Path(path)
    expected = expected or FILES.get(path.name.removesuffix(".gz"))
    data = _decompressed_bytes(path)
    if expected is not None and hashlib.sha256(data).hexdigest() != expected.sha256:
        raise DataError(f"{path}: content does not match the SHA-256 of {expected.stem} "
                        "(truncated or corrupted file; delete it and run 'mnist-hpc data fetch')")
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] != 0x08:
        raise DataError(f"{path}: not an unsigned-byte IDX file (bad magic number)")
    ndim = data[3]
    header = 4 + 4 * ndim
    shape = struct.unpack(f">{ndim}I", data[4:header])
    if len(data) != header + int(np.prod(shape)):
        raise DataError(f"{path}: {len(data) - header} data bytes, header says shape {shape}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def read_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a Keras-style ``mnist.npz``, verifying each array as if it were its IDX file."""
    path = Path(path)
    names = {"x_train": "train-images-idx3-ubyte", "y_train": "train-labels-idx1-ubyte",
             "x_test": "t10k-images-idx3-ubyte", "y_test": "t10k-labels-idx1-ubyte"}
    try:
        with np.load(path) as npz:
            arrays = {key: np.ascontiguousarray(npz[key], dtype=np.uint8) for key in names}
    except (OSError, ValueError, KeyError, EOFError, zlib.error) as err:
        raise DataError(f"{path}: not a readable mnist.npz ({err})") from None
    for key, stem in names.items():
        idx = FILES[stem]
        digest = hashlib.sha256(_idx_header(arrays[key].shape) + arrays[key].tobytes()).hexdigest()
        if arrays[key].shape != idx.shape or digest != idx.sha256:
            raise DataError(f"{path}: array {key} does not match {stem} (corrupted file)")
    return arrays


def read_raw(data_dir: str | os.PathLike | None = None) -> dict[str, np.ndarray]:
    """The four verified uint8 arrays, keyed like Keras (x_train, y_train, x_test, y_test)."""
    directory = resolve_dir(data_dir)
    if (directory / "mnist.npz").is_file():
        return read_npz(directory / "mnist.npz")
    absent = missing_files(directory)
    if absent:
        raise DataError(f"MNIST not found in {directory} (missing {', '.join(absent)}): run "
                        f"'mnist-hpc data fetch --dir {directory}' on a machine with internet "
                        f"access, or point --data-dir / ${ENV_VAR} at a folder that has the files")
    keys = ("x_train", "y_train", "x_test", "y_test")
    return {key: read_idx(_find(directory, stem), FILES[stem]) for key, stem in zip(keys, FILES)}


def verify(data_dir: str | os.PathLike | None = None) -> Path:
    """Raise :class:`DataError` unless the folder holds a complete, uncorrupted MNIST."""
    read_raw(data_dir)
    return resolve_dir(data_dir)


def _to_split(images: np.ndarray, labels: np.ndarray, layout: Layout) -> Split:
    shape = (-1, 784) if layout == "flat" else (-1, 28, 28, 1)
    return Split((images.astype(np.float32) / 255.0).reshape(shape), labels.astype(np.int32))


def load(data_dir: str | os.PathLike | None = None, layout: Layout = "image") -> Mnist:
    """The tutorial split: train 55,000 / validation 5,000 (the first 5,000) / test 10,000."""
    raw = read_raw(data_dir)
    x, y = raw["x_train"], raw["y_train"]
    return Mnist(
        train=_to_split(x[VALIDATION_SIZE:], y[VALIDATION_SIZE:], layout),
        validation=_to_split(x[:VALIDATION_SIZE], y[:VALIDATION_SIZE], layout),
        test=_to_split(raw["x_test"], raw["y_test"], layout),
    )


# ------------------------------------------------------------------ fetching
def to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


@dataclass
class Progress:
    """Progress lines of one download, ``NAME: DONE / TOTAL bytes (P%)`` (TOTAL from Content-Length):
    one each time another ``step`` of the file has arrived or ``interval`` seconds have passed since
    the last line, whichever comes first; without a Content-Length, ``NAME: DONE bytes`` once a second."""

    name: str
    total: int | None
    log: Callable[[str], None]
    clock: Callable[[], float] = time.monotonic
    step: float = 0.1  # of the total
    interval: float = 1.0  # seconds
    done: int = 0
    shown: int = field(default=0, init=False)  # bytes at the last line
    shown_at: float = field(default=0.0, init=False)

    def __post_init__(self) -> None:
        self.shown_at = self.clock()

    def advance(self, count: int) -> None:
        self.done += count
        tenth_more = bool(self.total) and self.done - self.shown >= self.step * self.total
        if tenth_more or self.clock() - self.shown_at >= self.interval:
            self.shown, self.shown_at = self.done, self.clock()
            self.log(self.line())

    def line(self) -> str:
        if self.total:
            return f"{self.name}: {self.done:,} / {self.total:,} bytes ({100 * self.done // self.total}%)"
        return f"{self.name}: {self.done:,} bytes"


def content_length(response) -> int | None:
    """The response's Content-Length, or None when it has none (or not a number)."""
    text = response.headers.get("Content-Length", "")
    return int(text) if text.isdigit() and int(text) > 0 else None


def _accepted(path: Path, idx: IdxFile) -> bool:
    """A served file is good when its MD5 is the mirrors' one or its content is the original."""
    if hashlib.md5(path.read_bytes()).hexdigest() == idx.served_md5:
        return True
    try:
        read_idx(path, idx)
        return True
    except DataError:
        return False


def _download(url: str, target: Path, idx: IdxFile, timeout: float, log: Callable[[str], None]) -> None:
    """Download ``url`` into ``target`` atomically, logging its progress; raise OSError/DataError
    when it fails or is bad."""
    start = time.monotonic()
    with atomic_path(target, mode=0o644) as tmp:  # public data: readable by everyone, like the originals
        with open(tmp, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            progress = Progress(target.name, content_length(response), log)
            while chunk := response.read(1 << 16):
                out.write(chunk)
                progress.advance(len(chunk))
        if not _accepted(tmp, idx):
            raise DataError(f"{url}: checksum mismatch")
    log(f"fetched {url}: {progress.done:,} bytes in {time.monotonic() - start:.1f} s")


def fetch(data_dir: str | os.PathLike | None = None, mirrors: Iterable[str] = MIRRORS,
          timeout: float = 60.0, log: Callable[[str], None] = to_stderr) -> Path:
    """Download the missing files, trying each mirror in turn; verify the result.

    Raises :class:`FetchError` when no mirror serves a good copy of a file; ``log`` gets each file's
    progress and final line (stderr by default)."""
    directory = resolve_dir(data_dir)
    directory.mkdir(parents=True, exist_ok=True)
    mirrors = tuple(mirrors)
    for stem, idx in FILES.items():
        if _find(directory, stem) is not None:
            continue
        target = directory / f"{stem}.gz"
        errors = []
        for mirror in mirrors:
            url = mirror.rstrip("/") + "/" + target.name
            try:
                _download(url, target, idx, timeout, log)
                break
            except (OSError, DataError, urllib.error.URLError) as err:
                errors.append(f"{url}: {err}")
        else:
            raise FetchError(f"could not fetch {target.name} from any mirror ({'; '.join(errors)})")
    return verify(directory)


# ------------------------------------------------------------------ sharding
def epoch_shard(n_items: int, rank: int, world_size: int, epoch: int, seed: int) -> np.ndarray:
    """Indices rank ``rank`` trains on in ``epoch``.

    Every epoch draws one permutation of ``range(n_items)`` from ``(seed, epoch)``, identical on
    all ranks; rank r takes every ``world_size``-th item starting at r. The shards are disjoint
    and together are exactly ``range(n_items)``; their sizes differ by at most one.
    """
    order = np.random.default_rng([seed, epoch]).permutation(n_items)
    return order[rank::world_size]


def eval_shard(n_items: int, rank: int, world_size: int) -> slice:
    """Contiguous, disjoint slice of an evaluation set for ``rank`` (sizes differ by at most one)."""
    base, extra = divmod(n_items, world_size)
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (rank < extra))
